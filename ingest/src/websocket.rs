//! WebSocket, the poa-netstats agent protocol (`GET /ws` on the HTTP
//! listener): typed messages, JSON in text frames or MessagePack maps in
//! binary frames (as `rmp-serde`'s `to_vec_named`, Python's and JS's
//! msgpack write them).
//!
//! A message is `{"type": T, "seq": N, "event": {…}}` or `{"type": T,
//! "seq": N, "events": [{…}, …]}`. `type` is mandatory and, when
//! `[ingest.websocket] types` lists any, one of them; every event of the
//! message gets it as its `type`, which sinks route on (`types`). `seq`
//! is optional (default: the message's number on the connection, from 1).
//! Each message is answered in its own encoding once its events are in
//! the log: `{"ack": N, "accepted": n}`, with `"rejected": [{"item", "reason",
//! "detail"}]` for bad events (the good ones are kept); a message that
//! cannot be taken at all (not a map, no or an unknown `type`, the log
//! refusing) gets `{"error": {"seq", "reason", "detail"}}`.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use weir_event::{decode_value, DecodeOptions, Reason, Rejection};
use weir_router::{Encoded, RouterHandle};

use crate::metrics::{reject, ACCEPTED};
use crate::now_secs;

/// `[ingest.websocket]`: which message types are taken.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Message types taken; empty: any.
    pub types: Vec<String>,
}

/// What a connection needs.
#[derive(Clone)]
pub(crate) struct Socket {
    pub(crate) router: RouterHandle,
    pub(crate) options: DecodeOptions,
    pub(crate) types: Arc<BTreeSet<String>>,
    pub(crate) max_message: usize,
    pub(crate) max_events: usize,
}

/// A message as sent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Incoming {
    #[serde(rename = "type")]
    kind: Option<String>,
    seq: Option<u64>,
    event: Option<Value>,
    events: Option<Vec<Value>>,
}

/// A rejected event of a message.
#[derive(Serialize)]
struct Item {
    item: usize,
    reason: &'static str,
    detail: String,
}

/// The answer to a message.
#[derive(Serialize)]
#[serde(untagged)]
enum Answer {
    Ack {
        ack: u64,
        accepted: usize,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        rejected: Vec<Item>,
    },
    Error {
        error: Failure,
    },
}

#[derive(Serialize)]
struct Failure {
    seq: u64,
    reason: &'static str,
    detail: String,
}

/// `GET /ws`: upgrades and serves the connection.
pub(crate) async fn upgrade(State(socket): State<Socket>, upgrade: WebSocketUpgrade) -> Response {
    let max = socket.max_message;
    upgrade
        .max_message_size(max)
        .on_upgrade(move |ws| serve(ws, socket))
}

async fn serve(mut ws: WebSocket, socket: Socket) {
    let mut number = 0;
    while let Some(Ok(message)) = ws.recv().await {
        let (bytes, binary) = match message {
            Message::Text(text) => (text.as_bytes().to_vec(), false),
            Message::Binary(bytes) => (bytes.to_vec(), true),
            Message::Close(_) => return,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        number += 1;
        let answer = socket.take(&bytes, binary, number).await;
        let reply = if binary {
            rmp_serde::to_vec_named(&answer).map(|b| Message::Binary(b.into()))
        } else {
            Ok(Message::Text(
                serde_json::to_string(&answer).unwrap_or_default().into(),
            ))
        };
        let Ok(reply) = reply else { return };
        if ws.send(reply).await.is_err() {
            return;
        }
    }
}

impl Socket {
    /// Takes one message: its events appended, or why not.
    async fn take(&self, bytes: &[u8], binary: bool, number: u64) -> Answer {
        let failure = |seq, reason: Reason, detail: String| {
            let rejection = Rejection::new(reason, detail);
            reject("websocket", &rejection);
            Answer::Error {
                error: Failure {
                    seq,
                    reason: rejection.reason.as_str(),
                    detail: rejection.detail,
                },
            }
        };
        let incoming: Result<Incoming, String> = if binary {
            rmp_serde::from_slice(bytes).map_err(|e| format!("not a MessagePack message: {e}"))
        } else {
            serde_json::from_slice(bytes).map_err(|e| format!("not a JSON message: {e}"))
        };
        let incoming = match incoming {
            Ok(incoming) => incoming,
            Err(detail) => return failure(number, Reason::Malformed, detail),
        };
        let seq = incoming.seq.unwrap_or(number);
        let Some(kind) = incoming.kind.filter(|k| !k.is_empty()) else {
            return failure(seq, Reason::Malformed, "the message has no type".into());
        };
        if !self.types.is_empty() && !self.types.contains(&kind) {
            let known: Vec<&str> = self.types.iter().map(String::as_str).collect();
            let detail = format!("type {kind:?} is not one of {}", known.join(", "));
            return failure(seq, Reason::Malformed, detail);
        }
        let items = match (incoming.event, incoming.events) {
            (Some(event), None) => vec![event],
            (None, Some(events)) => events,
            _ => {
                let detail = "a message carries either event or events".into();
                return failure(seq, Reason::Malformed, detail);
            }
        };
        if items.len() > self.max_events {
            let detail = format!(
                "{} events in one message; the limit is {}",
                items.len(),
                self.max_events
            );
            return failure(seq, Reason::BatchTooLarge, detail);
        }
        let now = now_secs();
        let mut events = Encoded::default();
        let mut rejected = Vec::new();
        for (i, mut item) in items.into_iter().enumerate() {
            if let Value::Object(fields) = &mut item {
                fields.insert("type".into(), Value::String(kind.clone()));
            }
            match decode_value(item, &self.options, now) {
                Ok(event) => events.push(&event.host, &event.to_json()),
                Err(rejection) => {
                    reject("websocket", &rejection);
                    rejected.push(Item {
                        item: i + 1,
                        reason: rejection.reason.as_str(),
                        detail: rejection.detail,
                    });
                }
            }
        }
        let accepted = events.len();
        if accepted > 0 {
            if let Err(error) = self.router.send_durable(events).await {
                return Answer::Error {
                    error: Failure {
                        seq,
                        reason: "log_unavailable",
                        detail: error.to_string(),
                    },
                };
            }
            ACCEPTED
                .with_label_values(&["websocket"])
                .inc_by(accepted as u64);
        }
        Answer::Ack {
            ack: seq,
            accepted,
            rejected,
        }
    }
}
