//! Linux networking of the node: namespaces and links (rtnetlink, /proc/sys). No `ip`,
//! `iptables` or `nft` process is ever started.

pub mod dataplane;
pub mod links;
pub mod netns;
pub mod plan;
pub mod tun;

/// A subnet `a.b.c.d/len` (prefix 8 to 30, no host bits set), or why not. Parsed once, where a
/// configuration is read; the rest of the code holds an [`ipnet::Ipv4Net`].
pub fn parse_subnet(text: &str) -> Result<ipnet::Ipv4Net, String> {
    let net: ipnet::Ipv4Net = text
        .parse()
        .map_err(|_| format!("{text:?} is not a.b.c.d/len"))?;
    if !(8..=30).contains(&net.prefix_len()) {
        return Err(format!("prefix length {} is not 8 to 30", net.prefix_len()));
    }
    if net.trunc() != net {
        return Err(format!("{text} has host bits set"));
    }
    Ok(net)
}
