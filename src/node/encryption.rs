//! The node's part in an encrypted collaboration, as a vantage6 node plays it: at start, the
//! node's `encryption` setting must match the collaboration's (a clear error otherwise) and the
//! organization's public key at the server must be the node's private key's (uploaded when it is
//! not). Then each run's input is decrypted before the algorithm gets it, and its result is
//! encrypted for the organization that created the task before it leaves the node. In an
//! unencrypted collaboration inputs and results are base64, as vantage6 sends them.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use crate::api::client::ClientError;
use crate::api::{codec, OrganizationId};
use crate::crypto::{KeyError, OpenError, PrivateKey, PublicKey, SealError};
use crate::node::client::ServerClient;

/// `encryption` in node.yaml, as vantage6's.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    /// The node's collaboration is encrypted.
    #[serde(default)]
    pub enabled: bool,
    /// The organization's RSA private key (PEM), readable by its owner only.
    #[serde(default)]
    pub private_key: Option<PathBuf>,
}

impl Encryption {
    /// The key, if encryption is enabled.
    pub fn key(&self) -> Result<Option<PrivateKey>, EncryptionError> {
        if !self.enabled {
            return Ok(None);
        }
        let path = self
            .private_key
            .as_deref()
            .ok_or(EncryptionError::NoKeyFile)?;
        PrivateKey::load(path)
            .map(Some)
            .map_err(EncryptionError::Key)
    }
}

/// Why the node cannot take part in its collaboration's encryption.
#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    #[error("encryption.private_key: required when encryption.enabled is true")]
    NoKeyFile,
    #[error("encryption.private_key: {0}")]
    Key(KeyError),
    #[error(
        "collaboration {0} is encrypted, and this node's encryption is off: set \
         encryption.enabled: true and encryption.private_key (the organization's RSA key)"
    )]
    NeedsKey(String),
    #[error(
        "collaboration {0} is not encrypted, and this node's encryption is on: set \
         encryption.enabled: false"
    )]
    NotEncrypted(String),
    #[error("reading the collaboration's encryption at the server: {0}")]
    Server(ClientError),
    #[error("uploading the organization's public key: {0}")]
    Upload(ClientError),
}

/// Checks the node's setting against its collaboration; returns the key (for an encrypted
/// collaboration) and the node's organization.
pub async fn check(
    setting: &Encryption,
    client: &ServerClient,
) -> Result<(Option<PrivateKey>, OrganizationId), EncryptionError> {
    let node = client.this_node().await.map_err(EncryptionError::Server)?;
    let collaboration = client
        .collaboration(&node)
        .await
        .map_err(EncryptionError::Server)?;
    let name = format!("{:?}", collaboration.name);
    match (collaboration.encrypted, setting.key()?) {
        (true, None) => Err(EncryptionError::NeedsKey(name)),
        (false, Some(_)) => Err(EncryptionError::NotEncrypted(name)),
        (_, key) => Ok((key, node.organization.id)),
    }
}

/// [`check`], then the organization's public key at the server checked against the private
/// key and uploaded when it differs.
pub async fn set_up(
    setting: &Encryption,
    client: &ServerClient,
) -> Result<Option<Arc<PrivateKey>>, EncryptionError> {
    let (Some(key), org) = check(setting, client).await? else {
        return Ok(None);
    };
    let at_server = client
        .organization(org)
        .await
        .map_err(EncryptionError::Server)?
        .public_key;
    if at_server == key.public_key() {
        tracing::info!(
            "encryption on: organization {org}'s public key at the server is this node's ({})",
            key.fingerprint()
        );
    } else {
        if !at_server.is_empty() {
            tracing::warn!(
                "organization {org}'s public key at the server is not this node's: replacing \
                 it; inputs already encrypted for the old key cannot be read here"
            );
        }
        client
            .set_public_key(org, key.public_key())
            .await
            .map_err(EncryptionError::Upload)?;
        tracing::info!(
            "encryption on: uploaded organization {org}'s public key ({})",
            key.fingerprint()
        );
    }
    Ok(Some(Arc::new(key)))
}

/// Why a run's input or result could not be carried.
#[derive(Debug, thiserror::Error)]
pub enum CarryError {
    #[error("input: not base64 as vantage6 sends it ({0})")]
    NotBase64(codec::DecodeError),
    #[error("input: {0}")]
    Unreadable(OpenError),
    #[error("result: organization {0}, which created the task, has no public key at the server")]
    NoPublicKey(OrganizationId),
    #[error("result: organization {0}'s public key: {1}")]
    BadPublicKey(OrganizationId, KeyError),
    #[error("result: the task names no organization that created it")]
    NoInitiator,
    #[error("result: reading organization {0}'s public key: {1}")]
    Server(OrganizationId, ClientError),
    #[error("result: {0}")]
    Seal(SealError),
}

/// The bytes of a run's input for the algorithm's `INPUT_FILE`.
pub fn input(key: Option<&PrivateKey>, input: &str) -> Result<Vec<u8>, CarryError> {
    match key {
        Some(key) => key.open(input).map_err(CarryError::Unreadable),
        None => codec::decode(input).map_err(CarryError::NotBase64),
    }
}

/// A run's output (if it wrote any) as the server gets it: encrypted for `initiator` in an
/// encrypted collaboration, base64 in another.
pub async fn result(
    key: Option<&PrivateKey>,
    client: &ServerClient,
    initiator: Option<OrganizationId>,
    output: Option<&[u8]>,
) -> Result<Option<String>, CarryError> {
    let Some(output) = output else {
        return Ok(None);
    };
    if key.is_none() {
        return Ok(Some(codec::encode(output)));
    }
    let org = initiator.ok_or(CarryError::NoInitiator)?;
    let text = client
        .organization(org)
        .await
        .map_err(|e| CarryError::Server(org, e))?
        .public_key;
    if text.is_empty() {
        return Err(CarryError::NoPublicKey(org));
    }
    let public = PublicKey::from_base64(&text).map_err(|e| CarryError::BadPublicKey(org, e))?;
    public.seal(output).map(Some).map_err(CarryError::Seal)
}
