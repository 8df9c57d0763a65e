//! The echo algorithm: the VPN feature test, as an algorithm container (`algonet echo`).
//!
//! Parent (`{"method": "parent", "organizations": [..]}`): creates a child task on those
//! organizations, waits until every child's `echo` port (and `echo-udp` port) is registered,
//! echoes a random line to each over TCP (round-trip time), streams to it and from it for
//! `stream_secs` each way (throughput per direction, every byte checked), echoes a datagram over
//! UDP, then tells each child to stop. Its output is one [`Probe`] per child. Child
//! (`{"method": "child"}`): on 8888/tcp a line-echo server that also takes `SINK` (read to the
//! end, answer the count) and `SOURCE <ms>` (stream for that long), and a datagram echo on
//! 9000/udp, up until the parent says `QUIT` or its window ends.
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
/// The child's commands, each a line on a fresh connection (an echoed line is random hex).
const SINK: &[u8] = b"SINK\n";
const SOURCE: &str = "SOURCE ";
const QUIT: &[u8] = b"QUIT\n";
/// The longest line the child reads (an echoed line is 33 bytes).
const MAX_LINE: usize = 4096;
/// Bytes written at a time while streaming.
const CHUNK: usize = 64 << 10;
/// Streamed bytes repeat 0, 1, ..., 250: a period that no power-of-two chunking lines up with,
/// so a lost, repeated or reordered chunk shows.
const PERIOD: usize = 251;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum Input {
    Parent {
        organizations: Vec<OrganizationId>,
        /// How long to wait for all children's addresses.
        #[serde(default = "default_timeout")]
        timeout_secs: u64,
        /// How long to stream each way to each child.
        #[serde(default = "default_stream")]
        stream_secs: f64,
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

pub fn default_stream() -> f64 {
    2.0
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
    /// Parent -> child, sustained for the stream time.
    pub up_mbit_s: Option<f64>,
    /// Child -> parent.
    pub down_mbit_s: Option<f64>,
    pub error: Option<String>,
}

impl Probe {
    /// A child not reached yet: nothing known, nothing measured.
    fn new(organization_id: OrganizationId) -> Probe {
        Probe {
            organization_id,
            ip: None,
            port: None,
            udp_port: None,
            tcp_ok: false,
            udp_ok: false,
            rtt_ms: None,
            up_mbit_s: None,
            down_mbit_s: None,
            error: None,
        }
    }

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
    #[error("streamed bytes corrupted: {0}")]
    Corrupted(String),
    #[error("not a command: {0:?}")]
    BadCommand(String),
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
    // The node encodes every value as vantage6's does.
    let var = |k: &'static str| {
        std::env::var(k)
            .map(|v| crate::api::env::decode(&v))
            .map_err(|_| EchoError::Unset(k))
    };
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
                stream_secs,
            } => parent(
                &env,
                organizations,
                Duration::from_secs(timeout_secs),
                Duration::try_from_secs_f64(stream_secs).unwrap_or(Duration::ZERO),
            )
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
    stream: Duration,
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
        databases: None,
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
            ip: t.and_then(|a| a.ip.clone()),
            port: t.map(|a| a.port),
            udp_port: u.map(|a| a.port),
            ..Probe::new(*org)
        };
        let ip: Option<Ipv4Addr> = p.ip.as_deref().and_then(|i| i.parse().ok());
        match (ip, p.port) {
            (Some(ip), Some(port)) => {
                match probe_tcp(SocketAddrV4::new(ip, port.0), stream, &mut p).await {
                    Ok(()) => p.tcp_ok = true,
                    Err(e) => p.error = Some(format!("tcp: {e}")),
                }
            }
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

/// One echoed line (round-trip time, ms), then `stream` of bytes to the child and `stream`
/// from it, each on a connection of its own (Mbit/s per direction); fills in `p` as it goes.
async fn probe_tcp(to: SocketAddrV4, stream: Duration, p: &mut Probe) -> Result<(), ProbeError> {
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
    p.rtt_ms = Some(t.elapsed().as_secs_f64() * 1000.0);
    if back.trim_end() != line {
        return Err(ProbeError::Differs {
            sent: line,
            got: back,
        });
    }
    if stream.is_zero() {
        return Ok(());
    }
    // Beyond the stream time, a slow tunnel gets this long to deliver what is in flight.
    let limit = stream + Duration::from_secs(30);
    p.up_mbit_s = Some(within(limit, "the stream to the child", upload(to, stream)).await?);
    p.down_mbit_s = Some(within(limit, "the stream from the child", download(to, stream)).await?);
    Ok(())
}

async fn within<T>(
    limit: Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T, ProbeError>>,
) -> Result<T, ProbeError> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| ProbeError::TimedOut(what.into()))?
}

fn mbit_s(bytes: u64, t: Instant) -> f64 {
    bytes as f64 * 8.0 / t.elapsed().as_secs_f64() / 1e6
}

/// Streams to the child's `SINK` for `stream`; the rate is of the bytes the child counted, to
/// its answer.
async fn upload(to: SocketAddrV4, stream: Duration) -> Result<f64, ProbeError> {
    let (r, mut w) = connect(to).await?.into_split();
    w.write_all(SINK).await?;
    let t = Instant::now();
    let sent = send_pattern(&mut w, stream).await?;
    w.shutdown().await?;
    let mut answer = String::new();
    BufReader::new(r).read_line(&mut answer).await?;
    let counted: u64 = answer
        .trim()
        .parse()
        .map_err(|_| ProbeError::Corrupted(format!("the child answered {answer:?}")))?;
    if counted != sent {
        return Err(ProbeError::Corrupted(format!(
            "sent {sent} bytes, the child checked {counted}"
        )));
    }
    Ok(mbit_s(counted, t))
}

/// Has the child stream for `stream` and reads to the end.
async fn download(to: SocketAddrV4, stream: Duration) -> Result<f64, ProbeError> {
    let (mut r, mut w) = connect(to).await?.into_split();
    let command = format!("{SOURCE}{}\n", stream.as_millis());
    w.write_all(command.as_bytes()).await?;
    let t = Instant::now();
    let got = receive_pattern(&mut r).await?;
    Ok(mbit_s(got, t))
}

/// The streamed bytes, [`PERIOD`]-periodic; the data-plane tests' bulk transfers send and check
/// the same.
#[derive(Clone, Debug)]
pub struct Pattern(Vec<u8>);

impl Pattern {
    /// The longest run [`Pattern::at`] gives.
    pub const MAX_LEN: usize = CHUNK;

    pub fn new() -> Pattern {
        Pattern((0..CHUNK + PERIOD).map(|i| (i % PERIOD) as u8).collect())
    }

    /// The `len` bytes (at most [`Pattern::MAX_LEN`]) that follow the first `offset` of a stream.
    pub fn at(&self, offset: u64, len: usize) -> &[u8] {
        let at = (offset % PERIOD as u64) as usize;
        &self.0[at..at + len]
    }
}

impl Default for Pattern {
    fn default() -> Pattern {
        Pattern::new()
    }
}

/// Writes the pattern for `d`; returns the bytes written.
async fn send_pattern(
    w: &mut (impl tokio::io::AsyncWrite + Unpin),
    d: Duration,
) -> std::io::Result<u64> {
    let pat = Pattern::new();
    let end = Instant::now() + d;
    let mut sent = 0u64;
    while Instant::now() < end {
        sent += w.write(pat.at(sent, CHUNK)).await? as u64;
    }
    Ok(sent)
}

/// Reads to the end, checking every byte against the pattern; returns the bytes read.
async fn receive_pattern(r: &mut (impl tokio::io::AsyncRead + Unpin)) -> Result<u64, ProbeError> {
    let pat = Pattern::new();
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(got);
        }
        if buf[..n] != *pat.at(got, n) {
            return Err(ProbeError::Corrupted(format!(
                "bytes {got}..{} differ from what was sent",
                got + n as u64
            )));
        }
        got += n as u64;
    }
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
    s.write_all(QUIT).await?;
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
                    if let Err(e) = serve(s, quit_tx).await {
                        eprintln!("echo: connection from {peer}: {e}");
                    }
                });
            }
        }
    }
    udp_task.abort();
    Ok(served)
}

/// One connection to the child: echoed lines, or one command.
async fn serve(
    s: tokio::net::TcpStream,
    quit: tokio::sync::mpsc::Sender<()>,
) -> Result<(), ProbeError> {
    let (r, mut w) = s.into_split();
    let mut lines = BufReader::new(r);
    let mut line = Vec::new();
    loop {
        line.clear();
        if (&mut lines)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await?
            == 0
        {
            return Ok(());
        }
        if !line.ends_with(b"\n") {
            return Err(ProbeError::BadCommand(format!(
                "a line of {} bytes or more",
                line.len()
            )));
        }
        if line == QUIT {
            let _ = quit.send(()).await;
            return Ok(());
        }
        if line == SINK {
            // The answer is the count of bytes that matched to the end; a mismatch or a
            // failed read ends the connection without one, which the parent reports.
            let got = receive_pattern(&mut lines).await?;
            w.write_all(format!("{got}\n").as_bytes()).await?;
            return Ok(());
        }
        if let Some(ms) = std::str::from_utf8(&line)
            .ok()
            .and_then(|l| l.trim_end().strip_prefix(SOURCE))
        {
            let ms: u64 = ms
                .parse()
                .map_err(|_| ProbeError::BadCommand(String::from_utf8_lossy(&line).into()))?;
            // At most a minute: the parent asks for seconds.
            send_pattern(&mut w, Duration::from_millis(ms.min(60_000))).await?;
            w.shutdown().await?;
            return Ok(());
        }
        w.write_all(&line).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn listener() -> (tokio::net::TcpListener, SocketAddrV4) {
        let l = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let std::net::SocketAddr::V4(at) = l.local_addr().expect("address") else {
            unreachable!("bound to IPv4")
        };
        (l, at)
    }

    /// A child's connection handler on a loopback port; its outcome once the connection ends.
    async fn one_connection() -> (
        SocketAddrV4,
        tokio::task::JoinHandle<Result<(), ProbeError>>,
    ) {
        let (l, at) = listener().await;
        let served = tokio::spawn(async move {
            let (s, _) = l.accept().await.expect("accept");
            let (quit, _) = tokio::sync::mpsc::channel(1);
            serve(s, quit).await
        });
        (at, served)
    }

    /// Sends `bytes` on a fresh connection, closes its sending side and returns the answer.
    async fn exchange(to: SocketAddrV4, bytes: &[u8]) -> Vec<u8> {
        let mut s = tokio::net::TcpStream::connect(to).await.expect("connect");
        s.write_all(bytes).await.expect("write");
        s.shutdown().await.expect("shutdown");
        let mut answer = Vec::new();
        // The child may end the connection with a reset when it stops reading early.
        let _ = s.read_to_end(&mut answer).await;
        answer
    }

    #[tokio::test]
    async fn a_probe_echoes_and_streams_both_ways() {
        let (l, at) = listener().await;
        // The probe opens three connections at once: the echoed line (open to the end), the
        // upload, the download; the child serves each on a task of its own, as `child` does.
        let child = tokio::spawn(async move {
            let mut served = Vec::new();
            for _ in 0..3 {
                let (s, _) = l.accept().await.expect("accept");
                let (quit, _) = tokio::sync::mpsc::channel(1);
                served.push(tokio::spawn(serve(s, quit)));
            }
            served
        });
        let mut p = Probe::new(OrganizationId(1));
        probe_tcp(at, Duration::from_millis(200), &mut p)
            .await
            .expect("probe");
        for served in child.await.expect("child") {
            served.await.expect("served").expect("clean");
        }
        assert!(p.rtt_ms.is_some());
        assert!(p.up_mbit_s.is_some_and(|r| r > 0.0), "{p:?}");
        assert!(p.down_mbit_s.is_some_and(|r| r > 0.0), "{p:?}");
    }

    #[tokio::test]
    async fn the_child_refuses_what_is_not_a_command() {
        for bad in [
            &b"SOURCE soon\n"[..],
            b"SOURCE -5\n",
            &[b'x'; MAX_LINE + 10],
        ] {
            let (at, served) = one_connection().await;
            assert!(exchange(at, bad).await.is_empty(), "answered {bad:?}");
            let outcome = served.await.expect("served");
            assert!(
                matches!(outcome, Err(ProbeError::BadCommand(_))),
                "{outcome:?}"
            );
        }
    }

    #[tokio::test]
    async fn the_child_finds_streamed_bytes_that_differ() {
        let (at, served) = one_connection().await;
        let mut sent = SINK.to_vec();
        sent.extend(Pattern::new().at(0, 1000));
        sent[SINK.len() + 500] ^= 1;
        assert!(
            exchange(at, &sent).await.is_empty(),
            "counted corrupt bytes"
        );
        let outcome = served.await.expect("served");
        assert!(
            matches!(outcome, Err(ProbeError::Corrupted(_))),
            "{outcome:?}"
        );

        // The same bytes unharmed are counted.
        let (at, served) = one_connection().await;
        let mut sent = SINK.to_vec();
        sent.extend(Pattern::new().at(0, 1000));
        assert_eq!(exchange(at, &sent).await, b"1000\n");
        served.await.expect("served").expect("clean");
    }
}
