//! The built-in VPN's client certificates, live and revoked.

use super::{Db, Result};
use crate::api::NodeId;

/// Marks every live certificate of a node revoked.
pub async fn revoke_node_certificates(db: &mut Db, node: NodeId) -> Result<()> {
    sqlx::query(
        "UPDATE vpn_certificate SET revoked_at = $1 WHERE node_id = $2 AND revoked_at IS NULL",
    )
    .bind(super::stamp_now())
    .bind(node)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn insert_certificate(db: &mut Db, serial: &str, node: NodeId) -> Result<()> {
    sqlx::query("INSERT INTO vpn_certificate (serial, node_id, issued_at) VALUES ($1, $2, $3)")
        .bind(serial)
        .bind(node)
        .bind(super::stamp_now())
        .execute(db)
        .await?;
    Ok(())
}

/// `secs` seconds ago, as the database keeps times.
fn ago(secs: u64) -> String {
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    super::stamp(time::OffsetDateTime::now_utc().saturating_sub(time::Duration::seconds(secs)))
}

/// The nodes that hold a certificate not revoked, by id.
pub async fn certified_nodes(db: &mut Db) -> Result<Vec<NodeId>> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT node_id FROM vpn_certificate WHERE revoked_at IS NULL ORDER BY node_id",
    )
    .fetch_all(db)
    .await?)
}

/// The serial of every revoked certificate still within its validity (`valid_days` from its
/// issue), for the CRL, sorted: an expired certificate is refused without being listed.
pub async fn revoked_serials(db: &mut Db, valid_days: u32) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT serial FROM vpn_certificate WHERE revoked_at IS NOT NULL \
         AND issued_at > $1 ORDER BY serial",
    )
    .bind(ago(u64::from(valid_days) * 86_400))
    .fetch_all(db)
    .await?)
}

/// How many certificates `node` was issued within the last `window_secs`, and how many seconds
/// remain until the oldest of them leaves that window.
pub async fn recent_certificates(
    db: &mut Db,
    node: NodeId,
    window_secs: u32,
) -> Result<(u32, u64)> {
    let (count, oldest): (i64, Option<String>) = sqlx::query_as(
        "SELECT count(*), min(issued_at) FROM vpn_certificate WHERE node_id = $1 AND issued_at > $2",
    )
    .bind(node)
    .bind(ago(u64::from(window_secs)))
    .fetch_one(db)
    .await?;
    let now = crate::server::state::now();
    let leaves = oldest.as_deref().and_then(super::unstamp).map_or(0, |t| {
        (u64::try_from(t).unwrap_or(0) + u64::from(window_secs)).saturating_sub(now)
    });
    Ok((u32::try_from(count).unwrap_or(u32::MAX), leaves))
}
