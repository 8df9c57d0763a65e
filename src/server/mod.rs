//! `algonet server`: the central server. vantage6 4.x-compatible API on tokio and axum, with a
//! SQLite file database (through sqlx, which also speaks PostgreSQL) and embedded migrations.

pub mod api;
pub mod auth;
pub mod config;
pub mod eduvpn;
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
    let app = api::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    Ok((local, async move { axum::serve(listener, app).await }))
}
