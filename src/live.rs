//! The live API and the dashboard, beside the admin routes (behind the
//! same token; a read-only token may use them):
//!
//! - `GET /api/index?where=P&limit=N`: the index entries of every
//!   partition this processor owns that predicate `P` accepts, and those
//!   of the peers in `[admin] index_peers` (other processors), merged;
//! - `GET /api/live?where=P&reactor=R&events=true`: Server-Sent Events
//!   of results (of reactor `R`), index expiries and, with `events`, raw
//!   events; each has an id, and a feed that reconnects with
//!   `Last-Event-ID` resumes after it;
//! - `GET /api/live/ws?…&after=ID`: the same as WebSocket text messages,
//!   resuming after message `ID`;
//! - `GET /api/stats`: counters the dashboard's charts are drawn from;
//! - `GET /`: the dashboard (one page, no external asset).
//!
//! A listener that falls behind the hub's capacity gets a `dropped`
//! message with the count it missed and is disconnected: the pipeline
//! never waits for a listener.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use weir_processor::index::IndexEntry;
use weir_processor::live::{self, Kind, Message};
use weir_processor::predicate::Predicate;
use weir_processor::Status;

/// The dashboard page.
const DASHBOARD: &str = include_str!("dashboard.html");

/// Most index entries one query returns.
const MAX_INDEX_LIMIT: usize = 100_000;

/// The query of `/api/index`, `/api/live` and `/api/live/ws`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveQuery {
    /// A predicate in the reactor language (`service = "cpu" and metric > 3`).
    #[serde(rename = "where")]
    filter: Option<String>,
    /// Only this reactor's results.
    reactor: Option<String>,
    /// Raw events too.
    #[serde(default)]
    events: bool,
    /// Most index entries (`/api/index`).
    limit: Option<usize>,
    /// Only this node's own index (`/api/index`; how peers are asked).
    #[serde(default)]
    local: bool,
    /// Resume after this message id (a WebSocket's `Last-Event-ID`).
    after: Option<u64>,
}

/// What a feed sends.
struct Filter {
    predicate: Option<Predicate>,
    reactor: Option<String>,
    events: bool,
}

/// A query whose `where` does not parse: a 400 naming the problem.
struct BadQuery(String);

impl IntoResponse for BadQuery {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, format!("where: {}\n", self.0)).into_response()
    }
}

impl Filter {
    fn new(query: &LiveQuery) -> Result<Filter, BadQuery> {
        let predicate = match query.filter.as_deref().filter(|f| !f.trim().is_empty()) {
            Some(text) => Some(Predicate::parse(text).map_err(|e| BadQuery(e.to_string()))?),
            None => None,
        };
        Ok(Filter {
            predicate,
            reactor: query.reactor.clone(),
            events: query.events,
        })
    }

    fn accepts(&self, message: &Message) -> bool {
        let kind_ok = match message.kind {
            Kind::Result => self
                .reactor
                .as_ref()
                .is_none_or(|r| message.reactor.as_ref() == Some(r)),
            Kind::Event => self.events && self.reactor.is_none(),
            Kind::Expired => self.reactor.is_none(),
        };
        kind_ok
            && self
                .predicate
                .as_ref()
                .is_none_or(|p| p.matches(&message.event))
    }
}

/// What a feed yields next.
enum Next {
    Message(Arc<Message>),
    /// The listener fell behind by this many messages: the feed ends.
    Dropped(u64),
}

/// One listener's feed: kept messages first, then live ones, filtered.
struct Feed {
    subscription: live::Subscription,
    backlog: VecDeque<Arc<Message>>,
    filter: Filter,
    /// The last message id sent (a message seen twice is skipped).
    last: u64,
    ended: bool,
}

impl Feed {
    fn new(query: &LiveQuery, after: Option<u64>) -> Result<Feed, BadQuery> {
        let filter = Filter::new(query)?;
        let subscription = live::subscribe(query.events, after);
        let backlog = subscription.missed.iter().cloned().collect();
        Ok(Feed {
            subscription,
            backlog,
            filter,
            last: after.unwrap_or(0),
            ended: false,
        })
    }

    async fn next(&mut self) -> Option<Next> {
        if self.ended {
            return None;
        }
        loop {
            let message = match self.backlog.pop_front() {
                Some(message) => message,
                None => match self.subscription.receiver.recv().await {
                    Ok(message) => message,
                    Err(RecvError::Lagged(missed)) => {
                        weir_processor::metrics::LIVE_DROPPED.inc_by(missed);
                        weir_log::drops::dropped("live", "fell_behind", missed, || {
                            format!("a listener fell {missed} messages behind and was disconnected")
                        });
                        tracing::info!(missed, "a live listener fell behind; disconnecting it");
                        self.ended = true;
                        return Some(Next::Dropped(missed));
                    }
                    Err(RecvError::Closed) => return None,
                },
            };
            if message.seq <= self.last {
                continue;
            }
            self.last = message.seq;
            if self.filter.accepts(&message) {
                return Some(Next::Message(message));
            }
        }
    }
}

/// The JSON of a WebSocket message.
fn ws_text(message: &Message) -> String {
    let reactor = message
        .reactor
        .as_ref()
        .map_or("null".to_owned(), |r| json!(r).to_string());
    format!(
        r#"{{"id":{},"kind":"{}","reactor":{reactor},"notify":{},"data":{}}}"#,
        message.seq,
        message.kind.as_str(),
        message.notify,
        message.json
    )
}

/// Where `/api/index` looks: this node's processor, and peers.
#[derive(Clone)]
pub struct IndexSources {
    /// This node's processor, if it runs one.
    pub status: Option<Status>,
    /// Base URLs of other nodes serving `/api/index` (`[admin] index_peers`).
    pub peers: Vec<String>,
    /// The token to present to them.
    pub token: Option<crate::admin::Token>,
    /// One client for every peer query (its connections and trust roots
    /// are reused).
    pub client: reqwest::Client,
}

/// The live routes.
pub fn routes(sources: IndexSources) -> Router {
    let router = Router::new()
        .route("/api/live", get(sse))
        .route("/api/live/ws", get(websocket))
        .route("/api/stats", get(stats));
    if sources.status.is_none() && sources.peers.is_empty() {
        return router;
    }
    router.merge(
        Router::new()
            .route("/api/index", get(index))
            .with_state(sources),
    )
}

/// The dashboard page (served without the token: it holds no data and
/// asks for the token when the API wants one).
pub fn dashboard_routes() -> Router {
    Router::new().route("/", get(|| async { Html(DASHBOARD) }))
}

async fn index(State(sources): State<IndexSources>, Query(query): Query<LiveQuery>) -> Response {
    let filter = match Filter::new(&query) {
        Ok(filter) => filter,
        Err(bad) => return bad.into_response(),
    };
    let limit = query.limit.unwrap_or(10_000).min(MAX_INDEX_LIMIT);
    let mut entries = match sources.status.clone() {
        Some(status) => tokio::task::spawn_blocking(move || {
            status.index(
                |event| filter.predicate.as_ref().is_none_or(|p| p.matches(event)),
                limit,
            )
        })
        .await
        .unwrap_or_default(),
        None => Vec::new(),
    };
    let mut errors = Vec::new();
    if !query.local {
        // Every peer at once: a slow or dead one costs its timeout once.
        let answers = futures::future::join_all(
            sources
                .peers
                .iter()
                .map(|peer| ask_peer(&sources, peer, &query, limit)),
        )
        .await;
        for (peer, answer) in sources.peers.iter().zip(answers) {
            match answer {
                Ok(more) => entries.extend(more),
                Err(error) => {
                    tracing::warn!(%peer, %error, "index peer did not answer");
                    weir_processor::metrics::INDEX_PEER_ERRORS
                        .with_label_values(&[peer])
                        .inc();
                    errors.push(json!({"peer": peer, "error": error}));
                }
            }
        }
        entries = latest_per_key(entries, limit);
    }
    Json(json!({ "entries": entries, "errors": errors })).into_response()
}

/// The entries of one peer's own index.
async fn ask_peer(
    sources: &IndexSources,
    peer: &str,
    query: &LiveQuery,
    limit: usize,
) -> Result<Vec<IndexEntry>, String> {
    let mut request = sources
        .client
        .get(format!("{}/api/index", peer.trim_end_matches('/')))
        .query(&[("local", "true"), ("limit", &limit.to_string())])
        .timeout(Duration::from_secs(5));
    if let Some(filter) = &query.filter {
        request = request.query(&[("where", filter)]);
    }
    if let Some(token) = &sources.token {
        request = request.bearer_auth(token.expose());
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!(
            "{status}: {}",
            response.text().await.unwrap_or_default().trim()
        ));
    }
    let body: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
    serde_json::from_value(body["entries"].clone()).map_err(|e| e.to_string())
}

/// One entry per (host, service), the latest (a partition that moved
/// may briefly be in two nodes' indexes), sorted, at most `limit`.
fn latest_per_key(entries: Vec<IndexEntry>, limit: usize) -> Vec<IndexEntry> {
    let mut latest: BTreeMap<(String, String, Option<String>), IndexEntry> = BTreeMap::new();
    for entry in entries {
        let key = (
            entry.uid.clone(),
            entry.event.host.clone(),
            entry.event.service.clone(),
        );
        match latest.get(&key) {
            Some(kept) if kept.event.time >= entry.event.time => {}
            _ => {
                latest.insert(key, entry);
            }
        }
    }
    latest.into_values().take(limit).collect()
}

async fn sse(Query(query): Query<LiveQuery>, headers: HeaderMap) -> Response {
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .or(query.after);
    let feed = match Feed::new(&query, after) {
        Ok(feed) => feed,
        Err(bad) => return bad.into_response(),
    };
    let stream = futures::stream::unfold(feed, |mut feed| async move {
        let event = match feed.next().await? {
            Next::Message(message) => SseEvent::default()
                .id(message.seq.to_string())
                .event(message.kind.as_str())
                .data(&message.json),
            Next::Dropped(missed) => SseEvent::default()
                .event("dropped")
                .data(json!({ "missed": missed }).to_string()),
        };
        Some((Ok::<_, Infallible>(event), feed))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

async fn websocket(Query(query): Query<LiveQuery>, upgrade: WebSocketUpgrade) -> Response {
    let feed = match Feed::new(&query, query.after) {
        Ok(feed) => feed,
        Err(bad) => return bad.into_response(),
    };
    upgrade.on_upgrade(move |socket| serve_websocket(socket, feed))
}

async fn serve_websocket(mut socket: WebSocket, mut feed: Feed) {
    loop {
        tokio::select! {
            next = feed.next() => match next {
                Some(Next::Message(message)) => {
                    if socket.send(WsMessage::Text(ws_text(&message).into())).await.is_err() {
                        return;
                    }
                }
                Some(Next::Dropped(missed)) => {
                    let text = json!({"kind": "dropped", "missed": missed}).to_string();
                    let _ = socket.send(WsMessage::Text(text.into())).await;
                    let _ = socket.send(WsMessage::Close(Some(axum::extract::ws::CloseFrame {
                        code: 1008,
                        reason: format!("fell behind by {missed} messages").into(),
                    }))).await;
                    return;
                }
                None => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Sums of the counters the dashboard draws: events ingested and
/// processed, lag per partition, results per reactor.
async fn stats() -> Json<serde_json::Value> {
    let mut ingested = 0.0;
    let mut processed = 0.0;
    let mut lag = BTreeMap::new();
    let mut results = BTreeMap::new();
    for family in prometheus::gather() {
        for metric in family.get_metric() {
            let label = |name: &str| {
                metric
                    .get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_owned())
                    .unwrap_or_default()
            };
            match family.name() {
                "weir_ingest_accepted_total" => ingested += metric.get_counter().get_value(),
                "weir_processor_events_total" => processed += metric.get_counter().get_value(),
                "weir_processor_lag" => {
                    lag.insert(label("partition"), metric.get_gauge().get_value());
                }
                "weir_processor_emits_total" => {
                    results.insert(label("reactor"), metric.get_counter().get_value());
                }
                _ => {}
            }
        }
    }
    Json(json!({
        "ingested": ingested,
        "processed": processed,
        "lag": lag,
        "results": results,
    }))
}
