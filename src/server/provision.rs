//! VPN provisioning: a node's OpenVPN profile, from the built-in PKI (a new client certificate;
//! the node's earlier ones revoked) or from eduVPN; and the revocation that goes with deleting
//! a node. The CRL is written before the database commit, so a failure can only revoke an
//! unused certificate, never leave a used one valid.

use crate::api::{NodeId, VpnProfile};
use crate::server::eduvpn::{self, EduVpnError};
use crate::server::pki::{Pki, PkiError, TunnelKind};
use crate::server::provider::VpnProvider;
use crate::server::state::AppState;
use crate::server::store::{self, Db, StoreError};
use crate::wireguard::keys::decode_key;

/// Why no profile could be had, or a node not be deleted.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// neither the built-in VPN nor eduVPN is configured
    #[error("This server does not support VPN")]
    NotSupported,
    /// the eduVPN portal failed
    #[error(transparent)]
    EduVpn(#[from] EduVpnError),
    /// the built-in PKI could not issue a certificate
    #[error("VPN provisioning failed: {0}")]
    Issue(PkiError),
    /// the built-in PKI could not write its CRL or its client-config files
    #[error("cannot write the certificate revocation list or client configs: {0}")]
    Crl(PkiError),
    /// the node was issued its most certificates for the hour
    #[error("{PER_HOUR} new VPN profiles in an hour; try again in {0} s")]
    TooMany(u64),
    /// the database failed
    #[error(transparent)]
    Store(#[from] StoreError),
    /// a WireGuard profile was asked for without the node's public key
    #[error(
        "This server's VPN is WireGuard: ask with ?public_key=<the node's WireGuard public key>"
    )]
    NoKey,
    /// the public key is unusable or taken
    #[error("public_key: {0}")]
    Key(String),
    /// the WireGuard hub failed
    #[error(transparent)]
    Hub(#[from] crate::server::wghub::HubError),
}

/// Most certificates one node is issued in an hour. Each new one revokes the last, and the CRL
/// lists every revoked certificate until it expires: the limit bounds the CRL however often a
/// node (or a stolen node token) asks.
pub const PER_HOUR: u32 = 10;

/// A new profile for `node`; with WireGuard, for the public key the node sent (`public_key`),
/// and if it asked (`tcp`), one that reaches the hub over TCP.
pub async fn profile(
    s: &AppState,
    node: NodeId,
    public_key: Option<&str>,
    tcp: bool,
) -> Result<VpnProfile, ProvisionError> {
    let pki = match &s.vpn {
        VpnProvider::Builtin { pki, .. } => pki,
        VpnProvider::WireGuard { hub, .. } => {
            let (_, key) = checked_key(public_key)?;
            // A path on this server: the node joins it to the URL it reaches the server at.
            let proxy = tcp.then(|| {
                let path = crate::server::handlers::vpn::TCP_PATH;
                format!("{}{path}", s.config.api_path)
            });
            let p = hub
                .admit(node, &key, proxy)
                .await?
                .ok_or_else(|| ProvisionError::Key("another node holds this public key".into()))?;
            tracing::info!(node_id = %node, "WireGuard key admitted at the hub");
            return Ok(VpnProfile {
                ovpn_config: p.render(),
                expires: None,
            });
        }
        VpnProvider::EduVpn { config, sessions } => {
            let key = match config.tunnel {
                TunnelKind::WireGuard => Some(checked_key(public_key)?.0),
                TunnelKind::OpenVpn => None,
            };
            // The earlier session goes first: eduVPN then forgets its key before the new
            // profile may name the same one.
            sessions.end(node, config).await;
            let p = eduvpn::fetch_profile(config, key, tcp).await?;
            sessions.keep(node, p.session);
            return Ok(VpnProfile {
                ovpn_config: p.text,
                expires: p.expires,
            });
        }
        VpnProvider::None => return Err(ProvisionError::NotSupported),
    };
    // The lock orders this process's CRL writes; the write transaction orders issuing across
    // every server process on the database, so the hourly limit holds for all of them together.
    let pki = pki.lock().await;
    let mut tx = s.store.write().await?;
    let (recent, leaves) = store::recent_certificates(&mut tx, node, 3600).await?;
    if recent >= PER_HOUR {
        return Err(ProvisionError::TooMany(leaves.max(1)));
    }
    let cert = pki.issue(node).map_err(ProvisionError::Issue)?;
    store::revoke_node_certificates(&mut tx, node).await?;
    store::insert_certificate(&mut tx, &cert.serial, node).await?;
    write_crl(&mut tx, &pki).await?;
    store::commit(tx).await?;
    tracing::info!(node_id = %node, serial = %cert.serial, "VPN certificate issued; the node's earlier ones revoked");
    Ok(VpnProfile {
        ovpn_config: pki.profile(&cert),
        expires: None,
    })
}

/// The WireGuard public key a node sent, if it is one: as sent, and decoded.
fn checked_key(public_key: Option<&str>) -> Result<(&str, [u8; 32]), ProvisionError> {
    let key = public_key.ok_or(ProvisionError::NoKey)?;
    let bytes = decode_key(key).map_err(|e| ProvisionError::Key(e.to_string()))?;
    Ok((key, bytes))
}

/// Deletes `node`; with the built-in VPN its certificates are revoked, so its profile no longer
/// connects. False if there was no such node.
pub async fn delete_node(s: &AppState, node: NodeId) -> Result<bool, ProvisionError> {
    let pki = match s.vpn.pki() {
        Some(p) => Some(p.lock().await),
        None => None,
    };
    let mut tx = s.store.write().await?;
    if !store::delete_node(&mut tx, node).await? {
        return Ok(false);
    }
    store::revoke_node_certificates(&mut tx, node).await?;
    store::delete_wireguard_key(&mut tx, node).await?;
    if let Some(pki) = &pki {
        write_crl(&mut tx, pki).await?;
    }
    store::commit(tx).await?;
    Ok(true)
}

/// Who the OpenVPN server admits, as the database has it: the revoked certificates (for the
/// CRL) and the nodes with a live one (each with its fixed address in `ccd/`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Admitted {
    revoked: Vec<String>,
    nodes: Vec<NodeId>,
}

impl Admitted {
    async fn read(db: &mut Db) -> Result<Admitted, StoreError> {
        Ok(Admitted {
            revoked: store::revoked_serials(db, crate::server::pki::CLIENT_CERT_DAYS).await?,
            nodes: store::certified_nodes(db).await?,
        })
    }

    fn write(&self, pki: &Pki) -> Result<(), PkiError> {
        pki.write_crl(&self.revoked)?;
        pki.write_ccd(&self.nodes)
    }
}

/// Rewrites the CRL and the nodes' client-config files from the database.
async fn write_crl(db: &mut Db, pki: &Pki) -> Result<(), ProvisionError> {
    Admitted::read(db)
        .await?
        .write(pki)
        .map_err(ProvisionError::Crl)
}

/// Writes the CRL and the client-config files at start.
pub async fn write_admitted(db: &mut Db, pki: &Pki) -> Result<(), ProvisionError> {
    write_crl(db, pki).await
}

/// How often a server process looks for revocations another one made.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Keeps this process's CRL and client-config files in step with the database, where another
/// server process on the same database may have issued or revoked a certificate: its OpenVPN
/// server then admits or refuses it within [`FOLLOW_EVERY`]. Without the built-in VPN, never returns.
pub async fn follow_crl(s: AppState) {
    let Some(pki) = s.vpn.pki().cloned() else {
        return std::future::pending().await;
    };
    let mut written = None;
    loop {
        tokio::time::sleep(FOLLOW_EVERY).await;
        let pki = pki.lock().await;
        let admitted = match s.store.connection().await {
            Ok(mut db) => Admitted::read(&mut db).await,
            Err(e) => Err(e),
        };
        match admitted {
            Ok(a) if written.as_ref() != Some(&a) => match a.write(&pki) {
                Ok(()) => written = Some(a),
                Err(e) => tracing::warn!("cannot write the revocation list or client configs: {e}"),
            },
            Ok(_) => {}
            Err(e) => tracing::debug!("revocations not read: {e}"),
        }
    }
}
