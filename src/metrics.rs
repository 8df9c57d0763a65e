//! Prometheus metrics, served as OpenMetrics text on `GET /metrics` of an address of their own
//! (loopback by default, never the API's or the VPN's). Values that other parts already count
//! (the router's counters, the database's rows) are read when scraped and written out as they
//! are, through a [`Sheet`]; what only the scrape sees (requests, latencies) is counted live
//! with prometheus-client's own metrics.

use std::future::Future;
use std::net::SocketAddr;

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// The exposition's media type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Values read at scrape time.
pub trait Describe: std::fmt::Debug + Send + Sync + 'static {
    fn describe(&self, sheet: &mut Sheet<'_, '_>) -> std::fmt::Result;
}

/// Writes counters and gauges whose values were read elsewhere. Counter names get `_total`.
#[derive(Debug)]
pub struct Sheet<'a, 'b> {
    encoder: &'a mut DescriptorEncoder<'b>,
}

impl Sheet<'_, '_> {
    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> std::fmt::Result {
        let c = ConstCounter::new(value);
        c.encode(
            self.encoder
                .encode_descriptor(name, help, None, c.metric_type())?,
        )
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: i64) -> std::fmt::Result {
        let g = ConstGauge::new(value);
        g.encode(
            self.encoder
                .encode_descriptor(name, help, None, g.metric_type())?,
        )
    }

    /// One counter per label set.
    pub fn counters<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        rows: impl IntoIterator<Item = (L, u64)>,
    ) -> std::fmt::Result {
        let kind = ConstCounter::new(0u64).metric_type();
        let mut family = self.encoder.encode_descriptor(name, help, None, kind)?;
        for (labels, value) in rows {
            ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// One gauge per label set.
    pub fn gauges<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        rows: impl IntoIterator<Item = (L, i64)>,
    ) -> std::fmt::Result {
        let kind = ConstGauge::new(0i64).metric_type();
        let mut family = self.encoder.encode_descriptor(name, help, None, kind)?;
        for (labels, value) in rows {
            ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Snapshot<D>(D);

impl<D: Describe> prometheus_client::collector::Collector for Snapshot<D> {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        self.0.describe(&mut Sheet {
            encoder: &mut encoder,
        })
    }
}

/// The exposition of `values` and of what `live` registers (under the `algonet` prefix).
pub fn render(values: impl Describe, live: impl FnOnce(&mut Registry)) -> String {
    let mut registry = Registry::with_prefix("algonet");
    live(&mut registry);
    registry.register_collector(Box::new(Snapshot(values)));
    let mut out = String::new();
    // Writing into a String cannot fail; a metric that could not be written ends the text.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// Why the metrics address could not be served.
#[derive(Debug, thiserror::Error)]
#[error("metrics_listen {addr}: {source}")]
pub struct MetricsError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// Binds `addr` and returns the bound address and the server, which answers `GET /metrics`
/// with what `scrape` renders, when awaited.
pub async fn serve<F, Fut>(
    addr: SocketAddr,
    scrape: F,
) -> Result<(SocketAddr, impl Future<Output = ()>), MetricsError>
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = String> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError { addr, source })?;
    Ok(serve_on(listener, scrape))
}

/// [`serve`] on a socket bound already.
pub fn serve_on<F, Fut>(
    listener: tokio::net::TcpListener,
    scrape: F,
) -> (SocketAddr, impl Future<Output = ()>)
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = String> + Send + 'static,
{
    let local = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let scrape = scrape.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
                    scrape().await,
                )
            }
        }),
    );
    (local, async move {
        if let Err(e) = crate::http::serve(listener, app, crate::http::Limits::METRICS).await {
            tracing::warn!("metrics on {local}: {e}");
        }
    })
}
