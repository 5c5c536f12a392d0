//! The admin API and who may use it.
//!
//! Admin routes change where data goes and what state is kept (sink
//! destinations, topic growth, retired reactor state) and show reactor
//! state. With a token (`[admin] token_file` or `WEIR_ADMIN_TOKEN`) every
//! admin route requires `Authorization: Bearer TOKEN`; without one, weir
//! refuses to start when a listener serving them is reachable from
//! beyond loopback. `[admin] listen` gives them a listener of their own
//! (then the HTTP and metrics listeners carry none).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::{Path, Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Json;
use axum::Router;
use serde::{Deserialize, Serialize};
use weir_log::{Log, LogError, Secret, Topics};
use weir_processor::Status;
use weir_storage::graphite::Graphite;
use weir_storage::StorageError;

use crate::topics::{counts, Counts, Grow};

/// The environment variable that may hold the admin token.
pub const TOKEN_ENV: &str = "WEIR_ADMIN_TOKEN";

/// `[admin]` in the config.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// A file holding the bearer token admin routes require (surrounding
    /// whitespace ignored); `WEIR_ADMIN_TOKEN` is used when this is unset.
    pub token_file: Option<PathBuf>,
    /// A listener of the admin routes' own; unset: they are served on
    /// the HTTP listener (`weir run`, `weir ingest`) or the metrics one.
    pub listen: Option<String>,
    /// A file holding a read-only token: it may `GET` (the dashboard, the
    /// live feed, the index, views) but change nothing.
    pub read_token_file: Option<PathBuf>,
    /// Other nodes whose index `/api/index` here merges in (base URLs of
    /// the processors' HTTP or metrics listeners), so one dashboard
    /// shows every partition.
    pub index_peers: Vec<String>,
}

/// A bearer token, compared in constant time and never printed.
#[derive(Clone)]
pub struct Token(Arc<Secret>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

impl Token {
    /// A token from its text (surrounding whitespace ignored); none if empty.
    pub fn new(text: &str) -> Option<Token> {
        let text = text.trim();
        (!text.is_empty()).then(|| Token(Arc::new(Secret(text.to_owned()))))
    }

    /// The token text, for a client's `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0 .0
    }

    /// Whether `offered` is this token (in constant time).
    fn matches(&self, offered: &[u8]) -> bool {
        self.0.matches(offered)
    }
}

/// The token in `path` (an empty file is an error).
fn token_in(path: &std::path::Path, key: &str) -> anyhow::Result<Token> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading [admin] {key} {}", path.display()))?;
    Token::new(&text).with_context(|| format!("[admin] {key} {} is empty", path.display()))
}

impl AdminConfig {
    /// The configured token: the file's, else `WEIR_ADMIN_TOKEN`'s.
    pub fn token(&self) -> anyhow::Result<Option<Token>> {
        match &self.token_file {
            Some(path) => token_in(path, "token_file").map(Some),
            None => Ok(std::env::var(TOKEN_ENV)
                .ok()
                .and_then(|text| Token::new(&text))),
        }
    }

    /// The read-only token, if configured (it needs an admin token).
    pub fn read_token(&self) -> anyhow::Result<Option<Token>> {
        let Some(path) = &self.read_token_file else {
            return Ok(None);
        };
        anyhow::ensure!(
            self.token()?.is_some(),
            "[admin] read_token_file needs an admin token too (token_file or {TOKEN_ENV})"
        );
        token_in(path, "read_token_file").map(Some)
    }
}

/// How a command reaches a running weir's admin API: its token, and the
/// CA of a listener served over TLS.
#[derive(clap::Args)]
pub struct ClientAuth {
    /// File holding the admin token (default: the WEIR_ADMIN_TOKEN
    /// environment variable, if set).
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// PEM file of the CA of a target served over TLS (`https://ADDR`),
    /// besides the system's.
    #[arg(long, value_name = "PATH")]
    ca_file: Option<PathBuf>,
}

/// The URL of `path` on `target`: `HOST:PORT` is plain HTTP, a target
/// with a scheme (`https://HOST:PORT`) is taken as it is.
pub fn admin_url(target: &str, path: &str) -> String {
    if target.contains("://") {
        format!("{}{path}", target.trim_end_matches('/'))
    } else {
        format!("http://{target}{path}")
    }
}

/// Sends an admin request to `target` and returns the answer's text;
/// an answer that is not a success is an error naming the target, the
/// status and what the service said.
pub fn ask(target: &str, request: reqwest::blocking::RequestBuilder) -> anyhow::Result<String> {
    let response = request.send().with_context(|| format!("asking {target}"))?;
    let status = response.status();
    let text = response.text().unwrap_or_default();
    anyhow::ensure!(status.is_success(), "{target}: {status}: {}", text.trim());
    Ok(text)
}

impl ClientAuth {
    /// A client whose requests carry the token, if there is one, and
    /// trust the CA file, if given.
    pub fn client(&self) -> anyhow::Result<reqwest::blocking::Client> {
        Ok(self.builder()?.build()?)
    }

    /// [`ClientAuth::client`]'s builder, for more settings.
    pub fn builder(&self) -> anyhow::Result<reqwest::blocking::ClientBuilder> {
        let config = AdminConfig {
            token_file: self.token_file.clone(),
            ..AdminConfig::default()
        };
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = config.token()? {
            let mut value =
                reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .context("the admin token is not a valid header value")?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let mut builder = reqwest::blocking::Client::builder().default_headers(headers);
        if let Some(path) = &self.ca_file {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            for certificate in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{}: not PEM certificates", path.display()))?
            {
                builder = builder.add_root_certificate(certificate);
            }
        }
        Ok(builder)
    }
}

/// Refuses a listener at `bound` that would serve admin routes beyond
/// loopback without a token.
pub fn check_exposure(bound: SocketAddr, token: Option<&Token>) -> anyhow::Result<()> {
    anyhow::ensure!(
        token.is_some() || bound.ip().is_loopback(),
        "the admin API would be reachable on {bound} without authentication: set [admin] \
         token_file (or {TOKEN_ENV}), or serve it alone on a loopback address with [admin] listen"
    );
    Ok(())
}

/// The token a request offers: its `Authorization: Bearer` header, or
/// the dashboard's `weir_token` cookie (a browser's `EventSource` cannot
/// set headers).
fn offered_token(request: &Request) -> Option<Vec<u8>> {
    let headers = request.headers();
    if let Some(bearer) = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
    {
        return Some(bearer.to_vec());
    }
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .find_map(|cookie| cookie.trim().strip_prefix("weir_token="))
        .map(|value| percent_decode(value).into_bytes())
}

/// `%XX` escapes decoded (as the dashboard's `encodeURIComponent` wrote).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lets a request through only with the right token: the admin token
/// for anything, the read-only token for `GET`.
async fn authorize(
    token: Token,
    read_token: Option<Token>,
    request: Request,
    next: Next,
) -> Response {
    let offered = offered_token(&request);
    let reading = request.method() == axum::http::Method::GET;
    match offered {
        Some(offered) if token.matches(&offered) => next.run(request).await,
        Some(offered) if read_token.as_ref().is_some_and(|t| t.matches(&offered)) && reading => {
            next.run(request).await
        }
        Some(offered) if read_token.as_ref().is_some_and(|t| t.matches(&offered)) => {
            (StatusCode::FORBIDDEN, "the read-only token may only GET\n").into_response()
        }
        Some(_) => (StatusCode::FORBIDDEN, "wrong admin token\n").into_response(),
        None => (
            StatusCode::UNAUTHORIZED,
            [(WWW_AUTHENTICATE, "Bearer")],
            "this route needs the admin token: send `Authorization: Bearer TOKEN`\n",
        )
            .into_response(),
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
    /// The router, where this process runs ingest (the registry routes).
    pub registry: Option<weir_router::WeakRouterHandle>,
    /// The bearer token every admin route requires, if set.
    pub token: Option<Token>,
    /// A token that may only read (`GET`), if set.
    pub read_token: Option<Token>,
    /// [`AdminConfig::index_peers`].
    pub index_peers: Vec<String>,
    /// `POST /admin/backtest`, where the service reads the events topic.
    pub backtests: Option<crate::backtest::History>,
}

/// The admin routes, behind the token when one is set: `GET
/// /admin/topics` (partition counts) and `POST /admin/topics/grow`
/// (`{"partitions": N}`, for `weir topics grow`); with a processor `GET
/// /admin/state` (its partitions' checkpoints, for `weir state`) and
/// `DELETE /admin/state/NAME@VERSION` (drop a retired version's kept
/// state at the next checkpoints); with Graphite sinks `GET
/// /admin/sinks/NAME/destinations` and `PUT`/`DELETE
/// /admin/sinks/NAME/destinations/HOST:PORT`; with a router the registry
/// routes ([`crate::registry`]).
pub fn routes(admin: Admin) -> Router {
    let (token, read_token) = (admin.token.clone(), admin.read_token.clone());
    let mut router = Router::new()
        .route("/admin/topics", get(topic_counts))
        .route("/admin/topics/grow", post(grow_topics))
        .with_state((admin.log.clone(), admin.topics.clone()))
        .merge(crate::drops::routes());
    if let Some(status) = admin.status.clone() {
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
    if let Some(handle) = admin.registry {
        router = router.merge(crate::registry::routes(handle));
    }
    if let Some(backtests) = admin.backtests {
        router = router.merge(crate::backtest::routes(backtests));
    }
    router = router.merge(crate::live::routes(crate::live::IndexSources {
        status: admin.status.clone(),
        peers: admin.index_peers.clone(),
        token: admin.token.clone(),
        client: reqwest::Client::new(),
    }));
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
    let router = match token {
        Some(token) => router.layer(middleware::from_fn(move |request, next| {
            authorize(token.clone(), read_token.clone(), request, next)
        })),
        None => router,
    };
    router.merge(crate::live::dashboard_routes())
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
