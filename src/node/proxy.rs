//! The algorithm proxy: HTTP on the gateway address inside the hub namespace, forwarding what
//! an algorithm asks of the server to the server's API (vantage6 semantics: the algorithm sends
//! its container token; the proxy passes it on). Only the registered containers' addresses are
//! served: a VPN peer or a WAN neighbour that reaches the socket gets 403.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Largest request body an algorithm may send through the proxy.
const MAX_BODY: usize = 64 << 20;

/// The container addresses the proxy serves.
pub type Clients = Arc<Mutex<HashSet<Ipv4Addr>>>;

#[derive(Clone, Debug)]
struct Proxy {
    http: reqwest::Client,
    /// The server's API root, e.g. `http://127.0.0.1:7601/api`.
    base: String,
    clients: Clients,
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
        IpAddr::V4(a) => p
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&a),
        IpAddr::V6(_) => false,
    };
    if !allowed {
        log::warn!("proxy: refused {peer}: not an algorithm container of this node");
        return refuse(
            StatusCode::FORBIDDEN,
            "Only algorithm containers may use the proxy",
        );
    }
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string()),
    };
    let mut out = p
        .http
        .request(parts.method.clone(), format!("{}{path}", p.base));
    for h in [header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT] {
        if let Some(v) = parts.headers.get(&h) {
            out = out.header(h, v);
        }
    }
    let resp = match out.body(body).send().await {
        Ok(r) => r,
        Err(e) => {
            log::warn!("proxy: {} {path}: server unreachable: {e}", parts.method);
            return refuse(StatusCode::BAD_GATEWAY, "The server is unreachable");
        }
    };
    let status = resp.status();
    let ctype = resp.headers().get(header::CONTENT_TYPE).cloned();
    match resp.bytes().await {
        Ok(bytes) => {
            let mut r = Response::new(Body::from(bytes));
            *r.status_mut() = status;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                ctype.unwrap_or(HeaderValue::from_static("application/json")),
            );
            r
        }
        Err(e) => {
            log::warn!(
                "proxy: {} {path}: reading the answer failed: {e}",
                parts.method
            );
            refuse(StatusCode::BAD_GATEWAY, "The server's answer broke off")
        }
    }
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
        })
        .into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).await
}
