//! `POST /task`: the administrator creates a task in any collaboration; an algorithm creates
//! subtasks of its own task, in its own collaboration. Nodes do not create tasks.
//! `GET /task/<id>/status`: the task's state from its runs', as vantage6 derives it.

use std::collections::HashSet;

use axum::extract::State;

use super::caller::Caller;
use super::error::ApiError;
use super::{ApiResult, Created, Json, Path};
use crate::api::{NewTask, RunStatus, RunSummary, Task, TaskId, TaskStatus};
use crate::server::state::AppState;
use crate::server::store;

/// The most organizations one task may name (a collaboration larger than this is not one that
/// runs a federated algorithm; the bound keeps one request's write short).
const MAX_ORGANIZATIONS: usize = 1000;

pub async fn create(
    State(s): State<AppState>,
    caller: Caller,
    Json(b): Json<NewTask>,
) -> ApiResult<Created<Task>> {
    let (collaboration, parent, init_organization) = match &caller {
        Caller::Admin => (
            b.collaboration_id
                .ok_or_else(|| ApiError::bad("collaboration_id is required"))?,
            b.parent_id,
            None,
        ),
        Caller::Container(c) => {
            if b.collaboration_id
                .is_some_and(|id| id != c.collaboration_id)
            {
                return Err(ApiError::forbidden(
                    "An algorithm may only create tasks in its own collaboration",
                ));
            }
            if b.image != c.image {
                return Err(ApiError::forbidden(format!(
                    "An algorithm may only create tasks with its own image ({:?})",
                    c.image
                )));
            }
            (c.collaboration_id, Some(c.task_id), Some(c.organization_id))
        }
        Caller::Node(_) => return Err(ApiError::forbidden("Nodes do not create tasks")),
    };
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
    // Checked before the write lock is taken, in one query: a long list must not hold it.
    let members = store::member_ids(&mut *s.store.read().await?, collaboration).await?;
    if let Some(o) = organizations.iter().find(|o| !members.contains(&o.id)) {
        return Err(ApiError::bad(format!(
            "organization {} is not a member of collaboration {collaboration}",
            o.id
        )));
    }
    let mut tx = s.store.write().await?;
    if let Some(p) = parent {
        let in_collaboration = store::task(&mut tx, p)
            .await?
            .is_some_and(|t| t.collaboration_id == collaboration);
        if !in_collaboration {
            return Err(ApiError::not_found("parent task", p));
        }
    }
    let new = store::NewTask {
        name: &b.name,
        image: &b.image,
        collaboration,
        parent,
        init_organization,
    };
    let id = store::insert_task(&mut tx, &new).await?;
    let mut runs = Vec::new();
    for o in &organizations {
        let run = store::insert_run(&mut tx, id, o.id, &o.input).await?;
        runs.push(RunSummary {
            id: run,
            organization_id: o.id,
            status: RunStatus::Pending,
        });
    }
    store::commit(tx).await?;
    Ok(Created(Task {
        id,
        name: b.name,
        image: b.image,
        collaboration_id: collaboration,
        parent_id: parent,
        runs,
    }))
}

/// The administrator sees any task; a node or an algorithm the tasks of its collaboration.
pub async fn status(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<TaskId>,
) -> ApiResult<Json<TaskStatus>> {
    let mut db = s.store.read().await?;
    let task = store::task(&mut db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("Task", id))?;
    if caller
        .collaboration()
        .is_some_and(|c| c != task.collaboration_id)
    {
        return Err(ApiError::unauthorized(
            "You lack the permission to do that!",
        ));
    }
    let runs: Vec<RunStatus> = store::task_runs(&mut db, id, None)
        .await?
        .iter()
        .map(|r| r.status)
        .collect();
    Ok(Json(TaskStatus {
        status: RunStatus::of_task(&runs),
    }))
}
