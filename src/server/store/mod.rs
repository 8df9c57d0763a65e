//! The server's storage: every SQL query, with typed rows, by what it is about (participants,
//! accounts, sessions, tasks and runs, ports, VPN certificates, secrets, relayed socket.io
//! events). Handlers take a connection from
//! [`Store::connection`] or a write transaction from [`Store::write`] and call the functions here; no
//! SQL is written anywhere else. This is the one module that knows which database it is: a
//! SQLite file or PostgreSQL, through sqlx's `Any` driver. Every query is written once, in the
//! SQL both speak (`$1` parameters, `RETURNING`, `ON CONFLICT`, recursive `WITH`); times are
//! ISO 8601 text the server writes ([`stamp`]). The schemas are `migrations/sqlite` and
//! `migrations/postgres`, kept in step by a test.

use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, ConnectOptions, Executor};

mod accounts;
mod certificates;
mod columns;
mod participants;
mod ports;
mod relay;
mod secrets;
mod sessions;
mod tasks;
mod wireguard;

pub use accounts::*;
pub use certificates::*;
pub use participants::*;
pub use ports::*;
pub use relay::*;
pub use secrets::*;
pub use sessions::*;
pub use tasks::*;
pub use wireguard::*;

/// A connection, from the pool or inside a transaction: what every query takes.
pub type Db = AnyConnection;

/// A write transaction; dropped without [`commit`], it rolls back.
pub type WriteTx = sqlx::Transaction<'static, sqlx::Any>;

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// a row with the same unique key exists
    #[error("already exists")]
    Conflict,
    /// the database cannot be reached now (down, restarting, every connection busy): the
    /// request may be tried again
    #[error("database unavailable: {0}")]
    Unavailable(sqlx::Error),
    /// the database failed
    #[error("database error: {0}")]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict,
            // PostgreSQL's classes 08 (connection exception) and 57P (operator intervention:
            // shutting down, restarting), and SQLite's busy file.
            sqlx::Error::Database(d)
                if d.code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57P"))
                    || d.message().contains("database is locked") =>
            {
                StoreError::Unavailable(e)
            }
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e),
            _ => StoreError::Database(e),
        }
    }
}

type Result<T> = std::result::Result<T, StoreError>;

/// Which database the store is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The database: a pool of connections to the SQLite file or to PostgreSQL.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// the database could not be reached or opened
    #[error("database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    /// the SQLite file belongs to another user (made by a command run as root, say)
    #[error(
        "database {path}: owned by uid {owner}, but the server runs as uid {uid}; \
         give the data directory to the server's user (chown -R)"
    )]
    NotOwner {
        path: std::path::PathBuf,
        owner: u32,
        uid: u32,
    },
    /// the SQLite files' modes could not be set
    #[error("database {path}: {source}")]
    Mode {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// the migrations failed
    #[error("database {url}: migration failed: {source}")]
    Migrate {
        url: String,
        source: sqlx::migrate::MigrateError,
    },
}

/// Where the server's data lives: `database:` in its configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file (the server's own, in its data directory).
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL URL, `postgres://user:password@host:port/database`.
    Postgres(String),
}

impl Location {
    /// The location for messages: a URL's password is hidden.
    pub fn shown(&self) -> String {
        match self {
            Location::Sqlite(path) => path.display().to_string(),
            Location::Postgres(url) => hide_password(url),
        }
    }
}

/// `url` with the password of its user part, if any, replaced by `***`.
pub fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{scheme}://{name}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// How long a request waits for a free connection before it is answered 503: a database that
/// is down must not hold every request for long.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a failure to reach the database at `at` says: its URL (password hidden) and the cause.
fn connect_error(at: &Location) -> impl Fn(sqlx::Error) -> OpenError {
    let url = at.shown();
    move |source| OpenError::Connect {
        url: url.clone(),
        source,
    }
}

/// How to connect to the database at `at`: a SQLite file made if missing (`write`) or opened
/// read-only, or PostgreSQL's URL; and which database it is.
fn connect_options(
    at: &Location,
    write: bool,
) -> std::result::Result<(AnyConnectOptions, Backend), OpenError> {
    sqlx::any::install_default_drivers();
    let connect = connect_error(at);
    let (url, backend) = match at {
        Location::Sqlite(path) => (
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(write)
                .read_only(!write)
                .to_url_lossy(),
            Backend::Sqlite,
        ),
        Location::Postgres(url) => (
            url.parse()
                .map_err(|e| connect(sqlx::Error::Configuration(Box::new(e))))?,
            Backend::Postgres,
        ),
    };
    Ok((
        AnyConnectOptions::from_url(&url).map_err(&connect)?,
        backend,
    ))
}

/// Refuses a SQLite file another user owns, unless running as root (SQLite then gives the
/// files it makes to the database's owner): opening it would fail later with a bare "unable to
/// open database file", or leave files the server's user cannot write.
fn sqlite_owned(path: &std::path::Path) -> std::result::Result<(), OpenError> {
    use std::os::unix::fs::MetadataExt;
    let uid = nix::unistd::geteuid().as_raw();
    match std::fs::metadata(path) {
        Ok(m) if uid != 0 && m.uid() != uid => Err(OpenError::NotOwner {
            path: path.to_path_buf(),
            owner: m.uid(),
            uid,
        }),
        _ => Ok(()),
    }
}

impl Store {
    /// Opens (creating and migrating as needed) the database at `at`.
    pub async fn open(at: &Location) -> std::result::Result<Store, OpenError> {
        if let Location::Sqlite(path) = at {
            sqlite_owned(path)?;
        }
        let (options, backend) = connect_options(at, true)?;
        let url = at.shown();
        let connect = connect_error(at);
        // One connection first, for the migrations: its failure says why (refused, no such
        // host, bad password), where the pool's would only say that it timed out.
        let mut first = options.connect().await.map_err(&connect)?;
        let migrated = match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&mut first).await,
            Backend::Postgres => {
                sqlx::migrate!("./migrations/postgres")
                    .run(&mut first)
                    .await
            }
        };
        migrated.map_err(|source| OpenError::Migrate {
            url: url.clone(),
            source,
        })?;
        sqlx::Connection::close(first).await.map_err(&connect)?;
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // Readers do not wait for the writer (foreign keys and a 5 s busy
                        // timeout are sqlx's defaults).
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(&connect)?;
        if let Location::Sqlite(path) = at {
            // SQLite makes its files with the process's umask; they hold every API key hash,
            // result and secret.
            for suffix in ["", "-wal", "-shm"] {
                let path = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
                crate::private::tighten(&path)
                    .map_err(|source| OpenError::Mode { path, source })?;
            }
        }
        Ok(Store { pool, backend })
    }

    /// Whether the database at `at` answers, without migrating or creating anything: a SQLite
    /// file not made yet is fine (the first start makes it).
    pub async fn check(at: &Location) -> std::result::Result<(), OpenError> {
        if let Location::Sqlite(path) = at {
            if !path.exists() {
                return Ok(());
            }
        }
        let (options, _) = connect_options(at, false)?;
        let connect = connect_error(at);
        let mut c = options.connect().await.map_err(&connect)?;
        (&mut c).execute("SELECT 1").await.map_err(&connect)?;
        sqlx::Connection::close(c).await.map_err(&connect)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A connection for reads and single-statement writes.
    pub async fn connection(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>> {
        Ok(self.pool.acquire().await?)
    }

    /// A transaction that holds the database's one write lock, so that writers follow one
    /// another on both databases, across every server process on it. On SQLite, `BEGIN
    /// IMMEDIATE`: a deferred one reads first and fails with "database is locked" when it then
    /// writes after another writer committed in between (SQLITE_BUSY_SNAPSHOT). On PostgreSQL,
    /// a transaction-scoped advisory lock: what a writer reads before it writes (the next job
    /// number, whether a node already holds an address) stays true until it commits.
    pub async fn write(&self) -> Result<WriteTx> {
        match self.backend {
            Backend::Sqlite => Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?),
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                // The key is any number no other user of the database locks: 7601, the
                // server's port.
                (&mut *tx)
                    .execute("SELECT pg_advisory_xact_lock(7601)")
                    .await?;
                Ok(tx)
            }
        }
    }
}

/// A time as the database keeps it: UTC, `YYYY-MM-DD HH:MM:SS` (ordered as text).
pub fn stamp(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Now, as [`stamp`] writes it (the server's clock in seconds is `state::now`).
pub fn stamp_now() -> String {
    stamp(time::OffsetDateTime::now_utc())
}

/// Seconds since the epoch of a [`stamp`]; `None` if it is not one.
pub fn unstamp(text: &str) -> Option<i64> {
    let n = |range: std::ops::Range<usize>| text.get(range)?.parse::<u16>().ok();
    let date = time::Date::from_calendar_date(
        i32::from(n(0..4)?),
        time::Month::try_from(u8::try_from(n(5..7)?).ok()?).ok()?,
        u8::try_from(n(8..10)?).ok()?,
    )
    .ok()?;
    let at = time::Time::from_hms(
        u8::try_from(n(11..13)?).ok()?,
        u8::try_from(n(14..16)?).ok()?,
        u8::try_from(n(17..19)?).ok()?,
    )
    .ok()?;
    Some(
        time::PrimitiveDateTime::new(date, at)
            .assume_utc()
            .unix_timestamp(),
    )
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
    let runs = sqlx::query_as("SELECT status, count(*) FROM run GROUP BY status ORDER BY status")
        .fetch_all(&mut *db)
        .await?;
    let (nodes_with_vpn_address,) =
        sqlx::query_as("SELECT count(*) FROM node WHERE ip IS NOT NULL")
            .fetch_one(db)
            .await?;
    Ok(Census {
        runs,
        nodes_with_vpn_address,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_and_stamps_read_back() {
        assert_eq!(
            hide_password("postgres://algonet:s3cr%40t@db.example:5432/fed?sslmode=require"),
            "postgres://algonet:***@db.example:5432/fed?sslmode=require"
        );
        assert_eq!(
            hide_password("postgres://algonet@db/fed"),
            "postgres://algonet@db/fed"
        );
        assert_eq!(hide_password("postgres://db/a@b"), "postgres://db/a@b");
        assert_eq!(hide_password("nonsense"), "nonsense");
        let t = time::OffsetDateTime::from_unix_timestamp(1_796_000_000).expect("time");
        assert_eq!(unstamp(&stamp(t)), Some(1_796_000_000));
        assert_eq!(unstamp("2026-13-01 00:00:00"), None);
        assert_eq!(unstamp("soon"), None);
    }
}
