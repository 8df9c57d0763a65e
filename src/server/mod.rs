//! `algonet server`: the central server. vantage6 4.x-compatible API on tokio and axum, with its
//! data in a SQLite file or in PostgreSQL (shared by several server processes), through sqlx,
//! with embedded migrations.

pub mod auth;
pub mod config;
pub mod eduvpn;
pub mod events;
pub mod handlers;
pub mod import;
pub mod metrics;
pub mod pki;
pub mod provider;
pub mod provision;
pub mod state;
pub mod store;
pub mod throttle;
pub mod waits;
pub mod wghub;

use std::path::Path;
use std::sync::Arc;

use crate::server::auth::Signer;
use crate::server::config::ServerConfig;
use crate::server::provider::VpnProvider;
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
    #[error(transparent)]
    WireGuard(#[from] wghub::HubError),
    /// the built-in VPN's revocation list or client configs could not be written
    #[error(transparent)]
    Provision(#[from] provision::ProvisionError),
    /// an address of the configuration is taken (`--check`)
    #[error("{key} {addr}: {source}")]
    Taken {
        key: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// no randomness for the server process's name among its replicas
    #[error("the system's random source failed: {0}")]
    Random(getrandom::Error),
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
    let mut db = store.connection().await?;
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
    let mut db = store.connection().await?;
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
    provision::write_admitted(&mut db, &pki).await?;
    Ok(pki)
}

/// Ends the administrator's sessions when its name or password is not the one the last start
/// had: a changed credential locks out whoever held the old one. The database keeps a PBKDF2
/// hash of the two, never the password.
async fn admin_credential(store: &Store, admin: &config::Admin) -> Result<(), ServerError> {
    const NAME: &str = "admin-credential";
    let credential = format!("{}\n{}", admin.username, admin.password);
    let mut db = store.connection().await?;
    let kept = store::secret(&mut db, NAME).await?;
    if let Some(kept) = &kept {
        let (c, k) = (credential.clone(), kept.clone());
        let same = tokio::task::spawn_blocking(move || auth::password_matches(&c, &k))
            .await
            .unwrap_or(false);
        if same {
            return Ok(());
        }
    }
    let hash = auth::hash_password(&credential).map_err(|e| ServerError::Files {
        path: "admin".into(),
        source: std::io::Error::other(format!("no randomness: {e}")),
    })?;
    store::replace_secret(&mut db, NAME, &hash).await?;
    if kept.is_some() {
        let ended = store::end_sessions(&mut db, &store::subject("user", auth::ADMIN_USER)).await?;
        tracing::info!(
            sessions = ended,
            "the administrator's name or password changed: its earlier sessions are ended"
        );
    }
    Ok(())
}

/// What a start of `config` needs, tried without starting anything (`algonet server --check`):
/// the listen addresses free, the database answering (neither made nor migrated). Returns the
/// database as it may be shown.
pub async fn check(config: &ServerConfig) -> Result<String, ServerError> {
    for (key, addr) in [
        ("listen", Some(config.listen)),
        ("metrics_listen", config.metrics_listen),
    ] {
        if let Some(addr) = addr {
            std::net::TcpListener::bind(addr).map_err(|source| ServerError::Taken {
                key,
                addr,
                source,
            })?;
        }
    }
    let at = config.database();
    Store::check(&at).await?;
    Ok(at.shown())
}

/// Whose sessions `algonet server revoke` ends.
#[derive(Clone, Debug)]
pub enum Revoke {
    /// A user, by name (the administrator's too).
    User(String),
    Node(crate::api::NodeId),
}

/// Ends every session of a user or a node: each of its access and refresh tokens is refused
/// from now on, by every server process on the database. Returns how many were live.
pub async fn revoke(config: &ServerConfig, who: &Revoke) -> Result<u64, RevokeError> {
    let store = Store::open(&config.database()).await?;
    let mut db = store.connection().await?;
    let subject = match who {
        Revoke::User(name) if *name == config.admin.username => {
            store::subject("user", auth::ADMIN_USER)
        }
        Revoke::User(name) => match store::account_login(&mut db, name).await? {
            Some((id, _)) => store::subject("user", id),
            None => return Err(RevokeError::NoSuch(format!("user {name:?}"))),
        },
        Revoke::Node(id) => match store::node(&mut db, *id).await? {
            Some(_) => store::subject("node", id.0),
            None => return Err(RevokeError::NoSuch(format!("node {id}"))),
        },
    };
    let ended = store::end_sessions(&mut db, &subject).await?;
    tracing::info!(subject = %subject, sessions = ended, "sessions revoked");
    Ok(ended)
}

/// Why sessions could not be revoked.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error(transparent)]
    Database(#[from] OpenError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("there is no {0}")]
    NoSuch(String),
}

/// Opens the data directory and the database (creating and migrating as needed).
pub async fn open(config: ServerConfig) -> Result<AppState, ServerError> {
    let dir = &config.data_dir;
    crate::private::dir(dir).map_err(files(dir))?;
    let at = config.database();
    let store = Store::open(&at).await?;
    let signer = Signer::new(token_key(&store, dir).await?);
    admin_credential(&store, &config.admin).await?;
    let vpn = match (&config.vpn, &config.vpn_server) {
        (Some(vpn), _) if vpn.tunnel == pki::TunnelKind::WireGuard => VpnProvider::WireGuard {
            hub: wghub::WgHub::start(&store, vpn).await?,
            vpn: vpn.clone(),
        },
        (Some(vpn), _) => VpnProvider::Builtin {
            pki: Arc::new(tokio::sync::Mutex::new(
                vpn_pki(&store, &dir.join("vpn"), vpn).await?,
            )),
            vpn: vpn.clone(),
        },
        (None, Some(edu)) => VpnProvider::EduVpn {
            config: edu.clone(),
            sessions: Arc::default(),
        },
        (None, None) => VpnProvider::None,
    };
    // A wait holds a connection: half of them may wait, the rest is for everyone else.
    let waits = Arc::new(waits::Waits::new((config.max_connections / 2).max(1)));
    Ok(AppState {
        store,
        signer,
        config: Arc::new(config),
        vpn,
        logins: Arc::default(),
        metrics: Default::default(),
        changes: Arc::new(tokio::sync::watch::Sender::new(0)),
        waits,
        seen: Arc::default(),
        events: events::Events::new().map_err(ServerError::Random)?,
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
    if let Err(e) = crate::http::reserve_descriptors(state.config.max_connections) {
        tracing::warn!("{e}");
    }
    let addr = state.config.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Listen { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServerError::Listen { addr, source })?;
    let limits = crate::http::Limits {
        head_timeout: std::time::Duration::from_secs(state.config.header_timeout_secs),
        body_timeout: std::time::Duration::from_secs(state.config.body_timeout_secs),
        max_connections: state.config.max_connections,
        per_address: state.config.max_connections_per_address,
    };
    let crl = provision::follow_crl(state.clone());
    let changes = waits::follow_changes(state.store.clone(), state.changes.clone());
    let relayed = events::follow(state.events.clone(), state.store.clone());
    let hub = state.vpn.hub().map(|hub| Arc::clone(hub).follow());
    let hub = async move {
        match hub {
            Some(follow) => follow.await,
            None => std::future::pending().await,
        }
    };
    let app = handlers::routes(state);
    let served = async move {
        tokio::select! {
            r = crate::http::serve(listener, app, limits) => r,
            () = crl => Ok(()),
            () = changes => Ok(()),
            () = relayed => Ok(()),
            () = hub => Ok(()),
        }
    };
    Ok((local, served))
}
