//! `GET /run`, `POST /run/<id>/claim` and `PATCH /run/<id>`: nodes take and report their runs;
//! algorithms and the administrator read a task's runs (`GET /run?task_id`, `GET /run/<id>`)
//! and results (`GET /result?task_id`, `GET /result/<id>`), those of their collaboration.

use axum::extract::State;

use super::caller::{Caller, NodeCaller};
use super::error::ApiError;
use super::hypermedia::{Links, Listing, Resource};
use super::{ApiResult, Json, Path, Query};
use crate::api::{Page, Run, RunFilter, RunId, RunNode, RunResult, RunStatus, RunTask, RunUpdate};
use crate::server::events::collaboration_room;
use crate::server::state::AppState;
use crate::server::store::{self, Db, NodeRow, RunRow};

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

/// The runs a list asks for: a node its organization's in its collaboration (by default the
/// pending ones); an algorithm those of a task of its collaboration (`task_id`); the
/// administrator any task's.
async fn listed(db: &mut Db, caller: &Caller, f: &RunFilter) -> ApiResult<Vec<RunRow>> {
    let task = || {
        f.task_id
            .ok_or_else(|| ApiError::bad("task_id is required"))
    };
    Ok(match caller {
        Caller::Node(n) => {
            let status = f.status.unwrap_or(RunStatus::Pending);
            store::node_runs(db, n.organization_id, n.collaboration_id, status, f.task_id).await?
        }
        Caller::Container(c) => store::task_runs(db, task()?, Some(c.collaboration_id)).await?,
        Caller::Admin(_) => store::task_runs(db, task()?, None).await?,
    })
}

pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    listing: Listing,
    Query(f): Query<RunFilter>,
) -> ApiResult<Json<Page<Run>>> {
    let mut db = s.store.connection().await?;
    let mut page = listing.page(listed(&mut db, &caller, &f).await?);
    let mut data = Vec::with_capacity(page.data.len());
    for r in std::mem::take(&mut page.data) {
        data.push(present(&s, &mut db, r).await?);
    }
    Ok(Json(Page {
        data,
        links: page.links,
    }))
}

pub async fn results(
    State(s): State<AppState>,
    caller: Caller,
    listing: Listing,
    Query(f): Query<RunFilter>,
) -> ApiResult<Json<Page<RunResult>>> {
    let rows = listed(&mut *s.store.connection().await?, &caller, &f).await?;
    let l = Links::of(&s);
    Ok(Json(
        listing.page(rows.into_iter().map(|r| result_of(l, r)).collect()),
    ))
}

/// Run `id`, if the caller sees its collaboration.
async fn visible(db: &mut Db, caller: &Caller, id: RunId) -> ApiResult<RunRow> {
    let run = store::run(db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("run", id))?;
    caller.sees(run.collaboration_id)?;
    Ok(run)
}

pub async fn get(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<RunId>,
) -> ApiResult<Json<Run>> {
    let mut db = s.store.connection().await?;
    let run = visible(&mut db, &caller, id).await?;
    Ok(Json(present(&s, &mut db, run).await?))
}

pub async fn result(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<RunId>,
) -> ApiResult<Json<RunResult>> {
    let run = visible(&mut *s.store.connection().await?, &caller, id).await?;
    Ok(Json(result_of(Links::of(&s), run)))
}

fn result_of(l: Links, r: RunRow) -> RunResult {
    RunResult {
        run: l.one(Resource::Run, r.id),
        task: l.one(Resource::Task, r.task_id),
        id: r.id,
        result: r.result,
        cleanup_at: None,
        blob_storage_used: false,
    }
}

/// A run as vantage6 shows it, with its ports.
async fn present(s: &AppState, db: &mut Db, r: RunRow) -> ApiResult<Run> {
    let l = Links::of(s);
    let task = l.one(Resource::Task, r.task_id);
    Ok(Run {
        organization: l.one(Resource::Organization, r.organization_id),
        task: RunTask {
            id: task.id,
            link: task.link,
            methods: task.methods,
            image: r.image,
            name: r.name,
            description: r.description,
            parent_id: r.parent_id,
            collaboration_id: r.collaboration_id,
            parent: r.parent_id.map(|p| l.one(Resource::Task, p)),
            collaboration: Some(l.one(Resource::Collaboration, r.collaboration_id)),
            init_org: r
                .init_organization_id
                .map(|o| l.one(Resource::Organization, o)),
            init_user: r.init_user_id.map(|u| l.one(Resource::User, u)),
            databases: store::task_databases(db, r.task_id).await?,
            job_id: Some(r.job_id),
        },
        results: l.one(Resource::Result, r.id),
        node: r.node_id.map(|id| RunNode {
            id,
            ip: r.node_ip,
            status: None,
            name: r.node_name.unwrap_or_default(),
        }),
        ports: store::run_ports(db, r.id).await?,
        id: r.id,
        input: r.input,
        assigned_at: r.assigned_at,
        started_at: r.started_at,
        finished_at: r.finished_at,
        status: r.status,
        log: r.log,
        cleanup_at: None,
        blob_storage_used: false,
    })
}

/// A node takes a pending run for itself. One conditional update, so of two concurrent claims
/// exactly one wins; the other gets 409.
pub async fn claim(
    State(s): State<AppState>,
    NodeCaller(n): NodeCaller,
    Path(id): Path<RunId>,
) -> ApiResult<Json<Run>> {
    let mut db = s.store.connection().await?;
    own_run(&mut db, &n, id).await?;
    if !store::claim_run(&mut db, id).await? {
        return Err(ApiError::conflict(format!(
            "run {id} is not pending (claimed already?)"
        )));
    }
    answer(&s, &mut db, id).await
}

/// The node reports status, result and log of its run; a finished run stays as it was (409).
pub async fn update(
    State(s): State<AppState>,
    NodeCaller(n): NodeCaller,
    Path(id): Path<RunId>,
    Json(b): Json<RunUpdate>,
) -> ApiResult<Json<Run>> {
    let mut db = s.store.connection().await?;
    own_run(&mut db, &n, id).await?;
    if !store::update_run(&mut db, id, b.status, b.result.as_deref(), b.log.as_deref()).await? {
        return Err(ApiError::conflict(format!(
            "run {id} has finished: its status, result and log stay as they are"
        )));
    }
    s.events
        .send(
            &s.store,
            &collaboration_room(n.collaboration_id),
            "status_update",
            &[serde_json::json!({"run_id": id})],
        )
        .await;
    if b.status.is_some_and(RunStatus::is_finished) {
        // A finished run leaves its node's list of runs with peers.
        drop(db);
        s.changed().await;
        db = s.store.connection().await?;
    }
    answer(&s, &mut db, id).await
}

async fn answer(s: &AppState, db: &mut Db, id: RunId) -> ApiResult<Json<Run>> {
    let run = store::run(db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("run", id))?;
    Ok(Json(present(s, db, run).await?))
}
