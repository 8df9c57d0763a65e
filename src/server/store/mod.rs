//! The server's storage: every SQL query, with typed rows, by what it is about (participants,
//! tasks and runs, ports, VPN certificates). Handlers take a connection from
//! [`Store::read`] or a write transaction from [`Store::write`] and call the functions here; no
//! SQL is written anywhere else. The schema is `migrations/`; this is the one module that knows
//! the database is SQLite.

use std::path::Path;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{SqliteConnection, SqlitePool};

mod certificates;
mod participants;
mod ports;
mod tasks;

pub use certificates::*;
pub use participants::*;
pub use ports::*;
pub use tasks::*;

/// A connection, from the pool or inside a transaction: what every query takes.
pub type Db = SqliteConnection;

/// A write transaction; dropped without [`sqlx::Transaction::commit`], it rolls back.
pub type WriteTx = sqlx::Transaction<'static, sqlx::Sqlite>;

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// a row with the same unique key exists
    #[error("already exists")]
    Conflict,
    /// the database failed
    #[error("database error: {0}")]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict,
            _ => StoreError::Database(e),
        }
    }
}

type Result<T> = std::result::Result<T, StoreError>;

/// The database: a pool of connections to the SQLite file.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
}

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// the file could not be opened
    #[error("database {path}: {source}")]
    Connect { path: String, source: sqlx::Error },
    /// the migrations failed
    #[error("database {path}: migration failed: {source}")]
    Migrate {
        path: String,
        source: sqlx::migrate::MigrateError,
    },
}

impl Store {
    /// Opens (creating and migrating as needed) the SQLite file at `path`.
    pub async fn open(path: &Path) -> std::result::Result<Store, OpenError> {
        let shown = path.display().to_string();
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .foreign_keys(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .map_err(|source| OpenError::Connect {
                path: shown.clone(),
                source,
            })?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|source| OpenError::Migrate {
                path: shown,
                source,
            })?;
        Ok(Store { pool })
    }

    /// A connection for reads and single-statement writes.
    pub async fn read(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Sqlite>> {
        Ok(self.pool.acquire().await?)
    }

    /// A transaction that takes SQLite's write lock at once. A deferred one (plain BEGIN) reads
    /// first and fails with "database is locked" when it then writes after another writer
    /// committed in between: SQLite cannot wait that out (SQLITE_BUSY_SNAPSHOT), so concurrent
    /// task creation failed now and then.
    pub async fn write(&self) -> Result<WriteTx> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// Commits a write transaction.
pub async fn commit(tx: WriteTx) -> Result<()> {
    Ok(tx.commit().await?)
}

/// What the server's metrics show of the database: runs by status, nodes with a VPN address.
#[derive(Clone, Debug, Default)]
pub struct Census {
    pub runs: Vec<(String, i64)>,
    pub nodes_with_vpn_address: i64,
}

pub async fn census(db: &mut Db) -> Result<Census> {
    let runs = sqlx::query_as("SELECT status, COUNT(*) FROM run GROUP BY status ORDER BY status")
        .fetch_all(&mut *db)
        .await?;
    let (nodes_with_vpn_address,) =
        sqlx::query_as("SELECT COUNT(*) FROM node WHERE ip IS NOT NULL")
            .fetch_one(db)
            .await?;
    Ok(Census {
        runs,
        nodes_with_vpn_address,
    })
}
