//! Linux networking of the node: namespaces and links (rtnetlink, /proc/sys). No `ip`,
//! `iptables` or `nft` process is ever started.

pub mod dataplane;
pub mod links;
pub mod netns;
pub mod plan;

/// A subnet `a.b.c.d/len` (prefix 8 to 30, no host bits set), or why not.
pub fn parse_subnet(text: &str) -> Result<(std::net::Ipv4Addr, u8), String> {
    let (addr, len) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not a.b.c.d/len"))?;
    let addr: std::net::Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| (8..=30).contains(l))
        .ok_or_else(|| format!("prefix length {len:?} is not 8 to 30"))?;
    if addr.to_bits() & !(u32::MAX << (32 - u32::from(len))) != 0 {
        return Err(format!("{text} has host bits set"));
    }
    Ok((addr, len))
}
