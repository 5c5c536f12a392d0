//! `POST /events`: a JSON array of events or NDJSON. Valid events are
//! appended and acknowledged only once durable; bad ones are reported
//! without losing the good ones around them.
//!
//! Replies: `202 {"accepted": n, "rejected": 0}` when every event is valid;
//! `400 {"accepted": n, "rejected": m, "error": {"line", "reason",
//! "detail"}, "errors": [...]}` naming the first bad line (for an array,
//! `line` is the 1-based element number) while the valid ones are still
//! accepted; `413` above the batch or body limit; `503` if the log fails.
//! With producer tokens configured, a request without `Authorization:
//! Bearer TOKEN` is answered 401 and one with an unknown token 403,
//! before its body is read.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde::Serialize;
use serde_json::{json, Value};
use weir_event::{decode_value, DecodeOptions, Entry, Reason, Rejection};
use weir_router::{Encoded, RouterHandle};

use weir_log::Secret;

use tokio::sync::Semaphore;

use crate::influx::{Influx, Precision};
use crate::metrics::{reject, ACCEPTED, HTTP_WAITING, PRODUCER_EVENTS, UNAUTHORIZED};
use crate::protocol::Protocol;
use crate::{now_secs, IngestConfig};

/// At most this many rejected lines are listed in a reply.
const MAX_LISTED_ERRORS: usize = 100;

#[derive(Clone)]
struct Ingest {
    router: RouterHandle,
    body: BodyRules,
}

/// How a request body is read.
#[derive(Clone)]
pub(crate) struct BodyRules {
    pub(crate) options: DecodeOptions,
    pub(crate) max_line: usize,
    pub(crate) max_events: usize,
    /// Largest body, also once decompressed.
    pub(crate) max_body: usize,
}

/// Why one item of a body was refused.
#[derive(Serialize)]
pub(crate) struct LineError {
    /// 1-based line (NDJSON) or item (array).
    pub(crate) line: usize,
    reason: &'static str,
    detail: String,
}

/// The `POST /events`, `POST /write` (InfluxDB line protocol), `POST
/// /api/v1/write` (Prometheus remote_write), `POST /v1/metrics` (OTLP) and
/// `GET /ws` (WebSocket) routes, ready to merge into the service's HTTP
/// router.
pub fn routes(config: &IngestConfig, router: RouterHandle) -> Router {
    let state = Ingest::new(config, router);
    // Layers run outside in: a request holds a turn before its body is read.
    let turns = Arc::new(Semaphore::new(config.max_http_requests.max(1)));
    let routes = Router::new()
        .route("/events", post(post_events))
        .route("/write", post(post_influx))
        .route("/api/v1/write", post(post_remote_write))
        .route("/v1/metrics", post(post_otlp))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(middleware::from_fn(move |request, next| {
            take_turn(turns.clone(), request, next)
        }))
        .with_state(state.clone());
    // Long-lived: no turn, no body limit (messages have their own).
    let socket = crate::websocket::Socket {
        router: state.router.clone(),
        options: state.body.options,
        types: Arc::new(config.websocket.types.iter().cloned().collect()),
        max_message: config.max_body_bytes,
        max_events: config.max_batch_events,
    };
    let routes = routes.merge(
        Router::new()
            .route("/ws", axum::routing::get(crate::websocket::upgrade))
            .with_state(socket),
    );
    with_tokens(config, routes)
}

/// The OTLP/gRPC metrics service for `[ingest.otlp] grpc_listen`:
/// `MetricsService/Export` over HTTP/2 (cleartext, prior knowledge, as
/// OTLP exporters with `insecure` send it; or TLS with the listener's).
pub fn grpc_routes(config: &IngestConfig, router: RouterHandle) -> Router {
    let routes = Router::new()
        .route(
            "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            post(grpc_export),
        )
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(Ingest::new(config, router));
    with_tokens(config, routes)
}

/// `routes` behind the producer tokens, when any is configured (gRPC
/// clients send them as `authorization` metadata).
fn with_tokens(config: &IngestConfig, routes: Router) -> Router {
    if config.tokens.is_empty() {
        return routes;
    }
    let tokens = Arc::new(config.tokens.clone());
    routes.layer(middleware::from_fn(move |request, next| {
        identify(tokens.clone(), request, next)
    }))
}

impl Ingest {
    fn new(config: &IngestConfig, router: RouterHandle) -> Ingest {
        let ttl_unit = config.http.as_ref().map(|l| l.ttl_unit).unwrap_or_default();
        Ingest {
            router,
            body: BodyRules {
                options: DecodeOptions {
                    ttl_unit,
                    max_future_secs: config.max_future_secs,
                },
                max_line: config.max_line_bytes,
                max_events: config.max_batch_events,
                max_body: config.max_body_bytes,
            },
        }
    }
}

/// Waits for one of the `max_http_requests` turns, then handles the request.
async fn take_turn(turns: Arc<Semaphore>, request: Request, next: Next) -> Response {
    HTTP_WAITING.inc();
    let turn = turns.acquire_owned().await;
    HTTP_WAITING.dec();
    let response = next.run(request).await;
    drop(turn);
    response
}

/// The producer a request's token names, for the handler.
#[derive(Clone)]
struct Producer(String);

/// Lets a request through only with a known producer token, noting its name.
async fn identify(
    tokens: Arc<BTreeMap<String, Secret>>,
    mut request: Request,
    next: Next,
) -> Response {
    let offered = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "));
    let refuse = |status: StatusCode, detail: &str| {
        UNAUTHORIZED
            .with_label_values(&["http", status.as_str()])
            .inc();
        let body = json!({"accepted": 0, "error": {"reason": "unauthorized", "detail": detail}});
        (status, [(WWW_AUTHENTICATE, "Bearer")], Json(body)).into_response()
    };
    let Some(offered) = offered else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "this listener needs a producer token: send `Authorization: Bearer TOKEN`",
        );
    };
    // Every token is compared, so the time taken does not tell which matched.
    let found = tokens.iter().fold(None, |found, (name, token)| {
        if token.matches(offered) {
            Some(name)
        } else {
            found
        }
    });
    match found {
        Some(name) => {
            request.extensions_mut().insert(Producer(name.clone()));
            next.run(request).await
        }
        None => refuse(StatusCode::FORBIDDEN, "unknown producer token"),
    }
}

/// Decodes a request body (a JSON array or NDJSON) item by item: the
/// valid events, and an error per invalid item; the whole body is refused
/// only when it is too large or a malformed array.
pub(crate) fn decode_body(
    body: &[u8],
    rules: &BodyRules,
) -> Result<(Encoded, Vec<LineError>), Rejection> {
    let now = now_secs();
    let mut events = Encoded::default();
    let mut errors = Vec::new();
    let mut push = |line: usize, result: Result<(Cow<str>, Cow<[u8]>), Rejection>| match result {
        Ok((host, value)) => events.push(&host, &value),
        Err(rejection) => {
            reject("http", &rejection);
            errors.push(LineError {
                line,
                reason: rejection.reason.as_str(),
                detail: rejection.detail,
            });
        }
    };
    let trimmed = body.trim_ascii_start();
    if trimmed.starts_with(b"[") {
        let items: Vec<Value> = serde_json::from_slice(trimmed).map_err(|e| {
            Rejection::new(
                Reason::InvalidJson,
                format!("body is not a JSON array: {e}"),
            )
        })?;
        if items.len() > rules.max_events {
            return Err(too_many(items.len(), rules.max_events));
        }
        for (i, item) in items.into_iter().enumerate() {
            let encoded = decode_value(item, &rules.options, now).map(|event| {
                let value = event.to_json();
                (Cow::Owned(event.host), Cow::Owned(value))
            });
            push(i + 1, encoded);
        }
    } else {
        let lines = crate::ndjson::lines(body)
            .filter(|l| !l.trim_ascii().is_empty())
            .count();
        if lines > rules.max_events {
            return Err(too_many(lines, rules.max_events));
        }
        for (i, line) in crate::ndjson::lines(body).enumerate() {
            let line = line.trim_ascii();
            if line.is_empty() {
                continue;
            }
            let result = if line.len() > rules.max_line {
                Err(Rejection::new(
                    Reason::LineTooLong,
                    format!("line of {} bytes exceeds {}", line.len(), rules.max_line),
                ))
            } else {
                Entry::from_line(line, &rules.options, now)
            };
            push(i + 1, result);
        }
    }
    Ok((events, errors))
}

fn too_many(count: usize, max: usize) -> Rejection {
    Rejection::new(
        Reason::BatchTooLarge,
        format!("{count} events in one request; the limit is {max}"),
    )
}

async fn post_events(
    State(ingest): State<Ingest>,
    producer: Option<Extension<Producer>>,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    // Decoding a large body is CPU work: off the async threads.
    let rules = ingest.body.clone();
    let decoded = tokio::task::spawn_blocking(move || decode_body(&body, &rules))
        .await
        .unwrap_or_else(|error| {
            Err(Rejection::new(
                Reason::InvalidJson,
                format!("decoding failed: {error}"),
            ))
        });
    let (events, errors) = match decoded {
        Ok(decoded) => decoded,
        Err(rejection) => {
            reject("http", &rejection);
            let status = if rejection.reason == Reason::BatchTooLarge {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            let body = json!({"accepted": 0, "error": {"reason": rejection.reason.as_str(), "detail": rejection.detail}});
            return (status, Json(body));
        }
    };
    let accepted = events.len();
    if !events.is_empty() {
        if let Err(error) = ingest.router.send_durable(events).await {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(
                    json!({"accepted": 0, "error": {"reason": "log_unavailable", "detail": error.to_string()}}),
                ),
            );
        }
        ACCEPTED
            .with_label_values(&["http"])
            .inc_by(accepted as u64);
        if let Some(Extension(Producer(name))) = producer {
            PRODUCER_EVENTS
                .with_label_values(&[&name])
                .inc_by(accepted as u64);
        }
    }
    if errors.is_empty() {
        return (
            StatusCode::ACCEPTED,
            Json(json!({"accepted": accepted, "rejected": 0})),
        );
    }
    let rejected = errors.len();
    let listed: Vec<_> = errors.into_iter().take(MAX_LISTED_ERRORS).collect();
    (
        StatusCode::BAD_REQUEST,
        Json(
            json!({"accepted": accepted, "rejected": rejected, "error": &listed[0], "errors": listed}),
        ),
    )
}

/// What became of a request body of one of the other protocols.
enum Taken {
    /// The body itself does not decode: nothing taken (400).
    Refused(Rejection),
    /// The log refused the events (503, retried by senders).
    Unavailable(String),
    /// The events taken, and the items rejected on their own.
    Appended {
        accepted: usize,
        rejected: Vec<Rejection>,
    },
}

/// Decodes a body with `decode` (given the listener's validation
/// options) off the async threads, counts what it
/// rejected, appends the events and counts them under `protocol` (and
/// the producer's name).
async fn take<F>(
    ingest: &Ingest,
    protocol: &'static str,
    producer: Option<Extension<Producer>>,
    decode: F,
) -> Taken
where
    F: FnOnce(&DecodeOptions, f64, &mut Encoded, &mut Vec<Rejection>) -> Result<(), Rejection>
        + Send
        + 'static,
{
    let options = ingest.body.options;
    let decoded = tokio::task::spawn_blocking(move || {
        let (mut events, mut rejected) = (Encoded::default(), Vec::new());
        decode(&options, now_secs(), &mut events, &mut rejected).map(|()| (events, rejected))
    })
    .await
    .unwrap_or_else(|error| {
        let detail = format!("decoding failed: {error}");
        Err(Rejection::new(Reason::Malformed, detail))
    });
    let (events, rejected) = match decoded {
        Ok(decoded) => decoded,
        Err(refusal) => {
            reject(protocol, &refusal);
            return Taken::Refused(refusal);
        }
    };
    for rejection in &rejected {
        reject(protocol, rejection);
    }
    let accepted = events.len();
    if accepted > 0 {
        if let Err(error) = ingest.router.send_durable(events).await {
            return Taken::Unavailable(format!("log unavailable: {error}"));
        }
        ACCEPTED
            .with_label_values(&[protocol])
            .inc_by(accepted as u64);
        if let Some(Extension(Producer(name))) = producer {
            PRODUCER_EVENTS
                .with_label_values(&[&name])
                .inc_by(accepted as u64);
        }
    }
    Taken::Appended { accepted, rejected }
}

/// The first rejections, for an answer.
fn first_rejections(rejected: &[Rejection]) -> String {
    let listed: Vec<String> = rejected
        .iter()
        .take(MAX_LISTED_ERRORS)
        .map(ToString::to_string)
        .collect();
    listed.join("; ")
}

/// `POST /write[?precision=ns|us|ms|s]`: InfluxDB line protocol
/// ([`crate::influx`]). `204` when every line is taken; `400` naming the
/// first bad lines, the good ones kept (Influx's "partial write"); `503`
/// when the log refuses.
async fn post_influx(
    State(ingest): State<Ingest>,
    producer: Option<Extension<Producer>>,
    uri: axum::http::Uri,
    body: Bytes,
) -> Response {
    let precision = uri
        .query()
        .into_iter()
        .flat_map(|query| query.split('&'))
        .find_map(|pair| pair.strip_prefix("precision="));
    let error = |status, text: String| (status, Json(json!({"error": text}))).into_response();
    let precision = match precision.map(Precision::parse) {
        None => Precision::Auto,
        Some(Some(precision)) => precision,
        Some(None) => {
            let text = "precision must be one of ns, us, ms, s".into();
            return error(StatusCode::BAD_REQUEST, text);
        }
    };
    let taken = take(
        &ingest,
        "influx",
        producer,
        move |options, now, events, rejected| {
            let protocol = Influx {
                name: "influx",
                precision,
                options: *options,
            };
            let mut found = Vec::new();
            for (i, line) in crate::ndjson::lines(&body).enumerate() {
                protocol.decode(line, now, events, &mut found);
                rejected.extend(found.drain(..).map(|r| {
                    let detail = format!("line {}: {}", i + 1, r.detail);
                    Rejection::new(r.reason, detail)
                }));
            }
            Ok(())
        },
    )
    .await;
    match taken {
        Taken::Refused(refusal) => error(StatusCode::BAD_REQUEST, refusal.to_string()),
        Taken::Unavailable(text) => error(StatusCode::SERVICE_UNAVAILABLE, text),
        Taken::Appended { rejected, .. } if rejected.is_empty() => {
            StatusCode::NO_CONTENT.into_response()
        }
        Taken::Appended { accepted, rejected } => {
            let text = format!(
                "partial write: {} lines rejected, {accepted} events taken; {}",
                rejected.len(),
                first_rejections(&rejected)
            );
            error(StatusCode::BAD_REQUEST, text)
        }
    }
}

/// `POST /api/v1/write`: Prometheus remote_write ([`crate::remote_write`]).
async fn post_remote_write(
    State(ingest): State<Ingest>,
    producer: Option<Extension<Producer>>,
    body: Bytes,
) -> Response {
    // The body limit bounds the decompressed request too.
    let max_bytes = ingest.body.max_body;
    let taken = take(
        &ingest,
        "remote_write",
        producer,
        move |options, now, events, rejected| {
            crate::remote_write::decode(&body, max_bytes, options, now, events, rejected)
        },
    )
    .await;
    match taken {
        Taken::Refused(refusal) => {
            (StatusCode::BAD_REQUEST, format!("{refusal}\n")).into_response()
        }
        Taken::Unavailable(text) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("{text}\n")).into_response()
        }
        Taken::Appended { rejected, .. } if rejected.is_empty() => {
            StatusCode::NO_CONTENT.into_response()
        }
        Taken::Appended { accepted, rejected } => {
            let text = format!(
                "partial write: {} rejected, {accepted} samples taken; {}\n",
                rejected.len(),
                first_rejections(&rejected)
            );
            (StatusCode::BAD_REQUEST, text).into_response()
        }
    }
}

/// `POST /v1/metrics`: OTLP/HTTP metrics, protobuf or JSON by
/// `Content-Type` ([`crate::otlp`]). `200` with an empty response, or
/// with `partialSuccess` naming how many points were rejected and why;
/// `400` for a body that does not decode; `503` when the log refuses.
async fn post_otlp(
    State(ingest): State<Ingest>,
    producer: Option<Extension<Producer>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|t| t.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    let encoding = if json {
        crate::otlp::Encoding::Json
    } else {
        crate::otlp::Encoding::Protobuf
    };
    let taken = take(
        &ingest,
        "otlp",
        producer,
        move |options, now, events, rejected| {
            crate::otlp::decode(&body, encoding, options, now, events, rejected)
        },
    )
    .await;
    let rejected = match taken {
        Taken::Refused(refusal) => {
            return (StatusCode::BAD_REQUEST, format!("{refusal}\n")).into_response()
        }
        Taken::Unavailable(text) => {
            return (StatusCode::SERVICE_UNAVAILABLE, format!("{text}\n")).into_response()
        }
        Taken::Appended { rejected, .. } => rejected,
    };
    let message = (!rejected.is_empty()).then(|| first_rejections(&rejected));
    if json {
        let body = match message {
            None => json!({}),
            Some(message) => json!({"partialSuccess": {
                "rejectedDataPoints": rejected.len().to_string(),
                "errorMessage": message,
            }}),
        };
        return Json(body).into_response();
    }
    let protobuf = [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")];
    (protobuf, otlp_response(&rejected)).into_response()
}

/// The `ExportMetricsServiceResponse`: empty, or with `partial_success`
/// (`rejected_data_points = 1`, `error_message = 2`) naming what was
/// rejected.
fn otlp_response(rejected: &[Rejection]) -> Vec<u8> {
    if rejected.is_empty() {
        return Vec::new();
    }
    let mut partial = Vec::new();
    prost::encoding::int64::encode(1, &(rejected.len() as i64), &mut partial);
    prost::encoding::string::encode(2, &first_rejections(rejected), &mut partial);
    let mut body = Vec::new();
    prost::encoding::bytes::encode(1, &partial, &mut body);
    body
}

/// A gRPC answer: the message (if any) as one length-prefixed frame, and
/// `grpc-status` (and `grpc-message`) in the trailers.
fn grpc_answer(message: Option<Vec<u8>>, status: u8, detail: &str) -> Response {
    use http_body_util::{BodyExt, Full};
    let data = message.map_or_else(Vec::new, |message| {
        let mut frame = vec![0];
        frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
        frame.extend_from_slice(&message);
        frame
    });
    let mut trailers = axum::http::HeaderMap::new();
    trailers.insert("grpc-status", u16::from(status).into());
    if let Ok(detail) = axum::http::HeaderValue::from_str(&detail.replace(['\r', '\n'], " ")) {
        if !detail.is_empty() {
            trailers.insert("grpc-message", detail);
        }
    }
    let body = Full::new(Bytes::from(data))
        .with_trailers(async move { Some(Ok::<_, std::convert::Infallible>(trailers)) });
    let grpc = [(axum::http::header::CONTENT_TYPE, "application/grpc")];
    (grpc, axum::body::Body::new(body)).into_response()
}

/// gRPC status codes weir answers.
const GRPC_OK: u8 = 0;
const GRPC_INVALID_ARGUMENT: u8 = 3;
const GRPC_UNIMPLEMENTED: u8 = 12;
const GRPC_UNAVAILABLE: u8 = 14;

/// `MetricsService/Export`: one length-prefixed, uncompressed
/// `ExportMetricsServiceRequest` ([`crate::otlp`]); `OK` with the
/// response (partial success naming rejected points), `INVALID_ARGUMENT`
/// for a message that does not decode, `UNAVAILABLE` (retried by
/// exporters) when the log refuses.
async fn grpc_export(
    State(ingest): State<Ingest>,
    producer: Option<Extension<Producer>>,
    body: Bytes,
) -> Response {
    let Some((&compressed, rest)) = body.split_first() else {
        return grpc_answer(None, GRPC_INVALID_ARGUMENT, "an empty request");
    };
    if compressed != 0 {
        let detail = "compressed messages are not supported; export without compression";
        return grpc_answer(None, GRPC_UNIMPLEMENTED, detail);
    }
    let length = rest
        .get(..4)
        .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize);
    if length != Some(rest.len().saturating_sub(4)) {
        return grpc_answer(
            None,
            GRPC_INVALID_ARGUMENT,
            "the message length does not match the request",
        );
    }
    let message = body.slice(5..);
    let taken = take(
        &ingest,
        "otlp-grpc",
        producer,
        move |options, now, events, rejected| {
            crate::otlp::decode(
                &message,
                crate::otlp::Encoding::Protobuf,
                options,
                now,
                events,
                rejected,
            )
        },
    )
    .await;
    match taken {
        Taken::Refused(refusal) => grpc_answer(None, GRPC_INVALID_ARGUMENT, &refusal.to_string()),
        Taken::Unavailable(text) => grpc_answer(None, GRPC_UNAVAILABLE, &text),
        Taken::Appended { rejected, .. } => {
            grpc_answer(Some(otlp_response(&rejected)), GRPC_OK, "")
        }
    }
}
