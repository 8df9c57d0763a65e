//! The built-in VPN's client certificates, live and revoked.

use super::{Db, Result};
use crate::api::NodeId;

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

/// The serial of every revoked certificate still within its validity (`valid_days` from its
/// issue), for the CRL: an expired certificate is refused without being listed.
pub async fn revoked_serials(db: &mut Db, valid_days: u32) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT serial FROM vpn_certificate WHERE revoked_at IS NOT NULL \
         AND issued_at > datetime('now', ?)",
    )
    .bind(format!("-{valid_days} days"))
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
    let (count, oldest): (u32, Option<i64>) = sqlx::query_as(
        "SELECT count(*), min(CAST(strftime('%s', issued_at) AS INTEGER)) FROM vpn_certificate \
         WHERE node_id = ? AND issued_at > datetime('now', ?)",
    )
    .bind(node)
    .bind(format!("-{window_secs} seconds"))
    .fetch_one(db)
    .await?;
    let now = crate::server::state::now();
    let leaves = oldest.map_or(0, |t| {
        (u64::try_from(t).unwrap_or(0) + u64::from(window_secs)).saturating_sub(now)
    });
    Ok((count, leaves))
}
