//! `POST /task`: the administrator creates a task in any collaboration; an algorithm creates
//! subtasks of its own task, in its own collaboration. Nodes do not create tasks.

use axum::extract::State;

use super::caller::Caller;
use super::error::ApiError;
use super::{ApiResult, Created, Json};
use crate::api::{NewTask, RunStatus, RunSummary, Task};
use crate::server::state::AppState;
use crate::server::store;

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
    if b.organizations.is_empty() {
        return Err(ApiError::bad("organizations: at least one"));
    }
    let mut tx = s.store.write().await?;
    for o in &b.organizations {
        if !store::is_member(&mut tx, collaboration, o.id).await? {
            return Err(ApiError::bad(format!(
                "organization {} is not a member of collaboration {collaboration}",
                o.id
            )));
        }
    }
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
    for o in &b.organizations {
        let run = store::insert_run(&mut tx, id, o.id, &o.input.to_string()).await?;
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
