//! Realtime listeners: every result a live worker appends, every index
//! entry that expires and, while some listener asks for them, every raw
//! event, published to the in-process hub the HTTP feeds
//! (`/api/live`, `/api/live/ws`) subscribe to.
//!
//! Publishing never waits: the hub is a bounded broadcast channel, and a
//! listener that falls behind by more than its capacity learns how many
//! messages it missed and is disconnected by its feed. The latest
//! messages are also kept in a short ring, so a feed that reconnects
//! with the last id it saw resumes without a gap. With no listener for a
//! minute nothing is built at all.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;
use weir_event::{Event, ResultRecord};

/// Messages a listener may fall behind before it is dropped.
const CAPACITY: usize = 8192;
/// Messages kept for feeds that reconnect.
const RECENT: usize = 8192;
/// Seconds after the last listener left that messages are still kept.
const LINGER_SECS: u64 = 60;

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A reactor's result.
    Result,
    /// A raw event, as ingested.
    Event,
    /// An index entry that expired.
    Expired,
}

impl Kind {
    /// Its name in the feeds.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Result => "result",
            Kind::Event => "event",
            Kind::Expired => "expired",
        }
    }
}

/// One message of the live feed.
#[derive(Debug)]
pub struct Message {
    /// Its place in the feed (increasing).
    pub seq: u64,
    /// What it is.
    pub kind: Kind,
    /// The reactor, for a result.
    pub reactor: Option<String>,
    /// Whether the result is a notification.
    pub notify: bool,
    /// The event (of the result), for filters.
    pub event: Event,
    /// The JSON sent to listeners.
    pub json: String,
}

struct Hub {
    sender: broadcast::Sender<Arc<Message>>,
    recent: Mutex<VecDeque<Arc<Message>>>,
    seq: AtomicU64,
    /// Listeners that asked for raw events.
    raw: AtomicUsize,
    /// When a listener was last connected (Unix seconds).
    last_listener: AtomicU64,
}

static HUB: LazyLock<Hub> = LazyLock::new(|| Hub {
    sender: broadcast::channel(CAPACITY).0,
    recent: Mutex::new(VecDeque::with_capacity(RECENT)),
    seq: AtomicU64::new(0),
    raw: AtomicUsize::new(0),
    last_listener: AtomicU64::new(0),
});

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether anything is to be published (a listener now or lately).
/// It takes the hub's lock: ask once per batch, not per result.
pub fn listening() -> bool {
    HUB.sender.receiver_count() > 0
        || now_secs() < HUB.last_listener.load(Ordering::Relaxed) + LINGER_SECS
}

fn publish(kind: Kind, reactor: Option<String>, notify: bool, event: Event, json: String) {
    let message = Arc::new(Message {
        seq: HUB.seq.fetch_add(1, Ordering::Relaxed) + 1,
        kind,
        reactor,
        notify,
        event,
        json,
    });
    {
        let mut recent = HUB.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(message.clone());
    }
    // No receiver: nothing to do (the ring keeps it for a reconnect).
    let _ = HUB.sender.send(message);
}

/// Publishes a result (`encoded` is its record's JSON); the caller
/// asked [`listening`] for its batch.
pub fn publish_result(result: &ResultRecord, encoded: &[u8]) {
    let json = String::from_utf8_lossy(encoded).into_owned();
    let reactor = Some(result.id.reactor.to_string());
    publish(
        Kind::Result,
        reactor,
        result.notify.is_some(),
        result.event.clone(),
        json,
    );
}

/// Whether some listener wants raw events.
pub fn wants_events() -> bool {
    HUB.raw.load(Ordering::Relaxed) > 0
}

/// Publishes a raw event of application `uid`.
pub fn publish_event(uid: &str, event: &Event) {
    let json = event_json(uid, event);
    publish(Kind::Event, None, false, event.clone(), json);
}

/// Publishes an index entry that expired.
pub fn publish_expired(uid: &str, event: &Event) {
    if !listening() {
        return;
    }
    let json = event_json(uid, event);
    publish(Kind::Expired, None, false, event.clone(), json);
}

/// An event's JSON with its application's uid.
fn event_json(uid: &str, event: &Event) -> String {
    let mut value = serde_json::to_value(event).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.insert("uid".into(), uid.into());
    }
    value.to_string()
}

/// A listener's subscription: the messages from now on, and (with
/// `after`) the kept ones after that id. Dropping it unsubscribes.
pub struct Subscription {
    /// The live messages.
    pub receiver: broadcast::Receiver<Arc<Message>>,
    /// Kept messages after the id the listener last saw, oldest first.
    pub missed: Vec<Arc<Message>>,
    raw: bool,
}

/// Subscribes; `raw` also asks for raw events, `after` resumes after the
/// message with that id (as far as the ring still holds).
pub fn subscribe(raw: bool, after: Option<u64>) -> Subscription {
    let receiver = HUB.sender.subscribe();
    let missed = match after {
        Some(after) => HUB
            .recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|m| m.seq > after)
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    if raw {
        HUB.raw.fetch_add(1, Ordering::Relaxed);
    }
    crate::metrics::LIVE_CLIENTS.inc();
    HUB.last_listener.store(now_secs(), Ordering::Relaxed);
    Subscription {
        receiver,
        missed,
        raw,
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.raw {
            HUB.raw.fetch_sub(1, Ordering::Relaxed);
        }
        crate::metrics::LIVE_CLIENTS.dec();
        HUB.last_listener.store(now_secs(), Ordering::Relaxed);
    }
}
