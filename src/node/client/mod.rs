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

mod vantage6;
use crate::api::client::{Api, NO_BODY};
use crate::api::{
    Collaboration, CollaborationId, ContainerLogin, ContainerToken, NewPort, Node, NodeId,
    NodeLogin, NodePatch, NodeToken, Organization, OrganizationChange, OrganizationId, Page, Peers,
    PublicPort, Run, RunId, RunStatus, RunUpdate, Task, TaskId, VpnProfile, VpnUpdate,
};
use crate::wireguard::profile::{is_wireguard, with_expiry};
use vantage6::{token_subject, vantage6_time};

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
                 marking them initializing, and a run's peers and kills are read from the \
                 collaboration's open runs every few seconds"
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

    /// The node's collaboration.
    async fn collaboration_id(&self) -> Result<CollaborationId, ClientError> {
        self.collaboration
            .get_or_try_init(|| async { Ok(self.this_node().await?.collaboration.id) })
            .await
            .copied()
    }

    /// Every item of a paged list.
    async fn all<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, ClientError> {
        crate::api::client::all_pages(path, |page| async move {
            self.call::<Page<T>>(Method::GET, &page, NO_BODY).await
        })
        .await
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

    /// `GET /vpn`: a new profile. `public_key` is the node's WireGuard key, for a server whose
    /// VPN is WireGuard (others ignore it: it is public); with `tcp`, a WireGuard profile that
    /// reaches the hub over TCP is asked for (`prefer_tcp=yes`, as eduVPN takes it).
    pub async fn new_profile(
        &self,
        public_key: Option<&str>,
        tcp: bool,
    ) -> Result<String, ClientError> {
        let query = {
            let mut q = form_urlencoded::Serializer::new(String::new());
            if let Some(k) = public_key {
                q.append_pair("public_key", k);
            }
            if tcp {
                q.append_pair("prefer_tcp", "yes");
            }
            q.finish()
        };
        let path = match query {
            q if q.is_empty() => "/vpn".into(),
            q => format!("/vpn?{q}"),
        };
        let p: VpnProfile = self.call(Method::GET, &path, NO_BODY).await?;
        // A WireGuard profile is kept with its expiry (eduVPN's); its text never goes back to
        // the server, as an OpenVPN one does with `POST /vpn/update`.
        Ok(match p.expires {
            Some(e) if is_wireguard(&p.ovpn_config) => with_expiry(&p.ovpn_config, &e),
            _ => p.ovpn_config,
        })
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
