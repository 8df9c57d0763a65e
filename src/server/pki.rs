//! The built-in VPN provider: the server's own small OpenVPN PKI. A CA, a server certificate
//! and a tls-crypt key made on first start; one client certificate per node, replaced by
//! `POST /vpn/update` and revoked (listed in the CRL the OpenVPN server checks) when replaced.
//! EC P-256 keys; the server certificate has extendedKeyUsage serverAuth, clients clientAuth.
//! Every secret is written with mode 0600.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SerialNumber,
};
use serde::Deserialize;
use time::{Duration, OffsetDateTime};

/// The `vpn` block of the server configuration: the built-in provider.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuiltinVpn {
    /// The VPN subnet, `10.76.0.0/16`.
    pub subnet: String,
    /// Host name or address clients connect to.
    pub remote: String,
    /// The VPN server's UDP port: OpenVPN's 1194 or WireGuard's 51820 unless set.
    #[serde(default)]
    port: Option<u16>,
    /// Which tunnel the nodes get: `openvpn` (an OpenVPN server runs on the files this server
    /// writes) or `wireguard` (this server is the hub itself).
    #[serde(default)]
    pub tunnel: TunnelKind,
    /// With WireGuard: whether nodes of one collaboration that reach each other by UDP trade
    /// packets directly, the hub only relaying where they cannot (`true` unless set).
    #[serde(default = "yes")]
    pub direct: bool,
}

fn yes() -> bool {
    true
}

/// The tunnel of the built-in VPN.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TunnelKind {
    #[default]
    #[value(name = "openvpn")]
    OpenVpn,
    #[value(name = "wireguard")]
    WireGuard,
}

impl BuiltinVpn {
    pub fn new(subnet: &str, remote: &str, port: Option<u16>, tunnel: TunnelKind) -> BuiltinVpn {
        BuiltinVpn {
            subnet: subnet.into(),
            remote: remote.into(),
            port,
            tunnel,
            direct: true,
        }
    }

    /// The VPN server's UDP port.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tunnel {
            TunnelKind::OpenVpn => 1194,
            TunnelKind::WireGuard => 51820,
        })
    }

    /// The subnet, or why not.
    pub fn vpn_subnet(&self) -> Result<ipnet::Ipv4Net, String> {
        crate::net::parse_subnet(&self.subnet).map_err(|e| format!("vpn.subnet: {e}"))
    }

    /// The subnet as (network, netmask), or why not.
    pub fn network(&self) -> Result<(std::net::Ipv4Addr, std::net::Ipv4Addr), String> {
        let net = self.vpn_subnet()?;
        if net.prefix_len() > 30 {
            return Err(format!(
                "vpn.subnet: {net} has no room for nodes (at most /30)"
            ));
        }
        Ok((net.network(), net.netmask()))
    }

    /// The VPN address of node `id`, the same for every certificate it is issued and across
    /// restarts of either side: the subnet's host `id + 1` (host 1 is the OpenVPN server's).
    /// `None` if the subnet has no such host.
    pub fn address_of(&self, id: crate::api::NodeId) -> Option<std::net::Ipv4Addr> {
        let net = self.vpn_subnet().ok()?;
        let host = u32::try_from(id.0).ok()?.checked_add(1)?;
        let broadcast = net.broadcast().to_bits() - net.network().to_bits();
        (host >= 2 && host < broadcast)
            .then(|| std::net::Ipv4Addr::from_bits(net.network().to_bits() + host))
    }
}

/// The common name of node `id`'s client certificates (the name OpenVPN knows it by).
pub fn common_name(id: crate::api::NodeId) -> String {
    format!("algonet-node-{id}")
}

/// How long a node's client certificate is valid.
pub const CLIENT_CERT_DAYS: u32 = 365;

/// What went wrong in the PKI.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// a file could not be read or written
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    /// a certificate or key could not be made or read
    #[error("{what}: {source}")]
    Crypto {
        what: &'static str,
        source: rcgen::Error,
    },
    /// randomness was not available
    #[error("no randomness: {0}")]
    Random(String),
}

fn file_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::File {
        path: path.to_path_buf(),
        source,
    }
}

fn crypto(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |source| PkiError::Crypto { what, source }
}

/// Writes a secret with mode 0600, also over an existing file of a looser mode.
fn write_secret(path: &Path, text: &str) -> Result<(), PkiError> {
    crate::private::file(path, text.as_bytes()).map_err(file_err(path))
}

fn random(n: usize) -> Result<Vec<u8>, PkiError> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|e| PkiError::Random(e.to_string()))?;
    Ok(b)
}

/// A positive 16-byte serial number and its hex form.
fn serial() -> Result<(SerialNumber, String), PkiError> {
    let mut b = random(16)?;
    b[0] &= 0x7f;
    let hex = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok((SerialNumber::from_slice(&b), hex))
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "algonet VPN CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.key_identifier_method = KeyIdMethod::Sha256;
    p
}

fn leaf(
    cn: &str,
    usage: ExtendedKeyUsagePurpose,
    days: i64,
) -> Result<(CertificateParams, String), PkiError> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyAgreement,
    ];
    p.extended_key_usages = vec![usage];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::hours(1);
    p.not_after = now + Duration::days(days);
    let (sn, hex) = serial()?;
    p.serial_number = Some(sn);
    Ok((p, hex))
}

/// An issued client certificate.
#[derive(Debug)]
pub struct ClientCert {
    pub serial: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// The PKI's lasting secrets, as PEM text: what every server process on one database shares
/// (kept in the database, see [`crate::server::store::keep_secret`]).
#[derive(Clone, serde::Serialize, Deserialize)]
pub struct Material {
    pub ca_cert: String,
    pub ca_key: String,
    pub server_cert: String,
    pub server_key: String,
    pub tls_crypt: String,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Material(..)")
    }
}

/// The files of [`Material`] in the PKI's directory.
const FILES: [&str; 5] = [
    "ca.crt",
    "ca.key",
    "server.crt",
    "server.key",
    "tls-crypt.key",
];

impl Material {
    /// A new CA (10 years), server certificate (10 years) and tls-crypt key.
    pub fn generate() -> Result<Material, PkiError> {
        let key = KeyPair::generate().map_err(crypto("make CA key"))?;
        let mut p = ca_params();
        let now = OffsetDateTime::now_utc();
        p.not_before = now - Duration::hours(1);
        p.not_after = now + Duration::days(3650);
        let ca = p.self_signed(&key).map_err(crypto("make CA certificate"))?;
        let server_key = KeyPair::generate().map_err(crypto("make server key"))?;
        let (params, _) = leaf(
            "algonet VPN server",
            ExtendedKeyUsagePurpose::ServerAuth,
            3650,
        )?;
        let server = params
            .signed_by(&server_key, &Issuer::new(ca_params(), &key))
            .map_err(crypto("sign server certificate"))?;
        // OpenVPN's static key format: 2048 bits in 16 lines of hex.
        let mut tls_crypt = String::from("-----BEGIN OpenVPN Static key V1-----\n");
        for line in random(256)?.chunks(16) {
            tls_crypt.extend(line.iter().map(|b| format!("{b:02x}")));
            tls_crypt.push('\n');
        }
        tls_crypt.push_str("-----END OpenVPN Static key V1-----\n");
        Ok(Material {
            ca_cert: ca.pem(),
            ca_key: key.serialize_pem(),
            server_cert: server.pem(),
            server_key: server_key.serialize_pem(),
            tls_crypt,
        })
    }

    /// The material a server made in `dir` before it kept it in its database, if all of it is
    /// there.
    pub fn from_dir(dir: &Path) -> Option<Material> {
        let [ca_cert, ca_key, server_cert, server_key, tls_crypt] =
            FILES.map(|name| std::fs::read_to_string(dir.join(name)).ok());
        Some(Material {
            ca_cert: ca_cert?,
            ca_key: ca_key?,
            server_cert: server_cert?,
            server_key: server_key?,
            tls_crypt: tls_crypt?,
        })
    }
}

/// The PKI, with its files in a directory for the OpenVPN server: `ca.crt`, `ca.key`,
/// `server.crt`, `server.key`, `tls-crypt.key`, `crl.pem`, `server.conf`.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
    vpn: BuiltinVpn,
    ca_pem: String,
    ca_key: KeyPair,
    tls_crypt: String,
}

impl Pki {
    /// The PKI of `material`; (re)writes its files in `dir` and the OpenVPN server
    /// configuration for `vpn`. The CRL is the caller's to write ([`Pki::write_crl`]).
    pub fn open(dir: &Path, vpn: &BuiltinVpn, material: Material) -> Result<Pki, PkiError> {
        crate::private::dir(dir).map_err(file_err(dir))?;
        let texts = [
            &material.ca_cert,
            &material.ca_key,
            &material.server_cert,
            &material.server_key,
            &material.tls_crypt,
        ];
        for (name, text) in FILES.iter().zip(texts) {
            write_secret(&dir.join(name), text)?;
        }
        let pki = Pki {
            dir: dir.to_path_buf(),
            vpn: vpn.clone(),
            ca_key: KeyPair::from_pem(&material.ca_key).map_err(crypto("read the CA key"))?,
            ca_pem: material.ca_cert,
            tls_crypt: material.tls_crypt,
        };
        pki.write_server_config()?;
        Ok(pki)
    }

    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::new(ca_params(), &self.ca_key)
    }

    /// Issues a client certificate for a node, valid [`CLIENT_CERT_DAYS`].
    pub fn issue(&self, node_id: crate::api::NodeId) -> Result<ClientCert, PkiError> {
        let key = KeyPair::generate().map_err(crypto("make client key"))?;
        let (params, serial) = leaf(
            &common_name(node_id),
            ExtendedKeyUsagePurpose::ClientAuth,
            i64::from(CLIENT_CERT_DAYS),
        )?;
        let cert = params
            .signed_by(&key, &self.issuer())
            .map_err(crypto("sign client certificate"))?;
        Ok(ClientCert {
            serial,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes a client-config file in `ccd/` for each of `nodes` that fixes its address
    /// ([`BuiltinVpn::address_of`]) and removes any other: with `ccd-exclusive`, the OpenVPN
    /// server admits only the nodes listed. Each file is renamed into place.
    pub fn write_ccd(&self, nodes: &[crate::api::NodeId]) -> Result<(), PkiError> {
        let dir = self.dir.join("ccd");
        std::fs::create_dir_all(&dir).map_err(file_err(&dir))?;
        let (_, mask) = self.vpn.network().unwrap_or((
            std::net::Ipv4Addr::UNSPECIFIED,
            std::net::Ipv4Addr::UNSPECIFIED,
        ));
        let mut wanted = std::collections::HashSet::new();
        for &id in nodes {
            let Some(address) = self.vpn.address_of(id) else {
                continue;
            };
            let name = common_name(id);
            let (path, part) = (dir.join(&name), dir.join(format!(".{name}.part")));
            let text = format!("ifconfig-push {address} {mask}\n");
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                std::fs::write(&part, text).map_err(file_err(&part))?;
                std::fs::rename(&part, &path).map_err(file_err(&path))?;
            }
            wanted.insert(name);
        }
        for entry in std::fs::read_dir(&dir).map_err(file_err(&dir))? {
            let entry = entry.map_err(file_err(&dir))?;
            if !wanted.contains(&*entry.file_name().to_string_lossy()) {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(file_err(&path))?;
            }
        }
        Ok(())
    }

    /// Rewrites the CRL with these revoked serials (hex).
    pub fn write_crl(&self, revoked: &[String]) -> Result<(), PkiError> {
        let now = OffsetDateTime::now_utc();
        let revoked_certs = revoked
            .iter()
            .filter_map(|hex| {
                let bytes: Vec<u8> = (0..hex.len())
                    .step_by(2)
                    .filter_map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                    .collect();
                (!bytes.is_empty()).then(|| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&bytes),
                    revocation_time: now,
                    reason_code: Some(RevocationReason::Superseded),
                    invalidity_date: None,
                })
            })
            .collect();
        let (crl_number, _) = serial()?;
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(3650),
            crl_number,
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params
            .signed_by(&self.issuer())
            .map_err(crypto("sign CRL"))?;
        let pem = crl.pem().map_err(crypto("encode CRL"))?;
        // Renamed into place: the OpenVPN server may read it at any moment.
        let (path, part) = (self.dir.join("crl.pem"), self.dir.join("crl.pem.part"));
        std::fs::write(&part, pem).map_err(file_err(&part))?;
        std::fs::rename(&part, &path).map_err(file_err(&path))
    }

    /// The OpenVPN server configuration (relative paths: run it with `--cd <dir>`).
    pub fn server_config(&self) -> String {
        let (net, mask) = self.vpn.network().unwrap_or((
            std::net::Ipv4Addr::UNSPECIFIED,
            std::net::Ipv4Addr::UNSPECIFIED,
        ));
        format!(
            "# written by algonet server; regenerated at every start\n\
             dev tun\ntopology subnet\nserver {net} {mask}\nclient-to-client\nproto udp4\nport {}\n\
             dh none\nca ca.crt\ncert server.crt\nkey server.key\ntls-crypt tls-crypt.key\ncrl-verify crl.pem\n\
             keepalive 10 60\nexplicit-exit-notify 1\nverb 3\nfast-io\nsndbuf 1048576\nrcvbuf 1048576\n\
             client-config-dir ccd\nccd-exclusive\n",
            self.vpn.port()
        )
    }

    fn write_server_config(&self) -> Result<(), PkiError> {
        let path = self.dir.join("server.conf");
        std::fs::write(&path, self.server_config()).map_err(file_err(&path))
    }

    /// The complete client profile (.ovpn) for a certificate.
    pub fn profile(&self, c: &ClientCert) -> String {
        format!(
            "client\ndev tun\nproto udp4\nremote {} {}\nnobind\nremote-cert-tls server\n\
             <ca>\n{}</ca>\n<cert>\n{}</cert>\n<key>\n{}</key>\n<tls-crypt>\n{}</tls-crypt>\n",
            self.vpn.remote,
            self.vpn.port(),
            self.ca_pem,
            c.cert_pem,
            c.key_pem,
            self.tls_crypt
        )
    }
}
