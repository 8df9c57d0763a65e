//! OpenVPN's management interface, over the unix socket the client container shares with the
//! node: the tunnel's state and the node's VPN address (OpenVPN runs with `--ifconfig-noexec
//! --route-noexec`, so no interface carries it), and the state changes that follow (reconnects,
//! a new address).

use std::net::Ipv4Addr;
use std::path::Path;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// One state of the tunnel, as OpenVPN reports it:
/// `<time>,<state>,<detail>,<local address>,<remote address>,<remote port>,...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelState {
    pub time: u64,
    /// CONNECTING, WAIT, AUTH, GET_CONFIG, ASSIGN_IP, ADD_ROUTES, CONNECTED, RECONNECTING, EXITING...
    pub name: String,
    pub detail: String,
    /// The VPN address, once assigned.
    pub address: Option<Ipv4Addr>,
    pub remote: Option<String>,
}

impl TunnelState {
    pub fn connected(&self) -> bool {
        self.name == "CONNECTED"
    }

    /// Whether this state means the VPN server answered: a client reaches AUTH only once the
    /// server's first packet arrived; a silent server leaves it in WAIT, TCP_CONNECT or
    /// RECONNECTING.
    pub fn server_answered(&self) -> bool {
        matches!(
            self.name.as_str(),
            "AUTH" | "GET_CONFIG" | "ASSIGN_IP" | "ADD_ROUTES" | "CONNECTED"
        )
    }
}

/// What went wrong talking to OpenVPN.
#[derive(Debug, thiserror::Error)]
pub enum ManagementError {
    /// the socket could not be reached or broke
    #[error("OpenVPN management socket {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// OpenVPN closed the socket
    #[error("OpenVPN closed its management socket {0}")]
    Closed(String),
    /// a line was not what the interface promises
    #[error("unexpected line from OpenVPN's management interface: {0:?}")]
    Garbled(String),
}

/// Parses a state line (without the `>STATE:` prefix of real-time messages).
pub fn parse_state(line: &str) -> Result<TunnelState, ManagementError> {
    let garbled = || ManagementError::Garbled(line.to_string());
    let mut f = line.split(',');
    let time = f.next().and_then(|t| t.parse().ok()).ok_or_else(garbled)?;
    let name = f
        .next()
        .filter(|n| !n.is_empty())
        .ok_or_else(garbled)?
        .to_string();
    let detail = f.next().unwrap_or("").to_string();
    let address = f
        .next()
        .filter(|a| !a.is_empty())
        .map(|a| a.parse().map_err(|_| garbled()))
        .transpose()?;
    let remote = f.next().filter(|r| !r.is_empty()).map(str::to_string);
    Ok(TunnelState {
        time,
        name,
        detail,
        address,
        remote,
    })
}

/// A connection to the management interface.
#[derive(Debug)]
pub struct Management {
    path: String,
    lines: tokio::io::Lines<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
}

impl Management {
    pub async fn connect(path: &Path) -> Result<Management, ManagementError> {
        let shown = path.display().to_string();
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ManagementError::Io {
                path: shown.clone(),
                source,
            })?;
        let (r, writer) = stream.into_split();
        Ok(Management {
            path: shown,
            lines: BufReader::new(r).lines(),
            writer,
        })
    }

    async fn line(&mut self) -> Result<String, ManagementError> {
        match self.lines.next_line().await {
            Ok(Some(l)) => Ok(l.trim_end_matches('\r').to_string()),
            Ok(None) => Err(ManagementError::Closed(self.path.clone())),
            Err(source) => Err(ManagementError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    async fn send(&mut self, command: &str) -> Result<(), ManagementError> {
        let path = self.path.clone();
        self.writer
            .write_all(format!("{command}\n").as_bytes())
            .await
            .map_err(|source| ManagementError::Io { path, source })
    }

    /// The current state (`state` command). Real-time messages that arrive meanwhile are
    /// skipped.
    pub async fn state(&mut self) -> Result<TunnelState, ManagementError> {
        self.send("state").await?;
        let mut last = None;
        loop {
            let l = self.line().await?;
            if l == "END" {
                return last.ok_or(ManagementError::Garbled(
                    "state: no state line before END".into(),
                ));
            }
            if l.starts_with('>') {
                continue;
            }
            last = Some(parse_state(&l)?);
        }
    }

    /// The states since OpenVPN started (`state all`), oldest first.
    pub async fn history(&mut self) -> Result<Vec<TunnelState>, ManagementError> {
        self.send("state all").await?;
        let mut states = Vec::new();
        loop {
            let l = self.line().await?;
            if l == "END" {
                return Ok(states);
            }
            if !l.starts_with('>') {
                states.push(parse_state(&l)?);
            }
        }
    }

    /// Asks OpenVPN to report every state change as it happens.
    pub async fn follow(&mut self) -> Result<(), ManagementError> {
        self.send("state on").await
    }

    /// Asks OpenVPN to reconnect (SIGUSR1), as after its profile changed.
    pub async fn reconnect(&mut self) -> Result<(), ManagementError> {
        self.send("signal SIGUSR1").await
    }

    /// The next state change (after [`Management::follow`]).
    pub async fn next_change(&mut self) -> Result<TunnelState, ManagementError> {
        loop {
            let l = self.line().await?;
            if let Some(s) = l.strip_prefix(">STATE:") {
                return parse_state(s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_lines_parse_and_garbage_is_refused() {
        let s =
            parse_state("1732615000,CONNECTED,SUCCESS,10.76.0.2,10.99.0.1,1194,,").expect("state");
        assert!(s.connected());
        assert_eq!(s.address, Some(Ipv4Addr::new(10, 76, 0, 2)));
        assert_eq!(s.remote.as_deref(), Some("10.99.0.1"));
        let s = parse_state("1732615001,RECONNECTING,ping-restart,,,,,").expect("state");
        assert_eq!((s.name.as_str(), s.address), ("RECONNECTING", None));
        for bad in ["", "x,CONNECTED", "1,", "1,CONNECTED,SUCCESS,not-an-ip"] {
            assert!(parse_state(bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        /// Whatever OpenVPN (or something else on the socket) writes: a state or an error.
        #[test]
        fn any_state_line_parses_or_is_refused(line in "\\PC{0,120}") {
            let _ = parse_state(&line);
        }

        #[test]
        fn state_like_lines_parse_or_are_refused(fields in proptest::collection::vec("[0-9A-Z.,]{0,16}", 0..10)) {
            let _ = parse_state(&fields.join(","));
        }
    }
}
