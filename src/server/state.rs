//! What every handler shares: the store, the token signer, the configuration and the built-in
//! VPN's PKI.

use std::sync::Arc;

use crate::server::auth::Signer;
use crate::server::config::ServerConfig;
use crate::server::pki::Pki;
use crate::server::store::Store;
use crate::server::throttle::Throttle;

#[derive(Clone, Debug)]
pub struct AppState {
    pub store: Store,
    pub signer: Signer,
    pub config: Arc<ServerConfig>,
    /// The built-in VPN provider; the lock orders issuing and CRL writes.
    pub pki: Option<Arc<tokio::sync::Mutex<Pki>>>,
    /// Failed administrator logins.
    pub logins: Arc<std::sync::Mutex<Throttle>>,
    pub metrics: crate::server::metrics::ServerMetrics,
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
