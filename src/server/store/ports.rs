//! The public ports of runs, and the addresses algorithms look up.

use super::{Db, Result};
use crate::api::{Address, OrganizationId, PublicPort, RunId, RunPort, TaskId};

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
                 WHERE task.id = ?",
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
        sqlx::query_as("SELECT id, port, label FROM port WHERE run_id = ? ORDER BY id")
            .bind(run)
            .fetch_all(db)
            .await?,
    )
}
