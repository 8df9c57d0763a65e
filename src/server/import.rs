//! `algonet server import <entities.yaml>`: a federation set up from one file, in the shape of
//! vantage6's `v6 server import`: organizations with their users, collaborations with their
//! participants, and a node for each participant. Everything is written in one transaction (a
//! bad file changes nothing), what exists already (by name) is left as it is, so importing the
//! same file twice changes nothing. The API keys of the nodes made are written to a new file only
//! the administrator can read (mode 0600): the database keeps only their hashes.
//!
//! Each user becomes an account that may do what the administrator does, as each user
//! vantage6's import makes is a super user. Collaborations are unencrypted (algonet has no
//! encrypted ones); a file's `tasks` are not made (create tasks through the API) and its
//! `public_key`s are not used.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::NewOrganization;
use crate::server::auth;
use crate::server::config::ServerConfig;
use crate::server::store::{self, NewAccount, Store};

/// A number or a text where the file means a text (vantage6's example has `zipcode: 54331`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Integer(i64),
    Float(f64),
}

fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let t = Option::<Scalar>::deserialize(d)?.map(|t| match t {
        Scalar::Text(s) => s,
        Scalar::Integer(i) => i.to_string(),
        Scalar::Float(f) => f.to_string(),
    });
    spend::<D>(t.as_deref().map_or(0, str::len))?;
    Ok(t)
}

/// The largest import file, in bytes.
pub const MAX_FILE: u64 = 1 << 20;
/// The most text a file may amount to once its aliases are expanded, in bytes: aliases
/// (`*name`) repeat what they name, and a file of a megabyte could otherwise expand to
/// gigabytes.
pub const MAX_TEXT: usize = 4 << 20;

std::thread_local! {
    /// What is left of [`MAX_TEXT`] for the file being read on this thread.
    static LEFT: std::cell::Cell<usize> = const { std::cell::Cell::new(MAX_TEXT) };
}

/// Counts `n` bytes of text against the file's budget.
fn spend<'de, D: serde::Deserializer<'de>>(n: usize) -> Result<(), D::Error> {
    LEFT.with(|left| match left.get().checked_sub(n) {
        Some(rest) => {
            left.set(rest);
            Ok(())
        }
        None => Err(serde::de::Error::custom(format!(
            "the file expands to more than {} MiB of text (aliases included)",
            MAX_TEXT >> 20
        ))),
    })
}

/// A text, counted against the budget.
fn counted<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    spend::<D>(s.len())?;
    Ok(s)
}

/// Texts, counted against the budget.
fn counted_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    spend::<D>(v.iter().map(String::len).sum())?;
    Ok(v)
}

/// The file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entities {
    #[serde(default)]
    pub organizations: Vec<Organization>,
    #[serde(default)]
    pub collaborations: Vec<Collaboration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Organization {
    #[serde(deserialize_with = "counted")]
    pub name: String,
    #[serde(default, deserialize_with = "text")]
    pub domain: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub address1: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub address2: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub zipcode: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub country: Option<String>,
    /// vantage6's key for encrypted collaborations: not used.
    #[serde(default, deserialize_with = "text")]
    pub public_key: Option<String>,
    #[serde(default)]
    pub users: Vec<User>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    #[serde(deserialize_with = "counted")]
    pub username: String,
    #[serde(deserialize_with = "counted")]
    pub password: String,
    #[serde(default, deserialize_with = "text")]
    pub firstname: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub lastname: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub email: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Collaboration {
    #[serde(deserialize_with = "counted")]
    pub name: String,
    #[serde(default)]
    pub participants: Vec<Participant>,
    #[serde(default)]
    pub encrypted: bool,
    /// vantage6's example tasks: not made.
    #[serde(default, deserialize_with = "counted_list")]
    pub tasks: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Participant {
    #[serde(deserialize_with = "counted")]
    pub name: String,
    /// The node's API key (a UUID, as vantage6 requires); without it one is made.
    #[serde(default, deserialize_with = "text")]
    pub api_key: Option<String>,
}

/// The shortest password an imported user may have.
const MIN_PASSWORD: usize = 8;

/// Whether `s` is a UUID in its usual text form (8-4-4-4-12 hex digits).
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl Entities {
    /// Parses and checks a file's text; the error names the entry and the reason.
    pub fn parse(text: &str, admin: &str) -> Result<Entities, String> {
        LEFT.with(|left| left.set(MAX_TEXT));
        let e: Entities = yaml_serde::from_str(text).map_err(|e| e.to_string())?;
        let mut names = HashSet::new();
        let mut usernames = HashSet::new();
        for (i, o) in e.organizations.iter().enumerate() {
            if o.name.trim().is_empty() {
                return Err(format!("organizations[{i}].name: empty"));
            }
            if !names.insert(o.name.as_str()) {
                return Err(format!("organizations[{i}]: {:?} twice", o.name));
            }
            for (j, u) in o.users.iter().enumerate() {
                let at = format!("organizations[{i}].users[{j}]");
                if u.username.trim().is_empty() {
                    return Err(format!("{at}.username: empty"));
                }
                if u.username == admin {
                    return Err(format!(
                        "{at}.username: {:?} is the administrator's name",
                        u.username
                    ));
                }
                if !usernames.insert(u.username.as_str()) {
                    return Err(format!("{at}: user {:?} twice", u.username));
                }
                if u.password.chars().count() < MIN_PASSWORD {
                    return Err(format!("{at}.password: at least {MIN_PASSWORD} characters"));
                }
            }
        }
        let mut collaborations = HashSet::new();
        let mut keys = HashSet::new();
        for (i, c) in e.collaborations.iter().enumerate() {
            if c.name.trim().is_empty() {
                return Err(format!("collaborations[{i}].name: empty"));
            }
            if !collaborations.insert(c.name.as_str()) {
                return Err(format!("collaborations[{i}]: {:?} twice", c.name));
            }
            if c.encrypted {
                return Err(format!(
                    "collaborations[{i}].encrypted: algonet has no encrypted collaborations"
                ));
            }
            let mut members = HashSet::new();
            for (j, p) in c.participants.iter().enumerate() {
                let at = format!("collaborations[{i}].participants[{j}]");
                if !members.insert(p.name.as_str()) {
                    return Err(format!("{at}: {:?} twice", p.name));
                }
                if let Some(key) = &p.api_key {
                    if !is_uuid(key) {
                        return Err(format!("{at}.api_key: not a UUID"));
                    }
                    if !keys.insert(key.as_str()) {
                        return Err(format!("{at}.api_key: another participant's too"));
                    }
                }
            }
        }
        Ok(e)
    }
}

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

/// The file's text, if it is no larger than [`MAX_FILE`].
fn read_bounded(file: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(file)?
        .take(MAX_FILE + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE {
        return Err(std::io::Error::other(format!(
            "larger than {} KiB",
            MAX_FILE >> 10
        )));
    }
    Ok(text)
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
                    domain: o.domain.clone(),
                    address1: o.address1.clone(),
                    address2: o.address2.clone(),
                    zipcode: o.zipcode.clone(),
                    country: o.country.clone(),
                };
                store::insert_organization(&mut tx, &new).await?.id
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
                store::insert_collaboration(&mut tx, &c.name).await?
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
        let path = keys.unwrap_or_else(|| {
            let at = store::stamp_now().replace([' ', ':'], "-");
            config.data_dir.join(format!("api-keys-{at}.yaml"))
        });
        // Written before the commit: a key that cannot be kept makes no node.
        write_keys(&path, &summary.nodes)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_file_is_refused_naming_the_entry() {
        let ok = "organizations:\n  - name: A\n    zipcode: 54331\n    address2:\n    users:\n      - {username: ann, password: long-enough}\ncollaborations:\n  - name: C\n    participants: [{name: A, api_key: 123e4567-e89b-12d3-a456-426614174000}]\n    encrypted: false\n    tasks: [hello-world]\n";
        let e = Entities::parse(ok, "root").expect("valid");
        assert_eq!(e.organizations[0].zipcode.as_deref(), Some("54331"));
        for (text, says) in [
            ("organizations: [{name: A}, {name: A}]", "organizations[1]"),
            ("organizations: [{name: ' '}]", "organizations[0].name"),
            ("organizations: [{name: A, users: [{username: u, password: short}]}]", "users[0].password"),
            ("organizations: [{name: A, users: [{username: root, password: long-enough}]}]", "administrator"),
            ("organizations: [{name: A, users: [{username: u, password: long-enough}, {username: u, password: long-enough}]}]", "users[1]"),
            ("organizations: [{name: A, colour: red}]", "colour"),
            ("collaborations: [{name: C, encrypted: true}]", "encrypted"),
            ("collaborations: [{name: C, participants: [{name: A, api_key: nope}]}]", "api_key"),
            ("collaborations: [{name: C, participants: [{name: A, api_key: 123e4567-e89b-12d3-a456-426614174000}, {name: B, api_key: 123e4567-e89b-12d3-a456-426614174000}]}]", "participants[1].api_key"),
            ("collaborations: [{name: C, participants: [{name: A}, {name: A}]}]", "participants[1]"),
            ("organizations: {name: A}", "organizations"),
            ("[1, 2", ""),
        ] {
            let e = Entities::parse(text, "root").expect_err(text);
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn a_file_that_expands_past_its_budget_is_refused_early() {
        // One large anchored text, repeated by 400 aliases: 400 times it would be gigabytes.
        let big = "x".repeat(900 * 1024);
        let mut text = format!("organizations:\n  - name: &big {big}\n");
        for i in 0..400 {
            text.push_str(&format!("  - {{name: *big, domain: o{i}}}\n"));
        }
        assert!(text.len() as u64 <= MAX_FILE);
        let e = Entities::parse(&text, "root").expect_err("refused");
        assert!(e.contains("MiB of text"), "{e}");
        // The same small file again is fine: the budget is per file.
        let ok = "organizations: [{name: &a A, domain: *a}]";
        Entities::parse(ok, "root").expect("a small alias is fine");
    }
}
