//! WireGuard over TCP, as eduVPN's ProxyGuard carries it for sites whose firewall lets no UDP
//! through: an HTTP/1.1 `GET` with `Connection: Upgrade` and `Upgrade: UoTLV/1`, answered
//! `101 Switching Protocols`, then each datagram on the connection after its 2-byte length
//! ([`uotlv`]). Both ends of a connection relay between it and a UDP socket on loopback:
//!
//! - the node's end ([`Client`]): the device sends to a socket on `127.0.0.1` of the hub
//!   namespace (its hub's endpoint), which relays to the proxy URL the profile names
//!   (`ProxyEndpoint`, as eduVPN writes it); the connection is made from the node's own
//!   namespace, as its calls to its server are (the same resolver, proxy settings and trusted
//!   authorities), and made again whenever it ends;
//! - the server's end (the built-in hub's `GET /vpn/tcp`): a socket of its own per connection,
//!   sending to the hub's UDP port on `127.0.0.1`.
//!
//! Only WireGuard's datagrams cross, already encrypted: the relay reads nothing of them.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UdpSocket;

/// A connection on which nothing came for this long is ended. Each end hears from the other
/// well within it: a node probes its hub every 5 s, a hub (built-in) sends keepalives every
/// 25 s, and WireGuard shakes hands again every two minutes while traffic flows.
pub const IDLE: Duration = Duration::from_secs(150);

/// Most bytes of datagrams gathered into one write to the connection.
const GATHER: usize = 64 * 1024;

/// Relays between `stream` and `udp` until either fails or the stream ends or idles:
/// datagrams `udp` receives go on the stream framed (those that wait together in one write),
/// and those from the stream go to `peer`, the address the last datagram came from (or the one
/// it starts with). Datagrams for no known peer yet are dropped, as UDP may drop them.
pub async fn relay<S>(
    stream: S,
    udp: &UdpSocket,
    peer: &Mutex<Option<SocketAddr>>,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite,
{
    let (mut from_stream, mut to_stream) = tokio::io::split(stream);
    let up = async {
        let mut datagram = vec![0u8; uotlv::MOST];
        let mut out = Vec::with_capacity(GATHER + uotlv::HEADER + uotlv::MOST);
        loop {
            let (n, from) = udp.recv_from(&mut datagram).await?;
            *crate::sync::lock(peer) = Some(from);
            out.clear();
            let _ = uotlv::encode(&datagram[..n], &mut out);
            while out.len() < GATHER {
                match udp.try_recv_from(&mut datagram) {
                    Ok((n, _)) => {
                        let _ = uotlv::encode(&datagram[..n], &mut out);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            to_stream.write_all(&out).await?;
            to_stream.flush().await?;
        }
    };
    let down = async {
        let mut reader = uotlv::Reader::default();
        loop {
            let read = from_stream.read(reader.space());
            let n = tokio::time::timeout(IDLE, read)
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "idle"))??;
            if n == 0 {
                return Ok(());
            }
            reader.filled(n);
            let to = *crate::sync::lock(peer);
            while let Some(d) = reader.next() {
                if let Some(to) = to {
                    // A refused send (nothing listens yet) is a lost datagram, as on UDP.
                    let _ = udp.send_to(d, to).await;
                }
            }
        }
    };
    tokio::select! {
        r = up => r,
        r = down => r,
    }
}

/// The node's end: a loopback socket the device sends to, relayed to a ProxyGuard URL.
#[derive(Debug)]
pub struct Client {
    udp: UdpSocket,
    /// Where `udp` is bound.
    at: SocketAddr,
    url: reqwest::Url,
    http: reqwest::Client,
}

/// Waits before connecting again: the first after a connection ended, doubling after each
/// failure up to the last.
const RETRY: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));

/// How long making a connection (TCP, TLS and the upgrade) may take.
const CONNECT: Duration = Duration::from_secs(15);

/// Why the node's end could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the WireGuard proxy URL {0:?} is not an http(s) URL")]
    Url(String),
    #[error("the WireGuard proxy at {url}: {what}")]
    Setup { url: String, what: String },
}

impl Client {
    /// The node's end for `url`, trusting also `trusted`, the device sending to `udp` (a
    /// socket bound on loopback where the device is).
    pub fn new(
        url: &str,
        trusted: &[reqwest::Certificate],
        udp: std::net::UdpSocket,
    ) -> Result<Client, ClientError> {
        let parsed = reqwest::Url::parse(url).map_err(|_| ClientError::Url(url.into()))?;
        if !matches!(
            (parsed.scheme(), parsed.host_str()),
            ("http" | "https", Some(_))
        ) {
            return Err(ClientError::Url(url.into()));
        }
        let setup = |what: String| ClientError::Setup {
            url: url.into(),
            what,
        };
        let mut http = reqwest::Client::builder()
            // An upgrade is HTTP/1.1's: never offered HTTP/2 by ALPN.
            .http1_only()
            .connect_timeout(CONNECT)
            .redirect(reqwest::redirect::Policy::none());
        for cert in trusted {
            http = http.add_root_certificate(cert.clone());
        }
        let http = http.build().map_err(|e| setup(e.to_string()))?;
        let at = udp
            .local_addr()
            .map_err(|e| setup(format!("its socket: {e}")))?;
        let udp = udp
            .set_nonblocking(true)
            .and_then(|()| UdpSocket::from_std(udp))
            .map_err(|e| setup(format!("its socket: {e}")))?;
        Ok(Client {
            udp,
            at,
            url: parsed,
            http,
        })
    }

    /// Where the device sends: the hub's endpoint as the device sees it.
    pub fn endpoint(&self) -> SocketAddr {
        self.at
    }

    /// The proxy's URL.
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    /// One upgraded connection to the proxy.
    async fn connect(&self) -> Result<reqwest::Upgraded, String> {
        let request = self
            .http
            .get(self.url.clone())
            .header(reqwest::header::CONNECTION, "Upgrade")
            .header(reqwest::header::UPGRADE, uotlv::UPGRADE)
            .send();
        let answer = tokio::time::timeout(CONNECT, request)
            .await
            .map_err(|_| format!("no answer within {}s", CONNECT.as_secs()))?
            .map_err(|e| crate::api::client::unreachable(&e).to_string())?;
        let status = answer.status();
        let upgrade = answer
            .headers()
            .get(reqwest::header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if status != reqwest::StatusCode::SWITCHING_PROTOCOLS
            || !upgrade.eq_ignore_ascii_case(uotlv::UPGRADE)
        {
            return Err(format!(
                "answered {status} (upgrade {upgrade:?}), not a switch to {}",
                uotlv::UPGRADE
            ));
        }
        answer.upgrade().await.map_err(|e| e.to_string())
    }

    /// Relays until dropped: connects, relays until the connection ends, and connects again,
    /// a second after a connection ended and longer after each failure, up to half a minute.
    pub async fn run(self) {
        let peer = Mutex::new(None);
        let mut wait = RETRY.0;
        loop {
            match self.connect().await {
                Ok(stream) => {
                    tracing::info!(url = %self.url, "WireGuard over TCP: connected");
                    wait = RETRY.0;
                    let ended = relay(stream, &self.udp, &peer).await;
                    let why = ended
                        .err()
                        .map_or_else(|| "closed".into(), |e| e.to_string());
                    tracing::warn!(url = %self.url, "WireGuard over TCP: the connection ended ({why}); connecting again");
                }
                Err(e) => {
                    tracing::warn!(url = %self.url, "WireGuard over TCP: {e}; trying again in {}s", wait.as_secs());
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(RETRY.1);
        }
    }
}

/// Whether an HTTP request asks for UoTLV/1: `Upgrade: UoTLV/1` and `upgrade` among the
/// `Connection` header's options (any case, as HTTP's tokens are).
pub fn asks_upgrade(headers: &reqwest::header::HeaderMap) -> bool {
    let upgrade = headers
        .get(reqwest::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(uotlv::UPGRADE));
    let connection = headers
        .get_all(reqwest::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|o| o.trim().eq_ignore_ascii_case("upgrade"));
    upgrade && connection
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two relays joined by an in-memory stream: datagrams sent to one end's socket come out of
    /// the other's, to whoever sent last there, both ways, bytes unchanged.
    #[tokio::test]
    async fn datagrams_cross_a_stream_both_ways() {
        let (a, b) = tokio::io::duplex(4096);
        let bind = || async { UdpSocket::bind("127.0.0.1:0").await.expect("bind") };
        let (end_a, end_b, user_a, user_b) =
            (bind().await, bind().await, bind().await, bind().await);
        // b's end sends to user_b from the start, as the server's end sends to the hub.
        let peer_b = Mutex::new(Some(user_b.local_addr().expect("addr")));
        let peer_a = Mutex::new(None);
        let to_a = end_a.local_addr().expect("addr");
        let relays = async {
            tokio::select! {
                r = relay(a, &end_a, &peer_a) => r,
                r = relay(b, &end_b, &peer_b) => r,
            }
        };
        let traffic = async {
            let mut buf = vec![0u8; 70_000];
            for len in [1usize, 148, 1420, 9000, 65_000] {
                let d: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                user_a.send_to(&d, to_a).await.expect("send");
                let (n, _) = user_b.recv_from(&mut buf).await.expect("recv");
                assert_eq!(&buf[..n], &d[..], "a -> b, {len} bytes");
                user_b
                    .send_to(&d, end_b.local_addr().expect("addr"))
                    .await
                    .expect("send");
                let (n, _) = user_a.recv_from(&mut buf).await.expect("recv");
                assert_eq!(&buf[..n], &d[..], "b -> a, {len} bytes");
            }
        };
        tokio::select! {
            r = relays => panic!("a relay ended: {r:?}"),
            () = traffic => {}
        }
    }

    /// Takes one connection on `listener`, answers its upgrade by hand and gives the stream.
    async fn switched(listener: &tokio::net::TcpListener) -> tokio::net::TcpStream {
        let (mut c, _) = listener.accept().await.expect("accept");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            c.read_exact(&mut byte).await.expect("the request");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_lowercase();
        assert!(head.starts_with("get /p/tcp http/1.1"), "{head}");
        assert!(head.contains("upgrade: uotlv/1"), "{head}");
        c.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: UoTLV/1\r\nConnection: Upgrade\r\n\r\n",
        )
        .await
        .expect("answer");
        c
    }

    /// The node's end makes its connection again when the proxy closes it, and datagrams the
    /// device sends then cross the new one.
    #[tokio::test]
    async fn the_nodes_end_connects_again_when_its_connection_ends() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let at = listener.local_addr().expect("addr");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let client = Client::new(&format!("http://{at}/p/tcp"), &[], udp).expect("client");
        let endpoint = client.endpoint();
        let running = tokio::spawn(client.run());
        let device = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        for round in 0..2u8 {
            let mut c = switched(&listener).await;
            device.send_to(&[round; 100], endpoint).await.expect("send");
            let mut got = [0u8; 102];
            c.read_exact(&mut got).await.expect("a frame");
            assert_eq!(got[..2], [0, 100]);
            assert!(got[2..].iter().all(|b| *b == round), "round {round}");
            drop(c);
        }
        running.abort();
    }

    #[tokio::test]
    async fn a_relay_ends_when_its_stream_closes() {
        let (a, b) = tokio::io::duplex(64);
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        drop(b);
        let ended = relay(a, &udp, &Mutex::new(None)).await;
        assert!(ended.is_ok(), "{ended:?}");
    }

    #[test]
    fn only_a_uotlv_upgrade_is_taken() {
        let asks = |pairs: &[(&str, &str)]| {
            let mut h = reqwest::header::HeaderMap::new();
            for (k, v) in pairs {
                h.append(
                    reqwest::header::HeaderName::from_bytes(k.as_bytes()).expect("a name"),
                    v.parse().expect("a value"),
                );
            }
            asks_upgrade(&h)
        };
        assert!(asks(&[("connection", "Upgrade"), ("upgrade", "UoTLV/1")]));
        assert!(asks(&[
            ("connection", "keep-alive, upgrade"),
            ("upgrade", "uotlv/1")
        ]));
        assert!(!asks(&[("upgrade", "UoTLV/1")]));
        assert!(!asks(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket")
        ]));
        assert!(!asks(&[("connection", "Upgrade"), ("upgrade", "UoTLV/2")]));
        assert!(!asks(&[]));
    }

    #[test]
    fn a_proxy_url_must_be_http() {
        for bad in [
            "vpn.example.org/proxyguard",
            "ftp://h/p",
            "https://",
            "/api/vpn/tcp",
        ] {
            let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            assert!(
                matches!(Client::new(bad, &[], udp), Err(ClientError::Url(_))),
                "{bad}"
            );
        }
    }
}
