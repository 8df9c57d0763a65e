//! `algonet server`: the central server. vantage6 4.x-compatible API on tokio and axum, with a
//! SQLite file database (through sqlx, which also speaks PostgreSQL) and embedded migrations.

pub mod api;
pub mod auth;
pub mod config;
pub mod eduvpn;
pub mod metrics;
pub mod pki;
pub mod provision;
pub mod state;
pub mod store;
pub mod throttle;

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use crate::server::auth::Signer;
use crate::server::config::ServerConfig;
pub use crate::server::state::AppState;
use crate::server::store::{OpenError, Store};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// the data directory or a secret file could not be made or read
    #[error("{path}: {source}")]
    Files {
        path: String,
        source: std::io::Error,
    },
    /// the database could not be opened or migrated
    #[error(transparent)]
    Database(#[from] OpenError),
    /// the built-in VPN's PKI could not be opened
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    /// the listening socket could not be bound
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

fn files(path: &Path) -> impl FnOnce(std::io::Error) -> ServerError + '_ {
    move |source| ServerError::Files {
        path: path.display().to_string(),
        source,
    }
}

/// Reads the token-signing secret, making it (mode 0600) on first start.
fn secret(dir: &Path) -> Result<Vec<u8>, ServerError> {
    let path = dir.join("token-secret");
    match std::fs::read(&path) {
        Ok(s) if !s.is_empty() => return Ok(s),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(files(&path)(e)),
    }
    let s =
        auth::random_secret().map_err(|e| files(&path)(std::io::Error::other(e.to_string())))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(files(&path))?;
    std::io::Write::write_all(&mut f, s.as_bytes()).map_err(files(&path))?;
    Ok(s.into_bytes())
}

/// Opens the data directory and the database (creating and migrating as needed).
pub async fn open(config: ServerConfig) -> Result<AppState, ServerError> {
    let dir = &config.data_dir;
    crate::private::dir(dir).map_err(files(dir))?;
    let signer = Signer::new(secret(dir)?);
    let db = dir.join("algonet.sqlite");
    let store = Store::open(&db).await?;
    // SQLite makes its files with the process's umask; they hold every API key hash and result.
    for suffix in ["", "-wal", "-shm"] {
        let path = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
        crate::private::tighten(&path).map_err(files(&path))?;
    }
    let pki = match &config.vpn {
        Some(vpn) => Some(Arc::new(tokio::sync::Mutex::new(pki::Pki::open(
            &dir.join("vpn"),
            vpn,
        )?))),
        None => None,
    };
    Ok(AppState {
        store,
        signer,
        config: Arc::new(config),
        pki,
        logins: Arc::default(),
        metrics: Default::default(),
        changes: Arc::new(tokio::sync::watch::Sender::new(0)),
    })
}

/// Binds the listening socket; the returned server runs when awaited.
pub async fn bind(
    state: AppState,
) -> Result<
    (
        std::net::SocketAddr,
        impl std::future::Future<Output = std::io::Result<()>>,
    ),
    ServerError,
> {
    let addr = state.config.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Listen { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServerError::Listen { addr, source })?;
    let limits = Limits {
        header_timeout: std::time::Duration::from_secs(state.config.header_timeout_secs),
        max_connections: state.config.max_connections,
    };
    let app = api::router(state);
    Ok((local, serve(listener, app, limits)))
}

/// What one client may hold of the server.
#[derive(Clone, Copy, Debug)]
struct Limits {
    header_timeout: std::time::Duration,
    max_connections: usize,
}

/// Serves HTTP/1.1 on `listener`: a connection that does not send a request's headers within
/// the header timeout is closed (a slow or half-open client holds nothing for long), and at
/// most `max_connections` are served at once (the next waits in the listen queue). Each
/// request carries its peer's address for the handlers (`ConnectInfo`).
async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: Limits,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return Ok(());
        };
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors, or a connection reset before it was accepted: not the
                // listener's end. Pause briefly rather than spin.
                tracing::warn!("accepting a connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let app =
            app.clone()
                .map_request(move |req: axum::http::Request<hyper::body::Incoming>| {
                    let mut req = req.map(axum::body::Body::new);
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    req
                });
        tokio::spawn(async move {
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(
                    TokioIo::new(stream),
                    hyper_util::service::TowerToHyperService::new(app),
                )
                .await;
            if let Err(e) = served {
                tracing::debug!("connection from {peer}: {e}");
            }
            drop(slot);
        });
    }
}
