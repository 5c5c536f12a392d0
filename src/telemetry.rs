//! Logging set-up and the `/metrics`, `/healthz` (and `/admin/state`)
//! routes every service serves.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Json;
use axum::Router;
use prometheus::{Encoder, TextEncoder};
use tracing_subscriber::EnvFilter;
use weir_log::{Log, LogError, Topics};
use weir_processor::Status;
use weir_storage::graphite::Graphite;
use weir_storage::StorageError;

use crate::topics::{counts, Counts, Grow};

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

/// Graphite sinks by name, for the destinations admin API.
pub type GraphiteSinks = BTreeMap<String, Arc<Graphite>>;

/// What the admin routes reach: the log, a processor's status, the
/// Graphite sinks.
#[derive(Clone)]
pub struct Admin {
    /// The log and weir's topics in it.
    pub log: Arc<dyn Log>,
    /// Topic names.
    pub topics: Topics,
    /// The processor's status, where this process runs one.
    pub status: Option<Status>,
    /// The Graphite sinks, where this process runs the storage stage.
    pub graphite: Arc<GraphiteSinks>,
}

/// `GET /metrics` (Prometheus text format), `GET /healthz`, `GET
/// /admin/topics` (partition counts) and `POST /admin/topics/grow`
/// (`{"partitions": N}`, for `weir topics grow`); with a
/// processor `GET /admin/state` (its partitions' checkpoints, for `weir
/// state`) and `DELETE /admin/state/NAME@VERSION` (drop a retired
/// version's kept state at the next checkpoints); with Graphite sinks
/// `GET /admin/sinks/NAME/destinations` and `PUT`/`DELETE
/// /admin/sinks/NAME/destinations/HOST:PORT`.
pub fn routes(admin: Admin) -> Router {
    let mut router = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/admin/topics", get(topic_counts))
        .route("/admin/topics/grow", post(grow_topics))
        .with_state((admin.log.clone(), admin.topics.clone()));
    if let Some(status) = admin.status {
        let forget = status.clone();
        router = router
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
            );
    }
    if !admin.graphite.is_empty() {
        let sinks = Router::new()
            .route("/admin/sinks/{name}/destinations", get(list_destinations))
            .route(
                "/admin/sinks/{name}/destinations/{address}",
                put(add_destination).delete(remove_destination),
            )
            .with_state(admin.graphite);
        router = router.merge(sinks);
    }
    router
}

type TopicsState = State<(Arc<dyn Log>, Topics)>;

/// Runs a log operation off the async workers (Kafka calls block).
async fn with_log(
    (log, topics): (Arc<dyn Log>, Topics),
    operation: impl FnOnce(&dyn Log, &Topics) -> Result<Counts, LogError> + Send + 'static,
) -> Response {
    match tokio::task::spawn_blocking(move || operation(&*log, &topics)).await {
        Ok(Ok(counts)) => Json(counts).into_response(),
        Ok(Err(error @ LogError::Incompatible { .. })) => {
            (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response()
        }
        Ok(Err(error)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
    }
}

async fn topic_counts(State(state): TopicsState) -> Response {
    with_log(state, counts).await
}

async fn grow_topics(State(state): TopicsState, Json(grow): Json<Grow>) -> Response {
    with_log(state, move |log, topics| {
        topics.grow(log, grow.partitions)?;
        counts(log, topics)
    })
    .await
}

type Sinks = State<Arc<GraphiteSinks>>;

fn unknown_sink(name: &str) -> Response {
    let message = format!("no graphite sink named {name:?}\n");
    (StatusCode::NOT_FOUND, message).into_response()
}

async fn list_destinations(State(sinks): Sinks, Path(name): Path<String>) -> Response {
    match sinks.get(&name) {
        Some(sink) => Json(sink.destinations()).into_response(),
        None => unknown_sink(&name),
    }
}

/// Runs a destination change off the async workers (it joins threads).
async fn change_destinations(
    sinks: Arc<GraphiteSinks>,
    name: String,
    change: impl FnOnce(&Graphite) -> Result<StatusCode, StorageError> + Send + 'static,
) -> Response {
    let Some(sink) = sinks.get(&name).cloned() else {
        return unknown_sink(&name);
    };
    match tokio::task::spawn_blocking(move || change(&sink)).await {
        Ok(Ok(status)) => status.into_response(),
        Ok(Err(StorageError::Rejected(reason))) => {
            (StatusCode::BAD_REQUEST, format!("{reason}\n")).into_response()
        }
        Ok(Err(error)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
    }
}

async fn add_destination(
    State(sinks): Sinks,
    Path((name, address)): Path<(String, String)>,
) -> Response {
    change_destinations(sinks, name, move |sink| {
        Ok(match sink.add(&address)? {
            true => StatusCode::CREATED,
            false => StatusCode::OK,
        })
    })
    .await
}

async fn remove_destination(
    State(sinks): Sinks,
    Path((name, address)): Path<(String, String)>,
) -> Response {
    change_destinations(sinks, name, move |sink| {
        Ok(match sink.remove(&address)? {
            true => StatusCode::NO_CONTENT,
            false => StatusCode::NOT_FOUND,
        })
    })
    .await
}

async fn metrics() -> impl IntoResponse {
    let mut body = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(error) = encoder.encode(&prometheus::gather(), &mut body) {
        tracing::error!(%error, "encoding metrics failed");
    }
    ([(CONTENT_TYPE, encoder.format_type().to_owned())], body)
}
