//! Every request and answer of the API (docs/vantage6-api.md). Requests the server must not
//! misread refuse unknown fields; answers are read leniently, as vantage6's clients do.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ids::{CollaborationId, NodeId, OrganizationId, PublicPort, RunId, TaskId};

/// A run's state, in vantage6 4.x's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunStatus {
    /// Waiting for its node.
    Pending,
    /// Claimed; the node is setting it up.
    Initializing,
    /// The algorithm runs.
    Active,
    /// The algorithm exited with 0.
    Completed,
    /// Its set-up failed (a database it asked for, its folder, its network), or its node
    /// went away during the run.
    Failed,
    /// The algorithm's container could not be started.
    StartFailed,
    /// The node has no such image.
    NoDockerImage,
    /// The algorithm exited with another code than 0.
    Crashed,
    /// Killed at a user's request, or by the node's shutdown.
    Killed,
    /// Refused by the node's policies: no container was made.
    NotAllowed,
}

impl RunStatus {
    /// Whether the run has ended (no state follows).
    pub fn is_finished(self) -> bool {
        !matches!(
            self,
            RunStatus::Pending | RunStatus::Initializing | RunStatus::Active
        )
    }

    /// Whether the run failed (vantage6's `has_task_failed`: any state but pending,
    /// initializing, active and completed).
    pub fn has_failed(self) -> bool {
        !matches!(
            self,
            RunStatus::Pending | RunStatus::Initializing | RunStatus::Active | RunStatus::Completed
        )
    }

    /// A task's state from its runs', as vantage6 4.14's `Task.status` derives it: a failure
    /// (the one way they failed, or `failed` when they failed in different ways), else active,
    /// initializing or pending if any run is, else completed.
    pub fn of_task(runs: &[RunStatus]) -> RunStatus {
        let mut failed = runs.iter().copied().filter(|s| s.has_failed());
        if let Some(first) = failed.next() {
            return if failed.all(|s| s == first) {
                first
            } else {
                RunStatus::Failed
            };
        }
        [
            RunStatus::Active,
            RunStatus::Initializing,
            RunStatus::Pending,
        ]
        .into_iter()
        .find(|s| runs.contains(s))
        .unwrap_or(RunStatus::Completed)
    }

    pub const ALL: [RunStatus; 10] = [
        RunStatus::Pending,
        RunStatus::Initializing,
        RunStatus::Active,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::StartFailed,
        RunStatus::NoDockerImage,
        RunStatus::Crashed,
        RunStatus::Killed,
        RunStatus::NotAllowed,
    ];

    /// The state named `name` (vantage6's word for it; `killed` too, an older word of
    /// algonet's for `killed by user`).
    pub fn named(name: &str) -> Option<RunStatus> {
        if name == "killed" {
            return Some(RunStatus::Killed);
        }
        RunStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Initializing => "initializing",
            RunStatus::Active => "active",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::StartFailed => "start failed",
            RunStatus::NoDockerImage => "non-existing Docker image",
            RunStatus::Crashed => "crashed",
            RunStatus::Killed => "killed by user",
            RunStatus::NotAllowed => "not allowed",
        }
    }
}

impl Serialize for RunStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RunStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RunStatus, D::Error> {
        let name = String::deserialize(d)?;
        RunStatus::named(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("no run state {name:?}")))
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identity inside a container token (`sub`), as vantage6's algorithm tools read it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerIdentity {
    pub client_type: String,
    pub node_id: NodeId,
    pub organization_id: OrganizationId,
    pub collaboration_id: CollaborationId,
    pub task_id: TaskId,
    pub image: String,
    /// The task's databases, each as [`TaskDatabase::flattened`] gives it.
    #[serde(default)]
    pub databases: Vec<Value>,
}

/// The answer to `GET /task/<id>/status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskStatus {
    pub status: RunStatus,
}

/// An error answer, and the answer of calls that only confirm.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Msg {
    pub msg: String,
}

/// `POST /token/user`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserLogin {
    pub username: String,
    pub password: String,
}

/// The answer to `POST /token/user` and, for a user, `POST /token/refresh`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserToken {
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: String,
    #[serde(default)]
    pub refresh_url: String,
    #[serde(default)]
    pub user_url: String,
}

/// `POST /token/node`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeLogin {
    pub api_key: String,
}

/// The answer to `POST /token/node`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeToken {
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: String,
    #[serde(default)]
    pub refresh_url: String,
    #[serde(default)]
    pub node_url: String,
    /// algonet's: the node's id without decoding the token (vantage6's server does not send
    /// it: its node reads it from the token's subject).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<NodeId>,
}

/// `POST /token/container`: a node asks for the token of a run's algorithm.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerLogin {
    pub task_id: TaskId,
    pub image: String,
}

/// The answer to `POST /token/container`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerToken {
    pub container_token: String,
}

/// An organization's own descriptive fields, as vantage6 takes them (each may be absent).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct OrganizationDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address1: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address2: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zipcode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// `POST /organization`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NewOrganization {
    pub name: String,
    #[serde(flatten)]
    pub details: OrganizationDetails,
}

/// `PATCH /organization/<id>`: the fields given (and not null) are changed. The public key is
/// base64 of a PEM RSA public key, as vantage6's clients upload it; only a member of the
/// organization may set it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct OrganizationChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(flatten)]
    pub details: OrganizationDetails,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

/// `POST /collaboration`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewCollaboration {
    pub name: String,
    pub organization_ids: Vec<OrganizationId>,
    /// Inputs and results are encrypted, each for the organization that reads it.
    #[serde(default)]
    pub encrypted: bool,
}

/// `POST /node`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewNode {
    pub organization_id: OrganizationId,
    pub collaboration_id: CollaborationId,
    pub name: Option<String>,
}

impl NewNode {
    /// vantage6's name for a node that was given none.
    pub fn default_name(organization: &str, collaboration: &str) -> String {
        format!("{organization} - {collaboration} Node")
    }
}

/// `PATCH /node/<id>`: the node's VPN address, or `clear_ip`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodePatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clear_ip: bool,
}

/// `POST /task`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewTask {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collaboration_id: Option<CollaborationId>,
    pub organizations: Vec<TaskOrganization>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<TaskId>,
    /// The databases the task asks each node for, as vantage6 takes them: a label, or a list
    /// of objects with a `label` and optional parameters (`query`, `sheet_name`,
    /// `preprocessing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub databases: Option<Value>,
}

/// One organization of a new task, with its run's input as vantage6 sends it (see
/// [`super::codec`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskOrganization {
    pub id: OrganizationId,
    #[serde(default)]
    pub input: String,
}

/// `GET /run`'s and `GET /result`'s query.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunFilter {
    pub task_id: Option<TaskId>,
    pub status: Option<RunStatus>,
}

/// A page of a list: `page` from 1, `per_page` items (vantage6's default 10).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Paging {
    #[serde(default = "Paging::first")]
    pub page: u32,
    #[serde(default = "Paging::size")]
    pub per_page: u32,
}

impl Paging {
    fn first() -> u32 {
        1
    }
    fn size() -> u32 {
        10
    }
}

/// `PATCH /run/<id>`: what the node reports.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunUpdate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<RunStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// What vantage6's nodes send with a status; accepted, but algonet's server stamps the
    /// start (`active`) and the end (a finishing status) by its own clock. An algonet node
    /// sends them to vantage6's server, which keeps what it is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

/// `POST /port`: a public port of a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPort {
    pub port: PublicPort,
    pub run_id: RunId,
    pub label: Option<String>,
}

/// The answer to `POST /port`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Port {
    pub id: i64,
    pub port: PublicPort,
    pub label: Option<String>,
    pub run: RunRef,
}

/// A run named by its id.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRef {
    pub id: RunId,
}

/// `DELETE /port`'s query.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunQuery {
    pub run_id: RunId,
}

/// The answer to `GET /vpn` and `POST /vpn/update`: vantage6's, with `expires` (when the
/// certificate ends) when known, so a node can renew in time.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VpnProfile {
    pub ovpn_config: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// `POST /vpn/update`: the profile whose key pair is to be renewed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VpnUpdate {
    pub vpn_config: String,
}

/// The answer to `GET /vpn/algorithm/addresses`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Addresses {
    pub addresses: Vec<Address>,
}

/// A run's public port on its node's VPN address.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Address {
    pub port: PublicPort,
    pub label: Option<String>,
    pub ip: Option<String>,
    pub organization_id: OrganizationId,
    pub task_id: TaskId,
    pub parent_id: Option<TaskId>,
}

/// The answer to `GET /vpn/peers` (an algonet extension): for each of the node's open runs,
/// the VPN addresses of the nodes whose organizations have a run in its task family (its root
/// task and every task below it) and the public ports of those runs; and the addresses of every
/// node of the node's collaboration; with the built-in WireGuard hub, the collaboration's other
/// nodes as WireGuard peers the node may reach directly. `etag` names the answer:
/// `?known=<etag>` waits (up to 20 s) until the answer is another.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peers {
    pub etag: String,
    pub collaboration: Vec<String>,
    pub runs: Vec<RunPeers>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wireguard: Vec<MeshPeer>,
}

/// Another node of the collaboration as a WireGuard peer: its key, its VPN address and where the
/// hub last heard it from (`ip:port`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MeshPeer {
    pub public_key: String,
    pub address: String,
    pub endpoint: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunPeers {
    pub run_id: RunId,
    /// The root of the run's task family.
    pub root_task_id: TaskId,
    pub addresses: Vec<String>,
    pub ports: Vec<PeerPort>,
}

/// A public port of a run in the family, on its node's VPN address.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, sqlx::FromRow)]
pub struct PeerPort {
    pub ip: String,
    pub port: PublicPort,
}

#[cfg(test)]
mod tests {
    use super::RunStatus::{self, *};

    #[test]
    fn a_tasks_state_is_vantage6s_from_its_runs() {
        let of = RunStatus::of_task;
        assert_eq!(of(&[Completed, Completed]), Completed);
        assert_eq!(of(&[]), Completed);
        assert_eq!(of(&[Completed, Active, Pending]), Active);
        assert_eq!(of(&[Pending, Initializing]), Initializing);
        assert_eq!(of(&[Pending, Completed]), Pending);
        assert_eq!(
            of(&[Active, Crashed, Crashed]),
            Crashed,
            "one way of failing"
        );
        assert_eq!(of(&[Killed, Crashed, Completed]), Failed, "several ways");
    }
}
