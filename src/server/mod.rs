//! `algonet server`: the central server. vantage6 4.x-compatible API on tokio and axum, with its
//! data in a SQLite file or in PostgreSQL (shared by several server processes), through sqlx,
//! with embedded migrations.

pub mod api;
pub mod auth;
pub mod config;
pub mod eduvpn;
pub mod import;
pub mod metrics;
pub mod pki;
pub mod provision;
pub mod state;
pub mod store;
pub mod throttle;

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
    /// the database failed while the server started
    #[error(transparent)]
    Store(#[from] store::StoreError),
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

/// The token-signing key: the database's, made on the first start (or taken from the
/// `token-secret` file a server kept in its data directory before).
async fn token_key(store: &Store, dir: &Path) -> Result<Vec<u8>, ServerError> {
    let mut db = store.read().await?;
    if let Some(key) = store::secret(&mut db, "token").await? {
        return Ok(key.into_bytes());
    }
    let path = dir.join("token-secret");
    let key = match std::fs::read_to_string(&path) {
        Ok(s) if !s.is_empty() => s,
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(files(&path)(e)),
        _ => {
            auth::random_secret().map_err(|e| files(&path)(std::io::Error::other(e.to_string())))?
        }
    };
    Ok(store::keep_secret(&mut db, "token", &key)
        .await?
        .into_bytes())
}

/// The built-in VPN's PKI, from the database's material (made on the first start, or taken
/// from the files a server kept in `dir` before).
async fn vpn_pki(
    store: &Store,
    dir: &Path,
    vpn: &pki::BuiltinVpn,
) -> Result<pki::Pki, ServerError> {
    let mut db = store.read().await?;
    let kept = match store::secret(&mut db, "vpn").await? {
        Some(json) => json,
        None => {
            let material = match pki::Material::from_dir(dir) {
                Some(m) => m,
                None => pki::Material::generate()?,
            };
            let json = serde_json::to_string(&material)
                .map_err(|e| files(dir)(std::io::Error::other(e)))?;
            store::keep_secret(&mut db, "vpn", &json).await?
        }
    };
    let material = serde_json::from_str(&kept).map_err(|e| {
        files(dir)(std::io::Error::other(format!(
            "the database's VPN keys: {e}"
        )))
    })?;
    let pki = pki::Pki::open(dir, vpn, material)?;
    let revoked = store::revoked_serials(&mut db, pki::CLIENT_CERT_DAYS).await?;
    pki.write_crl(&revoked)?;
    Ok(pki)
}

/// Opens the data directory and the database (creating and migrating as needed).
pub async fn open(config: ServerConfig) -> Result<AppState, ServerError> {
    let dir = &config.data_dir;
    crate::private::dir(dir).map_err(files(dir))?;
    let at = config.database();
    let store = Store::open(&at).await?;
    if let store::Location::Sqlite(db) = &at {
        // SQLite makes its files with the process's umask; they hold every API key hash, result
        // and secret.
        for suffix in ["", "-wal", "-shm"] {
            let path = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
            crate::private::tighten(&path).map_err(files(&path))?;
        }
    }
    let signer = Signer::new(token_key(&store, dir).await?);
    let pki = match &config.vpn {
        Some(vpn) => Some(Arc::new(tokio::sync::Mutex::new(
            vpn_pki(&store, &dir.join("vpn"), vpn).await?,
        ))),
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
    let crl = provision::follow_crl(state.clone());
    let app = api::router(state);
    let served = async move {
        tokio::select! {
            r = serve(listener, app, limits) => r,
            () = crl => Ok(()),
        }
    };
    Ok((local, served))
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
