//! Prometheus `/metrics` on a listener of its own (away from the tool
//! traffic): the gateway's, and the example servers' (`--metrics-addr`),
//! which reuse this module.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Bucket bounds of `capnagent_decision_duration_seconds`, in seconds.
pub const DECISION_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// Serves `GET /metrics` (Prometheus text) at `addr` (port 0: any free
/// port) and returns its URL. The recorder is installed for the whole
/// process, so this works once per process: every layer reports to it.
pub async fn serve_metrics(addr: SocketAddr) -> Result<String, BoxError> {
    // A histogram with buckets from 50 us to 1 s (the exporter's default
    // for a histogram is a summary, which cannot be aggregated across a
    // fleet).
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("capnagent_decision_duration_seconds".to_owned()),
            &DECISION_BUCKETS,
        )?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| format!("metrics recorder: {e}"))?;
    let listener = TcpListener::bind(addr).await?;
    let url = format!("http://{}/metrics", listener.local_addr()?);
    let app = metrics_router(handle);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server error");
        }
    });
    Ok(url)
}

/// `GET /metrics` from `handle`, in the Prometheus text format.
pub fn metrics_router(handle: PrometheusHandle) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                (
                    [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
                    handle.render(),
                )
            }
        }),
    )
}
