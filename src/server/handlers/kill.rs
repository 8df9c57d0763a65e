//! `POST /kill/task` and `POST /kill/node/tasks` (administrators), as vantage6's server: every
//! unfinished run of a task and of every task below it, or of a node, ends `killed by user` at
//! once; the nodes running them notice through their wait on `GET /vpn/peers` (the runs leave
//! it) and stop their containers.

use axum::extract::State;
use serde::Deserialize;

use super::caller::AdminCaller;
use super::error::ApiError;
use super::{ApiResult, Json};
use crate::api::{Msg, NodeId, TaskId};
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
    store::task(&mut tx, b.id)
        .await?
        .ok_or_else(|| ApiError::not_found("task", b.id))?;
    let killed = store::kill_task_runs(&mut tx, b.id).await?;
    store::commit(tx).await?;
    if killed == 0 {
        return Err(ApiError::bad(format!(
            "Task {} already finished, so cannot kill it!",
            b.id
        )));
    }
    tracing::info!(task_id = %b.id, runs = killed, user_id = a.user, "task killed");
    s.changed().await;
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
    store::node(&mut tx, b.id)
        .await?
        .ok_or_else(|| ApiError::not_found("node", b.id))?;
    let killed = store::kill_node_runs(&mut tx, b.id).await?;
    store::commit(tx).await?;
    tracing::info!(node_id = %b.id, runs = killed, user_id = a.user, "node's runs killed");
    s.changed().await;
    Ok(Json(Msg {
        msg: format!(
            "Node {} has been instructed to kill all containers running on it.",
            b.id
        ),
    }))
}
