//! Logging set-up and the `/metrics`, `/healthz` and `/readyz` routes
//! every service serves.

use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Json;
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

/// `GET /metrics` (Prometheus text format), `GET /healthz` (the process
/// answers) and `GET /readyz` (200 when nothing fails, else 503 with
/// every failing component and why), which every service serves to
/// anyone who reaches it.
pub fn routes() -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readiness))
}

async fn readiness() -> (StatusCode, Json<serde_json::Value>) {
    let failing = weir_log::health::failures();
    let status = if failing.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({"ready": failing.is_empty(), "failing": failing});
    (status, Json(body))
}

async fn metrics() -> impl IntoResponse {
    let mut body = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(error) = encoder.encode(&prometheus::gather(), &mut body) {
        tracing::error!(%error, "encoding metrics failed");
    }
    ([(CONTENT_TYPE, encoder.format_type().to_owned())], body)
}
