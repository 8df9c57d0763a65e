//! Kills: a run the server has ended while this node still runs it (`POST /kill/task`,
//! `POST /kill/node/tasks`) is stopped here within a moment. The node waits on `GET
//! /vpn/peers` as it does for scopes; the server answers as soon as a run leaves the node's open
//! runs, and every run this node executes that is no longer among them has its algorithm
//! container removed. The run then gives back what it holds (ports, links, scope, address,
//! port records) as any run does; the server already says how it ended.

use std::collections::HashSet;
use std::sync::Arc;

use crate::api::RunId;
use crate::node::scope::Answers;
use crate::node::state::Node;
use crate::sync::lock;

/// Follows the server's open runs of this node until the task is ended.
pub async fn follow(node: Arc<Node>) {
    let mut answers = Answers::new(&node, "following the runs for kills");
    loop {
        let peers = answers.next().await;
        let open: HashSet<RunId> = peers.runs.iter().map(|r| r.run_id).collect();
        // A run the node itself is ending left the open runs by its own report.
        for run in ended(&node.observed.unended_run_ids(), &open) {
            if !lock(&node.killed).insert(run) {
                continue;
            }
            tracing::info!(run = %run, "the server ended this run: stopping its algorithm");
            let (_, algorithm) = node.run_containers(run);
            if let Err(e) = node.docker.remove(&algorithm).await {
                tracing::warn!("run {run}: removing its algorithm: {e}");
            }
        }
    }
}

/// The runs this node executes that the server no longer has open.
fn ended(executing: &[RunId], open: &HashSet<RunId>) -> Vec<RunId> {
    executing
        .iter()
        .copied()
        .filter(|r| !open.contains(r))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_runs_the_server_ended_are_stopped() {
        let open: HashSet<RunId> = [RunId(1), RunId(3)].into();
        assert_eq!(ended(&[RunId(1), RunId(2), RunId(3)], &open), [RunId(2)]);
        assert!(ended(&[], &open).is_empty());
    }
}
