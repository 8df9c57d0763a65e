//! What the node reads differently on vantage6's own server: its id from the token, its runs
//! from vantage6's `GET /run` (tasks included, in algonet's form), its runs' peers from the
//! collaboration's open runs, and times as vantage6 reads them.

use super::{ClientError, ServerClient, VANTAGE6_PEERS_POLL};
use crate::api::{NodeId, PeerPort, Peers, Run, RunPeers};

impl ServerClient {
    /// `GET /vpn/peers` for vantage6's server, from what a node may read there: the
    /// collaboration's unfinished runs with their tasks, nodes and ports. A run's family is the
    /// runs of its job; its peers are their nodes' addresses and public ports. Asked again after
    /// a pause when `known` (vantage6 has no long-poll); `etag` names the content.
    pub(super) async fn vantage6_peers(&self, known: Option<&str>) -> Result<Peers, ClientError> {
        if known.is_some() {
            tokio::time::sleep(VANTAGE6_PEERS_POLL).await;
        }
        let collaboration = self.collaboration_id().await?;
        let open = self
            .vantage6_runs(&format!(
                "/run?collaboration_id={collaboration}&state=open&include=task"
            ))
            .await?;
        let ip_of = |r: &Run| {
            r.node
                .as_ref()
                .and_then(|n| n.ip.clone())
                .filter(|ip| !ip.is_empty())
        };
        let job = |r: &Run| r.task.job_id.unwrap_or(r.task.id);
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v.dedup();
            v
        };
        let runs = open
            .iter()
            .filter(|r| r.node.as_ref().is_some_and(|n| n.id == self.node_id))
            .map(|mine| {
                let family: Vec<&Run> = open.iter().filter(|r| job(r) == job(mine)).collect();
                let mut ports: Vec<PeerPort> = family
                    .iter()
                    .filter_map(|r| Some((ip_of(r)?, &r.ports)))
                    .flat_map(|(ip, ports)| {
                        ports.iter().map(move |p| PeerPort {
                            ip: ip.clone(),
                            port: p.port,
                        })
                    })
                    .collect();
                ports.sort();
                ports.dedup();
                RunPeers {
                    run_id: mine.id,
                    root_task_id: job(mine),
                    addresses: sorted(family.iter().filter_map(|r| ip_of(r)).collect()),
                    ports,
                }
            })
            .collect::<Vec<_>>();
        let collaboration = sorted(open.iter().filter_map(ip_of).collect());
        let etag = {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(format!("{collaboration:?}{runs:?}"));
            digest[..8].iter().map(|b| format!("{b:02x}")).collect()
        };
        Ok(Peers {
            etag,
            collaboration,
            runs,
            wireguard: Vec::new(),
        })
    }

    /// vantage6's server: this node's unfinished runs with their tasks, as its node asks.
    pub(super) async fn open_runs(&self) -> Result<Vec<Run>, ClientError> {
        let path = format!("/run?node_id={}&state=open&include=task", self.node_id);
        self.vantage6_runs(&path).await
    }

    /// Runs as vantage6's server lists them with their tasks, every page, in algonet's form.
    pub(super) async fn vantage6_runs(&self, path: &str) -> Result<Vec<Run>, ClientError> {
        self.all::<serde_json::Value>(path)
            .await?
            .into_iter()
            .map(|v| {
                from_vantage6(v).map_err(|e| ClientError::Garbage {
                    what: format!("GET {path}"),
                    reason: e.to_string(),
                })
            })
            .collect()
    }
}

/// A time as vantage6's server reads it (`%Y-%m-%dT%H:%M:%S.%f`, UTC).
pub(super) fn vantage6_time(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// The subject of a JWT (vantage6 puts the node's id there), read without checking the
/// signature: the node only learns who it is, it trusts nothing on it.
pub(super) fn token_subject(token: &str) -> Option<NodeId> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    match &claims["sub"] {
        serde_json::Value::Number(n) => n.as_i64().map(NodeId),
        serde_json::Value::String(s) => s.parse().ok().map(NodeId),
        _ => None,
    }
}

/// A run as vantage6's server lists it with `include=task`, in algonet's form: its task's
/// collaboration and parent are links there, ids here.
pub(super) fn from_vantage6(mut run: serde_json::Value) -> Result<Run, serde_json::Error> {
    if let Some(task) = run.get_mut("task").and_then(|t| t.as_object_mut()) {
        let id_of = |key: &str| task.get(key).and_then(|l| l.get("id")).cloned();
        let (collaboration, parent) = (id_of("collaboration"), id_of("parent"));
        task.insert("collaboration_id".into(), collaboration.unwrap_or_default());
        task.insert("parent_id".into(), parent.unwrap_or_default());
    }
    serde_json::from_value(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vantage6s_token_names_the_node_in_its_subject() {
        use base64::Engine;
        let enc = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let token = |claims| {
            format!(
                "{}.{}.sig",
                enc(serde_json::json!({"alg": "HS256"})),
                enc(claims)
            )
        };
        assert_eq!(
            token_subject(&token(serde_json::json!({"sub": 7}))),
            Some(NodeId(7))
        );
        assert_eq!(
            token_subject(&token(serde_json::json!({"sub": "12"}))),
            Some(NodeId(12))
        );
        for bad in [
            token(serde_json::json!({"sub": "x"})),
            token(serde_json::json!({})),
            "a.b".into(),
            "".into(),
        ] {
            assert_eq!(token_subject(&bad), None, "{bad}");
        }
    }

    #[test]
    fn times_are_written_as_vantage6_reads_them() {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(1_796_616_306_007_000_000)
            .expect("a time");
        assert_eq!(vantage6_time(t), "2026-12-07T04:05:06.007000");
    }

    #[test]
    fn vantage6s_runs_read_as_algonets() {
        let run = serde_json::json!({
            "id": 3, "status": "pending", "input": "e30=", "log": null, "assigned_at": "2026-01-01T00:00:00",
            "started_at": null, "finished_at": null, "cleanup_at": null, "blob_storage_used": false,
            "organization": {"id": 2, "link": "/api/organization/2"},
            "results": {"id": 3, "link": "/api/result/3"},
            "node": {"id": 4, "ip": null, "status": "online", "name": "n"}, "ports": [],
            "task": {"id": 9, "name": "t", "image": "v6", "job_id": 8,
                     "collaboration": {"id": 1, "link": "/api/collaboration/1"},
                     "parent": {"id": 8, "link": "/api/task/8"}, "init_org": {"id": 2}}
        });
        let r = from_vantage6(run).expect("a run");
        assert_eq!(
            (
                r.task.collaboration_id.0,
                r.task.parent_id.map(|p| p.0),
                r.task.job_id.map(|j| j.0)
            ),
            (1, Some(8), Some(8))
        );
        let orphan = serde_json::json!({"id": 1, "status": "pending", "task": {"id": 1, "image": "v6", "name": "t", "collaboration": {"id": 1}, "parent": null}});
        assert!(
            from_vantage6(orphan).is_err(),
            "a run without its fields is refused"
        );
    }
}
