//! A run's end, reported to the server. While the node runs, a server that is away is waited
//! for; once the node stops, a report the server does not take is kept in the task folder
//! (`unreported/<run>.json`, the node's user's only) and sent at the next start, before the runs
//! left unfinished are marked crashed. So a node stops when asked, whatever the server's state,
//! and no result is lost to a server that was away.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::{RunId, RunStatus};
use crate::node::client::ServerClient;
use crate::node::retry::{with_backoff, with_backoff_while};

/// A run's end as the node reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunEnd {
    pub run: RunId,
    pub status: RunStatus,
    pub result: Option<String>,
    pub log: String,
}

impl RunEnd {
    async fn send(&self, client: &ServerClient) -> Result<(), crate::api::client::ClientError> {
        client
            .report(
                self.run,
                self.status,
                self.result.as_deref(),
                Some(&self.log),
            )
            .await
    }
}

fn folder(task_dir: &Path) -> PathBuf {
    task_dir.join("unreported")
}

/// Reports `end`, retrying while the server is away and `running()` holds; past that, keeps it
/// for the next start.
pub async fn report(
    client: &ServerClient,
    task_dir: &Path,
    end: RunEnd,
    running: impl Fn() -> bool,
) {
    let what = format!("reporting run {}'s end", end.run);
    match with_backoff_while(&what, || end.send(client), running).await {
        Ok(()) => {}
        Err(e) if e.transient() => keep(task_dir, &end, &e),
        Err(e) => tracing::warn!("run {}: cannot report {}: {e}", end.run, end.status),
    }
}

fn keep(task_dir: &Path, end: &RunEnd, why: &crate::api::client::ClientError) {
    let dir = folder(task_dir);
    let path = dir.join(format!("{}.json", end.run));
    // Written whole, then renamed: a file there is a complete report.
    let part = dir.join(format!(".{}.part", end.run));
    let kept = crate::private::dir(&dir)
        .and_then(|()| serde_json::to_vec(end).map_err(std::io::Error::other))
        .and_then(|bytes| crate::private::file(&part, &bytes))
        .and_then(|()| std::fs::rename(&part, &path));
    match kept {
        Ok(()) => tracing::warn!(
            "run {}: the server did not take its end ({why}); kept in {} for the next start",
            end.run,
            path.display()
        ),
        Err(e) => tracing::error!(
            "run {}: the server did not take its end ({why}), and keeping it in {} failed: {e}",
            end.run,
            path.display()
        ),
    }
}

/// Sends the reports an earlier process of this node kept (waiting for the server, as at
/// login); each is removed once the server took it or refused it for good. A file that is not
/// a report is left where it is, named in the log.
pub async fn send_kept(client: &ServerClient, task_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(folder(task_dir)) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let end: RunEnd = match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(end) => end,
            Err(e) => {
                tracing::warn!(
                    "{}: not a kept run report ({e}); left as it is",
                    path.display()
                );
                continue;
            }
        };
        let what = format!("reporting run {}'s kept end", end.run);
        match with_backoff(&what, || end.send(client)).await {
            Ok(()) => tracing::info!("run {}: its kept end ({}) reported", end.run, end.status),
            Err(e) => tracing::warn!("run {}: its kept end was refused: {e}", end.run),
        }
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!("{}: {e}", path.display());
        }
    }
}
