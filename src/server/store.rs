//! The server's storage: every SQL query, with typed rows. Handlers take a connection from
//! [`Store::read`] or a write transaction from [`Store::write`] and call the functions here; no
//! SQL is written anywhere else. The schema is `migrations/`; this is the one module that knows
//! the database is SQLite.

use std::path::Path;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{SqliteConnection, SqlitePool};

use crate::api::{
    Address, CollaborationId, Member, MemberNode, NodeId, OrganizationId, PublicPort, Run, RunId,
    RunStatus, RunTask, TaskId,
};

/// A connection, from the pool or inside a transaction: what every query takes.
pub type Db = SqliteConnection;

/// A write transaction; dropped without [`sqlx::Transaction::commit`], it rolls back.
pub type WriteTx = sqlx::Transaction<'static, sqlx::Sqlite>;

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// a row with the same unique key exists
    #[error("already exists")]
    Conflict,
    /// the database failed
    #[error("database error: {0}")]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict,
            _ => StoreError::Database(e),
        }
    }
}

type Result<T> = std::result::Result<T, StoreError>;

/// The database: a pool of connections to the SQLite file.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
}

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// the file could not be opened
    #[error("database {path}: {source}")]
    Connect { path: String, source: sqlx::Error },
    /// the migrations failed
    #[error("database {path}: migration failed: {source}")]
    Migrate {
        path: String,
        source: sqlx::migrate::MigrateError,
    },
}

impl Store {
    /// Opens (creating and migrating as needed) the SQLite file at `path`.
    pub async fn open(path: &Path) -> std::result::Result<Store, OpenError> {
        let shown = path.display().to_string();
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .foreign_keys(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .map_err(|source| OpenError::Connect {
                path: shown.clone(),
                source,
            })?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|source| OpenError::Migrate {
                path: shown,
                source,
            })?;
        Ok(Store { pool })
    }

    /// A connection for reads and single-statement writes.
    pub async fn read(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Sqlite>> {
        Ok(self.pool.acquire().await?)
    }

    /// A transaction that takes SQLite's write lock at once. A deferred one (plain BEGIN) reads
    /// first and fails with "database is locked" when it then writes after another writer
    /// committed in between: SQLite cannot wait that out (SQLITE_BUSY_SNAPSHOT), so concurrent
    /// task creation failed now and then.
    pub async fn write(&self) -> Result<WriteTx> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// Commits a write transaction.
pub async fn commit(tx: WriteTx) -> Result<()> {
    Ok(tx.commit().await?)
}

/// A node, as its token and its own changes see it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct NodeRow {
    pub id: NodeId,
    pub name: String,
    pub organization_id: OrganizationId,
    pub collaboration_id: CollaborationId,
    pub ip: Option<String>,
}

impl From<NodeRow> for crate::api::Node {
    fn from(r: NodeRow) -> Self {
        crate::api::Node {
            id: r.id,
            name: r.name,
            organization_id: r.organization_id,
            collaboration_id: r.collaboration_id,
            ip: r.ip,
        }
    }
}

/// A node statement that returns the columns of a [`NodeRow`].
macro_rules! node_sql {
    ($before:literal, $after:literal) => {
        concat!(
            $before,
            " id, name, organization_id, collaboration_id, ip ",
            $after
        )
    };
}

pub async fn node(db: &mut Db, id: NodeId) -> Result<Option<NodeRow>> {
    Ok(
        sqlx::query_as(node_sql!("SELECT", "FROM node WHERE id = ?"))
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

pub async fn node_by_key_hash(db: &mut Db, hash: &str) -> Result<Option<NodeId>> {
    Ok(
        sqlx::query_scalar("SELECT id FROM node WHERE api_key_hash = ?")
            .bind(hash)
            .fetch_optional(db)
            .await?,
    )
}

pub async fn insert_node(
    db: &mut Db,
    name: &str,
    organization: OrganizationId,
    collaboration: CollaborationId,
    key_hash: &str,
) -> Result<NodeId> {
    Ok(sqlx::query_scalar(
        "INSERT INTO node (name, organization_id, collaboration_id, api_key_hash) VALUES (?, ?, ?, ?) RETURNING id",
    )
    .bind(name)
    .bind(organization)
    .bind(collaboration)
    .bind(key_hash)
    .fetch_one(db)
    .await?)
}

/// Sets (or clears) a node's VPN address; `None` if there is no such node.
pub async fn set_node_ip(db: &mut Db, id: NodeId, ip: Option<&str>) -> Result<Option<NodeRow>> {
    Ok(sqlx::query_as(node_sql!(
        "UPDATE node SET ip = ? WHERE id = ? RETURNING",
        ""
    ))
    .bind(ip)
    .bind(id)
    .fetch_optional(db)
    .await?)
}

/// Deletes a node; false if there was none.
pub async fn delete_node(db: &mut Db, id: NodeId) -> Result<bool> {
    let gone = sqlx::query("DELETE FROM node WHERE id = ?")
        .bind(id)
        .execute(db)
        .await?;
    Ok(gone.rows_affected() > 0)
}

pub async fn insert_organization(db: &mut Db, name: &str) -> Result<OrganizationId> {
    Ok(
        sqlx::query_scalar("INSERT INTO organization (name) VALUES (?) RETURNING id")
            .bind(name)
            .fetch_one(db)
            .await?,
    )
}

pub async fn organization_exists(db: &mut Db, id: OrganizationId) -> Result<bool> {
    let found: Option<i64> = sqlx::query_scalar("SELECT id FROM organization WHERE id = ?")
        .bind(id)
        .fetch_optional(db)
        .await?;
    Ok(found.is_some())
}

pub async fn insert_collaboration(db: &mut Db, name: &str) -> Result<CollaborationId> {
    Ok(
        sqlx::query_scalar("INSERT INTO collaboration (name) VALUES (?) RETURNING id")
            .bind(name)
            .fetch_one(db)
            .await?,
    )
}

pub async fn insert_member(
    db: &mut Db,
    collaboration: CollaborationId,
    organization: OrganizationId,
) -> Result<()> {
    sqlx::query("INSERT INTO member (collaboration_id, organization_id) VALUES (?, ?)")
        .bind(collaboration)
        .bind(organization)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn collaboration_name(db: &mut Db, id: CollaborationId) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT name FROM collaboration WHERE id = ?")
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

#[derive(sqlx::FromRow)]
struct MemberRow {
    id: OrganizationId,
    name: String,
    node_id: Option<NodeId>,
    node_ip: Option<String>,
}

/// A collaboration's organizations, each with its node there (if any).
pub async fn members(db: &mut Db, collaboration: CollaborationId) -> Result<Vec<Member>> {
    let rows: Vec<MemberRow> = sqlx::query_as(
        "SELECT organization.id, organization.name, node.id AS node_id, node.ip AS node_ip FROM member \
         JOIN organization ON organization.id = member.organization_id \
         LEFT JOIN node ON node.organization_id = member.organization_id AND node.collaboration_id = member.collaboration_id \
         WHERE member.collaboration_id = ? ORDER BY organization.id",
    )
    .bind(collaboration)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Member {
            id: r.id,
            name: r.name,
            node: r.node_id.map(|id| MemberNode { id, ip: r.node_ip }),
        })
        .collect())
}

pub async fn is_member(
    db: &mut Db,
    collaboration: CollaborationId,
    organization: OrganizationId,
) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM member WHERE collaboration_id = ? AND organization_id = ?",
    )
    .bind(collaboration)
    .bind(organization)
    .fetch_one(db)
    .await?;
    Ok(n > 0)
}

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

pub async fn insert_port(
    db: &mut Db,
    run: RunId,
    port: PublicPort,
    label: Option<&str>,
) -> Result<i64> {
    Ok(
        sqlx::query_scalar("INSERT INTO port (run_id, port, label) VALUES (?, ?, ?) RETURNING id")
            .bind(run)
            .bind(port)
            .bind(label)
            .fetch_one(db)
            .await?,
    )
}

pub async fn delete_ports(db: &mut Db, run: RunId) -> Result<()> {
    sqlx::query("DELETE FROM port WHERE run_id = ?")
        .bind(run)
        .execute(db)
        .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct AddressRow {
    port: PublicPort,
    label: Option<String>,
    ip: Option<String>,
    organization_id: OrganizationId,
    task_id: TaskId,
    parent_id: Option<TaskId>,
}

/// The public ports of a task's runs, with their nodes' VPN addresses.
pub async fn task_addresses(db: &mut Db, task: TaskId) -> Result<Vec<Address>> {
    let rows: Vec<AddressRow> = sqlx::query_as(
        "SELECT port.port, port.label, node.ip, run.organization_id, task.id AS task_id, task.parent_id \
         FROM port JOIN run ON run.id = port.run_id JOIN task ON task.id = run.task_id \
         LEFT JOIN node ON node.organization_id = run.organization_id AND node.collaboration_id = task.collaboration_id \
         WHERE task.id = ? ORDER BY port.id",
    )
    .bind(task)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Address {
            port: r.port,
            label: r.label,
            ip: r.ip,
            organization_id: r.organization_id,
            task_id: r.task_id,
            parent_id: r.parent_id,
        })
        .collect())
}

/// Marks every live certificate of a node revoked.
pub async fn revoke_node_certificates(db: &mut Db, node: NodeId) -> Result<()> {
    sqlx::query("UPDATE vpn_certificate SET revoked_at = datetime('now') WHERE node_id = ? AND revoked_at IS NULL")
        .bind(node)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn insert_certificate(db: &mut Db, serial: &str, node: NodeId) -> Result<()> {
    sqlx::query(
        "INSERT INTO vpn_certificate (serial, node_id, issued_at) VALUES (?, ?, datetime('now'))",
    )
    .bind(serial)
    .bind(node)
    .execute(db)
    .await?;
    Ok(())
}

/// The serial of every revoked certificate, for the CRL.
pub async fn revoked_serials(db: &mut Db) -> Result<Vec<String>> {
    Ok(
        sqlx::query_scalar("SELECT serial FROM vpn_certificate WHERE revoked_at IS NOT NULL")
            .fetch_all(db)
            .await?,
    )
}
