//! `algonet server import <entities.yaml>`: a federation set up from one file, in the shape of
//! vantage6's `v6 server import`: organizations with their users, collaborations with their
//! participants, and a node for each participant. Everything is written in one transaction (a
//! bad file changes nothing), what exists already (by name) is left as it is, so importing the
//! same file twice changes nothing. The API keys of the nodes made are written to a new file only
//! the administrator can read (mode 0600): the database keeps only their hashes.
//!
//! Each user becomes an account that may do what the administrator does, as each user
//! vantage6's import makes is a super user. An organization's `public_key` (base64 of its PEM,
//! as vantage6 keeps it) is checked and kept, a collaboration's `encrypted` too; a file's
//! `tasks` are not made (create tasks through the API).

mod entities;

pub use entities::{Collaboration, Entities, Organization, Participant, User, MAX_FILE, MAX_TEXT};

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::api::{NewOrganization, OrganizationDetails};
use crate::server::auth;
use crate::server::config::ServerConfig;
use crate::server::store::{self, NewAccount, Store};
use entities::read_bounded;

/// A node the import made, with its key: one entry of the keys file.
#[derive(Debug, Serialize)]
pub struct NodeKey {
    pub organization: String,
    pub collaboration: String,
    pub node_id: i64,
    pub api_key: String,
}

/// What an import did.
#[derive(Debug, Default)]
pub struct Summary {
    pub organizations: usize,
    pub users: usize,
    pub collaborations: usize,
    pub members: usize,
    pub nodes: Vec<NodeKey>,
    /// The file the nodes' keys went to (none when no node was made).
    pub keys_file: Option<PathBuf>,
    /// What the file asked for that was not done.
    pub skipped: Vec<String>,
}

impl Summary {
    pub fn changed_nothing(&self) -> bool {
        self.organizations + self.users + self.collaborations + self.members + self.nodes.len() == 0
    }
}

/// Why an import wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// the file could not be read, or is not an import file
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    /// a participant names an organization that is nowhere
    #[error(
        "{}: collaboration {collaboration:?}: no organization {organization:?} in the file or the database",
        path.display()
    )]
    NoOrganization {
        path: PathBuf,
        collaboration: String,
        organization: String,
    },
    /// a participant's key is another node's
    #[error(
        "{}: collaboration {collaboration:?}, {organization:?}: its api_key is another node's",
        path.display()
    )]
    KeyTaken {
        path: PathBuf,
        collaboration: String,
        organization: String,
    },
    /// the data directory or the keys file could not be written
    #[error("{}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no randomness: {0}")]
    Random(getrandom::Error),
    #[error(transparent)]
    Open(#[from] store::OpenError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// Imports `file` into the database of `config`; node keys go to `keys` (default: a new
/// `api-keys-<time>.yaml` in the data directory).
pub async fn import(
    config: &ServerConfig,
    file: &Path,
    keys: Option<PathBuf>,
) -> Result<Summary, ImportError> {
    let refused = |reason: String| ImportError::File {
        path: file.to_path_buf(),
        reason,
    };
    let text = read_bounded(file).map_err(|e| refused(e.to_string()))?;
    let entities = Entities::parse(&text, &config.admin.username).map_err(refused)?;
    // Hashed before the write lock is taken: each takes a good fraction of a second.
    let mut hashes = Vec::new();
    for o in &entities.organizations {
        for u in &o.users {
            hashes.push(auth::hash_password(&u.password).map_err(ImportError::Random)?);
        }
    }
    crate::private::dir(&config.data_dir).map_err(|source| ImportError::Write {
        path: config.data_dir.clone(),
        source,
    })?;
    let store = Store::open(&config.database()).await?;
    let mut summary = Summary::default();
    let mut tx = store.write().await?;
    let mut hashes = hashes.iter();
    for o in &entities.organizations {
        let id = match store::organization_by_name(&mut tx, &o.name).await? {
            Some(id) => id,
            None => {
                summary.organizations += 1;
                let new = NewOrganization {
                    name: o.name.clone(),
                    details: OrganizationDetails {
                        domain: o.domain.clone(),
                        address1: o.address1.clone(),
                        address2: o.address2.clone(),
                        zipcode: o.zipcode.clone(),
                        country: o.country.clone(),
                    },
                };
                let id = store::insert_organization(&mut tx, &new).await?.id;
                if let Some(key) = o.public_key.clone().filter(|k| !k.is_empty()) {
                    let change = crate::api::OrganizationChange {
                        public_key: Some(key),
                        ..Default::default()
                    };
                    store::update_organization(&mut tx, id, &change).await?;
                }
                id
            }
        };
        for u in &o.users {
            let hash = hashes.next().map(String::as_str).unwrap_or_default();
            if store::account_login(&mut tx, &u.username).await?.is_some() {
                continue;
            }
            summary.users += 1;
            let new = NewAccount {
                username: &u.username,
                organization: id,
                password_hash: hash,
                firstname: u.firstname.as_deref(),
                lastname: u.lastname.as_deref(),
                email: u.email.as_deref(),
            };
            store::insert_account(&mut tx, &new).await?;
        }
    }
    for c in &entities.collaborations {
        if !c.tasks.is_empty() {
            summary.skipped.push(format!(
                "{}: tasks (create tasks through the API)",
                crate::logging::shown(&c.name)
            ));
        }
        let id = match store::collaboration_by_name(&mut tx, &c.name).await? {
            Some(id) => id,
            None => {
                summary.collaborations += 1;
                store::insert_collaboration(&mut tx, &c.name, c.encrypted).await?
            }
        };
        for p in &c.participants {
            let org = store::organization_by_name(&mut tx, &p.name)
                .await?
                .ok_or_else(|| ImportError::NoOrganization {
                    path: file.to_path_buf(),
                    collaboration: c.name.clone(),
                    organization: p.name.clone(),
                })?;
            if !store::is_member(&mut tx, id, org).await? {
                summary.members += 1;
                store::insert_member(&mut tx, id, org).await?;
            }
            if store::node_of(&mut tx, org, id).await?.is_some() {
                continue;
            }
            let key = match &p.api_key {
                Some(k) => k.clone(),
                None => auth::random_secret().map_err(ImportError::Random)?,
            };
            let name = crate::api::NewNode::default_name(&p.name, &c.name);
            let node = store::insert_node(&mut tx, &name, org, id, &auth::hash_key(&key))
                .await
                .map_err(|e| match e {
                    store::StoreError::Conflict => ImportError::KeyTaken {
                        path: file.to_path_buf(),
                        collaboration: c.name.clone(),
                        organization: p.name.clone(),
                    },
                    e => e.into(),
                })?;
            summary.nodes.push(NodeKey {
                organization: p.name.clone(),
                collaboration: c.name.clone(),
                node_id: node.0,
                api_key: key,
            });
        }
    }
    if !summary.nodes.is_empty() {
        // Written before the commit: a key that cannot be kept makes no node.
        let path = match keys {
            Some(path) => write_keys(&path, &summary.nodes).map(|()| path)?,
            None => new_keys_file(&config.data_dir, &summary.nodes)?,
        };
        if let Err(e) = store::commit(tx).await {
            let _ = std::fs::remove_file(&path);
            return Err(e.into());
        }
        summary.keys_file = Some(path);
    } else {
        store::commit(tx).await?;
    }
    tracing::info!(
        file = %file.display(),
        organizations = summary.organizations,
        users = summary.users,
        collaborations = summary.collaborations,
        nodes = summary.nodes.len(),
        "imported"
    );
    Ok(summary)
}

/// Writes the keys to a new file of mode 0600 (an existing file is never overwritten).
/// Writes `keys` to a new `api-keys-<time>.yaml` in `dir` (`-2`, `-3`, ... after the time when
/// an import of the same second made one).
fn new_keys_file(dir: &Path, keys: &[NodeKey]) -> Result<PathBuf, ImportError> {
    let at = store::stamp_now().replace([' ', ':'], "-");
    let mut n = 1;
    loop {
        let name = match n {
            1 => format!("api-keys-{at}.yaml"),
            n => format!("api-keys-{at}-{n}.yaml"),
        };
        let path = dir.join(name);
        match write_keys(&path, keys) {
            Err(ImportError::Write { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists && n < 100 =>
            {
                n += 1
            }
            other => return other.map(|()| path),
        }
    }
}

fn write_keys(path: &Path, keys: &[NodeKey]) -> Result<(), ImportError> {
    let failed = |source| ImportError::Write {
        path: path.to_path_buf(),
        source,
    };
    let listed = yaml_serde::to_string(keys).map_err(|e| failed(std::io::Error::other(e)))?;
    let text = format!(
        "# API keys of the nodes `algonet server import` made; give each to its node's\n\
         # configuration (api_key), then keep this file safe or delete it.\n{listed}"
    );
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(failed)?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(failed)
}
