//! `POST /task`: an administrator creates a task in any collaboration (for itself and its
//! organization); an algorithm creates
//! subtasks of its own task, in its own collaboration. Nodes do not create tasks.
//! `GET /task/<id>`, `GET /task` and `GET /task/<id>/status` (the task's state from its runs',
//! as vantage6 derives it): the administrator any task, a node or an algorithm those of its
//! collaboration.

use std::collections::HashSet;

use axum::extract::State;

use serde::Deserialize;

use super::caller::Caller;
use super::error::{ApiError, Kind};
use super::hypermedia::{Links, Listing, Resource};
use super::{ApiResult, Created, Json, Path, Query};
use crate::api::{
    CollaborationId, ContainerIdentity, NewTask, Page, RunStatus, Task, TaskId, TaskStatus,
};
use crate::server::events::collaboration_room;
use crate::server::state::AppState;
use crate::server::store::{self, Db};

/// The most organizations one task may name (a collaboration larger than this is not one that
/// runs a federated algorithm; the bound keeps one request's write short).
const MAX_ORGANIZATIONS: usize = 1000;

pub async fn create(
    State(s): State<AppState>,
    caller: Caller,
    Json(b): Json<NewTask>,
) -> ApiResult<Created<Task>> {
    let (collaboration, parent, init_organization, mut init_user) = match &caller {
        Caller::Admin(a) => (
            b.collaboration_id
                .ok_or_else(|| ApiError::bad("collaboration_id is required"))?,
            b.parent_id,
            a.own_organization(&mut *s.store.connection().await?)
                .await?,
            Some(a.user),
        ),
        Caller::Container(c) => {
            if b.collaboration_id
                .is_some_and(|id| id != c.collaboration_id)
            {
                return Err(ApiError::forbidden(
                    "An algorithm may only create tasks in its own collaboration",
                ));
            }
            // 401, as vantage6 refuses it.
            if b.image != c.image {
                return Err(ApiError::unauthorized(format!(
                    "An algorithm may only create tasks with its own image ({:?})",
                    c.image
                )));
            }
            // A subtask belongs to its parent's user (below).
            (c.collaboration_id, Some(c.task_id), c.organization_id, None)
        }
        Caller::Node(_) => return Err(ApiError::forbidden("Nodes do not create tasks")),
    };
    let databases = crate::api::TaskDatabase::list(b.databases.as_ref()).map_err(ApiError::bad)?;
    let mut organizations = b.organizations;
    // One run per organization: a repeated organization is the same run.
    let mut seen = HashSet::new();
    organizations.retain(|o| seen.insert(o.id));
    if organizations.is_empty() {
        return Err(ApiError::bad("organizations: at least one"));
    }
    if organizations.len() > MAX_ORGANIZATIONS {
        return Err(ApiError::bad(format!(
            "organizations: at most {MAX_ORGANIZATIONS}"
        )));
    }
    // Checked before the write lock is taken, in two queries: a long list must not hold it.
    let mut db = s.store.connection().await?;
    let encrypted = store::collaboration(&mut db, collaboration)
        .await?
        .ok_or_else(|| ApiError::not_found("collaboration", collaboration))?
        .encrypted
        != 0;
    for o in &organizations {
        check_input(encrypted, &o.input)?;
    }
    if encrypted {
        let creator = store::organization(&mut db, init_organization, None).await?;
        if creator.is_none_or(|o| o.public_key.is_empty()) {
            return Err(ApiError::bad(format!(
                "Organization {init_organization}, which creates this task, has no public key: \
                 in an encrypted collaboration the results are encrypted for it (vantage6's \
                 clients upload it with setup_encryption)"
            )));
        }
    }
    let members = store::member_ids(&mut db, collaboration).await?;
    drop(db);
    if let Some(o) = organizations.iter().find(|o| !members.contains(&o.id)) {
        return Err(ApiError::bad(format!(
            "organization {} is not a member of collaboration {collaboration}",
            o.id
        )));
    }
    let mut tx = s.store.write().await?;
    if let Some(p) = parent {
        let parent = store::task(&mut tx, p)
            .await?
            .filter(|t| t.collaboration_id == collaboration)
            .ok_or_else(|| ApiError::not_found("parent task", p))?;
        if let Caller::Container(c) = &caller {
            init_user = parent.init_user_id;
            within_limits(&s, &mut tx, c).await?;
        }
    }
    let new = store::NewTask {
        name: &b.name,
        description: &b.description,
        image: &b.image,
        collaboration,
        parent,
        init_organization,
        init_user,
    };
    let id = store::insert_task(&mut tx, &new).await?;
    store::insert_task_databases(&mut tx, id, &databases).await?;
    for o in &organizations {
        store::insert_run(&mut tx, id, o.id, &o.input).await?;
    }
    let task = present(&s, &mut tx, id).await?;
    store::commit(tx).await?;
    s.changed().await;
    // vantage6's nodes hear of it; algonet's see it in their next list of runs.
    s.events
        .send(
            &s.store,
            &collaboration_room(collaboration),
            "new_task",
            &[serde_json::json!({"id": id, "parent_id": parent})],
        )
        .await;
    Ok(Created(task))
}

/// Refuses an input that is not what the collaboration keeps, as vantage6 does: in an encrypted
/// collaboration an input sealed for its organization (readable text there would be stored and
/// sent in clear), in another base64 of text.
fn check_input(encrypted: bool, input: &str) -> ApiResult<()> {
    if encrypted {
        crate::crypto::check_form(input).map_err(|e| {
            ApiError::bad(format!(
                "Your collaboration requires encryption, but input is not encrypted ({e})! \
                 Please encrypt your input before sending it."
            ))
        })
    } else {
        match crate::api::codec::decode(input).map(String::from_utf8) {
            Ok(Ok(_)) => Ok(()),
            _ => Err(ApiError::bad(
                "Your task's input cannot be parsed: it should be base64 of text (JSON, as \
                 vantage6's clients send it), not encrypted, as the collaboration does not use \
                 encryption.",
            )),
        }
    }
}

/// Refuses a subtask past the limits of `subtasks` (429), counted in the write transaction so
/// that concurrent requests cannot pass a limit together.
async fn within_limits(s: &AppState, db: &mut Db, c: &ContainerIdentity) -> ApiResult<()> {
    let limits = s.config.subtasks;
    let second_ago = store::stamp(time::OffsetDateTime::now_utc() - time::Duration::SECOND);
    let n = store::spawned(db, c.task_id, c.organization_id, &second_ago).await?;
    let refused = if n.by_run >= i64::from(limits.per_run) {
        Some(ApiError::new(
            Kind::Limit,
            format!("This run has created {} subtasks, its limit", n.by_run),
        ))
    } else if n.in_job >= i64::from(limits.per_job) {
        Some(ApiError::new(
            Kind::Limit,
            format!("This job has {} tasks, its limit", n.in_job),
        ))
    } else if n.by_run_recently >= i64::from(limits.per_second) {
        Some(ApiError::new(
            Kind::TooMany(1),
            format!(
                "This run creates subtasks faster than {} a second",
                limits.per_second
            ),
        ))
    } else {
        None
    };
    match refused {
        Some(e) => {
            tracing::warn!(
                task_id = %c.task_id,
                organization_id = %c.organization_id,
                node_id = %c.node_id,
                "subtask refused: {}",
                e.msg
            );
            Err(e)
        }
        None => Ok(()),
    }
}

/// Task `id` as vantage6 shows it, its state and end from its runs'.
async fn present(s: &AppState, db: &mut Db, id: TaskId) -> ApiResult<Task> {
    let t = store::task(db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("task", id))?;
    shape(s, db, t).await
}

async fn shape(s: &AppState, db: &mut Db, t: store::TaskRow) -> ApiResult<Task> {
    let l = Links::of(s);
    let (runs, finished) = store::task_progress(db, t.id).await?;
    let status = RunStatus::of_task(&runs);
    Ok(Task {
        status,
        finished_at: if status.is_finished() { finished } else { None },
        collaboration: l.one(Resource::Collaboration, t.collaboration_id),
        runs: l.list("run", "task_id", t.id),
        results: l.list("result", "task_id", t.id),
        parent: t.parent_id.map(|p| l.one(Resource::Task, p)),
        children: l.list("task", "parent_id", t.id),
        init_org: t
            .init_organization_id
            .map(|o| l.one(Resource::Organization, o)),
        init_user: t.init_user_id.map(|u| l.one(Resource::User, u)),
        databases: store::task_databases(db, t.id).await?,
        study: None,
        algorithm_store: None,
        id: t.id,
        name: t.name,
        description: t.description,
        image: t.image,
        job_id: t.job_id,
        created_at: t.created_at,
    })
}

pub async fn get(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<TaskId>,
) -> ApiResult<Json<Task>> {
    let mut db = s.store.connection().await?;
    let t = store::task(&mut db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("task", id))?;
    caller.sees(t.collaboration_id)?;
    Ok(Json(shape(&s, &mut db, t).await?))
}

#[derive(Debug, Deserialize)]
pub struct TaskQuery {
    collaboration_id: Option<CollaborationId>,
    parent_id: Option<TaskId>,
    job_id: Option<TaskId>,
}

pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    listing: Listing,
    Query(q): Query<TaskQuery>,
) -> ApiResult<Json<Page<Task>>> {
    let filter = store::TaskFilter {
        collaboration: caller.within(q.collaboration_id)?,
        parent: q.parent_id,
        job: q.job_id,
    };
    let mut db = s.store.connection().await?;
    let rows = store::tasks(&mut db, filter).await?;
    // Only the page's tasks are shaped (each asks for its runs' states).
    let mut page = listing.page(rows);
    let mut data = Vec::with_capacity(page.data.len());
    for t in std::mem::take(&mut page.data) {
        data.push(shape(&s, &mut db, t).await?);
    }
    Ok(Json(Page {
        data,
        links: page.links,
    }))
}

/// The administrator sees any task; a node or an algorithm the tasks of its collaboration.
pub async fn status(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<TaskId>,
) -> ApiResult<Json<TaskStatus>> {
    let mut db = s.store.connection().await?;
    let task = store::task(&mut db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("task", id))?;
    caller.sees(task.collaboration_id)?;
    let (runs, _) = store::task_progress(&mut db, id).await?;
    Ok(Json(TaskStatus {
        status: RunStatus::of_task(&runs),
    }))
}
