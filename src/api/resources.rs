//! The resources as vantage6 4.x shows them (its marshmallow schemas): the same fields, related
//! resources as links (`{"id", "link", "methods"}`) or as a link to a filtered list, lists as
//! pages with links to the other pages. What algonet adds is marked so.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ids::{CollaborationId, NodeId, OrganizationId, PublicPort, RunId, TaskId};
use super::messages::RunStatus;
use super::task_database::TaskDatabase;

/// A related resource: its id, where it is, and what this server answers there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link<I> {
    pub id: I,
    #[serde(default)]
    pub link: String,
    #[serde(default)]
    pub methods: Vec<String>,
}

/// One page of a list.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    #[serde(default)]
    pub links: PageLinks,
}

/// The pages around this one, as vantage6 names them (absent where there is none).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageLinks {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    #[serde(default, rename = "self", skip_serializing_if = "Option::is_none")]
    pub this: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
}

/// An organization. `public_key` is base64 of its PEM RSA public key (what inputs and results
/// for it are encrypted with, in an encrypted collaboration), empty until it uploads one.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Organization {
    pub id: OrganizationId,
    pub name: String,
    pub domain: Option<String>,
    pub address1: Option<String>,
    pub address2: Option<String>,
    pub zipcode: Option<String>,
    pub country: Option<String>,
    #[serde(default)]
    pub public_key: String,
    #[serde(default)]
    pub collaborations: String,
    #[serde(default)]
    pub nodes: String,
    #[serde(default)]
    pub users: String,
    #[serde(default)]
    pub tasks: String,
    #[serde(default)]
    pub runs: String,
    #[serde(default)]
    pub studies: String,
}

/// A collaboration; its organizations, nodes and tasks are lists linked to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Collaboration {
    pub id: CollaborationId,
    pub name: String,
    pub encrypted: bool,
    #[serde(default)]
    pub organizations: String,
    #[serde(default)]
    pub nodes: String,
    #[serde(default)]
    pub tasks: String,
    #[serde(default)]
    pub algorithm_stores: String,
    #[serde(default)]
    pub studies: String,
}

/// A node. `status` and `last_seen` are null: algonet's nodes poll and keep no socket open.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Node {
    pub id: NodeId,
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    pub ip: Option<String>,
    #[serde(default)]
    pub last_seen: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    pub organization: Link<OrganizationId>,
    pub collaboration: Link<CollaborationId>,
    #[serde(default)]
    pub config: Vec<Value>,
}

/// The answer to `POST /node`: the node and its API key, shown this once.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewNodeKey {
    #[serde(flatten)]
    pub node: Node,
    pub api_key: String,
}

/// A user: the configuration's administrator or a user account.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct User {
    pub id: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub username: String,
    pub firstname: Option<String>,
    pub lastname: Option<String>,
    pub email: Option<String>,
    pub ip: Option<String>,
    pub last_seen: Option<String>,
    pub status: Option<String>,
    pub otp_secret: Option<String>,
    pub last_email_failed_login_sent: Option<String>,
    pub last_email_recover_password_sent: Option<String>,
    pub organization: Link<OrganizationId>,
    pub roles: String,
    pub rules: String,
}

/// A task. Its runs and results are lists linked to (`GET /run?task_id=`, `/result?task_id=`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub image: String,
    /// The task a user created at the top of this one's family.
    pub job_id: TaskId,
    pub status: RunStatus,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub collaboration: Link<CollaborationId>,
    pub parent: Option<Link<TaskId>>,
    pub init_org: Option<Link<OrganizationId>>,
    pub init_user: Option<Link<i64>>,
    #[serde(default)]
    pub runs: String,
    #[serde(default)]
    pub results: String,
    #[serde(default)]
    pub children: String,
    #[serde(default)]
    pub databases: Vec<TaskDatabase>,
    #[serde(default)]
    pub study: Option<Value>,
    #[serde(default)]
    pub algorithm_store: Option<Value>,
}

/// A run: one organization's part of a task. Its result is read at `GET /result/<id>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub id: RunId,
    pub status: RunStatus,
    pub input: Option<String>,
    pub log: Option<String>,
    pub assigned_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    #[serde(default)]
    pub cleanup_at: Option<String>,
    #[serde(default)]
    pub blob_storage_used: bool,
    pub organization: Link<OrganizationId>,
    pub task: RunTask,
    pub results: Link<RunId>,
    pub node: Option<RunNode>,
    #[serde(default)]
    pub ports: Vec<RunPort>,
}

/// The task of a [`Run`]: vantage6's link, with what a node needs to run it, as vantage6 shows
/// a run's task with `include=task` (algonet adds `parent_id` and `collaboration_id`, and shows
/// it so always).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTask {
    pub id: TaskId,
    #[serde(default)]
    pub link: String,
    #[serde(default)]
    pub methods: Vec<String>,
    pub image: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub parent_id: Option<TaskId>,
    pub collaboration_id: CollaborationId,
    #[serde(default)]
    pub parent: Option<Link<TaskId>>,
    #[serde(default)]
    pub collaboration: Option<Link<CollaborationId>>,
    #[serde(default)]
    pub init_org: Option<Link<OrganizationId>>,
    #[serde(default)]
    pub init_user: Option<Link<i64>>,
    #[serde(default)]
    pub databases: Vec<TaskDatabase>,
    /// The job: the task a user made, shared by every task below it (a family of runs shares
    /// one connection budget on each node).
    #[serde(default)]
    pub job_id: Option<TaskId>,
}

/// The node a run runs on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunNode {
    pub id: NodeId,
    pub ip: Option<String>,
    pub status: Option<String>,
    pub name: String,
}

/// A public port of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct RunPort {
    pub id: i64,
    pub port: PublicPort,
    pub label: Option<String>,
}

/// A run's result, as `GET /result` shows it: base64 of what the algorithm wrote (see
/// [`super::codec`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    pub id: RunId,
    pub result: Option<String>,
    #[serde(default)]
    pub cleanup_at: Option<String>,
    #[serde(default)]
    pub blob_storage_used: bool,
    pub run: Link<RunId>,
    pub task: Link<TaskId>,
}
