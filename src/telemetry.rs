//! Logging set-up and the `/metrics`, `/healthz` (and `/admin/state`)
//! routes every service serves.

use axum::extract::Path;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get};
use axum::Json;
use axum::Router;
use prometheus::{Encoder, TextEncoder};
use tracing_subscriber::EnvFilter;
use weir_processor::Status;

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

/// `GET /metrics` (Prometheus text format), `GET /healthz`, and with a
/// processor `GET /admin/state` (its partitions' checkpoints, for `weir
/// state`) and `DELETE /admin/state/NAME@VERSION` (drop a retired
/// version's kept state at the next checkpoints).
pub fn routes(status: Option<Status>) -> Router {
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }));
    match status {
        Some(status) => {
            let forget = status.clone();
            router
                .route(
                    "/admin/state",
                    get(move || {
                        let partitions = status.partitions();
                        async move { Json(partitions) }
                    }),
                )
                .route(
                    "/admin/state/{identity}",
                    delete(move |Path(identity): Path<String>| {
                        forget.forget(identity);
                        async { StatusCode::ACCEPTED }
                    }),
                )
        }
        None => router,
    }
}

async fn metrics() -> impl IntoResponse {
    let mut body = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(error) = encoder.encode(&prometheus::gather(), &mut body) {
        tracing::error!(%error, "encoding metrics failed");
    }
    ([(CONTENT_TYPE, encoder.format_type().to_owned())], body)
}
