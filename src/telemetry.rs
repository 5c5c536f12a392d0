//! Logging set-up and the `/metrics` and `/healthz` routes every service
//! serves.

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, TextEncoder};
use tracing_subscriber::EnvFilter;

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// `GET /metrics` (Prometheus text format) and `GET /healthz`, which
/// every service serves to anyone who reaches it.
pub fn routes() -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
}

async fn metrics() -> impl IntoResponse {
    let mut body = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(error) = encoder.encode(&prometheus::gather(), &mut body) {
        tracing::error!(%error, "encoding metrics failed");
    }
    ([(CONTENT_TYPE, encoder.format_type().to_owned())], body)
}
