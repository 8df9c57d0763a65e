//! The public keys of the nodes the built-in WireGuard hub admits.

use super::{Db, Result};
use crate::api::NodeId;

/// Keeps `key` as `node`'s public key, replacing the one it had. A key another node holds is
/// refused (false): a peer is known to the hub by its key.
pub async fn set_wireguard_key(db: &mut Db, node: NodeId, key: &str) -> Result<bool> {
    let holder: Option<NodeId> =
        sqlx::query_scalar("SELECT node_id FROM wireguard_peer WHERE public_key = $1")
            .bind(key)
            .fetch_optional(&mut *db)
            .await?;
    if holder.is_some_and(|h| h != node) {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO wireguard_peer (node_id, public_key, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (node_id) DO UPDATE SET public_key = excluded.public_key, \
         updated_at = excluded.updated_at",
    )
    .bind(node)
    .bind(key)
    .bind(super::stamp_now())
    .execute(db)
    .await?;
    Ok(true)
}

/// An admitted node: its public key, its collaboration and, if the hub has heard from it, the
/// address its packets last came from.
#[derive(Debug, sqlx::FromRow)]
pub struct WireGuardPeer {
    pub node_id: NodeId,
    pub public_key: String,
    pub collaboration_id: i64,
    pub endpoint: Option<String>,
}

/// Every admitted node, by id.
pub async fn wireguard_peers(db: &mut Db) -> Result<Vec<WireGuardPeer>> {
    Ok(sqlx::query_as(
        "SELECT w.node_id, w.public_key, n.collaboration_id, w.endpoint \
         FROM wireguard_peer w JOIN node n ON n.id = w.node_id ORDER BY w.node_id",
    )
    .fetch_all(db)
    .await?)
}

/// Keeps where the packets of the node holding `key` last came from (`None`: nowhere another
/// node could reach it).
pub async fn set_wireguard_endpoint(db: &mut Db, key: &str, endpoint: Option<&str>) -> Result<()> {
    sqlx::query("UPDATE wireguard_peer SET endpoint = $1 WHERE public_key = $2")
        .bind(endpoint)
        .bind(key)
        .execute(db)
        .await?;
    Ok(())
}

/// Forgets `node`'s key: the hub no longer admits it.
pub async fn delete_wireguard_key(db: &mut Db, node: NodeId) -> Result<()> {
    sqlx::query("DELETE FROM wireguard_peer WHERE node_id = $1")
        .bind(node)
        .execute(db)
        .await?;
    Ok(())
}
