//! The algorithm proxy: HTTP on the gateway address inside the hub namespace, forwarding what
//! an algorithm asks of the server to the server's API (vantage6 semantics: the algorithm sends
//! its container token; the proxy passes it on). Only the registered containers' addresses are
//! served: a VPN peer or a WAN neighbour that reaches the socket gets 403.
//!
//! Bodies are streamed both ways, never held whole: what the proxy holds for a request is a few
//! chunks in flight, and at most [`MAX_REQUESTS`] requests are served at once (more get 503), so
//! its memory is bounded in total whatever the algorithms send or the server answers.
//!
//! In an encrypted collaboration the proxy does what vantage6's does: the input of each
//! organization of a new subtask (`POST /task`) is encrypted for that organization's public key,
//! and the results an algorithm reads (`GET /result`, `GET /result/<id>`) are decrypted with
//! the node's private key. Those bodies are held whole (up to [`MAX_BODY`]): they are JSON to
//! change. A result that cannot be decrypted is an error for the algorithm, never ciphertext
//! handed over as if it were a result.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use crate::crypto::{PrivateKey, PublicKey};

/// Largest request body an algorithm may send through the proxy.
const MAX_BODY: u64 = 64 << 20;
/// Most requests (with their answers) the proxy serves at once.
pub const MAX_REQUESTS: usize = 64;

/// The container addresses the proxy serves.
pub type Clients = Arc<Mutex<HashSet<Ipv4Addr>>>;

#[derive(Clone, Debug)]
struct Proxy {
    http: reqwest::Client,
    /// The server's API root, e.g. `http://127.0.0.1:7601/api`.
    base: String,
    clients: Clients,
    /// One permit per request being served, held until its answer has been sent.
    slots: Arc<tokio::sync::Semaphore>,
    /// The organization's private key, in an encrypted collaboration.
    key: Option<Arc<PrivateKey>>,
}

fn refuse(status: StatusCode, msg: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "msg": msg }))).into_response()
}

async fn forward(
    State(p): State<Proxy>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let allowed = match peer.ip() {
        IpAddr::V4(a) => crate::sync::lock(&p.clients).contains(&a),
        IpAddr::V6(_) => false,
    };
    if !allowed {
        tracing::warn!("proxy: refused {peer}: not an algorithm container of this node");
        return refuse(
            StatusCode::FORBIDDEN,
            "Only algorithm containers may use the proxy",
        );
    }
    let Ok(slot) = p.slots.clone().try_acquire_owned() else {
        tracing::warn!("proxy: refused {peer}: {MAX_REQUESTS} requests under way");
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "The proxy is busy; try again",
        );
    };
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "length limit exceeded");
    }
    if let Some(key) = &p.key {
        if let Some(route) = Sealed::route(&parts.method, parts.uri.path()) {
            // Held whole: the slot is held until the answer is made.
            let answer = sealed(&p, key, route, &parts, body).await;
            drop(slot);
            return answer;
        }
    }
    // The request goes on as it comes, cut off past MAX_BODY.
    let too_large = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = too_large.clone();
    let mut sent = 0u64;
    let request = body.into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        sent += chunk.len() as u64;
        if sent > MAX_BODY {
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(std::io::Error::other("length limit exceeded"));
        }
        Ok(chunk)
    });
    let resp = match send(&p, &parts, reqwest::Body::wrap_stream(request)).await {
        Ok(r) => r,
        Err(_) if too_large.load(std::sync::atomic::Ordering::Relaxed) => {
            return refuse(StatusCode::PAYLOAD_TOO_LARGE, "length limit exceeded")
        }
        Err(answer) => return answer,
    };
    let status = resp.status();
    let ctype = resp.headers().get(header::CONTENT_TYPE).cloned();
    let (method, path) = (parts.method, path_of(&parts.uri));
    // The answer goes back as it comes; the request's slot is held until it has gone.
    let answer = resp.bytes_stream().map(move |chunk| {
        let _held = &slot;
        chunk.map_err(|e| {
            tracing::warn!("proxy: {method} {path}: reading the answer failed: {e}");
            e
        })
    });
    let mut r = Response::new(Body::from_stream(answer));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        ctype.unwrap_or(HeaderValue::from_static("application/json")),
    );
    r
}

fn path_of(uri: &axum::http::Uri) -> String {
    uri.path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| "/".into())
}

/// The request of `parts` sent on to the server with `body` (its token, content type and
/// accepted types with it); a failure is the algorithm's answer.
async fn send(
    p: &Proxy,
    parts: &axum::http::request::Parts,
    body: impl Into<reqwest::Body>,
) -> Result<reqwest::Response, Response> {
    let path = path_of(&parts.uri);
    let mut out = p
        .http
        .request(parts.method.clone(), format!("{}{path}", p.base));
    for h in [header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT] {
        if let Some(v) = parts.headers.get(&h) {
            out = out.header(h, v);
        }
    }
    out.body(body).send().await.map_err(|e| {
        tracing::warn!("proxy: {} {path}: server unreachable: {e}", parts.method);
        refuse(StatusCode::BAD_GATEWAY, "The server is unreachable")
    })
}

/// The calls the proxy changes in an encrypted collaboration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sealed {
    /// `POST /task`: each organization's input encrypted for it.
    NewTask,
    /// `GET /result` and `GET /result/<id>`: results decrypted.
    Results,
}

impl Sealed {
    fn route(method: &axum::http::Method, path: &str) -> Option<Sealed> {
        let path = path.trim_end_matches('/');
        match (method.as_str(), path) {
            ("POST", "/task") => Some(Sealed::NewTask),
            ("GET", "/result") => Some(Sealed::Results),
            ("GET", p)
                if p.strip_prefix("/result/")
                    .is_some_and(|id| id.parse::<u64>().is_ok()) =>
            {
                Some(Sealed::Results)
            }
            _ => None,
        }
    }
}

/// One of the [`Sealed`] calls, whole bodies in and out.
async fn sealed(
    p: &Proxy,
    key: &PrivateKey,
    route: Sealed,
    parts: &axum::http::request::Parts,
    body: Body,
) -> Response {
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY as usize).await else {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "length limit exceeded");
    };
    let body = match route {
        Sealed::NewTask => match seal_inputs(p, parts, &bytes).await {
            Ok(sealed) => sealed,
            Err(answer) => return answer,
        },
        Sealed::Results => bytes.to_vec(),
    };
    let resp = match send(p, parts, body).await {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    let status = resp.status();
    let answer = match read_bounded(resp).await {
        Ok(a) => a,
        Err(answer) => return answer,
    };
    if route == Sealed::Results && status.is_success() {
        return match open_results(key, &answer) {
            Ok(opened) => (status, axum::Json(opened)).into_response(),
            Err(msg) => {
                tracing::warn!("proxy: {msg}");
                refuse(StatusCode::BAD_GATEWAY, &msg)
            }
        };
    }
    let mut r = Response::new(Body::from(answer));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The server's answer, whole, up to [`MAX_BODY`].
async fn read_bounded(mut resp: reqwest::Response) -> Result<Vec<u8>, Response> {
    let mut answer = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) if answer.len() + c.len() <= MAX_BODY as usize => {
                answer.extend_from_slice(&c)
            }
            Ok(Some(_)) => {
                return Err(refuse(
                    StatusCode::BAD_GATEWAY,
                    "The server's answer is too large to decrypt",
                ))
            }
            Ok(None) => return Ok(answer),
            Err(e) => {
                tracing::warn!("proxy: reading the server's answer failed: {e}");
                return Err(refuse(
                    StatusCode::BAD_GATEWAY,
                    "The server's answer broke off",
                ));
            }
        }
    }
}

/// A new task's body with each organization's input encrypted for that organization (its key
/// read from the server with the algorithm's own token, as vantage6's proxy does).
async fn seal_inputs(
    p: &Proxy,
    parts: &axum::http::request::Parts,
    body: &[u8],
) -> Result<Vec<u8>, Response> {
    let bad = |msg: String| refuse(StatusCode::BAD_REQUEST, &msg);
    let mut task: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("The task is not JSON: {e}")))?;
    let Some(orgs) = task.get_mut("organizations").and_then(|o| o.as_array_mut()) else {
        return Err(bad("Organizations missing from input".into()));
    };
    for org in orgs {
        let id = org
            .get("id")
            .and_then(serde_json::Value::as_i64)
            .ok_or_else(|| bad("organizations: each needs an id".into()))?;
        let input = org.get("input").and_then(|i| i.as_str()).unwrap_or("");
        let plain = crate::api::codec::decode(input).map_err(|e| {
            bad(format!(
                "organization {id}: the input is not base64 as vantage6 sends it ({e})"
            ))
        })?;
        let public = public_key(p, parts, id).await?;
        let sealed = public.seal(&plain).map_err(|e| {
            tracing::warn!("proxy: organization {id}: {e}");
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("organization {id}: {e}"),
            )
        })?;
        org["input"] = serde_json::Value::String(sealed);
    }
    serde_json::to_vec(&task).map_err(|e| bad(e.to_string()))
}

/// Organization `id`'s public key, as the server gives it to the algorithm.
async fn public_key(
    p: &Proxy,
    parts: &axum::http::request::Parts,
    id: i64,
) -> Result<PublicKey, Response> {
    let mut req = p.http.get(format!("{}/organization/{id}", p.base));
    if let Some(v) = parts.headers.get(header::AUTHORIZATION) {
        req = req.header(header::AUTHORIZATION, v);
    }
    let unreadable = |what: String| {
        tracing::warn!("proxy: organization {id}'s public key: {what}");
        refuse(
            StatusCode::BAD_REQUEST,
            &format!("organization {id}: no public key to encrypt its input with ({what})"),
        )
    };
    let resp = req
        .send()
        .await
        .map_err(|e| unreadable(format!("the server is unreachable: {e}")))?;
    if !resp.status().is_success() {
        return Err(unreadable(format!("the server answered {}", resp.status())));
    }
    let org: crate::api::Organization = resp
        .json()
        .await
        .map_err(|e| unreadable(format!("not an organization: {e}")))?;
    if org.public_key.is_empty() {
        return Err(unreadable("it has uploaded none".into()));
    }
    PublicKey::from_base64(&org.public_key).map_err(|e| unreadable(e.to_string()))
}

/// A result, or a page of them, with each `result` decrypted (as base64 of the bytes, as the
/// server sends results in an unencrypted collaboration).
fn open_results(key: &PrivateKey, answer: &[u8]) -> Result<serde_json::Value, String> {
    let mut v: serde_json::Value = serde_json::from_slice(answer)
        .map_err(|e| format!("the server's answer is not JSON: {e}"))?;
    let runs: Vec<&mut serde_json::Value> = match v.get_mut("data").and_then(|d| d.as_array_mut()) {
        Some(page) => page.iter_mut().collect(),
        None => vec![&mut v],
    };
    for run in runs {
        let Some(sealed) = run
            .get("result")
            .and_then(|r| r.as_str())
            .filter(|r| !r.is_empty())
        else {
            continue;
        };
        let id = run.get("id").cloned().unwrap_or_default();
        let plain = key
            .open(sealed)
            .map_err(|e| format!("the result of run {id}: {e}"))?;
        run["result"] = serde_json::Value::String(crate::api::codec::encode(&plain));
    }
    Ok(v)
}

/// Serves the proxy on `listener` (bound in the hub namespace) until the task is dropped; `key`
/// is the organization's private key in an encrypted collaboration.
pub async fn serve(
    listener: std::net::TcpListener,
    http: reqwest::Client,
    base: String,
    clients: Clients,
    key: Option<Arc<PrivateKey>>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let app = axum::Router::new()
        .fallback(forward)
        .with_state(Proxy {
            http,
            base,
            clients,
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_REQUESTS)),
            key,
        })
        .into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).await
}
