//! Tasks and their runs.

use super::{Db, Result};
use crate::api::{CollaborationId, NodeId, OrganizationId, RunId, RunStatus, TaskId};

/// A task's own fields (times in ISO 8601, as vantage6 shows them).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct TaskRow {
    pub id: TaskId,
    pub name: String,
    pub description: String,
    pub image: String,
    pub collaboration_id: CollaborationId,
    pub parent_id: Option<TaskId>,
    pub job_id: TaskId,
    pub init_organization_id: Option<OrganizationId>,
    pub init_user_id: Option<i64>,
    pub created_at: String,
}

/// The columns of a [`TaskRow`], for tasks that satisfy a condition.
macro_rules! select_tasks {
    ($condition:literal) => {
        concat!(
            "SELECT id, name, description, image, collaboration_id, parent_id, job_id, ",
            "init_organization_id, init_user_id, replace(created_at, ' ', 'T') AS created_at ",
            "FROM task WHERE ",
            $condition
        )
    };
}

pub async fn task(db: &mut Db, id: TaskId) -> Result<Option<TaskRow>> {
    Ok(sqlx::query_as(select_tasks!("id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await?)
}

/// Which tasks `GET /task` lists (newest first, as vantage6 lists them): any of these that is
/// given must match.
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskFilter {
    pub collaboration: Option<CollaborationId>,
    pub parent: Option<TaskId>,
    pub job: Option<TaskId>,
}

pub async fn tasks(db: &mut Db, f: TaskFilter) -> Result<Vec<TaskRow>> {
    Ok(sqlx::query_as(select_tasks!(
        "($1 IS NULL OR collaboration_id = $1) AND ($2 IS NULL OR parent_id = $2) \
         AND ($3 IS NULL OR job_id = $3) ORDER BY id DESC"
    ))
    .bind(f.collaboration)
    .bind(f.parent)
    .bind(f.job)
    .fetch_all(db)
    .await?)
}

/// The states of a task's runs, and when the last of them finished.
pub async fn task_progress(db: &mut Db, id: TaskId) -> Result<(Vec<RunStatus>, Option<String>)> {
    let rows: Vec<(RunStatus, Option<String>)> = sqlx::query_as(
        "SELECT status, replace(finished_at, ' ', 'T') FROM run WHERE task_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(db)
    .await?;
    let last = rows.iter().filter_map(|r| r.1.clone()).max();
    Ok((rows.into_iter().map(|r| r.0).collect(), last))
}

pub async fn task_children(db: &mut Db, id: TaskId) -> Result<Vec<TaskId>> {
    Ok(
        sqlx::query_scalar("SELECT id FROM task WHERE parent_id = $1")
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
         JOIN run ON run.organization_id = node.organization_id AND run.task_id = $1 \
         JOIN task ON task.id = run.task_id AND task.collaboration_id = node.collaboration_id \
         WHERE node.id = $2 AND run.finished_at IS NULL",
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
        sqlx::query_scalar("SELECT count(*) FROM run WHERE task_id = $1 AND finished_at IS NULL")
            .bind(task)
            .fetch_one(db)
            .await?,
    )
}

/// What a run has created: subtasks in all, and since a time; and the tasks of its job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spawned {
    pub by_run: i64,
    pub by_run_recently: i64,
    pub in_job: i64,
}

/// The subtasks the run of `organization` on task `parent` has created (in all and since
/// `since`, a [`super::stamp`]), and the tasks of `parent`'s job.
pub async fn spawned(
    db: &mut Db,
    parent: TaskId,
    organization: OrganizationId,
    since: &str,
) -> Result<Spawned> {
    let (by_run, by_run_recently): (i64, i64) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(CASE WHEN created_at >= $3 THEN 1 ELSE 0 END), 0) \
         FROM task WHERE parent_id = $1 AND init_organization_id = $2",
    )
    .bind(parent)
    .bind(organization)
    .bind(since)
    .fetch_one(&mut *db)
    .await?;
    let in_job = sqlx::query_scalar(
        "SELECT count(*) FROM task WHERE job_id = (SELECT job_id FROM task WHERE id = $1)",
    )
    .bind(parent)
    .fetch_one(db)
    .await?;
    Ok(Spawned {
        by_run,
        by_run_recently,
        in_job,
    })
}

/// A new task, created by the administrator (user 1, of the root organization) or by an
/// algorithm (a subtask, of its job and its user).
#[derive(Debug)]
pub struct NewTask<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub image: &'a str,
    pub collaboration: CollaborationId,
    pub parent: Option<TaskId>,
    pub init_organization: OrganizationId,
    pub init_user: Option<i64>,
}

/// A subtask joins its parent's job; any other task starts a job of its own, numbered after the
/// last one, as vantage6 numbers them.
pub async fn insert_task(db: &mut Db, t: &NewTask<'_>) -> Result<TaskId> {
    Ok(sqlx::query_scalar(
        "INSERT INTO task (name, description, image, collaboration_id, parent_id, init_organization_id, \
         init_user_id, job_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, \
         coalesce((SELECT job_id FROM task WHERE id = $5), (SELECT coalesce(max(job_id), 0) + 1 FROM task)), \
         $8) RETURNING id",
    )
    .bind(t.name)
    .bind(t.description)
    .bind(t.image)
    .bind(t.collaboration)
    .bind(t.parent)
    .bind(t.init_organization)
    .bind(t.init_user)
    .bind(super::stamp_now())
    .fetch_one(db)
    .await?)
}

/// Keeps the databases task `task` asks for, in their order.
pub async fn insert_task_databases(
    db: &mut Db,
    task: TaskId,
    databases: &[crate::api::TaskDatabase],
) -> Result<()> {
    for (position, d) in databases.iter().enumerate() {
        sqlx::query(
            "INSERT INTO task_database (task_id, position, label, parameters) VALUES ($1, $2, $3, $4)",
        )
        .bind(task)
        .bind(i64::try_from(position).unwrap_or(i64::MAX))
        .bind(&d.label)
        .bind(d.parameters.as_deref())
        .execute(&mut *db)
        .await?;
    }
    Ok(())
}

/// The databases task `task` asks for, in their order.
pub async fn task_databases(db: &mut Db, task: TaskId) -> Result<Vec<crate::api::TaskDatabase>> {
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT label, parameters FROM task_database WHERE task_id = $1 ORDER BY position",
    )
    .bind(task)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(label, parameters)| crate::api::TaskDatabase { label, parameters })
        .collect())
}

/// A run that was ended as killed, as vantage6's kill event names it to the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct KilledRun {
    #[sqlx(rename = "id")]
    pub run_id: RunId,
    pub task_id: TaskId,
    pub organization_id: OrganizationId,
}

/// Ends every unfinished run of task `task` and of every task below it as killed: which.
pub async fn kill_task_runs(db: &mut Db, task: TaskId) -> Result<Vec<KilledRun>> {
    Ok(sqlx::query_as(
        "WITH RECURSIVE family(id) AS ( \
           SELECT id FROM task WHERE id = $1 \
           UNION ALL SELECT task.id FROM task JOIN family ON task.parent_id = family.id) \
         UPDATE run SET status = $2, finished_at = $3 \
         WHERE task_id IN (SELECT id FROM family) AND finished_at IS NULL \
         RETURNING id, task_id, organization_id",
    )
    .bind(task)
    .bind(RunStatus::Killed)
    .bind(super::stamp_now())
    .fetch_all(db)
    .await?)
}

/// Ends every unfinished run of node `node` (its organization's, in its collaboration) as
/// killed; how many.
pub async fn kill_node_runs(db: &mut Db, node: NodeId) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE run SET status = $1, finished_at = $2 WHERE finished_at IS NULL AND id IN ( \
           SELECT run.id FROM run JOIN task ON task.id = run.task_id \
           JOIN node ON node.organization_id = run.organization_id \
             AND node.collaboration_id = task.collaboration_id \
           WHERE node.id = $3)",
    )
    .bind(RunStatus::Killed)
    .bind(super::stamp_now())
    .bind(node)
    .execute(db)
    .await?
    .rows_affected())
}

pub async fn insert_run(
    db: &mut Db,
    task: TaskId,
    organization: OrganizationId,
    input: &str,
) -> Result<RunId> {
    Ok(sqlx::query_scalar(
        "INSERT INTO run (task_id, organization_id, input, assigned_at) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(task)
    .bind(organization)
    .bind(input)
    .bind(super::stamp_now())
    .fetch_one(db)
    .await?)
}

/// Where a run runs: its organization and its task's collaboration.
pub async fn run_placement(
    db: &mut Db,
    run: RunId,
) -> Result<Option<(OrganizationId, CollaborationId)>> {
    Ok(sqlx::query_as(
        "SELECT run.organization_id, task.collaboration_id FROM run JOIN task ON task.id = run.task_id WHERE run.id = $1",
    )
    .bind(run)
    .fetch_optional(db)
    .await?)
}

/// A run, with its task's and its node's fields (times in ISO 8601).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct RunRow {
    pub id: RunId,
    pub task_id: TaskId,
    pub organization_id: OrganizationId,
    pub status: RunStatus,
    pub input: Option<String>,
    pub result: Option<String>,
    pub log: Option<String>,
    pub assigned_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub image: String,
    pub name: String,
    pub description: String,
    pub parent_id: Option<TaskId>,
    pub collaboration_id: CollaborationId,
    pub job_id: TaskId,
    pub init_organization_id: Option<OrganizationId>,
    pub init_user_id: Option<i64>,
    pub node_id: Option<NodeId>,
    pub node_ip: Option<String>,
    pub node_name: Option<String>,
}

/// The columns of a [`RunRow`], for runs that satisfy a condition.
macro_rules! select_runs {
    ($condition:literal) => {
        concat!(
            "SELECT run.id, run.task_id, run.organization_id, run.status, run.input, run.result, run.log, ",
            "replace(run.assigned_at, ' ', 'T') AS assigned_at, replace(run.started_at, ' ', 'T') AS started_at, ",
            "replace(run.finished_at, ' ', 'T') AS finished_at, ",
            "task.image, task.name, task.description, task.parent_id, task.collaboration_id, task.job_id, ",
            "task.init_organization_id, task.init_user_id, ",
            "node.id AS node_id, node.ip AS node_ip, node.name AS node_name ",
            "FROM run JOIN task ON task.id = run.task_id ",
            "LEFT JOIN node ON node.organization_id = run.organization_id AND node.collaboration_id = task.collaboration_id ",
            "WHERE ",
            $condition
        )
    };
}

pub async fn run(db: &mut Db, id: RunId) -> Result<Option<RunRow>> {
    Ok(sqlx::query_as(select_runs!("run.id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await?)
}

/// A node's runs in a state, optionally of one task, oldest first (what waits longest is
/// taken first).
pub async fn node_runs(
    db: &mut Db,
    organization: OrganizationId,
    collaboration: CollaborationId,
    status: RunStatus,
    task: Option<TaskId>,
) -> Result<Vec<RunRow>> {
    let rows = sqlx::query_as(select_runs!(
        "run.organization_id = $1 AND task.collaboration_id = $2 AND run.status = $3 \
         AND ($4 IS NULL OR run.task_id = $4) ORDER BY run.id"
    ))
    .bind(organization)
    .bind(collaboration)
    .bind(status)
    .bind(task)
    .fetch_all(db)
    .await?;
    Ok(rows)
}

/// A task's runs, newest first as vantage6 lists them; only if the task is in
/// `collaboration`, when given.
pub async fn task_runs(
    db: &mut Db,
    task: TaskId,
    collaboration: Option<CollaborationId>,
) -> Result<Vec<RunRow>> {
    let rows = sqlx::query_as(select_runs!(
        "run.task_id = $1 AND ($2 IS NULL OR task.collaboration_id = $2) ORDER BY run.id DESC"
    ))
    .bind(task)
    .bind(collaboration)
    .fetch_all(db)
    .await?;
    Ok(rows)
}

/// Takes a pending run; false if it was not pending (another claim won).
pub async fn claim_run(db: &mut Db, id: RunId) -> Result<bool> {
    let claimed =
        sqlx::query("UPDATE run SET status = 'initializing' WHERE id = $1 AND status = 'pending'")
            .bind(id)
            .execute(db)
            .await?;
    Ok(claimed.rows_affected() > 0)
}

/// Changes what is given of a run's status, result and log; a finishing status stamps the end.
/// A finished run stays as it is: false then.
pub async fn update_run(
    db: &mut Db,
    id: RunId,
    status: Option<RunStatus>,
    result: Option<&str>,
    log: Option<&str>,
) -> Result<bool> {
    let finished = status.is_some_and(RunStatus::is_finished);
    let updated = sqlx::query(
        "UPDATE run SET status = coalesce($1, status), result = coalesce($2, result), log = coalesce($3, log), \
         started_at = CASE WHEN $1 = 'active' THEN coalesce(started_at, $4) ELSE started_at END, \
         finished_at = CASE WHEN $5 THEN $4 ELSE finished_at END \
         WHERE id = $6 AND finished_at IS NULL",
    )
    .bind(status)
    .bind(result)
    .bind(log)
    .bind(super::stamp_now())
    .bind(finished)
    .bind(id)
    .execute(db)
    .await?;
    Ok(updated.rows_affected() > 0)
}
