//! The eduVPN provider: gets a node's OpenVPN profile from an eduVPN server (API v3) the way
//! vantage6 4.6+ does, with vantage6's `vpn_server` keys:
//!
//! 1. discovery: `GET {url}/.well-known/vpn-user-portal` gives the API, authorization and token
//!    endpoints; the portal is the API endpoint without `/api/v3`;
//! 2. OAuth2 authorization code with PKCE (S256), scope `config`;
//! 3. portal login by form (`/_user_pass_auth/verify`), keeping the session cookie, redirects
//!    not followed;
//! 4. the authorize URL, not followed: its `Location` carries the code and our state;
//! 5. the token, first as a public client (client id in the body), then as a confidential one
//!    (HTTP basic), as eduVPN may take either;
//! 6. `/info` for the first profile (with `tunnel: wireguard`, the first that offers WireGuard
//!    in its `vpn_proto_list`); 7. `/connect` for the profile text, `Expires` for its end. For
//!    WireGuard `/connect` carries the node's `public_key` and `Accept:
//!    application/x-wireguard-profile` (and, for a node that asked for TCP, `prefer_tcp=yes`
//!    and `application/x-wireguard+tcp-profile`, whose profile names ProxyGuard's URL), and the
//!    answer must be such a profile; for OpenVPN it carries neither, as vantage6's connector
//!    sends neither.
//!
//! Each profile is handed out under an OAuth authorization of its own. The server keeps the
//! last one of each node ([`Sessions`]) and ends it with eduVPN's `/disconnect` when the node
//! leaves the VPN (clears its address at stop, or is deleted) or gets another profile, so eduVPN
//! releases the address and forgets the node's WireGuard key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use reqwest::header::{ACCEPT, CONTENT_TYPE, EXPIRES, LOCATION, REFERER};
use reqwest::{redirect, Client};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::api::NodeId;
use crate::server::config::EduVpn;
use crate::server::pki::TunnelKind;

/// eduVPN's media type of a WireGuard profile.
const WIREGUARD_PROFILE: &str = "application/x-wireguard-profile";
/// eduVPN's media type of a WireGuard profile whose hub is reached over TCP (ProxyGuard).
const WIREGUARD_TCP_PROFILE: &str = "application/x-wireguard+tcp-profile";

/// Why no profile came from eduVPN.
#[derive(Debug, thiserror::Error)]
pub enum EduVpnError {
    /// the eduVPN server could not be reached (answered with 503 by the API)
    #[error("the VPN server is unreachable: {0}")]
    Unreachable(String),
    /// the portal refused the credentials or the OAuth exchange failed
    #[error("eduVPN refused: {0}")]
    Refused(String),
    /// the account has no VPN profile
    #[error("eduVPN offers this account no VPN profile")]
    NoProfile,
    /// eduVPN answered something unexpected
    #[error("unexpected answer from eduVPN: {0}")]
    Protocol(String),
}

/// A profile (OpenVPN's or WireGuard's text), if eduVPN said when it expires (the `Expires`
/// header), and the authorization it was handed out under.
#[derive(Debug)]
pub struct Profile {
    pub text: String,
    pub expires: Option<String>,
    pub session: Session,
}

/// The eduVPN authorization a profile was handed out under: what `/disconnect` needs, and the
/// refresh token that gets it a new access token (eduVPN's last an hour; a node runs for days).
#[derive(Clone)]
pub struct Session {
    api: String,
    token_endpoint: String,
    access: String,
    refresh: Option<String>,
    profile_id: String,
}

/// What the token endpoint gave.
struct Tokens {
    access: String,
    refresh: Option<String>,
}

/// Asks the token endpoint with `form`, first as a public client (client id in the body), then
/// as a confidential one (HTTP basic), as eduVPN may take either.
async fn token(
    http: &Client,
    endpoint: &str,
    c: &EduVpn,
    form: &[(&str, &str)],
) -> Result<Tokens, EduVpnError> {
    let mut form = form.to_vec();
    form.push(("client_id", c.client_id.as_str()));
    let public = http.post(endpoint).form(&form).send().await.map_err(net)?;
    let answer = if public.status().is_success() {
        public
    } else {
        http.post(endpoint)
            .basic_auth(&c.client_id, Some(&c.client_secret))
            .form(&form)
            .send()
            .await
            .map_err(net)?
    };
    if !answer.status().is_success() {
        return Err(EduVpnError::Refused(format!(
            "token endpoint answered {}",
            answer.status()
        )));
    }
    let tokens: Value = answer
        .json()
        .await
        .map_err(|e| EduVpnError::Protocol(format!("token: {e}")))?;
    let field = |k: &str| tokens.get(k).and_then(Value::as_str).map(str::to_string);
    Ok(Tokens {
        access: field("access_token")
            .ok_or_else(|| EduVpnError::Protocol("token lacks access_token".into()))?,
        refresh: field("refresh_token"),
    })
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("api", &self.api)
            .field("profile_id", &self.profile_id)
            .finish_non_exhaustive()
    }
}

/// The eduVPN sessions this server process opened, the last one of each node. Kept in memory:
/// a session another replica opened, or one from before a restart, is left to end at its
/// `Expires` (eduVPN's `/disconnect` is best effort by its own definition).
#[derive(Debug, Default)]
pub struct Sessions(std::sync::Mutex<std::collections::HashMap<NodeId, Session>>);

impl Sessions {
    /// Ends the node's session, if this process holds one.
    pub async fn end(&self, node: NodeId, c: &EduVpn) {
        let session = crate::sync::lock(&self.0).remove(&node);
        if let Some(session) = session {
            disconnect(node, session, c).await;
        }
    }

    /// Keeps `session` as the node's (after [`Sessions::end`] ended any earlier one).
    pub fn keep(&self, node: NodeId, session: Session) {
        crate::sync::lock(&self.0).insert(node, session);
    }
}

/// How long `/disconnect` may take: it is best effort and holds up the node's request.
const DISCONNECT_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// `POST /disconnect` for `session`: eduVPN releases its address and WireGuard key. An access
/// token eduVPN no longer takes (401: it expired) is refreshed once. Best effort: a failure is
/// logged, never passed on.
async fn disconnect(node: NodeId, session: Session, c: &EduVpn) {
    let ended = async {
        let http = Client::builder()
            .timeout(DISCONNECT_WITHIN)
            .build()
            .map_err(|e| e.to_string())?;
        let send = |access: String| {
            http.post(format!("{}/disconnect", session.api))
                .bearer_auth(access)
                .form(&[("profile_id", session.profile_id.as_str())])
                .send()
        };
        let mut answer = send(session.access.clone())
            .await
            .map_err(|e| e.to_string())?;
        if answer.status() == reqwest::StatusCode::UNAUTHORIZED {
            if let Some(refresh) = &session.refresh {
                let form = [("grant_type", "refresh_token"), ("refresh_token", refresh)];
                let fresh = token(&http, &session.token_endpoint, c, &form)
                    .await
                    .map_err(|e| format!("refreshing its access token: {e}"))?;
                answer = send(fresh.access).await.map_err(|e| e.to_string())?;
            }
        }
        match answer.status() {
            s if s.is_success() => Ok(()),
            s => Err(format!("eduVPN answered {s}")),
        }
    };
    match ended.await {
        Ok(()) => tracing::info!(node_id = %node, "eduVPN session ended (/disconnect)"),
        Err(e) => tracing::warn!(node_id = %node, "ending the eduVPN session (/disconnect): {e}"),
    }
}

fn net(e: reqwest::Error) -> EduVpnError {
    if e.is_connect() || e.is_timeout() {
        EduVpnError::Unreachable(e.to_string())
    } else {
        EduVpnError::Protocol(e.to_string())
    }
}

fn random_b64() -> Result<String, EduVpnError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| EduVpnError::Protocol(format!("no randomness: {e}")))?;
    Ok(B64.encode(b))
}

fn endpoint(api: &Value, key: &str) -> Result<String, EduVpnError> {
    api.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| EduVpnError::Protocol(format!("discovery lacks {key}")))
}

/// Runs the whole flow for one profile.
pub async fn fetch_profile(
    c: &EduVpn,
    public_key: Option<&str>,
    tcp: bool,
) -> Result<Profile, EduVpnError> {
    let http = Client::builder()
        .cookie_store(true)
        .redirect(redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .map_err(|e| EduVpnError::Protocol(e.to_string()))?;
    let base = c.url.trim_end_matches('/');

    let discovery: Value = http
        .get(format!("{base}/.well-known/vpn-user-portal"))
        .send()
        .await
        .map_err(net)?
        .error_for_status()
        .map_err(|e| EduVpnError::Unreachable(e.to_string()))?
        .json()
        .await
        .map_err(|e| EduVpnError::Protocol(format!("discovery: {e}")))?;
    let api = discovery
        .get("api")
        .and_then(|a| a.get("http://eduvpn.org/api#3"))
        .ok_or_else(|| EduVpnError::Protocol("discovery lacks api v3".into()))?;
    let api_endpoint = endpoint(api, "api_endpoint")?;
    let authorization_endpoint = endpoint(api, "authorization_endpoint")?;
    let token_endpoint = endpoint(api, "token_endpoint")?;
    let portal = api_endpoint
        .trim_end_matches('/')
        .trim_end_matches("/api/v3")
        .to_string();

    let verifier = random_b64()?;
    let challenge = B64.encode(Sha256::digest(verifier.as_bytes()));
    let state = random_b64()?;
    let authorize = reqwest::Url::parse_with_params(
        &authorization_endpoint,
        [
            ("client_id", c.client_id.as_str()),
            ("redirect_uri", c.redirect_url.as_str()),
            ("response_type", "code"),
            ("scope", "config"),
            ("state", state.as_str()),
            ("code_challenge_method", "S256"),
            ("code_challenge", challenge.as_str()),
        ],
    )
    .map_err(|e| EduVpnError::Protocol(format!("authorization endpoint: {e}")))?;

    let login = http
        .post(format!("{portal}/_user_pass_auth/verify"))
        .header(REFERER, format!("{portal}/home"))
        .form(&[
            ("userName", c.portal_username.as_str()),
            ("userPass", c.portal_userpass.as_str()),
            ("_user_pass_auth_redirect_to", authorize.as_str()),
            ("authRedirectTo", authorize.as_str()),
        ])
        .send()
        .await
        .map_err(net)?;
    // The portal sends a successful login on to the authorize URL; anything else is a refusal.
    if !login.status().is_redirection() {
        return Err(EduVpnError::Refused(format!(
            "portal login answered {}",
            login.status()
        )));
    }

    let authorized = http.get(authorize.clone()).send().await.map_err(net)?;
    let location = authorized
        .headers()
        .get(LOCATION)
        .and_then(|l| l.to_str().ok())
        .ok_or_else(|| {
            EduVpnError::Refused(format!(
                "authorize answered {} without a redirect",
                authorized.status()
            ))
        })?;
    let back = reqwest::Url::parse(location)
        .map_err(|e| EduVpnError::Protocol(format!("authorize redirect: {e}")))?;
    let param = |k: &str| {
        back.query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
    };
    if param("state").as_deref() != Some(state.as_str()) {
        return Err(EduVpnError::Protocol(
            "authorize redirect carries another state".into(),
        ));
    }
    let code = param("code").ok_or_else(|| {
        EduVpnError::Refused(format!("no code: {}", param("error").unwrap_or_default()))
    })?;

    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", c.redirect_url.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    let tokens = token(&http, &token_endpoint, c, &form).await?;
    let access = tokens.access.as_str();

    let api_base = api_endpoint.trim_end_matches('/');
    let info: Value = http
        .get(format!("{api_base}/info"))
        .bearer_auth(access)
        .send()
        .await
        .map_err(net)?
        .error_for_status()
        .map_err(|e| EduVpnError::Refused(e.to_string()))?
        .json()
        .await
        .map_err(|e| EduVpnError::Protocol(format!("info: {e}")))?;
    let wireguard = c.tunnel == TunnelKind::WireGuard;
    // A profile without `vpn_proto_list` (older servers) offers OpenVPN only.
    let offers = |p: &&Value| {
        let proto = if wireguard { "wireguard" } else { "openvpn" };
        match p.get("vpn_proto_list").and_then(Value::as_array) {
            Some(list) => list.iter().any(|x| x.as_str() == Some(proto)),
            None => !wireguard,
        }
    };
    let profiles = info
        .pointer("/info/profile_list")
        .and_then(Value::as_array)
        .ok_or(EduVpnError::NoProfile)?;
    let profile_id = profiles
        .iter()
        .find(offers)
        .and_then(|p| p.get("profile_id")?.as_str())
        .ok_or(EduVpnError::NoProfile)?
        .to_string();
    let mut form = vec![("profile_id", profile_id.as_str())];
    let mut request = http.post(format!("{api_base}/connect")).bearer_auth(access);
    if wireguard {
        let key = public_key.ok_or_else(|| {
            EduVpnError::Protocol("a WireGuard profile needs the node's public key".into())
        })?;
        // `vpn_proto` for eduVPN servers before 3.3, the `Accept` header for later ones. A
        // node that asked for TCP takes either kind: eduVPN answers one over TCP where its
        // profile offers it.
        form.extend([
            ("vpn_proto", "wireguard"),
            ("public_key", key),
            ("prefer_tcp", if tcp { "yes" } else { "no" }),
        ]);
        // One header listing both: eduVPN reads the types from one comma-separated value.
        let accept = if tcp {
            format!("{WIREGUARD_PROFILE}, {WIREGUARD_TCP_PROFILE}")
        } else {
            WIREGUARD_PROFILE.to_string()
        };
        request = request.header(ACCEPT, accept);
    }
    let connect = request.form(&form).send().await.map_err(net)?;
    // 200, or 201 as eduVPN's own examples show.
    if !connect.status().is_success() {
        return Err(EduVpnError::Refused(format!(
            "connect answered {}",
            connect.status()
        )));
    }
    let header = |name| {
        connect
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (expires, kind) = (header(EXPIRES), header(CONTENT_TYPE).unwrap_or_default());
    let text = connect
        .text()
        .await
        .map_err(|e| EduVpnError::Protocol(format!("connect: {e}")))?;
    let fits = if wireguard {
        let tcp_kind = tcp && kind.starts_with(WIREGUARD_TCP_PROFILE);
        (kind.starts_with(WIREGUARD_PROFILE) || tcp_kind)
            && crate::wireguard::profile::WgProfile::parse(&text).is_ok()
    } else {
        text.contains("<cert>") || text.contains("<tls-crypt>") || text.contains("remote ")
    };
    if !fits {
        let want = if wireguard {
            "a WireGuard"
        } else {
            "an OpenVPN"
        };
        return Err(EduVpnError::Protocol(format!(
            "connect did not return {want} profile"
        )));
    }
    let session = Session {
        api: api_base.to_string(),
        token_endpoint,
        access: tokens.access.clone(),
        refresh: tokens.refresh,
        profile_id,
    };
    Ok(Profile {
        text,
        expires,
        session,
    })
}
