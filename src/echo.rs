//! The echo algorithm: the VPN feature test, as an algorithm container (`algonet echo`).
//!
//! Parent (`{"method": "parent", "organizations": [..]}`): creates a child task on those
//! organizations, waits until every child's `echo` port (and `echo-udp` port) is registered,
//! echoes a random line to each over TCP (round-trip time), pushes a short bulk transfer through
//! it (throughput) and a datagram over UDP, then tells each child to stop. Its output is one
//! [`Probe`] per child. Child (`{"method": "child"}`): a line-echo server on 8888/tcp and a
//! datagram echo on 9000/udp, up until the parent says `QUIT` or its window ends.
//!
//! It speaks only vantage6 4.x's algorithm API (through the node's proxy), so it runs unchanged
//! on a vantage6 node.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::api::client::{Api, ClientError, Session};
use crate::api::codec;
use crate::api::{
    env as vars, Addresses, ContainerIdentity, NewTask, OrganizationId, PublicPort, Task,
    TaskOrganization,
};

pub const TCP_PORT: u16 = 8888;
pub const UDP_PORT: u16 = 9000;
pub const TCP_LABEL: &str = "echo";
pub const UDP_LABEL: &str = "echo-udp";
/// Bytes pushed through each child for the throughput figure.
const BULK: usize = 4 << 20;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum Input {
    Parent {
        organizations: Vec<OrganizationId>,
        /// How long to wait for all children's addresses.
        #[serde(default = "default_timeout")]
        timeout_secs: u64,
    },
    Child {
        #[serde(default = "default_window")]
        window_secs: u64,
    },
}

fn default_timeout() -> u64 {
    90
}

fn default_window() -> u64 {
    300
}

/// What the parent found for one child.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Probe {
    pub organization_id: OrganizationId,
    pub ip: Option<String>,
    pub port: Option<PublicPort>,
    pub udp_port: Option<PublicPort>,
    pub tcp_ok: bool,
    pub udp_ok: bool,
    pub rtt_ms: Option<f64>,
    pub mbit_s: Option<f64>,
    pub error: Option<String>,
}

impl Probe {
    pub fn ok(&self) -> bool {
        self.tcp_ok && self.udp_ok
    }
}

/// The parent's output.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Report {
    pub probes: Vec<Probe>,
}

/// Why the echo algorithm could not do its part.
#[derive(Debug, thiserror::Error)]
pub enum EchoError {
    /// vantage6's environment is incomplete
    #[error("environment variable {0} is not set")]
    Unset(&'static str),
    /// a file the environment names could not be read or written
    #[error("{var} {path}: {source}")]
    File {
        var: &'static str,
        path: String,
        source: std::io::Error,
    },
    /// the token is not a container token
    #[error("the token {0}")]
    Token(String),
    /// the input is not the echo algorithm's
    #[error("input {text:?}: {source}")]
    Input {
        text: String,
        source: serde_json::Error,
    },
    /// the server (through the node's proxy) refused or answered garbage
    #[error(transparent)]
    Server(#[from] ClientError),
    /// a socket or the runtime failed
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Why a probe of a child failed (it becomes the row's note).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{0} timed out")]
    TimedOut(String),
    #[error("echo differs: sent {sent:?}, got {got:?}")]
    Differs { sent: String, got: String },
    #[error("bulk echo corrupted")]
    Corrupted,
    #[error("no datagram echoed by {0} in 10 tries")]
    NoEcho(SocketAddrV4),
}

struct Env {
    api: Session,
    token: String,
    input: String,
    output: std::path::PathBuf,
}

fn env() -> Result<Env, EchoError> {
    let var = |k: &'static str| std::env::var(k).map_err(|_| EchoError::Unset(k));
    let read = |k: &'static str| -> Result<String, EchoError> {
        let path = var(k)?;
        std::fs::read_to_string(&path).map_err(|source| EchoError::File {
            var: k,
            path,
            source,
        })
    };
    let base = format!(
        "{}:{}{}",
        var(vars::HOST)?,
        var(vars::PORT)?,
        var(vars::API_PATH).unwrap_or_default()
    );
    let token = read(vars::TOKEN_FILE)?.trim().to_string();
    Ok(Env {
        api: Session::new(Api::new(&base)?, token.clone()),
        token,
        input: read(vars::INPUT_FILE)?,
        output: var(vars::OUTPUT_FILE)?.into(),
    })
}

/// The algorithm's own identity from its token (no verification: the server did that).
fn identity(token: &str) -> Result<ContainerIdentity, EchoError> {
    use base64::Engine;
    #[derive(Deserialize)]
    struct Claims {
        sub: ContainerIdentity,
    }
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| EchoError::Token("is not a JWT".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|e| EchoError::Token(format!("is not a JWT: {e}")))?;
    let claims: Claims = serde_json::from_slice(&bytes)
        .map_err(|e| EchoError::Token(format!("names no container identity: {e}")))?;
    Ok(claims.sub)
}

/// `algonet echo`: runs as parent or child according to the input file.
pub fn main() -> Result<(), EchoError> {
    let env = env()?;
    let input: Input =
        serde_json::from_str(env.input.trim()).map_err(|source| EchoError::Input {
            text: env.input.chars().take(100).collect(),
            source,
        })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let output = rt.block_on(async {
        match input {
            Input::Parent {
                organizations,
                timeout_secs,
            } => parent(&env, organizations, Duration::from_secs(timeout_secs))
                .await
                .map(|r| serde_json::to_string(&r).unwrap_or_default()),
            Input::Child { window_secs } => child(Duration::from_secs(window_secs))
                .await
                .map(|served| json!({ "served": served }).to_string()),
        }
    })?;
    std::fs::write(&env.output, output).map_err(|source| EchoError::File {
        var: vars::OUTPUT_FILE,
        path: env.output.display().to_string(),
        source,
    })
}

async fn addresses(env: &Env, label: &str) -> Result<Vec<crate::api::Address>, EchoError> {
    let a: Addresses = env
        .api
        .get(&format!(
            "/vpn/algorithm/addresses?only_children=1&label={label}"
        ))
        .await?;
    Ok(a.addresses)
}

async fn parent(
    env: &Env,
    organizations: Vec<OrganizationId>,
    timeout: Duration,
) -> Result<Report, EchoError> {
    let me = identity(&env.token)?;
    let child_input = codec::encode_json(&Input::Child {
        window_secs: timeout.as_secs() + 120,
    });
    let task = NewTask {
        name: "echo-child".into(),
        description: "echo children".into(),
        image: me.image,
        collaboration_id: None,
        organizations: organizations
            .iter()
            .map(|&id| TaskOrganization {
                id,
                input: child_input.clone(),
            })
            .collect(),
        parent_id: None,
    };
    let task: Task = env.api.post("/task", &task).await?;
    eprintln!(
        "echo: child task {} on organizations {organizations:?}",
        task.id
    );

    let deadline = Instant::now() + timeout;
    let (tcp, udp) = loop {
        let tcp = addresses(env, TCP_LABEL).await?;
        let udp = addresses(env, UDP_LABEL).await?;
        let have = |a: &[crate::api::Address]| {
            organizations
                .iter()
                .all(|o| a.iter().any(|x| x.organization_id == *o && x.ip.is_some()))
        };
        if (have(&tcp) && have(&udp)) || Instant::now() >= deadline {
            break (tcp, udp);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut probes = Vec::new();
    for org in &organizations {
        let t = tcp.iter().find(|a| a.organization_id == *org);
        let u = udp.iter().find(|a| a.organization_id == *org);
        let mut p = Probe {
            organization_id: *org,
            ip: t.and_then(|a| a.ip.clone()),
            port: t.map(|a| a.port),
            udp_port: u.map(|a| a.port),
            tcp_ok: false,
            udp_ok: false,
            rtt_ms: None,
            mbit_s: None,
            error: None,
        };
        let ip: Option<Ipv4Addr> = p.ip.as_deref().and_then(|i| i.parse().ok());
        match (ip, p.port) {
            (Some(ip), Some(port)) => match probe_tcp(SocketAddrV4::new(ip, port.0)).await {
                Ok((rtt, mbit)) => {
                    p.tcp_ok = true;
                    p.rtt_ms = Some(rtt);
                    p.mbit_s = Some(mbit);
                }
                Err(e) => p.error = Some(format!("tcp: {e}")),
            },
            _ => {
                p.error = Some(format!(
                    "no {TCP_LABEL} address within {}s",
                    timeout.as_secs()
                ))
            }
        }
        match (ip, p.udp_port) {
            (Some(ip), Some(port)) => match probe_udp(SocketAddrV4::new(ip, port.0)).await {
                Ok(()) => p.udp_ok = true,
                Err(e) => p.error = Some(format!("udp: {e}")),
            },
            _ => p.error = p.error.or(Some(format!("no {UDP_LABEL} address"))),
        }
        eprintln!("echo: organization {org}: {p:?}");
        probes.push(p);
    }
    // The children have served their purpose.
    for a in &tcp {
        if let Some(ip) = a.ip.as_deref().and_then(|i| i.parse::<Ipv4Addr>().ok()) {
            let _ = quit(SocketAddrV4::new(ip, a.port.0)).await;
        }
    }
    Ok(Report { probes })
}

fn random_line() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn connect(to: SocketAddrV4) -> Result<tokio::net::TcpStream, ProbeError> {
    // The child's port is registered before it starts listening: retry a refused connect.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(to)).await
        {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) if Instant::now() >= deadline => return Err(e.into()),
            Err(_) if Instant::now() >= deadline => {
                return Err(ProbeError::TimedOut(format!("connect to {to}")))
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// One echoed line (round-trip time, ms) and [`BULK`] bytes through the echo (Mbit/s).
async fn probe_tcp(to: SocketAddrV4) -> Result<(f64, f64), ProbeError> {
    let s = connect(to).await?;
    s.set_nodelay(true)?;
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    let line = random_line();
    let mut back = String::new();
    let t = Instant::now();
    w.write_all(format!("{line}\n").as_bytes()).await?;
    tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut back))
        .await
        .map_err(|_| ProbeError::TimedOut("the echoed line".into()))??;
    let rtt = t.elapsed().as_secs_f64() * 1000.0;
    if back.trim_end() != line {
        return Err(ProbeError::Differs {
            sent: line,
            got: back,
        });
    }

    let bulk = vec![b'x'; BULK];
    let t = Instant::now();
    let writer = tokio::spawn(async move {
        w.write_all(&bulk).await?;
        w.write_all(b"\n").await?;
        Ok::<_, std::io::Error>(w)
    });
    let mut got = vec![0u8; BULK + 1];
    tokio::time::timeout(Duration::from_secs(60), r.read_exact(&mut got))
        .await
        .map_err(|_| ProbeError::TimedOut("the bulk echo".into()))??;
    let secs = t.elapsed().as_secs_f64();
    writer.await.map_err(std::io::Error::other)??;
    if !got[..BULK].iter().all(|&b| b == b'x') {
        return Err(ProbeError::Corrupted);
    }
    Ok((rtt, (BULK as f64 * 8.0) / secs / 1e6))
}

async fn probe_udp(to: SocketAddrV4) -> Result<(), ProbeError> {
    let s = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
    let line = random_line();
    for _ in 0..10 {
        s.send_to(line.as_bytes(), to).await?;
        let mut buf = [0u8; 64];
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_secs(1), s.recv_from(&mut buf)).await
        {
            if &buf[..n] != line.as_bytes() {
                return Err(ProbeError::Differs {
                    sent: line,
                    got: String::from_utf8_lossy(&buf[..n]).into_owned(),
                });
            }
            return Ok(());
        }
    }
    Err(ProbeError::NoEcho(to))
}

async fn quit(to: SocketAddrV4) -> Result<(), ProbeError> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(to))
        .await
        .map_err(|_| ProbeError::TimedOut(format!("connect to {to}")))??;
    s.write_all(b"QUIT\n").await?;
    Ok(())
}

/// Serves line echo on TCP and datagram echo on UDP until `QUIT` or the window ends; returns
/// how many connections it served.
async fn child(window: Duration) -> Result<u64, EchoError> {
    let tcp = tokio::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, TCP_PORT)).await?;
    let udp = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, UDP_PORT)).await?;
    eprintln!("echo: child listening on {TCP_PORT}/tcp and {UDP_PORT}/udp");
    let (quit_tx, mut quit_rx) = tokio::sync::mpsc::channel::<()>(1);
    let udp_task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = udp.recv_from(&mut buf).await {
            let _ = udp.send_to(&buf[..n], from).await;
        }
    });
    let mut served = 0;
    let end = tokio::time::sleep(window);
    tokio::pin!(end);
    loop {
        tokio::select! {
            _ = &mut end => break,
            _ = quit_rx.recv() => break,
            accepted = tcp.accept() => {
                let (s, peer) = accepted?;
                served += 1;
                eprintln!("echo: connection from {peer}");
                let quit_tx = quit_tx.clone();
                tokio::spawn(async move {
                    let (r, mut w) = s.into_split();
                    let mut lines = BufReader::new(r);
                    let mut line = Vec::new();
                    while let Ok(n) = lines.read_until(b'\n', &mut line).await {
                        if n == 0 {
                            break;
                        }
                        if line == b"QUIT\n" {
                            let _ = quit_tx.send(()).await;
                            break;
                        }
                        if w.write_all(&line).await.is_err() {
                            break;
                        }
                        line.clear();
                    }
                });
            }
        }
    }
    udp_task.abort();
    Ok(served)
}
