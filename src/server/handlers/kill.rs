//! `POST /kill/task` and `POST /kill/node/tasks` (administrators), as vantage6's server: every
//! unfinished run of a task and of every task below it, or of a node, ends `killed by user` at
//! once; algonet's nodes running them notice through their wait on `GET /vpn/peers` (the runs
//! leave it), vantage6's through the `kill_containers` event, and stop their containers.

use axum::extract::State;
use serde::Deserialize;
use serde_json::json;

use super::caller::AdminCaller;
use super::error::ApiError;
use super::{ApiResult, Json};
use crate::api::{Msg, NodeId, TaskId};
use crate::server::events::collaboration_room;
use crate::server::state::AppState;
use crate::server::store;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kill<T> {
    id: T,
}

pub async fn task(
    State(s): State<AppState>,
    AdminCaller(a): AdminCaller,
    Json(b): Json<Kill<TaskId>>,
) -> ApiResult<Json<Msg>> {
    let mut tx = s.store.write().await?;
    let task = store::task(&mut tx, b.id)
        .await?
        .ok_or_else(|| ApiError::not_found("task", b.id))?;
    let killed = store::kill_task_runs(&mut tx, b.id).await?;
    store::commit(tx).await?;
    if killed.is_empty() {
        return Err(ApiError::bad(format!(
            "Task {} already finished, so cannot kill it!",
            b.id
        )));
    }
    tracing::info!(task_id = %b.id, runs = killed.len(), user_id = a.user, "task killed");
    s.changed().await;
    let room = collaboration_room(task.collaboration_id);
    let kill = json!({"kill_list": killed, "collaboration_id": task.collaboration_id});
    s.events
        .send(&s.store, &room, "kill_containers", &[kill])
        .await;
    Ok(Json(Msg {
        msg: format!(
            "Nodes have been instructed to kill any containers running for task {}.",
            b.id
        ),
    }))
}

pub async fn node_tasks(
    State(s): State<AppState>,
    AdminCaller(a): AdminCaller,
    Json(b): Json<Kill<NodeId>>,
) -> ApiResult<Json<Msg>> {
    let mut tx = s.store.write().await?;
    let node = store::node(&mut tx, b.id)
        .await?
        .ok_or_else(|| ApiError::not_found("node", b.id))?;
    let killed = store::kill_node_runs(&mut tx, b.id).await?;
    store::commit(tx).await?;
    tracing::info!(node_id = %b.id, runs = killed, user_id = a.user, "node's runs killed");
    s.changed().await;
    let room = collaboration_room(node.collaboration_id);
    let kill = json!({"node_id": node.id, "collaboration_id": node.collaboration_id});
    s.events
        .send(&s.store, &room, "kill_containers", &[kill])
        .await;
    Ok(Json(Msg {
        msg: format!(
            "Node {} has been instructed to kill all containers running on it.",
            b.id
        ),
    }))
}
