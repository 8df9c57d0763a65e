//! `GET /run`, `POST /run/<id>/claim` and `PATCH /run/<id>`: nodes take and report their runs;
//! algorithms and the administrator read a task's runs.

use axum::extract::State;

use super::caller::{Caller, NodeCaller};
use super::error::ApiError;
use super::{ApiResult, Json, Path, Query};
use crate::api::{Page, Run, RunFilter, RunId, RunStatus, RunUpdate};
use crate::server::state::AppState;
use crate::server::store::{self, Db, NodeRow};

/// Refuses a run that does not run on node `n` (its organization, in its collaboration).
pub async fn own_run(db: &mut Db, n: &NodeRow, run: RunId) -> ApiResult<()> {
    let placement = store::run_placement(db, run)
        .await?
        .ok_or_else(|| ApiError::not_found("run", run))?;
    if placement != (n.organization_id, n.collaboration_id) {
        return Err(ApiError::forbidden(format!(
            "run {run} does not run on this node"
        )));
    }
    Ok(())
}

/// A node sees the runs for its organization in its collaboration (by default the pending
/// ones); an algorithm sees the runs of a task of its collaboration (`task_id`), with results;
/// the administrator sees any task's runs.
pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    Query(f): Query<RunFilter>,
) -> ApiResult<Json<Page<Run>>> {
    let mut db = s.store.read().await?;
    let task = || {
        f.task_id
            .ok_or_else(|| ApiError::bad("task_id is required"))
    };
    let data = match &caller {
        Caller::Node(n) => {
            let status = f.status.unwrap_or(RunStatus::Pending);
            store::node_runs(
                &mut db,
                n.organization_id,
                n.collaboration_id,
                status,
                f.task_id,
            )
            .await?
        }
        Caller::Container(c) => {
            store::task_runs(&mut db, task()?, Some(c.collaboration_id)).await?
        }
        Caller::Admin => store::task_runs(&mut db, task()?, None).await?,
    };
    Ok(Json(Page { data }))
}

/// A node takes a pending run for itself. One conditional update, so of two concurrent claims
/// exactly one wins; the other gets 409.
pub async fn claim(
    State(s): State<AppState>,
    NodeCaller(n): NodeCaller,
    Path(id): Path<RunId>,
) -> ApiResult<Json<Run>> {
    let mut db = s.store.read().await?;
    own_run(&mut db, &n, id).await?;
    if !store::claim_run(&mut db, id).await? {
        return Err(ApiError::conflict(format!(
            "run {id} is not pending (claimed already?)"
        )));
    }
    answer(&mut db, id).await
}

/// The node reports status, result and log of its run.
pub async fn update(
    State(s): State<AppState>,
    NodeCaller(n): NodeCaller,
    Path(id): Path<RunId>,
    Json(b): Json<RunUpdate>,
) -> ApiResult<Json<Run>> {
    let mut db = s.store.read().await?;
    own_run(&mut db, &n, id).await?;
    store::update_run(&mut db, id, b.status, b.result.as_deref(), b.log.as_deref()).await?;
    answer(&mut db, id).await
}

async fn answer(db: &mut Db, id: RunId) -> ApiResult<Json<Run>> {
    store::run(db, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("run", id))
}
