//! What every handler shares: the store, the token signer, the configuration and the built-in
//! VPN's PKI.

use std::sync::Arc;

use crate::server::auth::Signer;
use crate::server::config::ServerConfig;
use crate::server::store::Store;
use crate::server::throttle::Throttle;

#[derive(Clone, Debug)]
pub struct AppState {
    pub store: Store,
    pub signer: Signer,
    pub config: Arc<ServerConfig>,
    /// Which VPN nodes get profiles for.
    pub vpn: crate::server::provider::VpnProvider,
    /// Failed administrator logins.
    pub logins: Arc<std::sync::Mutex<Throttle>>,
    pub metrics: crate::server::metrics::ServerMetrics,
    /// Counts the changes that can change a run's peers (runs made, addresses and ports set or
    /// removed, nodes deleted): `GET /vpn/peers` waits on it.
    pub changes: Arc<tokio::sync::watch::Sender<u64>>,
    /// The `GET /vpn/peers` requests waiting for a change.
    pub waits: Arc<crate::server::waits::Waits>,
    /// When this process last wrote each node's `last_seen` (seconds, [`now`]).
    pub seen: Arc<std::sync::Mutex<std::collections::HashMap<crate::api::NodeId, u64>>>,
    /// vantage6's socket.io channel.
    pub events: crate::server::events::Events,
}

/// How often a node's `last_seen` is written (per server process).
const SEEN_EVERY_SECS: u64 = 30;
/// A node is online while it called within this long: algonet's nodes call every half second,
/// and the window spans a write that another process skipped.
pub const ONLINE_WITHIN_SECS: i64 = 90;

impl AppState {
    /// Notes that `node` called now, in the database at most every [`SEEN_EVERY_SECS`].
    pub async fn node_seen(
        &self,
        node: crate::api::NodeId,
    ) -> Result<(), crate::server::store::StoreError> {
        let now = now();
        let due = {
            let mut seen = crate::sync::lock(&self.seen);
            let due = seen.get(&node).is_none_or(|&t| now >= t + SEEN_EVERY_SECS);
            if due {
                seen.insert(node, now);
            }
            due
        };
        if due {
            let at = crate::server::store::stamp_now();
            crate::server::store::node_seen(&mut *self.store.connection().await?, node, &at)
                .await?;
        }
        Ok(())
    }

    /// Notes that `node` left (its last socket.io connection closed): offline at once, as
    /// vantage6 has it, until it calls again.
    pub async fn node_gone(
        &self,
        node: crate::api::NodeId,
    ) -> Result<(), crate::server::store::StoreError> {
        crate::sync::lock(&self.seen).remove(&node);
        crate::server::store::node_left(&mut *self.store.connection().await?, node).await
    }

    /// Tells waiting `GET /vpn/peers` requests to look again: this process's at once, every
    /// other process's on the database through its change counter (see
    /// [`crate::server::waits`]). The change is made already: a failure to count it is logged,
    /// and the other processes' waits answer when they time out.
    pub async fn changed(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
        let counted = match self.store.connection().await {
            Ok(mut db) => crate::server::store::count_change(&mut db).await,
            Err(e) => Err(e),
        };
        if let Err(e) = counted {
            tracing::warn!("counting a change for the other server processes: {e}");
        }
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
