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

/// The serial of every revoked certificate, for the CRL.
pub async fn revoked_serials(db: &mut Db) -> Result<Vec<String>> {
    Ok(
        sqlx::query_scalar("SELECT serial FROM vpn_certificate WHERE revoked_at IS NOT NULL")
            .fetch_all(db)
            .await?,
    )
}
