//! The public ports of runs, and the addresses algorithms look up.

use super::{Db, Result};
use crate::api::{
    Address, CollaborationId, NodeId, OrganizationId, PeerPort, PublicPort, RunId, RunPort, TaskId,
};

pub async fn insert_port(
    db: &mut Db,
    run: RunId,
    port: PublicPort,
    label: Option<&str>,
) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO port (run_id, port, label) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(run)
    .bind(port)
    .bind(label)
    .fetch_one(db)
    .await?)
}

pub async fn delete_ports(db: &mut Db, run: RunId) -> Result<()> {
    sqlx::query("DELETE FROM port WHERE run_id = $1")
        .bind(run)
        .execute(db)
        .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct AddressRow {
    id: i64,
    port: PublicPort,
    label: Option<String>,
    ip: Option<String>,
    organization_id: OrganizationId,
    task_id: TaskId,
    parent_id: Option<TaskId>,
}

/// The public ports of the runs of `tasks`, with their nodes' VPN addresses, in the order they
/// were registered (as one query over all the tasks would give them).
pub async fn tasks_addresses(db: &mut Db, tasks: &[TaskId]) -> Result<Vec<Address>> {
    let mut tasks = tasks.to_vec();
    tasks.sort_unstable();
    tasks.dedup();
    let mut rows: Vec<AddressRow> = Vec::new();
    for task in tasks {
        rows.extend(
            sqlx::query_as::<_, AddressRow>(
                "SELECT port.id, port.port, port.label, node.ip, run.organization_id, task.id AS task_id, task.parent_id \
                 FROM port JOIN run ON run.id = port.run_id JOIN task ON task.id = run.task_id \
                 LEFT JOIN node ON node.organization_id = run.organization_id AND node.collaboration_id = task.collaboration_id \
                 WHERE task.id = $1",
            )
            .bind(task)
            .fetch_all(&mut *db)
            .await?,
        );
    }
    rows.sort_by_key(|r| r.id);
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

/// A run's public ports, in the order they were registered.
pub async fn run_ports(db: &mut Db, run: RunId) -> Result<Vec<RunPort>> {
    Ok(
        sqlx::query_as("SELECT id, port, label FROM port WHERE run_id = $1 ORDER BY id")
            .bind(run)
            .fetch_all(db)
            .await?,
    )
}

/// The node's runs not yet ended, each with the root of its task family.
pub async fn open_runs_with_roots(db: &mut Db, node: NodeId) -> Result<Vec<(RunId, TaskId)>> {
    Ok(sqlx::query_as(
        "WITH RECURSIVE up(run_id, id, parent_id) AS ( \
           SELECT run.id, task.id, task.parent_id FROM run \
           JOIN task ON task.id = run.task_id \
           JOIN node ON node.organization_id = run.organization_id \
             AND node.collaboration_id = task.collaboration_id \
           WHERE node.id = $1 AND run.status IN ('pending', 'initializing', 'active') \
           UNION ALL \
           SELECT up.run_id, task.id, task.parent_id FROM task JOIN up ON task.id = up.parent_id) \
         SELECT run_id, id FROM up WHERE parent_id IS NULL ORDER BY run_id",
    )
    .bind(node)
    .fetch_all(db)
    .await?)
}

/// A statement over the task family under the bound root (`family(id)`: the root and every
/// task below it).
macro_rules! family_sql {
    ($select:literal) => {
        concat!(
            "WITH RECURSIVE family(id) AS ( \
               SELECT id FROM task WHERE id = $1 \
               UNION ALL SELECT task.id FROM task JOIN family ON task.parent_id = family.id) ",
            $select
        )
    };
}

/// The VPN addresses of the nodes with a run in the task family under `root`, and the public
/// ports of those runs on them, each sorted.
pub async fn family_peers(db: &mut Db, root: TaskId) -> Result<(Vec<String>, Vec<PeerPort>)> {
    let addresses = sqlx::query_scalar(family_sql!(
        "SELECT DISTINCT node.ip FROM run \
         JOIN task ON task.id = run.task_id \
         JOIN node ON node.organization_id = run.organization_id \
           AND node.collaboration_id = task.collaboration_id \
         WHERE run.task_id IN (SELECT id FROM family) AND node.ip IS NOT NULL ORDER BY node.ip"
    ))
    .bind(root)
    .fetch_all(&mut *db)
    .await?;
    let ports = sqlx::query_as(family_sql!(
        "SELECT node.ip, port.port FROM port \
         JOIN run ON run.id = port.run_id \
         JOIN task ON task.id = run.task_id \
         JOIN node ON node.organization_id = run.organization_id \
           AND node.collaboration_id = task.collaboration_id \
         WHERE run.task_id IN (SELECT id FROM family) AND node.ip IS NOT NULL \
         ORDER BY node.ip, port.port"
    ))
    .bind(root)
    .fetch_all(db)
    .await?;
    Ok((addresses, ports))
}

/// The VPN addresses of a collaboration's nodes, sorted.
pub async fn collaboration_addresses(db: &mut Db, c: CollaborationId) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT ip FROM node WHERE collaboration_id = $1 AND ip IS NOT NULL ORDER BY ip",
    )
    .bind(c)
    .fetch_all(db)
    .await?)
}
