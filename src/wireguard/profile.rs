//! A WireGuard profile in wg-quick's INI form, as eduVPN and the built-in provider hand it out:
//! the node's address, and the one peer it reaches the VPN through. The node's private key is
//! never part of what a server sends; the node adds its own.
//!
//! Only IPv4 is taken (the router is IPv4 only): IPv6 addresses and allowed networks are left
//! out. Keys a node has no use for (`DNS`, `PostUp`, ...) are ignored; a profile without an
//! address, a peer key or an endpoint is refused with what is missing.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::keys::{decode_key, encode_key, KeyError};

/// A WireGuard profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WgProfile {
    /// The node's VPN address, with the VPN's prefix.
    pub address: Ipv4Net,
    /// The tunnel's MTU, if the profile names one.
    pub mtu: Option<u16>,
    /// The hub's public key.
    pub peer_key: [u8; 32],
    /// Where the hub listens: `host:port`, a name or an address.
    pub endpoint: Option<String>,
    /// Where the hub takes WireGuard over TCP (eduVPN's `ProxyEndpoint`, ProxyGuard's URL): an
    /// `http(s)` URL, or a path on the node's server. A profile has it only when asked for
    /// (`prefer_tcp`), and a node that has it uses it rather than `endpoint`.
    pub proxy: Option<String>,
    /// What may come from and go to the hub (IPv4 only).
    pub allowed: Vec<Ipv4Net>,
    /// Seconds between keepalives, if any.
    pub keepalive: Option<u16>,
}

/// Why a text is not a WireGuard profile.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("line {line}: {what}")]
    Line { line: usize, what: String },
    #[error("the profile has no {0}")]
    Missing(&'static str),
    #[error("the profile has {0} [Peer] sections; a node takes exactly one")]
    Peers(usize),
}

/// The comment a kept profile starts with when its server said when it ends (eduVPN's
/// `Expires`): a node never connects with an expired profile.
const EXPIRES: &str = "# Expires: ";

/// `text` as kept: `expires` (an HTTP date) as its first line.
pub fn with_expiry(text: &str, expires: &str) -> String {
    format!("{EXPIRES}{}\n{text}", expires.trim())
}

/// When a kept profile expires, if its first line says so in a form this reads.
pub fn expiry(text: &str) -> Option<std::time::SystemTime> {
    http_date(text.lines().next()?.strip_prefix(EXPIRES)?)
}

/// Whether a profile expiring `at` (if it says) has expired.
pub fn expired(at: Option<std::time::SystemTime>) -> bool {
    at.is_some_and(|t| t <= std::time::SystemTime::now())
}

/// An HTTP date in its one form senders use (IMF-fixdate, RFC 9110):
/// `Fri, 26 Nov 2027 10:00:00 GMT`.
fn http_date(text: &str) -> Option<std::time::SystemTime> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let [_, day, month, year, clock, "GMT"] = text.split_whitespace().collect::<Vec<_>>()[..]
    else {
        return None;
    };
    let month = MONTHS.iter().position(|m| *m == month)?;
    let month = time::Month::try_from(u8::try_from(month + 1).ok()?).ok()?;
    let date = time::Date::from_calendar_date(year.parse().ok()?, month, day.parse().ok()?).ok()?;
    let [h, m, s] = clock.split(':').collect::<Vec<_>>()[..] else {
        return None;
    };
    let at = time::Time::from_hms(h.parse().ok()?, m.parse().ok()?, s.parse().ok()?).ok()?;
    Some(date.with_time(at).assume_utc().into())
}

/// Whether `text` is a WireGuard profile rather than an OpenVPN one.
pub fn is_wireguard(text: &str) -> bool {
    text.lines().any(|l| l.trim() == "[Interface]")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    None,
    Interface,
    Peer,
}

impl WgProfile {
    /// Reads a profile.
    pub fn parse(text: &str) -> Result<WgProfile, ProfileError> {
        let mut section = Section::None;
        let mut address = None;
        let mut mtu = None;
        let mut peers = 0;
        let mut peer_key = None;
        let mut endpoint = None;
        let mut proxy = None;
        let mut allowed = Vec::new();
        let mut keepalive = None;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let bad = |what: String| ProfileError::Line { line, what };
            let l = raw.split('#').next().unwrap_or_default().trim();
            if l.is_empty() {
                continue;
            }
            match l {
                "[Interface]" => section = Section::Interface,
                "[Peer]" => {
                    section = Section::Peer;
                    peers += 1;
                }
                _ if l.starts_with('[') => return Err(bad(format!("unknown section {l}"))),
                _ => {
                    let (key, value) = l
                        .split_once('=')
                        .map(|(k, v)| (k.trim(), v.trim()))
                        .ok_or_else(|| bad("not `key = value`".into()))?;
                    match (section, key.to_ascii_lowercase().as_str()) {
                        (Section::None, _) => return Err(bad(format!("{key} outside a section"))),
                        (Section::Interface, "address") => {
                            address = v4_nets(value).map_err(bad)?.into_iter().next();
                        }
                        (Section::Interface, "mtu") => {
                            let m: u16 = value
                                .parse()
                                .map_err(|_| bad(format!("MTU {value:?} is not a number")))?;
                            if !(576..=9000).contains(&m) {
                                return Err(bad(format!("MTU {m} is outside 576-9000")));
                            }
                            mtu = Some(m);
                        }
                        (Section::Interface, "privatekey") => {
                            // A server that sends a key has seen it: the node uses its own.
                            return Err(bad("a server sent a private key; the node keeps its own and takes no profile that carries one".into()));
                        }
                        (Section::Peer, "publickey") => {
                            peer_key =
                                Some(decode_key(value).map_err(|e: KeyError| bad(e.to_string()))?);
                        }
                        (Section::Peer, "endpoint") => {
                            if value
                                .rsplit_once(':')
                                .and_then(|(_, p)| p.parse::<u16>().ok())
                                .is_none()
                            {
                                return Err(bad(format!("endpoint {value:?} is not host:port")));
                            }
                            endpoint = Some(value.to_string());
                        }
                        (Section::Peer, "proxyendpoint") => {
                            let url = ["http://", "https://", "/"]
                                .iter()
                                .any(|p| value.starts_with(p))
                                && !value.contains(char::is_whitespace);
                            if !url {
                                return Err(bad(format!(
                                    "proxy endpoint {value:?} is not an http(s) URL or a path"
                                )));
                            }
                            proxy = Some(value.to_string());
                        }
                        (Section::Peer, "allowedips") => {
                            allowed.extend(v4_nets(value).map_err(bad)?)
                        }
                        (Section::Peer, "persistentkeepalive") => {
                            keepalive = match value {
                                "off" | "0" => None,
                                v => Some(v.parse().map_err(|_| {
                                    bad(format!("keepalive {v:?} is not a number"))
                                })?),
                            };
                        }
                        _ => {}
                    }
                }
            }
        }
        if peers != 1 {
            return Err(ProfileError::Peers(peers));
        }
        if endpoint.is_none() && proxy.is_none() {
            return Err(ProfileError::Missing("peer Endpoint"));
        }
        Ok(WgProfile {
            address: address.ok_or(ProfileError::Missing("IPv4 Address"))?,
            mtu,
            peer_key: peer_key.ok_or(ProfileError::Missing("peer PublicKey"))?,
            endpoint,
            proxy,
            allowed,
            keepalive,
        })
    }

    /// The profile in wg-quick's form (without a private key).
    pub fn render(&self) -> String {
        let mut s = String::from("[Interface]\n");
        let _ = writeln!(s, "Address = {}", self.address);
        if let Some(m) = self.mtu {
            let _ = writeln!(s, "MTU = {m}");
        }
        s.push_str("\n[Peer]\n");
        let _ = writeln!(s, "PublicKey = {}", encode_key(&self.peer_key));
        let allowed: Vec<String> = self.allowed.iter().map(ToString::to_string).collect();
        let _ = writeln!(s, "AllowedIPs = {}", allowed.join(", "));
        if let Some(e) = &self.endpoint {
            let _ = writeln!(s, "Endpoint = {e}");
        }
        if let Some(p) = &self.proxy {
            let _ = writeln!(s, "ProxyEndpoint = {p}");
        }
        if let Some(k) = self.keepalive {
            let _ = writeln!(s, "PersistentKeepalive = {k}");
        }
        s
    }

    /// The node's VPN address.
    pub fn ip(&self) -> Ipv4Addr {
        self.address.addr()
    }
}

/// The IPv4 networks of a comma-separated list (IPv6 ones left out); an address without a
/// prefix is a /32.
fn v4_nets(value: &str) -> Result<Vec<Ipv4Net>, String> {
    let mut nets = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if item.contains(':') {
            continue;
        }
        let net = match item.parse::<Ipv4Net>() {
            Ok(n) => n,
            Err(_) => item
                .parse::<Ipv4Addr>()
                .map(Ipv4Net::from)
                .map_err(|_| format!("{item:?} is not an IPv4 address or network"))?,
        };
        nets.push(net);
    }
    Ok(nets)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";

    fn eduvpn_like() -> String {
        format!(
            "[Interface]\nAddress = 10.43.43.2/24, fd43::2/64\nDNS = 9.9.9.9\n\n[Peer]\n\
             PublicKey = {KEY}\nAllowedIPs = 0.0.0.0/0, ::/0\nEndpoint = vpn.example.org:51820\n"
        )
    }

    #[test]
    fn reads_what_eduvpn_sends() {
        let p = WgProfile::parse(&eduvpn_like()).expect("profile");
        assert_eq!(p.address, "10.43.43.2/24".parse::<Ipv4Net>().expect("net"));
        assert_eq!(p.ip(), Ipv4Addr::new(10, 43, 43, 2));
        assert_eq!(p.endpoint.as_deref(), Some("vpn.example.org:51820"));
        assert_eq!(p.proxy, None);
        assert_eq!(
            p.allowed,
            vec!["0.0.0.0/0".parse::<Ipv4Net>().expect("net")]
        );
        assert_eq!(encode_key(&p.peer_key), KEY);
        assert!(is_wireguard(&eduvpn_like()));
        assert!(!is_wireguard("client\ndev tun\nremote vpn 1194\n"));
    }

    #[test]
    fn render_reads_back() {
        let p = WgProfile {
            address: "10.76.0.3/16".parse().expect("net"),
            mtu: Some(1420),
            peer_key: [7; 32],
            endpoint: Some("10.99.0.1:51820".into()),
            proxy: None,
            allowed: vec!["10.76.0.0/16".parse().expect("net")],
            keepalive: Some(25),
        };
        assert_eq!(WgProfile::parse(&p.render()), Ok(p.clone()));
        let tcp = WgProfile {
            endpoint: None,
            proxy: Some("/api/vpn/tcp".into()),
            ..p
        };
        assert_eq!(WgProfile::parse(&tcp.render()), Ok(tcp));
    }

    /// What eduVPN answers to `prefer_tcp=yes` (`application/x-wireguard+tcp-profile`): the
    /// proxy's URL beside, or instead of, the UDP endpoint.
    #[test]
    fn reads_a_proxy_endpoint() {
        let text = eduvpn_like().replace(
            "Endpoint = vpn.example.org:51820",
            "ProxyEndpoint = https://vpn.example.org/proxyguard",
        );
        let p = WgProfile::parse(&text).expect("profile");
        assert_eq!(p.endpoint, None);
        assert_eq!(
            p.proxy.as_deref(),
            Some("https://vpn.example.org/proxyguard")
        );
        let both = format!("{}ProxyEndpoint = http://10.0.0.1:8080/p\n", eduvpn_like());
        let p = WgProfile::parse(&both).expect("profile");
        assert_eq!(p.endpoint.as_deref(), Some("vpn.example.org:51820"));
        assert_eq!(p.proxy.as_deref(), Some("http://10.0.0.1:8080/p"));
        for bad in [
            "vpn.example.org:443",
            "ftp://h/p",
            "https://h/a b",
            "api/vpn/tcp",
        ] {
            let text = format!("{}ProxyEndpoint = {bad}\n", eduvpn_like());
            let e = WgProfile::parse(&text).expect_err(bad).to_string();
            assert!(e.contains("proxy endpoint"), "{bad}: {e}");
        }
    }

    #[test]
    fn refuses_what_a_node_cannot_use() {
        let cases: [(&str, &str); 7] = [
            ("", "0 [Peer]"),
            ("[Interface]\nAddress = 10.0.0.2/24\n", "0 [Peer]"),
            (
                "[Interface]\n[Peer]\nPublicKey = PUBKEY\nEndpoint = h:1\n",
                "IPv4 Address",
            ),
            ("[Interface]\nAddress = nope\n[Peer]\n", "not an IPv4"),
            ("[Interface]\nPrivateKey = abc\n", "private key"),
            ("Address = 10.0.0.2/24\n", "outside a section"),
            (
                "[Interface]\nAddress = 10.0.0.2/24\n[Peer]\nPublicKey = short\n",
                "key",
            ),
        ];
        for (text, why) in cases {
            let text = text.replace("PUBKEY", KEY);
            let e = WgProfile::parse(&text).expect_err(&text).to_string();
            assert!(e.contains(why), "{text:?}: {e}");
        }
        let e = WgProfile::parse(&format!(
            "[Interface]\nAddress = 10.0.0.2/24\n[Peer]\nPublicKey = {KEY}\nEndpoint = nowhere\n"
        ))
        .expect_err("endpoint");
        assert!(e.to_string().contains("host:port"), "{e}");
    }

    #[test]
    fn a_kept_profile_says_when_it_expires() {
        let kept = with_expiry(&eduvpn_like(), "Fri, 26 Nov 2027 10:00:00 GMT");
        let at = expiry(&kept).expect("an expiry");
        let unix = at
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970");
        assert_eq!(unix.as_secs(), 1_827_223_200);
        assert_eq!(WgProfile::parse(&kept), WgProfile::parse(&eduvpn_like()));
        assert!(is_wireguard(&kept));
        for unread in [
            "Fri, 26 Nov 2027 10:00:00 CET",
            "Fri, 31 Nov 2027 10:00:00 GMT",
            "Fri, 26 Nov 2027 25:00:00 GMT",
            "Friday, 26-Nov-27 10:00:00 GMT",
            "",
        ] {
            assert_eq!(expiry(&with_expiry("x", unread)), None, "{unread:?}");
        }
        assert_eq!(expiry(&eduvpn_like()), None);
    }

    /// Lines a profile may hold, well-formed or not, in any order and number.
    fn line() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            Just("[Interface]".to_string()),
            Just("[Peer]".to_string()),
            Just("[Other]".to_string()),
            Just(format!("PublicKey = {KEY}")),
            Just("PrivateKey = abc".to_string()),
            Just("Address = 10.0.0.2/24, fd00::2/64".to_string()),
            Just("AllowedIPs = 10.0.0.0/16, ::/0".to_string()),
            Just("Endpoint = hub.example.org:51820".to_string()),
            Just("MTU = 1420".to_string()),
            Just("ProxyEndpoint = https://hub.example.org/proxyguard".to_string()),
            "ProxyEndpoint = [ -~]{0,30}",
            "(Address|AllowedIPs) = [0-9./:, a-f]{0,40}",
            "MTU = [0-9]{0,6}",
            "Endpoint = [a-z0-9.:\\[\\]]{0,30}",
            "PersistentKeepalive = (off|[0-9]{0,6})",
            "[A-Za-z]{1,12} ?=? ?[ -~]{0,30}",
            "[ -~]{0,60}",
        ]
    }

    proptest::proptest! {
        /// Whatever a server answers, the parser answers a profile or an error, never a panic;
        /// and a profile it takes reads back the same from what it renders.
        #[test]
        fn any_text_parses_or_is_refused_and_what_parses_reads_back(
            lines in proptest::collection::vec(line(), 0..16),
            noise in "\\PC{0,200}",
        ) {
            let _ = WgProfile::parse(&noise);
            let _ = expiry(&with_expiry("", &noise));
            if let Ok(p) = WgProfile::parse(&lines.join("\n")) {
                proptest::prop_assert_eq!(WgProfile::parse(&p.render()), Ok(p));
            }
        }
    }
}
