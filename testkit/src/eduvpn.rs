//! An eduVPN-like portal that follows the documented eduVPN v3 flow (discovery, form login with
//! a session cookie, authorize redirect, PKCE verification, token, info, connect), for the
//! servers' eduVPN connectors (algonet's and vantage6's). Its profiles are real: each `connect`
//! issues a client certificate of its own PKI (algonet's built-in one) with an address of its
//! own, so an OpenVPN server run from [`EduVpnPortal::pki_dir`] admits the holder. With
//! [`PortalOptions::wireguard`] it also runs a WireGuard server (a hub in this process, as
//! eduVPN's server is one for its clients) and `/connect` answers a client that sends its
//! `public_key` and accepts `application/x-wireguard-profile` with a WireGuard profile in
//! eduVPN's form (no private key, IPv6 beside IPv4, every address allowed, no keepalive), its
//! key admitted at the hub; `/disconnect` forgets the key the authorization admitted. With
//! [`PortalOptions::proxyguard`] it also runs ProxyGuard (WireGuard over TCP), as its
//! technical document describes it: a client that sends `prefer_tcp=yes` and accepts
//! `application/x-wireguard+tcp-profile` gets such a profile, naming `Endpoint =
//! 127.0.0.1:51820` and `ProxyEndpoint = http://<vpn.remote>:<port>/proxyguard/<vpn.remote>` as
//! eduVPN's portal writes them, and ProxyGuard there relays each upgraded connection's
//! datagrams to the WireGuard server. The login is `portal-user` / `portal-pass`, the client
//! `vantage6` (secret `client-secret`).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use algonet::api::NodeId;
use algonet::server::pki::{BuiltinVpn, Pki};
use algonet::wireguard::ip::{HubIp, HubOut};
use algonet::wireguard::keys::{decode_key, KeyPair};
use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use gotatun::device::{Device, Peer};
use gotatun::udp::socket::UdpSocketFactory;
use gotatun::x25519::PublicKey;
use ipnetwork::{IpNetwork, Ipv4Network};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::server::TempDir;

struct Portal {
    base: String,
    /// Only as a confidential client (HTTP basic) may the token be had.
    confidential: bool,
    no_profile: bool,
    sessions: Vec<String>,
    /// code -> (challenge, redirect_uri)
    codes: HashMap<String, (String, String)>,
    /// Access tokens eduVPN takes now, each with its authorization.
    tokens: HashMap<String, usize>,
    /// Refresh tokens, each with its authorization (used once: a refresh rotates it).
    refresh: HashMap<String, usize>,
    /// Authorizations granted.
    authorizations: usize,
    pki: Pki,
    /// The certificates handed out, one a profile, each with an address of its own.
    issued: Vec<NodeId>,
    vpn: BuiltinVpn,
    wireguard: Option<Arc<WgServer>>,
    /// ProxyGuard's URL, if it runs.
    proxyguard: Option<String>,
    /// Every WireGuard key asked for, each with its address (a key asked for again keeps it).
    keys: Vec<[u8; 32]>,
    /// The keys admitted now, each with the authorization that asked last: `/disconnect`
    /// under that authorization forgets the key.
    admitted: HashMap<[u8; 32], usize>,
    /// The `/disconnect`s answered.
    disconnects: Arc<std::sync::atomic::AtomicUsize>,
}

/// The portal's WireGuard server: a hub on a UDP port that turns packets around between the
/// keys `/connect` admitted.
struct WgServer {
    device: Device<(UdpSocketFactory, HubIp, HubOut)>,
    ip: HubIp,
    public: String,
    port: u16,
}

impl WgServer {
    async fn start(port: u16) -> WgServer {
        let keys = KeyPair::generate().expect("the portal's WireGuard key");
        let public = keys.public_b64();
        let (ip, out) = HubIp::new(algonet::wireguard::MTU);
        let device = gotatun::device::build()
            .with_default_udp()
            .with_ip_pair(ip.clone(), out)
            .with_private_key(keys.secret)
            .with_listen_port(port)
            .suspended(true)
            .build()
            .await
            .expect("the portal's WireGuard server");
        WgServer {
            device,
            ip,
            public,
            port,
        }
    }

    /// Admits exactly the keys of `admitted`, each at its address.
    async fn admit(&self, admitted: Admitted, forgotten: Vec<[u8; 32]>) {
        for key in forgotten {
            let _ = self.device.remove_peer(&PublicKey::from(key)).await;
        }
        for (key, address) in &admitted {
            let net = IpNetwork::V4(Ipv4Network::new(*address, 32).expect("a /32"));
            let peer = Peer::new(PublicKey::from(*key)).with_allowed_ip(net);
            let _ = self.device.add_or_update_peer(peer).await;
        }
        self.ip
            .set_peers(admitted.into_iter().map(|(_, a)| (a, 0)).collect());
        self.device
            .resume()
            .await
            .expect("the WireGuard server's port");
    }
}

type Shared = Arc<Mutex<Portal>>;

/// eduVPN's media type of a WireGuard profile.
const WIREGUARD: &str = "application/x-wireguard-profile";
/// eduVPN's media type of a WireGuard profile reached over TCP (ProxyGuard).
const WIREGUARD_TCP: &str = "application/x-wireguard+tcp-profile";

fn lock(p: &Shared) -> std::sync::MutexGuard<'_, Portal> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

async fn discovery(State(p): State<Shared>) -> Response {
    let b = lock(&p).base.clone();
    axum::Json(json!({"api": {"http://eduvpn.org/api#3": {
        "api_endpoint": format!("{b}/vpn-user-portal/api/v3"),
        "authorization_endpoint": format!("{b}/vpn-user-portal/oauth/authorize"),
        "token_endpoint": format!("{b}/vpn-user-portal/oauth/token"),
    }}}))
    .into_response()
}

async fn verify(
    State(p): State<Shared>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let mut p = lock(&p);
    let referer_ok = headers.get(header::REFERER).and_then(|v| v.to_str().ok())
        == Some(&format!("{}/vpn-user-portal/home", p.base));
    let creds_ok = f.get("userName").map(String::as_str) == Some("portal-user")
        && f.get("userPass").map(String::as_str) == Some("portal-pass");
    let (Some(to), true, true) = (f.get("authRedirectTo"), referer_ok, creds_ok) else {
        return (StatusCode::OK, "<html>login failed</html>").into_response();
    };
    if f.get("_user_pass_auth_redirect_to") != Some(to) {
        return (StatusCode::BAD_REQUEST, "inconsistent redirect").into_response();
    }
    let session = format!("s{}", p.sessions.len());
    p.sessions.push(session.clone());
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, to.clone()),
            (header::SET_COOKIE, format!("SID={session}; Path=/")),
        ],
    )
        .into_response()
}

async fn authorize(
    State(p): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut p = lock(&p);
    let cookie = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !p
        .sessions
        .iter()
        .any(|s| cookie.contains(&format!("SID={s}")))
    {
        return (
            StatusCode::FOUND,
            [(header::LOCATION, "/vpn-user-portal/_user_pass_auth/login")],
        )
            .into_response();
    }
    let ok = q.get("client_id").map(String::as_str) == Some("vantage6")
        && q.get("scope").map(String::as_str) == Some("config")
        && q.get("code_challenge_method").map(String::as_str) == Some("S256")
        && q.get("response_type").map(String::as_str) == Some("code");
    let (Some(challenge), Some(redirect), Some(state), true) = (
        q.get("code_challenge"),
        q.get("redirect_uri"),
        q.get("state"),
        ok,
    ) else {
        return (StatusCode::BAD_REQUEST, "bad authorize request").into_response();
    };
    let code = format!("c{}", p.codes.len());
    p.codes
        .insert(code.clone(), (challenge.clone(), redirect.clone()));
    (
        StatusCode::FOUND,
        [(
            header::LOCATION,
            format!("{redirect}?code={code}&state={state}"),
        )],
    )
        .into_response()
}

async fn token(
    State(p): State<Shared>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let mut p = lock(&p);
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .map(|b| STANDARD.decode(b).unwrap_or_default());
    let client_ok = if p.confidential {
        basic.as_deref() == Some(b"vantage6:client-secret".as_slice())
    } else {
        f.get("client_id").map(String::as_str) == Some("vantage6")
    };
    if !client_ok {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    if f.get("grant_type").map(String::as_str) == Some("refresh_token") {
        let Some(authorization) = f.get("refresh_token").and_then(|r| p.refresh.remove(r)) else {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": "invalid_grant"})),
            )
                .into_response();
        };
        return grant(&mut p, authorization);
    }
    let (Some(code), Some(verifier)) = (f.get("code"), f.get("code_verifier")) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_request"})),
        )
            .into_response();
    };
    let Some((challenge, redirect)) = p.codes.remove(code) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    };
    if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != challenge
        || f.get("redirect_uri") != Some(&redirect)
    {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant", "error_description": "PKCE"})),
        )
            .into_response();
    }
    p.authorizations += 1;
    let authorization = p.authorizations;
    grant(&mut p, authorization)
}

/// A new access token and refresh token for `authorization`.
fn grant(p: &mut Portal, authorization: usize) -> Response {
    let n = p.tokens.len() + p.refresh.len() + p.authorizations;
    let (access, refresh) = (
        format!("t{authorization}-{n}"),
        format!("r{authorization}-{n}"),
    );
    p.tokens.insert(access.clone(), authorization);
    p.refresh.insert(refresh.clone(), authorization);
    axum::Json(json!({
        "access_token": access, "refresh_token": refresh, "token_type": "bearer", "expires_in": 3600
    }))
    .into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// The authorization of the request's access token, if eduVPN takes it.
fn authorization(p: &Portal, headers: &HeaderMap) -> Option<usize> {
    bearer(headers).and_then(|t| p.tokens.get(t).copied())
}

async fn info(State(p): State<Shared>, headers: HeaderMap) -> Response {
    let p = lock(&p);
    if authorization(&p, &headers).is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let protocols = if p.wireguard.is_some() {
        json!(["openvpn", "wireguard"])
    } else {
        json!(["openvpn"])
    };
    let list = if p.no_profile {
        json!([])
    } else {
        json!([{"profile_id": "default", "display_name": "Default", "vpn_proto_list": protocols}])
    };
    axum::Json(json!({"info": {"profile_list": list}})).into_response()
}

/// eduVPN's error answer: 400 with `{"error": ...}`.
fn refused(why: &str) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({ "error": why }))).into_response()
}

/// When every profile the portal hands out expires.
const EXPIRES: &str = "Fri, 26 Nov 2027 10:00:00 GMT";

async fn connect(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    // eduVPN reads the media types from one comma-separated value.
    let accept: Vec<&str> = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .collect();
    let tcp = accept.contains(&WIREGUARD_TCP) && f.get("prefer_tcp").is_some_and(|v| v == "yes");
    // The lock is not held across the WireGuard server's admission.
    let (wg, admitted, profile) = {
        let mut p = lock(&shared);
        let Some(granted) = authorization(&p, &headers)
            .filter(|_| f.get("profile_id").map(String::as_str) == Some("default"))
        else {
            return StatusCode::UNAUTHORIZED.into_response();
        };
        let proxy = p.proxyguard.clone().filter(|_| tcp);
        let wants = accept.contains(&WIREGUARD) || proxy.is_some();
        match (wants, p.wireguard.clone()) {
            (true, Some(wg)) => match wireguard_profile(&mut p, &wg, &f, granted, proxy) {
                Ok((admitted, profile)) => (wg, admitted, profile),
                Err(why) => return refused(why),
            },
            _ => return openvpn_profile(&mut p),
        }
    };
    wg.admit(admitted, Vec::new()).await;
    let kind = if profile.contains("ProxyEndpoint") {
        WIREGUARD_TCP
    } else {
        WIREGUARD
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, kind), (header::EXPIRES, EXPIRES)],
        profile,
    )
        .into_response()
}

/// A profile of the portal's PKI, with a certificate and an address of its own.
fn openvpn_profile(p: &mut Portal) -> Response {
    let id = NodeId(2 + p.issued.len() as i64);
    p.issued.push(id);
    let cert = p.pki.issue(id).expect("issue");
    p.pki.write_ccd(&p.issued).expect("ccd");
    (
        StatusCode::OK,
        [(header::EXPIRES, EXPIRES)],
        p.pki.profile(&cert),
    )
        .into_response()
}

/// The WireGuard keys a server admits, each with its address.
type Admitted = Vec<([u8; 32], Ipv4Addr)>;

/// A WireGuard profile in eduVPN's form for the `public_key` of the request (a key asked for
/// again keeps its address), reached through `proxy` if given, and every key the server is to
/// admit; or why eduVPN refuses.
fn wireguard_profile(
    p: &mut Portal,
    wg: &WgServer,
    f: &HashMap<String, String>,
    granted: usize,
    proxy: Option<String>,
) -> Result<(Admitted, String), &'static str> {
    if f.get("vpn_proto").is_some_and(|v| v != "wireguard") {
        return Err("invalid \"vpn_proto\"");
    }
    let key = f.get("public_key").ok_or("missing \"public_key\"")?;
    let key = decode_key(key).map_err(|_| "invalid \"public_key\"")?;
    let index = match p.keys.iter().position(|k| *k == key) {
        Some(i) => i,
        None => {
            p.keys.push(key);
            p.keys.len() - 1
        }
    };
    p.admitted.insert(key, granted);
    let address_of = |i: usize| p.vpn.address_of(NodeId(100 + i as i64)).expect("address");
    let admitted = admitted(p);
    let prefix = p.vpn.vpn_subnet().expect("subnet").prefix_len();
    let endpoint = match proxy {
        Some(url) => format!("Endpoint = 127.0.0.1:51820\nProxyEndpoint = {url}\n"),
        None => format!("Endpoint = {}:{}\n", p.vpn.remote, wg.port),
    };
    let profile = format!(
        "[Interface]\nAddress = {}/{prefix}, fd43::{index:x}/64\nDNS = 9.9.9.9, 2620:fe::fe\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = 0.0.0.0/0, ::/0\n{endpoint}",
        address_of(index),
        wg.public,
    );
    Ok((admitted, profile))
}

/// The keys admitted now, each at its address.
fn admitted(p: &Portal) -> Admitted {
    p.keys
        .iter()
        .enumerate()
        .filter(|(_, k)| p.admitted.contains_key(*k))
        .map(|(i, k)| {
            (
                *k,
                p.vpn.address_of(NodeId(100 + i as i64)).expect("address"),
            )
        })
        .collect()
}

/// eduVPN's `/disconnect`: the authorization's WireGuard key is forgotten (its address
/// released); 204.
async fn disconnect(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let (wg, admitted, forgotten) = {
        let mut p = lock(&shared);
        let Some(granted) = authorization(&p, &headers) else {
            return StatusCode::UNAUTHORIZED.into_response();
        };
        if f.get("profile_id").map(String::as_str) != Some("default") {
            return refused("profile not available");
        }
        let forgotten: Vec<_> = p
            .admitted
            .iter()
            .filter(|(_, a)| **a == granted)
            .map(|(k, _)| *k)
            .collect();
        for k in &forgotten {
            p.admitted.remove(k);
        }
        p.disconnects
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (p.wireguard.clone(), admitted(&p), forgotten)
    };
    if let Some(wg) = wg {
        wg.admit(admitted, forgotten).await;
    }
    StatusCode::NO_CONTENT.into_response()
}

/// How the portal behaves.
#[derive(Debug, Clone)]
pub struct PortalOptions {
    /// Names its folder.
    pub tag: String,
    /// The token only for a confidential client (HTTP basic), not a public one.
    pub confidential: bool,
    /// `/info` lists no profile.
    pub no_profile: bool,
    /// The VPN its profiles are for.
    pub vpn: BuiltinVpn,
    /// Served over HTTPS (a private CA's certificate), as eduVPN is; vantage6's connector
    /// (oauthlib) refuses plain HTTP.
    pub tls: bool,
    /// Also WireGuard: its server's UDP port (on every address of the host; profiles name
    /// `vpn.remote`).
    pub wireguard: Option<u16>,
    /// Also ProxyGuard in front of the WireGuard server, on `vpn.remote` (which must then be
    /// an address of the host).
    pub proxyguard: bool,
}

/// A running portal: its URL, and its PKI's folder (the OpenVPN server's files, `server.conf`
/// first), removed when dropped.
pub struct EduVpnPortal {
    pub url: String,
    pub pki_dir: std::path::PathBuf,
    /// With TLS: the CA's certificate (PEM file) that its clients must trust.
    pub ca_file: Option<std::path::PathBuf>,
    /// The `/disconnect`s it answered.
    pub disconnects: Arc<std::sync::atomic::AtomicUsize>,
    /// ProxyGuard's URL, as its profiles name it, if it runs.
    pub proxyguard: Option<String>,
    state: Shared,
    _dir: TempDir,
}

impl std::fmt::Debug for EduVpnPortal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EduVpnPortal")
            .field("url", &self.url)
            .field("pki_dir", &self.pki_dir)
            .finish_non_exhaustive()
    }
}

impl EduVpnPortal {
    /// Every access token handed out stops working, as eduVPN's do after an hour; refresh
    /// tokens still get new ones.
    pub fn expire_access_tokens(&self) {
        lock(&self.state).tokens.clear();
    }
}

/// Starts a portal on 127.0.0.1 with a new PKI.
pub async fn start(o: PortalOptions) -> EduVpnPortal {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let plain = listener.local_addr().expect("addr");
    let dir = std::env::temp_dir().join(format!("algonet-portal-{}-{}", o.tag, std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the portal's folder");
    let (url, ca_file) = if o.tls {
        let (ca, url) = crate::tls::terminator(plain).await;
        let file = dir.join("ca.pem");
        std::fs::write(&file, ca).expect("the CA's certificate");
        (url, Some(file))
    } else {
        (format!("http://{plain}"), None)
    };
    let pki_dir = dir.join("pki");
    let material = algonet::server::pki::Material::generate().expect("keys");
    let pki = Pki::open(&pki_dir, &o.vpn, material).expect("pki");
    pki.write_crl(&[]).expect("crl");
    pki.write_ccd(&[]).expect("ccd");
    let disconnects = Arc::default();
    let proxyguard = match (o.proxyguard, o.wireguard) {
        (true, Some(port)) => Some(proxyguard::start(&o.vpn.remote, port).await),
        _ => None,
    };
    let state = Arc::new(Mutex::new(Portal {
        base: url.clone(),
        confidential: o.confidential,
        no_profile: o.no_profile,
        sessions: Vec::new(),
        codes: HashMap::new(),
        tokens: HashMap::new(),
        refresh: HashMap::new(),
        authorizations: 0,
        pki,
        issued: Vec::new(),
        wireguard: match o.wireguard {
            Some(port) => Some(Arc::new(WgServer::start(port).await)),
            None => None,
        },
        proxyguard: proxyguard.clone(),
        vpn: o.vpn,
        keys: Vec::new(),
        admitted: HashMap::new(),
        disconnects: Arc::clone(&disconnects),
    }));
    let app = Router::new()
        .route("/.well-known/vpn-user-portal", get(discovery))
        .route("/vpn-user-portal/_user_pass_auth/verify", post(verify))
        .route("/vpn-user-portal/oauth/authorize", get(authorize))
        .route("/vpn-user-portal/oauth/token", post(token))
        .route("/vpn-user-portal/api/v3/info", get(info))
        .route("/vpn-user-portal/api/v3/connect", post(connect))
        .route("/vpn-user-portal/api/v3/disconnect", post(disconnect))
        .with_state(Arc::clone(&state));
    tokio::spawn(async move { axum::serve(listener, app).await });
    EduVpnPortal {
        url,
        pki_dir,
        ca_file,
        disconnects,
        proxyguard,
        state,
        _dir: TempDir(dir),
    }
}

/// The `vpn_server` settings of a server (algonet's or vantage6's) for a portal at `url`,
/// logging in with `password`.
pub fn vpn_server(url: &str, password: &str) -> String {
    format!(
        "vpn_server: {{url: \"{url}\", portal_username: portal-user, portal_userpass: {password}, \
         client_id: vantage6, client_secret: client-secret, redirect_url: \"https://localhost\"}}\n"
    )
}

/// ProxyGuard's server side as eduVPN's technical document describes it: `GET <path>` with
/// `Connection: Upgrade` and `Upgrade: UoTLV/1` is answered `101 Switching Protocols`, and the
/// connection then carries UDP datagrams, each after its length in 2 bytes (big-endian), to and
/// from the WireGuard server. Written from that description, apart from algonet's own framing.
mod proxyguard {
    use std::net::{Ipv4Addr, SocketAddr};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream, UdpSocket};

    /// Starts ProxyGuard on `host` (a free port) for the WireGuard server on `wg_port`; its URL.
    pub async fn start(host: &str, wg_port: u16) -> String {
        let listener = TcpListener::bind((host, 0))
            .await
            .expect("ProxyGuard's port");
        let at = listener.local_addr().expect("addr");
        let wg = SocketAddr::from((Ipv4Addr::LOCALHOST, wg_port));
        tokio::spawn(async move {
            while let Ok((c, _)) = listener.accept().await {
                tokio::spawn(serve(c, wg));
            }
        });
        format!("http://{at}/proxyguard/{host}")
    }

    async fn serve(mut c: TcpStream, wg: SocketAddr) -> std::io::Result<()> {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
            head.push(c.read_u8().await?);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let upgrade = head.starts_with("get /proxyguard/")
            && head.lines().any(|l| l.trim() == "upgrade: uotlv/1")
            && head
                .lines()
                .any(|l| l.starts_with("connection:") && l.contains("upgrade"));
        if !upgrade {
            c.write_all(
                b"HTTP/1.1 426 Upgrade Required\r\nUpgrade: UoTLV/1\r\nConnection: close\r\n\r\n",
            )
            .await?;
            return Ok(());
        }
        c.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: UoTLV/1\r\n\r\n",
        )
        .await?;
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        udp.connect(wg).await?;
        let (mut from_client, mut to_client) = c.into_split();
        let up = async {
            let mut datagram = vec![0u8; 65_535];
            loop {
                let len = usize::from(from_client.read_u16().await?);
                from_client.read_exact(&mut datagram[..len]).await?;
                let _ = udp.send(&datagram[..len]).await;
            }
        };
        let down = async {
            let mut datagram = vec![0u8; 65_535];
            loop {
                let n = udp.recv(&mut datagram).await?;
                let len = u16::try_from(n).expect("a datagram fits");
                to_client.write_all(&len.to_be_bytes()).await?;
                to_client.write_all(&datagram[..n]).await?;
            }
        };
        tokio::select! {
            r = up => r,
            r = down => r,
        }
    }
}
