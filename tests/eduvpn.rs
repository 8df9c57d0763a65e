//! The eduVPN connector against a small eduVPN-like portal that follows the documented v3 flow
//! (discovery, form login with a session cookie, authorize redirect, PKCE verification, token,
//! info, connect) and serves a real profile from the built-in PKI; and its failure paths.

use algonet_testkit as common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use algonet::server::pki::{BuiltinVpn, Pki};
use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use common::server::{server, TempDir};
use serde_json::json;
use sha2::{Digest, Sha256};

#[derive(Default)]
struct Portal {
    base: String,
    /// Only as a confidential client (HTTP basic) may the token be had.
    confidential: bool,
    no_profile: bool,
    sessions: Vec<String>,
    /// code -> (challenge, redirect_uri)
    codes: HashMap<String, (String, String)>,
    tokens: Vec<String>,
    pki: Option<Pki>,
    dir: std::path::PathBuf,
}

type Shared = Arc<Mutex<Portal>>;

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
    let t = format!("t{}", p.tokens.len());
    p.tokens.push(t.clone());
    axum::Json(json!({"access_token": t, "token_type": "bearer", "expires_in": 3600}))
        .into_response()
}

fn bearer_ok(p: &Portal, headers: &HeaderMap) -> bool {
    let t = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    t.is_some_and(|t| p.tokens.iter().any(|x| x == t))
}

async fn info(State(p): State<Shared>, headers: HeaderMap) -> Response {
    let p = lock(&p);
    if !bearer_ok(&p, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let list = if p.no_profile {
        json!([])
    } else {
        json!([{"profile_id": "default", "display_name": "Default"}])
    };
    axum::Json(json!({"info": {"profile_list": list}})).into_response()
}

async fn connect(
    State(p): State<Shared>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let mut p = lock(&p);
    if !bearer_ok(&p, &headers) || f.get("profile_id").map(String::as_str) != Some("default") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if p.pki.is_none() {
        let vpn = BuiltinVpn {
            subnet: "10.76.0.0/16".into(),
            remote: "vpn.example.test".into(),
            port: 1194,
        };
        let material = algonet::server::pki::Material::generate().expect("keys");
        p.pki = Some(Pki::open(&p.dir, &vpn, material).expect("pki"));
    }
    let pki = p.pki.as_ref().expect("pki");
    let cert = pki.issue(algonet::api::NodeId(99)).expect("issue");
    (
        StatusCode::OK,
        [(header::EXPIRES, "Fri, 26 Nov 2027 10:00:00 GMT")],
        pki.profile(&cert),
    )
        .into_response()
}

/// Starts the portal; returns its base URL and its directory (removed on drop).
async fn portal(confidential: bool, no_profile: bool, tag: &str) -> (String, TempDir) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let dir = std::env::temp_dir().join(format!("algonet-portal-{tag}-{}", std::process::id()));
    let state = Arc::new(Mutex::new(Portal {
        base: base.clone(),
        confidential,
        no_profile,
        dir,
        ..Portal::default()
    }));
    let app = Router::new()
        .route("/.well-known/vpn-user-portal", get(discovery))
        .route("/vpn-user-portal/_user_pass_auth/verify", post(verify))
        .route("/vpn-user-portal/oauth/authorize", get(authorize))
        .route("/vpn-user-portal/oauth/token", post(token))
        .route("/vpn-user-portal/api/v3/info", get(info))
        .route("/vpn-user-portal/api/v3/connect", post(connect))
        .with_state(state);
    tokio::spawn(async move { axum::serve(listener, app).await });
    (
        base,
        TempDir(std::env::temp_dir().join(format!("algonet-portal-{tag}-{}", std::process::id()))),
    )
}

fn vpn_server(url: &str, password: &str) -> String {
    format!(
        "vpn_server: {{url: \"{url}\", portal_username: portal-user, portal_userpass: {password}, \
         client_id: vantage6, client_secret: client-secret, redirect_url: \"http://localhost\"}}\n"
    )
}

#[tokio::test]
async fn a_node_gets_a_real_profile_through_the_eduvpn_flow() {
    for (confidential, tag) in [(false, "public"), (true, "confidential")] {
        let (url, _dir) = portal(confidential, false, tag).await;
        let s = server(&format!("edu-{tag}"), &vpn_server(&url, "portal-pass")).await;
        let node = s.lone_node().await.1;
        let (st, v) = s.call("GET", "/vpn", Some(&node), None).await;
        assert_eq!(st, reqwest::StatusCode::OK, "{tag}: {v}");
        let profile = v["ovpn_config"].as_str().expect("profile");
        assert_eq!(
            v["expires"],
            json!("Fri, 26 Nov 2027 10:00:00 GMT"),
            "{tag}: the certificate's end is passed on"
        );
        for part in [
            "<ca>",
            "<cert>",
            "<key>",
            "<tls-crypt>",
            "remote vpn.example.test 1194",
        ] {
            assert!(profile.contains(part), "{tag}: profile lacks {part}");
        }
    }
}

#[tokio::test]
async fn eduvpn_failures_say_why() {
    // Wrong portal password: the portal answers with its login page, not a redirect.
    let (url, _d1) = portal(false, false, "wrongpass").await;
    let s = server("edu-wrongpass", &vpn_server(&url, "nope")).await;
    let (st, v) = s
        .call("GET", "/vpn", Some(&s.lone_node().await.1), None)
        .await;
    assert_eq!(st, reqwest::StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        v["msg"].as_str().expect("msg").contains("portal login"),
        "{v}"
    );
    // No profile for the account.
    let (url, _d2) = portal(false, true, "noprofile").await;
    let s = server("edu-noprofile", &vpn_server(&url, "portal-pass")).await;
    let (st, v) = s
        .call("GET", "/vpn", Some(&s.lone_node().await.1), None)
        .await;
    assert_eq!(st, reqwest::StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        v["msg"].as_str().expect("msg").contains("no VPN profile"),
        "{v}"
    );
    // The portal is down: 503.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let dead = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let s = server("edu-down", &vpn_server(&dead, "portal-pass")).await;
    let (st, v) = s
        .call("GET", "/vpn", Some(&s.lone_node().await.1), None)
        .await;
    assert_eq!(st, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{v}");
}
