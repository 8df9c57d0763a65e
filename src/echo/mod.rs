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

mod child;
mod parent;
mod stream;

pub use stream::Pattern;

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
            } => parent::run(
                &env,
                organizations,
                Duration::from_secs(timeout_secs),
                Duration::try_from_secs_f64(stream_secs).unwrap_or(Duration::ZERO),
            )
            .await
            .map(|r| serde_json::to_string(&r).unwrap_or_default()),
            Input::Child { window_secs } => child::run(Duration::from_secs(window_secs))
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

#[cfg(test)]
mod tests {
    use super::child::*;
    use super::parent::*;
    use super::stream::*;
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
