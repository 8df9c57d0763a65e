//! The algorithm proxy: HTTP on the gateway address inside the hub namespace, forwarding what
//! an algorithm asks of the server to the server's API (vantage6 semantics: the algorithm sends
//! its container token; the proxy passes it on). Only the registered containers' addresses are
//! served: a VPN peer or a WAN neighbour that reaches the socket gets 403.
//!
//! Bodies are streamed both ways, never held whole: what the proxy holds for a request is a few
//! chunks in flight, and at most [`MAX_REQUESTS`] requests are served at once (more get 503), so
//! its memory is bounded in total whatever the algorithms send or the server answers.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

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
    let path = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "length limit exceeded");
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
    let mut out = p
        .http
        .request(parts.method.clone(), format!("{}{path}", p.base));
    for h in [header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT] {
        if let Some(v) = parts.headers.get(&h) {
            out = out.header(h, v);
        }
    }
    let resp = match out.body(reqwest::Body::wrap_stream(request)).send().await {
        Ok(r) => r,
        Err(_) if too_large.load(std::sync::atomic::Ordering::Relaxed) => {
            return refuse(StatusCode::PAYLOAD_TOO_LARGE, "length limit exceeded")
        }
        Err(e) => {
            tracing::warn!("proxy: {} {path}: server unreachable: {e}", parts.method);
            return refuse(StatusCode::BAD_GATEWAY, "The server is unreachable");
        }
    };
    let status = resp.status();
    let ctype = resp.headers().get(header::CONTENT_TYPE).cloned();
    let method = parts.method;
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

/// Serves the proxy on `listener` (bound in the hub namespace) until the task is dropped.
pub async fn serve(
    listener: std::net::TcpListener,
    http: reqwest::Client,
    base: String,
    clients: Clients,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let app = axum::Router::new()
        .fallback(forward)
        .with_state(Proxy {
            http,
            base,
            clients,
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_REQUESTS)),
        })
        .into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).await
}
