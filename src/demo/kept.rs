//! A demo left running (`algonet demo --keep`): what it is made of, written to `kept.json` in
//! its folder, so that `algonet demo stop` can end it in order and a second `algonet demo`
//! can see it and refuse, touching nothing.
//!
//! Each process is recorded with its start time (field 22 of `/proc/<pid>/stat`): a pid the
//! kernel gave to another process since is never signalled.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::federation::{io, DemoError};
use crate::docker::Docker;

/// A process of the demo.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proc {
    /// `server` or the node's organization.
    pub what: String,
    pub pid: u32,
    /// Clock ticks after boot at which it started.
    pub started: u64,
}

impl Proc {
    /// The process `pid` as it is now, if it runs.
    pub fn of(what: &str, pid: u32) -> Option<Proc> {
        Some(Proc {
            what: what.into(),
            pid,
            started: start_time(pid)?,
        })
    }

    /// Whether the recorded process still runs (the pid not reused).
    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.started)
    }
}

fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// A kept demo.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    /// Nodes first: they are stopped first, so each clears its address at the server.
    pub nodes: Vec<Proc>,
    pub server: Option<Proc>,
    /// The OpenVPN server container, if the demo has one.
    #[serde(default)]
    pub vpn_server: Option<String>,
    pub network: String,
}

fn path(dir: &Path) -> PathBuf {
    dir.join("kept.json")
}

impl Kept {
    pub fn save(&self, dir: &Path) -> Result<(), DemoError> {
        let p = path(dir);
        let text = serde_json::to_vec_pretty(self).map_err(|e| DemoError::Io {
            what: p.display().to_string(),
            source: e.into(),
        })?;
        std::fs::write(&p, text).map_err(io(p.display()))
    }

    /// The record in `dir`, if any (an unreadable one counts as none: nothing to go by).
    pub fn load(dir: &Path) -> Option<Kept> {
        serde_json::from_slice(&std::fs::read(path(dir)).ok()?).ok()
    }

    /// Those of its processes that still run.
    pub fn running(&self) -> Vec<&Proc> {
        self.nodes
            .iter()
            .chain(&self.server)
            .filter(|p| p.alive())
            .collect()
    }

    /// Stops the nodes (each removes its containers and clears its address), then the
    /// server, the OpenVPN server container if there is one and the network; removes the
    /// record. Returns what it did, a line each.
    pub async fn stop(self, dir: &Path, docker: &Docker) -> Vec<String> {
        let mut said = Vec::new();
        for p in &self.nodes {
            said.push(end(p, Duration::from_secs(60)));
        }
        if let Some(p) = &self.server {
            said.push(end(p, Duration::from_secs(10)));
        }
        let mut removed = Vec::new();
        if let Some(c) = &self.vpn_server {
            removed.push((c, docker.remove(c).await.map_err(|e| e.to_string())));
        }
        removed.push((
            &self.network,
            docker
                .remove_network(&self.network)
                .await
                .map_err(|e| e.to_string()),
        ));
        for (what, removed) in removed {
            said.push(match removed {
                Ok(()) => format!("removed {what}"),
                Err(e) => format!("{what}: {e}"),
            });
        }
        let _ = std::fs::remove_file(path(dir));
        said
    }
}

/// SIGTERM, then SIGKILL if it has not ended within `grace`.
fn end(p: &Proc, grace: Duration) -> String {
    use nix::sys::signal::{kill, Signal};
    let Ok(pid) = i32::try_from(p.pid).map(nix::unistd::Pid::from_raw) else {
        return format!("{} (pid {}): not a pid", p.what, p.pid);
    };
    if !p.alive() {
        return format!("{} (pid {}) had ended", p.what, p.pid);
    }
    let _ = kill(pid, Signal::SIGTERM);
    let until = Instant::now() + grace;
    while Instant::now() < until {
        if !p.alive() {
            return format!("stopped {} (pid {})", p.what, p.pid);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if p.alive() {
        let _ = kill(pid, Signal::SIGKILL);
    }
    format!(
        "killed {} (pid {}): it did not stop within {}s",
        p.what,
        p.pid,
        grace.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_known_by_pid_and_start_time() {
        let me = Proc::of("test", std::process::id()).expect("this process runs");
        assert!(me.alive());
        let reused = Proc {
            started: me.started + 1,
            ..me.clone()
        };
        assert!(!reused.alive(), "another start time is another process");
        assert_eq!(Proc::of("none", u32::MAX), None);
    }

    #[test]
    fn the_record_round_trips_and_garbage_is_no_record() {
        let dir = std::env::temp_dir().join(format!("algonet-kept-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let k = Kept {
            nodes: vec![Proc::of("amsterdam", std::process::id()).expect("runs")],
            server: None,
            vpn_server: Some("v".into()),
            network: "n".into(),
        };
        k.save(&dir).expect("saved");
        assert_eq!(Kept::load(&dir), Some(k.clone()));
        assert_eq!(k.running().len(), 1);
        std::fs::write(path(&dir), b"{not json").expect("write");
        assert_eq!(Kept::load(&dir), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
