//! Tasks and their runs.

use super::{Db, Result};
use crate::api::{CollaborationId, OrganizationId, Run, RunId, RunStatus, RunTask, TaskId};

/// What a container token is checked against.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct TaskRow {
    pub collaboration_id: CollaborationId,
    pub image: String,
    pub parent_id: Option<TaskId>,
}

pub async fn task(db: &mut Db, id: TaskId) -> Result<Option<TaskRow>> {
    Ok(
        sqlx::query_as("SELECT collaboration_id, image, parent_id FROM task WHERE id = ?")
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

pub async fn task_children(db: &mut Db, id: TaskId) -> Result<Vec<TaskId>> {
    Ok(
        sqlx::query_scalar("SELECT id FROM task WHERE parent_id = ?")
            .bind(id)
            .fetch_all(db)
            .await?,
    )
}

/// Whether `node` still exists and its organization's run of `task` has not finished: what a
/// container token needs on every use.
pub async fn container_run_open(
    db: &mut Db,
    node: crate::api::NodeId,
    task: TaskId,
) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM node \
         JOIN run ON run.organization_id = node.organization_id AND run.task_id = ? \
         JOIN task ON task.id = run.task_id AND task.collaboration_id = node.collaboration_id \
         WHERE node.id = ? AND run.finished_at IS NULL",
    )
    .bind(task)
    .bind(node)
    .fetch_one(db)
    .await?;
    Ok(n > 0)
}

/// How many of a task's runs have not finished.
pub async fn open_runs(db: &mut Db, task: TaskId) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM run WHERE task_id = ? AND finished_at IS NULL")
            .bind(task)
            .fetch_one(db)
            .await?,
    )
}

/// A new task, created by the administrator (`init_organization` none) or an algorithm.
#[derive(Debug)]
pub struct NewTask<'a> {
    pub name: &'a str,
    pub image: &'a str,
    pub collaboration: CollaborationId,
    pub parent: Option<TaskId>,
    pub init_organization: Option<OrganizationId>,
}

pub async fn insert_task(db: &mut Db, t: &NewTask<'_>) -> Result<TaskId> {
    Ok(sqlx::query_scalar(
        "INSERT INTO task (name, image, collaboration_id, parent_id, init_organization_id, created_at) \
         VALUES (?, ?, ?, ?, ?, datetime('now')) RETURNING id",
    )
    .bind(t.name)
    .bind(t.image)
    .bind(t.collaboration)
    .bind(t.parent)
    .bind(t.init_organization)
    .fetch_one(db)
    .await?)
}

pub async fn insert_run(
    db: &mut Db,
    task: TaskId,
    organization: OrganizationId,
    input: &str,
) -> Result<RunId> {
    Ok(sqlx::query_scalar(
        "INSERT INTO run (task_id, organization_id, input) VALUES (?, ?, ?) RETURNING id",
    )
    .bind(task)
    .bind(organization)
    .bind(input)
    .fetch_one(db)
    .await?)
}

/// Where a run runs: its organization and its task's collaboration.
pub async fn run_placement(
    db: &mut Db,
    run: RunId,
) -> Result<Option<(OrganizationId, CollaborationId)>> {
    Ok(sqlx::query_as(
        "SELECT run.organization_id, task.collaboration_id FROM run JOIN task ON task.id = run.task_id WHERE run.id = ?",
    )
    .bind(run)
    .fetch_optional(db)
    .await?)
}

#[derive(sqlx::FromRow)]
struct RunRow {
    id: RunId,
    task_id: TaskId,
    organization_id: OrganizationId,
    status: RunStatus,
    input: Option<String>,
    result: Option<String>,
    log: Option<String>,
    image: String,
    name: String,
    parent_id: Option<TaskId>,
    collaboration_id: CollaborationId,
}

impl From<RunRow> for Run {
    fn from(r: RunRow) -> Run {
        Run {
            id: r.id,
            task: RunTask {
                id: r.task_id,
                image: r.image,
                name: r.name,
                parent_id: r.parent_id,
                collaboration_id: r.collaboration_id,
            },
            organization_id: r.organization_id,
            status: r.status,
            input: r.input,
            result: r.result,
            log: r.log,
        }
    }
}

/// The columns of a [`RunRow`], for runs that satisfy a condition.
macro_rules! select_runs {
    ($condition:literal) => {
        concat!(
            "SELECT run.id, run.task_id, run.organization_id, run.status, run.input, run.result, run.log, ",
            "task.image, task.name, task.parent_id, task.collaboration_id ",
            "FROM run JOIN task ON task.id = run.task_id WHERE ",
            $condition
        )
    };
}

fn runs(rows: Vec<RunRow>) -> Vec<Run> {
    rows.into_iter().map(Run::from).collect()
}

pub async fn run(db: &mut Db, id: RunId) -> Result<Option<Run>> {
    let row: Option<RunRow> = sqlx::query_as(select_runs!("run.id = ?"))
        .bind(id)
        .fetch_optional(db)
        .await?;
    Ok(row.map(Run::from))
}

/// A node's runs in a state, optionally of one task.
pub async fn node_runs(
    db: &mut Db,
    organization: OrganizationId,
    collaboration: CollaborationId,
    status: RunStatus,
    task: Option<TaskId>,
) -> Result<Vec<Run>> {
    let rows = sqlx::query_as(select_runs!(
        "run.organization_id = ? AND task.collaboration_id = ? AND run.status = ? \
         AND (? IS NULL OR run.task_id = ?) ORDER BY run.id"
    ))
    .bind(organization)
    .bind(collaboration)
    .bind(status)
    .bind(task)
    .bind(task)
    .fetch_all(db)
    .await?;
    Ok(runs(rows))
}

/// A task's runs; only if the task is in `collaboration`, when given.
pub async fn task_runs(
    db: &mut Db,
    task: TaskId,
    collaboration: Option<CollaborationId>,
) -> Result<Vec<Run>> {
    let rows = sqlx::query_as(select_runs!(
        "run.task_id = ? AND (? IS NULL OR task.collaboration_id = ?) ORDER BY run.id"
    ))
    .bind(task)
    .bind(collaboration)
    .bind(collaboration)
    .fetch_all(db)
    .await?;
    Ok(runs(rows))
}

/// Takes a pending run; false if it was not pending (another claim won).
pub async fn claim_run(db: &mut Db, id: RunId) -> Result<bool> {
    let claimed = sqlx::query(
        "UPDATE run SET status = 'initializing', assigned_at = datetime('now') WHERE id = ? AND status = 'pending'",
    )
    .bind(id)
    .execute(db)
    .await?;
    Ok(claimed.rows_affected() > 0)
}

/// Changes what is given of a run's status, result and log; a finishing status stamps the end.
pub async fn update_run(
    db: &mut Db,
    id: RunId,
    status: Option<RunStatus>,
    result: Option<&str>,
    log: Option<&str>,
) -> Result<()> {
    let finished = status.is_some_and(RunStatus::is_finished);
    sqlx::query(
        "UPDATE run SET status = coalesce(?, status), result = coalesce(?, result), log = coalesce(?, log), \
         finished_at = CASE WHEN ? THEN datetime('now') ELSE finished_at END WHERE id = ?",
    )
    .bind(status)
    .bind(result)
    .bind(log)
    .bind(finished)
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}
