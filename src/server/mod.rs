//! `algonet server`: the central server. vantage6 4.x-compatible API on tokio and axum, with a
//! SQLite file database (through sqlx, which also speaks PostgreSQL) and embedded migrations.

pub mod api;
pub mod auth;
pub mod config;
pub mod eduvpn;
pub mod pki;

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::SqlitePool;

use crate::server::auth::Signer;
use crate::server::config::ServerConfig;

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct AppState {
    pub db: SqlitePool,
    pub signer: Signer,
    pub config: Arc<ServerConfig>,
    /// The built-in VPN provider; the lock orders issuing and CRL writes.
    pub pki: Option<Arc<tokio::sync::Mutex<pki::Pki>>>,
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

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
    #[error("database {path}: {source}")]
    Database { path: String, source: sqlx::Error },
    /// the migrations failed
    #[error("database {path}: migration failed: {source}")]
    Migrate {
        path: String,
        source: sqlx::migrate::MigrateError,
    },
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
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(files(dir))?;
    let signer = Signer::new(secret(dir)?);
    let db_path = dir.join("algonet.sqlite");
    let shown = db_path.display().to_string();
    let options = SqliteConnectOptions::new()
        .filename(&db_path)
        .create_if_missing(true)
        .foreign_keys(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(std::time::Duration::from_secs(5));
    let db = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .map_err(|source| ServerError::Database {
            path: shown.clone(),
            source,
        })?;
    sqlx::migrate!("./migrations")
        .run(&db)
        .await
        .map_err(|source| ServerError::Migrate {
            path: shown,
            source,
        })?;
    let pki = match &config.vpn {
        Some(vpn) => Some(Arc::new(tokio::sync::Mutex::new(pki::Pki::open(
            &dir.join("vpn"),
            vpn,
        )?))),
        None => None,
    };
    Ok(AppState {
        db,
        signer,
        config: Arc::new(config),
        pki,
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
    let app = api::router(state);
    Ok((local, async move { axum::serve(listener, app).await }))
}
