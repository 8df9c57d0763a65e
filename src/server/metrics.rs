//! The server's metrics and its request log: every request passes [`observe`], which gives it
//! a span (method, matched route), counts it by route and status, times it, and logs it (at
//! debug; a 5xx at error). Runs by status and nodes with a VPN address are read from the
//! database when scraped.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use tracing::Instrument;

use crate::metrics::{Describe, Sheet};
use crate::server::store::{self, Census, Store};
use crate::wireguard::ip::HubCounters;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

/// Live request metrics; clones share them.
#[derive(Clone, Debug)]
pub struct ServerMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Histogram,
}

impl Default for ServerMetrics {
    fn default() -> ServerMetrics {
        // 1 ms to about 16 s.
        let buckets = prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 15);
        ServerMetrics {
            requests: Family::default(),
            latency: Histogram::new(buckets),
        }
    }
}

/// The span, count, latency and log line of each request.
pub async fn observe(State(m): State<ServerMetrics>, req: Request, next: Next) -> Response {
    let method = method_label(req.method()).to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    let span = tracing::info_span!(
        "request",
        method = %method,
        route = %route,
        status = tracing::field::Empty,
        ms = tracing::field::Empty,
    );
    let started = Instant::now();
    let response = next.run(req).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let ms = elapsed.as_secs_f64() * 1000.0;
    span.record("status", status);
    span.record("ms", ms);
    span.in_scope(|| {
        if status >= 500 {
            tracing::error!("answered with a server error");
        } else {
            tracing::debug!("answered");
        }
    });
    m.requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status,
        })
        .inc();
    m.latency.observe(elapsed.as_secs_f64());
    response
}

/// A request's method as a metrics label: the methods HTTP defines, and `other` for any made-up
/// one, so that no client can grow the label set.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    [
        (Method::GET, "GET"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::PATCH, "PATCH"),
        (Method::DELETE, "DELETE"),
        (Method::HEAD, "HEAD"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::CONNECT, "CONNECT"),
        (Method::TRACE, "TRACE"),
    ]
    .into_iter()
    .find(|(m, _)| m == method)
    .map_or("other", |(_, name)| name)
}

/// What a scrape reads: the database's census, the WireGuard hub's counters.
#[derive(Debug)]
struct Read {
    census: Option<Census>,
    hub: Option<Arc<HubCounters>>,
}

impl Describe for Read {
    fn describe(&self, sheet: &mut Sheet<'_, '_>) -> std::fmt::Result {
        if let Some(hub) = &self.hub {
            sheet.counter(
                "server_wireguard_forwarded_packets",
                "Packets the WireGuard hub turned around from one admitted node to another",
                hub.forwarded.load(Ordering::Relaxed),
            )?;
            sheet.counter(
                "server_wireguard_dropped_packets",
                "Packets the WireGuard hub dropped: for no admitted node of the sender's collaboration, or not IPv4",
                hub.dropped.load(Ordering::Relaxed),
            )?;
            sheet.gauge(
                "server_wireguard_tcp_connections",
                "Connections carrying nodes' WireGuard to the hub over TCP now",
                i64::try_from(hub.tcp_connections.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
            )?;
        }
        sheet.gauge(
            "server_database_up",
            "Whether the database answered this scrape",
            i64::from(self.census.is_some()),
        )?;
        let Some(c) = &self.census else { return Ok(()) };
        sheet.gauges(
            "server_runs",
            "Runs by status",
            c.runs.iter().map(|(s, n)| ([("status", s.as_str())], *n)),
        )?;
        sheet.gauge(
            "server_nodes_with_vpn_address",
            "Nodes that have registered a VPN address",
            c.nodes_with_vpn_address,
        )
    }
}

/// The server's exposition (with the WireGuard hub's counters if it is the hub).
pub async fn scrape(store: Store, m: ServerMetrics, hub: Option<Arc<HubCounters>>) -> String {
    let census = match store.connection().await {
        Ok(mut db) => store::census(&mut db).await.ok(),
        Err(_) => None,
    };
    crate::metrics::render(Read { census, hub }, move |r| {
        r.register(
            "server_requests",
            "Requests by method, matched route and status",
            m.requests,
        );
        r.register(
            "server_request_duration_seconds",
            "Time to answer a request",
            m.latency,
        );
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;
    use tracing_subscriber::layer::SubscriberExt;

    #[tokio::test]
    async fn a_server_error_is_logged_at_error_and_counted_by_route() {
        let m = ServerMetrics::default();
        let app = axum::Router::new()
            .route(
                "/broken/{id}",
                axum::routing::get(|| async {
                    tracing::error!("database: disk I/O error");
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                }),
            )
            .layer(axum::middleware::from_fn_with_state(m.clone(), observe));
        let recent = crate::logging::Recent::default();
        let subscriber = tracing_subscriber::registry().with(recent.clone());
        let _guard = tracing::subscriber::set_default(subscriber);
        let request = axum::http::Request::get("/broken/3")
            .body(axum::body::Body::empty())
            .expect("request");
        let response = app.oneshot(request).await.expect("answer");
        assert_eq!(response.status(), 500);
        let logged: Vec<(String, String)> = recent
            .list()
            .into_iter()
            .map(|p| (p.level, p.message))
            .collect();
        assert_eq!(
            logged,
            [
                "request{method=GET route=/broken/{id}}: database: disk I/O error",
                "request{method=GET route=/broken/{id}}: answered with a server error",
            ]
            .map(|m| ("ERROR".to_string(), m.to_string()))
        );
        let labels = RequestLabels {
            method: "GET".into(),
            route: "/broken/{id}".into(),
            status: 500,
        };
        assert_eq!(m.requests.get_or_create(&labels).get(), 1);
    }
}
