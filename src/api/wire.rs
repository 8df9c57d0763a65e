//! Every request and answer of the API (docs/vantage6-api.md). Requests the server must not
//! misread refuse unknown fields; answers are read leniently, as vantage6's clients do.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ids::{CollaborationId, NodeId, OrganizationId, PublicPort, RunId, TaskId};

/// A run's state, in vantage6 4.x's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(rename_all = "lowercase")]
pub enum RunStatus {
    /// Waiting for its node.
    Pending,
    /// Claimed; the node is setting it up.
    Initializing,
    /// The algorithm runs.
    Active,
    /// The algorithm exited with 0.
    Completed,
    /// The algorithm exited otherwise, or its set-up failed.
    Failed,
    /// Its node went away during the run.
    Crashed,
    /// Stopped by the node's shutdown.
    Killed,
}

impl RunStatus {
    /// Whether the run has ended (no state follows).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Crashed | RunStatus::Killed
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

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Initializing => "initializing",
            RunStatus::Active => "active",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Crashed => "crashed",
            RunStatus::Killed => "killed",
        }
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

/// A list answer (`GET /run`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Page<T> {
    pub data: Vec<T>,
}

/// `POST /token/user`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserLogin {
    pub username: String,
    pub password: String,
}

/// The answer to `POST /token/user`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserToken {
    pub access_token: String,
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
    pub node_id: NodeId,
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

/// `POST /organization`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewOrganization {
    pub name: String,
}

/// An organization as the API shows it: vantage6's fields, the address ones always null and
/// `public_key` empty (no encrypted collaborations).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Organization {
    pub id: OrganizationId,
    pub name: String,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub address1: Option<String>,
    #[serde(default)]
    pub address2: Option<String>,
    #[serde(default)]
    pub zipcode: Option<String>,
    #[serde(default)]
    pub country: Option<String>,
    #[serde(default)]
    pub public_key: String,
}

impl Organization {
    pub fn new(id: OrganizationId, name: String) -> Organization {
        Organization {
            id,
            name,
            domain: None,
            address1: None,
            address2: None,
            zipcode: None,
            country: None,
            public_key: String::new(),
        }
    }
}

/// `POST /collaboration`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewCollaboration {
    pub name: String,
    pub organization_ids: Vec<OrganizationId>,
}

/// The answer to `POST /collaboration`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Collaboration {
    pub id: CollaborationId,
    pub name: String,
    pub organization_ids: Vec<OrganizationId>,
}

/// `GET /collaboration/<id>`: the collaboration with its members.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CollaborationMembers {
    pub id: CollaborationId,
    pub name: String,
    pub organizations: Vec<Member>,
}

/// An organization of a collaboration, with its node there (if it has one).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Member {
    pub id: OrganizationId,
    pub name: String,
    pub node: Option<MemberNode>,
}

/// A member's node and its VPN address (null while it has none).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberNode {
    pub id: NodeId,
    pub ip: Option<String>,
}

/// `POST /node`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewNode {
    pub organization_id: OrganizationId,
    pub collaboration_id: CollaborationId,
    pub name: Option<String>,
}

/// A node as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Node {
    pub id: NodeId,
    pub name: String,
    pub organization_id: OrganizationId,
    pub collaboration_id: CollaborationId,
    pub ip: Option<String>,
}

/// The answer to `POST /node`: the node and its API key, shown this once.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewNodeKey {
    #[serde(flatten)]
    pub node: Node,
    pub api_key: String,
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
    pub image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collaboration_id: Option<CollaborationId>,
    pub organizations: Vec<TaskOrganization>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<TaskId>,
}

/// One organization of a new task, with its run's input as vantage6 sends it (see
/// [`super::codec`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskOrganization {
    pub id: OrganizationId,
    #[serde(default)]
    pub input: String,
}

/// The answer to `POST /task`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub name: String,
    pub image: String,
    pub collaboration_id: CollaborationId,
    pub parent_id: Option<TaskId>,
    pub runs: Vec<RunSummary>,
}

/// A new task's run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunSummary {
    pub id: RunId,
    pub organization_id: OrganizationId,
    pub status: RunStatus,
}

/// A run as `GET /run`, `POST /run/<id>/claim` and `PATCH /run/<id>` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub id: RunId,
    pub task: RunTask,
    pub organization_id: OrganizationId,
    pub status: RunStatus,
    #[serde(default)]
    pub input: Option<String>,
    #[serde(default)]
    pub result: Option<String>,
    #[serde(default)]
    pub log: Option<String>,
}

/// The task of a [`Run`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTask {
    pub id: TaskId,
    pub image: String,
    pub name: String,
    #[serde(default)]
    pub parent_id: Option<TaskId>,
    pub collaboration_id: CollaborationId,
}

/// `GET /run`'s query.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunFilter {
    pub task_id: Option<TaskId>,
    pub status: Option<RunStatus>,
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
