//! The node's side of the server API: login with the API key, runs, container tokens, ports, the
//! VPN profile and the node's address. A 401 logs in again once.
//!
//! It speaks to algonet's server and to vantage6's own (4.x), which lacks algonet's additions:
//! the node's id in the login answer (vantage6's node reads the token's subject), a node's
//! pending runs with their tasks and an atomic claim (`GET /run`, `POST /run/<id>/claim`:
//! vantage6's node lists its open runs with `include=task` and marks one `initializing`), and
//! `GET /vpn/peers` (on vantage6's server a run's peers are read, every few seconds, from the
//! collaboration's open runs: the nodes and public ports of the runs of its job). Which server
//! it is shows at login, once.

use std::net::Ipv4Addr;

use reqwest::{Method, StatusCode};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Serialize;

pub use crate::api::client::ClientError;
use crate::api::client::{Api, NO_BODY};
use crate::api::{
    Collaboration, CollaborationId, ContainerLogin, ContainerToken, NewPort, Node, NodeId,
    NodeLogin, NodePatch, NodeToken, Organization, OrganizationChange, OrganizationId, Page,
    PeerPort, Peers, PublicPort, Run, RunId, RunPeers, RunStatus, RunUpdate, Task, TaskId,
    VpnProfile, VpnUpdate,
};

/// Which server the node speaks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Algonet,
    /// vantage6's own server (4.x): no claim, no `/vpn/peers`, the node's id in its token.
    Vantage6,
}

/// How often the node asks vantage6's server for its runs' peers (it has no long-poll).
const VANTAGE6_PEERS_POLL: std::time::Duration = std::time::Duration::from_secs(3);

#[derive(Debug)]
pub struct ServerClient {
    api: Api,
    api_key: String,
    token: tokio::sync::RwLock<String>,
    pub node_id: NodeId,
    pub dialect: Dialect,
    /// The node's collaboration, read once when first needed.
    collaboration: tokio::sync::OnceCell<CollaborationId>,
}

impl ServerClient {
    /// `POST /token/node` with the API key.
    /// Logs in at `server_url`, trusting the authorities of `ca_file` beside the system's.
    pub async fn login(
        server_url: &str,
        api_path: &str,
        api_key: &str,
        ca_file: Option<&std::path::Path>,
    ) -> Result<ServerClient, ClientError> {
        let base = format!(
            "{}/{}",
            server_url.trim_end_matches('/'),
            api_path.trim_matches('/')
        );
        let api = Api::trusting(&base, ca_file)?;
        let t = Self::token(&api, api_key).await?;
        let (node_id, dialect) = match t.node_id {
            Some(id) => (id, Dialect::Algonet),
            None => (
                token_subject(&t.access_token).ok_or_else(|| ClientError::Garbage {
                    what: "POST /token/node".into(),
                    reason: "neither a node_id nor a token whose subject is a node id".into(),
                })?,
                Dialect::Vantage6,
            ),
        };
        if dialect == Dialect::Vantage6 {
            tracing::warn!(
                "the server is vantage6's own: runs are found by polling GET /run and taken by \
                 marking them initializing, and a run's peers are read from the collaboration's \
                 open runs every few seconds; kills, which vantage6 sends over socket.io only, \
                 do not reach this node"
            );
        }
        Ok(ServerClient {
            api,
            api_key: api_key.into(),
            token: tokio::sync::RwLock::new(t.access_token),
            node_id,
            dialect,
            collaboration: tokio::sync::OnceCell::new(),
        })
    }

    async fn token(api: &Api, api_key: &str) -> Result<NodeToken, ClientError> {
        let login = NodeLogin {
            api_key: api_key.into(),
        };
        api.send(Method::POST, "/token/node", None, Some(&login))
            .await
    }

    /// The server's API.
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// One authenticated call; on 401 (token expired) logs in again and retries once.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, ClientError> {
        let token = self.token.read().await.clone();
        match self
            .api
            .send(method.clone(), path, Some(&token), body)
            .await
        {
            Err(e) if e.status() == Some(StatusCode::UNAUTHORIZED) => {
                let fresh = Self::token(&self.api, &self.api_key).await?.access_token;
                *self.token.write().await = fresh.clone();
                self.api.send(method, path, Some(&fresh), body).await
            }
            other => other,
        }
    }

    /// A call whose answer the node does not read (any JSON will do).
    async fn call_ignoring(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<(), ClientError> {
        self.call::<IgnoredAny>(method, path, body).await.map(drop)
    }

    /// `GET /vpn/peers`: whom each open run may talk to; with `known`, once that changed (or
    /// after the server's wait).
    pub async fn peers(&self, known: Option<&str>) -> Result<Peers, ClientError> {
        if self.dialect == Dialect::Vantage6 {
            return self.vantage6_peers(known).await;
        }
        let path = match known {
            Some(etag) => format!("/vpn/peers?known={etag}"),
            None => "/vpn/peers".into(),
        };
        self.call(Method::GET, &path, NO_BODY).await
    }

    /// `GET /vpn/peers` for vantage6's server, from what a node may read there: the
    /// collaboration's unfinished runs with their tasks, nodes and ports. A run's family is the
    /// runs of its job; its peers are their nodes' addresses and public ports. Asked again after
    /// a pause when `known` (vantage6 has no long-poll); `etag` names the content.
    async fn vantage6_peers(&self, known: Option<&str>) -> Result<Peers, ClientError> {
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
        })
    }

    /// The node's collaboration.
    async fn collaboration_id(&self) -> Result<CollaborationId, ClientError> {
        self.collaboration
            .get_or_try_init(|| async { Ok(self.this_node().await?.collaboration.id) })
            .await
            .copied()
    }

    /// Every item of a paged list.
    async fn all<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, ClientError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        for page in 1.. {
            let path = format!("{path}{sep}per_page=100&page={page}");
            let p: Page<T> = self.call(Method::GET, &path, NO_BODY).await?;
            items.extend(p.data);
            if p.links.next.is_none() {
                break;
            }
        }
        Ok(items)
    }

    /// vantage6's server: this node's unfinished runs with their tasks, as its node asks.
    async fn open_runs(&self) -> Result<Vec<Run>, ClientError> {
        let path = format!("/run?node_id={}&state=open&include=task", self.node_id);
        self.vantage6_runs(&path).await
    }

    /// Runs as vantage6's server lists them with their tasks, every page, in algonet's form.
    async fn vantage6_runs(&self, path: &str) -> Result<Vec<Run>, ClientError> {
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

    /// The node's runs waiting for it, oldest first.
    pub async fn pending_runs(&self) -> Result<Vec<Run>, ClientError> {
        match self.dialect {
            Dialect::Algonet => {
                let page: Page<Run> = self.call(Method::GET, "/run", NO_BODY).await?;
                Ok(page.data)
            }
            Dialect::Vantage6 => self.runs_in(RunStatus::Pending).await,
        }
    }

    /// Runs of this node in a given state (`active`, `initializing`: what a crash left), oldest
    /// first.
    pub async fn runs_in(&self, status: RunStatus) -> Result<Vec<Run>, ClientError> {
        match self.dialect {
            Dialect::Algonet => {
                let path = format!("/run?status={status}");
                let page: Page<Run> = self.call(Method::GET, &path, NO_BODY).await?;
                Ok(page.data)
            }
            Dialect::Vantage6 => {
                let mut runs: Vec<Run> = self
                    .open_runs()
                    .await?
                    .into_iter()
                    .filter(|r| r.status == status)
                    .collect();
                runs.sort_by_key(|r| r.id);
                Ok(runs)
            }
        }
    }

    /// A task as vantage6 shows it: its databases, who sent it, its image.
    pub async fn task(&self, task: TaskId) -> Result<Task, ClientError> {
        self.call(Method::GET, &format!("/task/{task}"), NO_BODY)
            .await
    }

    /// Takes a pending run: algonet's server gives it to one node only; on vantage6's the node
    /// marks it `initializing`, as vantage6's node does (one node per organization and
    /// collaboration: no other node takes it).
    pub async fn claim(&self, run: RunId) -> Result<Run, ClientError> {
        match self.dialect {
            Dialect::Algonet => {
                self.call(Method::POST, &format!("/run/{run}/claim"), NO_BODY)
                    .await
            }
            Dialect::Vantage6 => {
                let update = RunUpdate {
                    status: Some(RunStatus::Initializing),
                    ..RunUpdate::default()
                };
                self.call_ignoring(Method::PATCH, &format!("/run/{run}"), Some(&update))
                    .await?;
                self.runs_in(RunStatus::Initializing)
                    .await?
                    .into_iter()
                    .find(|r| r.id == run)
                    .ok_or_else(|| ClientError::Garbage {
                        what: format!("PATCH /run/{run}"),
                        reason: "the run is no longer open".into(),
                    })
            }
        }
    }

    pub async fn report(
        &self,
        run: RunId,
        status: RunStatus,
        result: Option<&str>,
        log: Option<&str>,
    ) -> Result<(), ClientError> {
        // vantage6's server keeps the times its node sends (algonet's stamps its own).
        let now = || Some(vantage6_time(time::OffsetDateTime::now_utc()));
        let vantage6 = self.dialect == Dialect::Vantage6;
        let update = RunUpdate {
            status: Some(status),
            result: result.map(str::to_string),
            log: log.map(str::to_string),
            started_at: (vantage6 && status == RunStatus::Active)
                .then(now)
                .flatten(),
            finished_at: (vantage6 && status.is_finished()).then(now).flatten(),
        };
        self.call_ignoring(Method::PATCH, &format!("/run/{run}"), Some(&update))
            .await
    }

    pub async fn container_token(&self, task: TaskId, image: &str) -> Result<String, ClientError> {
        let login = ContainerLogin {
            task_id: task,
            image: image.into(),
        };
        let t: ContainerToken = self
            .call(Method::POST, "/token/container", Some(&login))
            .await?;
        Ok(t.container_token)
    }

    pub async fn add_port(
        &self,
        run: RunId,
        port: PublicPort,
        label: Option<&str>,
    ) -> Result<(), ClientError> {
        let port = NewPort {
            port,
            run_id: run,
            label: label.map(str::to_string),
        };
        self.call_ignoring(Method::POST, "/port", Some(&port)).await
    }

    pub async fn remove_ports(&self, run: RunId) -> Result<(), ClientError> {
        self.call_ignoring(Method::DELETE, &format!("/port?run_id={run}"), NO_BODY)
            .await
    }

    /// `GET /vpn`: a new profile.
    pub async fn new_profile(&self) -> Result<String, ClientError> {
        let p: VpnProfile = self.call(Method::GET, "/vpn", NO_BODY).await?;
        Ok(p.ovpn_config)
    }

    /// `POST /vpn/update`: the profile with a renewed key pair.
    pub async fn renew_profile(&self, current: &str) -> Result<String, ClientError> {
        let update = VpnUpdate {
            vpn_config: current.into(),
        };
        let p: VpnProfile = self
            .call(Method::POST, "/vpn/update", Some(&update))
            .await?;
        Ok(p.ovpn_config)
    }

    /// The node itself: its organization and collaboration.
    pub async fn this_node(&self) -> Result<Node, ClientError> {
        self.call(Method::GET, &format!("/node/{}", self.node_id), NO_BODY)
            .await
    }

    pub async fn collaboration(&self, node: &Node) -> Result<Collaboration, ClientError> {
        let path = format!("/collaboration/{}", node.collaboration.id);
        self.call(Method::GET, &path, NO_BODY).await
    }

    /// An organization of the collaboration: its public key.
    pub async fn organization(&self, id: OrganizationId) -> Result<Organization, ClientError> {
        self.call(Method::GET, &format!("/organization/{id}"), NO_BODY)
            .await
    }

    /// `PATCH /organization/<id>`: the node's organization's public key.
    pub async fn set_public_key(&self, id: OrganizationId, key: &str) -> Result<(), ClientError> {
        let change = OrganizationChange {
            public_key: Some(key.into()),
            ..OrganizationChange::default()
        };
        self.call_ignoring(Method::PATCH, &format!("/organization/{id}"), Some(&change))
            .await
    }

    /// `PATCH /node/<id>`: the node's VPN address, or none.
    pub async fn set_ip(&self, ip: Option<Ipv4Addr>) -> Result<(), ClientError> {
        let patch = NodePatch {
            ip: ip.map(|ip| ip.to_string()),
            clear_ip: ip.is_none(),
        };
        self.call_ignoring(
            Method::PATCH,
            &format!("/node/{}", self.node_id),
            Some(&patch),
        )
        .await
    }
}

/// A time as vantage6's server reads it (`%Y-%m-%dT%H:%M:%S.%f`, UTC).
fn vantage6_time(t: time::OffsetDateTime) -> String {
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
fn token_subject(token: &str) -> Option<NodeId> {
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
fn from_vantage6(mut run: serde_json::Value) -> Result<Run, serde_json::Error> {
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
