//! The router: the seed's multiplexer. It looks each event's host up in
//! the [`registry::Registry`] to find its application uid, and appends the
//! event to the partition of `weir.events` that owns that uid, so one
//! processor sees every event of an application. Once a second it appends
//! a tick record to every partition to move event time forward (§5 Time).
//!
//! Ingest talks to the router through a [`RouterHandle`]: a bounded queue,
//! so a slow log makes ingest wait (and stop reading sockets) instead of
//! buffering without bound.

mod metrics;
pub mod murmur2;
pub mod registry;

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::IntCounter;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use weir_event::Entry;
use weir_log::backoff::Backoff;
use weir_log::{Log, LogError, Produce, Topics};

use crate::metrics::{APPEND_SECONDS, APPLICATIONS, FORGOTTEN, PARTITIONS, ROUTED};
use crate::registry::{Registry, RegistryError};

/// Router settings (`[router]` in the config).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// Seed registry file in the seed's format; none: every host is its own uid.
    pub registry_file: Option<PathBuf>,
    /// Batches that may wait for the router before ingest blocks.
    pub queue_batches: usize,
    /// Period of tick records, in milliseconds.
    pub tick_interval_ms: u64,
    /// An application not seen for this long loses its placement (seed
    /// placements excepted), keeping the registry bounded under host
    /// churn; 0 keeps every placement forever.
    pub forget_after_secs: u64,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            registry_file: None,
            queue_batches: 64,
            tick_interval_ms: 1000,
            forget_after_secs: 7 * 24 * 3600,
        }
    }
}

/// Why a batch was not accepted.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The log refused the append.
    #[error("log append failed: {0}")]
    Append(String),
    /// The router has stopped.
    #[error("router is shut down")]
    Closed,
}

/// Events already encoded as their `weir.events` record values, with
/// their hosts, in two buffers: ingest fills them without an allocation
/// per event, and the router hands the values to the log from one place
/// in memory.
#[derive(Debug, Default)]
pub struct Encoded {
    hosts: String,
    values: Vec<u8>,
    /// Per event: where its host and its value end.
    ends: Vec<(usize, usize)>,
}

impl Encoded {
    /// Adds one event: its host and its record value.
    pub fn push(&mut self, host: &str, value: &[u8]) {
        self.hosts.push_str(host);
        self.values.extend_from_slice(value);
        self.ends.push((self.hosts.len(), self.values.len()));
    }

    /// Hands the events over, leaving empty buffers as large as these
    /// were (the next batch of a stream is likely as big).
    pub fn take(&mut self) -> Encoded {
        let empty = Encoded {
            hosts: String::with_capacity(self.hosts.capacity()),
            values: Vec::with_capacity(self.values.capacity()),
            ends: Vec::with_capacity(self.ends.capacity()),
        };
        std::mem::replace(self, empty)
    }

    /// How many events it holds.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether it holds no event.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The events in order, as host and record value.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        let mut starts = (0, 0);
        self.ends.iter().map(move |&(host_end, value_end)| {
            let event = (
                &self.hosts[starts.0..host_end],
                &self.values[starts.1..value_end],
            );
            starts = (host_end, value_end);
            event
        })
    }
}

enum Message {
    Events {
        events: Encoded,
        /// How the sender learns the outcome.
        done: Done,
    },
    Tick(f64),
}

/// How a batch's sender learns it was appended.
enum Done {
    /// A waiting sender (HTTP) gets the result and counts for itself.
    Answer(oneshot::Sender<Result<(), RouteError>>),
    /// A stream listener cannot answer: its batch is retried until the
    /// log takes it, and only then counted on this counter.
    Count(IntCounter),
}

/// The sending side of the router; cheap to clone.
#[derive(Clone)]
pub struct RouterHandle {
    tx: mpsc::Sender<Message>,
}

impl RouterHandle {
    /// Queues `events` from a stream that cannot be answered; waits while
    /// the queue is full (backpressure). The router appends them, retrying
    /// until the log takes them, and only then adds them to `accepted`.
    /// Callers encode (`weir_event::Entry::from_line`, `Event::to_json`) on
    /// their own threads, so that the single router thread only looks up
    /// and appends.
    pub async fn send(&self, events: Encoded, accepted: IntCounter) -> Result<(), RouteError> {
        let done = Done::Count(accepted);
        self.tx
            .send(Message::Events { events, done })
            .await
            .map_err(|_| RouteError::Closed)
    }

    /// Queues `events` and waits until they are appended (durable under
    /// the log's flush policy).
    pub async fn send_durable(&self, events: Encoded) -> Result<(), RouteError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Message::Events {
                events,
                done: Done::Answer(ack),
            })
            .await
            .map_err(|_| RouteError::Closed)?;
        done.await.map_err(|_| RouteError::Closed)?
    }
}

/// Starts the router thread and its tick thread. Both stop once every
/// [`RouterHandle`] is dropped.
pub fn start(
    log: Arc<dyn Log>,
    topics: Topics,
    config: &RouterConfig,
) -> Result<(RouterHandle, JoinHandle<()>), RegistryError> {
    let registry = Registry::load(
        config.registry_file.as_deref(),
        log.as_ref(),
        &topics.registry,
    )?;
    let partitions = log.partitions(&topics.events)?;
    registry.check(partitions)?;
    PARTITIONS.set(partitions as i64);
    let (tx, rx) = mpsc::channel(config.queue_batches.max(1));
    let weak = tx.downgrade();
    let period = Duration::from_millis(config.tick_interval_ms.max(1));
    let spawn_err = |source| LogError::Io {
        op: "spawn router thread",
        path: PathBuf::new(),
        source,
    };
    std::thread::Builder::new()
        .name("weir-router-tick".into())
        .spawn(move || loop {
            std::thread::sleep(period);
            let Some(tx) = weak.upgrade() else { return };
            if tx.blocking_send(Message::Tick(now_secs())).is_err() {
                return;
            }
        })
        .map_err(spawn_err)?;
    APPLICATIONS.set(registry.placed() as i64);
    let mut router = Router {
        log,
        topics,
        registry,
        partitions,
        forget_after_secs: config.forget_after_secs,
        last_sweep: Instant::now(),
    };
    let thread = std::thread::Builder::new()
        .name("weir-router".into())
        .spawn(move || router.run(rx))
        .map_err(spawn_err)?;
    Ok((RouterHandle { tx }, thread))
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The router's name in `/readyz`.
const HEALTH: &str = "router: appends to the log";

/// Most messages merged into one round of appends.
const MAX_MESSAGES_PER_ROUND: usize = 256;

struct Router {
    log: Arc<dyn Log>,
    topics: Topics,
    registry: Registry,
    /// Partitions of the events topic, read again on every tick: a topic
    /// grown while weir runs takes new applications at once.
    partitions: u32,
    /// [`RouterConfig::forget_after_secs`].
    forget_after_secs: u64,
    /// When idle placements were last looked for.
    last_sweep: Instant,
}

/// How often idle placements are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

impl Router {
    fn run(&mut self, mut rx: mpsc::Receiver<Message>) {
        let mut messages = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            messages.push(first);
            while messages.len() < MAX_MESSAGES_PER_ROUND {
                match rx.try_recv() {
                    Ok(message) => messages.push(message),
                    Err(_) => break,
                }
            }
            self.round(&mut messages);
        }
    }

    /// Reads the events topic's partition count again; applications
    /// already placed keep their partition, new ones spread over all.
    fn refresh_partitions(&mut self) {
        match self.log.partitions(&self.topics.events) {
            Ok(now) if now > self.partitions => {
                tracing::info!(topic = %self.topics.events, before = self.partitions, after = now,
                    "the events topic grew; new applications are placed over every partition");
                self.partitions = now;
                PARTITIONS.set(now as i64);
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "reading the events topic's partition count"),
        }
    }

    /// Appends everything in `messages` (one append per partition) and
    /// then acknowledges each batch. When the log refuses, senders that
    /// wait for an answer (HTTP) get the error at once; the batches of
    /// the stream listeners, which have no answer to give, are kept and
    /// appended again with backoff until the log takes them — the full
    /// queue stops ingest reading their sockets meanwhile, so producers
    /// are slowed, never silently dropped.
    fn round(&mut self, messages: &mut Vec<Message>) {
        if messages.iter().any(|m| matches!(m, Message::Tick(_))) {
            self.refresh_partitions();
            if self.last_sweep.elapsed() >= SWEEP_INTERVAL {
                self.last_sweep = Instant::now();
                self.forget_idle();
            }
        }
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        loop {
            let started = Instant::now();
            let result = self.append(messages);
            let took = started.elapsed();
            let error = match result {
                Ok(()) => {
                    let mut routed = 0;
                    for message in messages.drain(..) {
                        if let Message::Events { events, done } = message {
                            routed += events.len();
                            match done {
                                // A sender that stopped waiting (client gone) needs no answer.
                                Done::Answer(ack) => drop(ack.send(Ok(()))),
                                Done::Count(accepted) => accepted.inc_by(events.len() as u64),
                            }
                        }
                    }
                    ROUTED.inc_by(routed as u64);
                    APPEND_SECONDS.observe(took.as_secs_f64());
                    weir_log::health::working(HEALTH);
                    return;
                }
                Err(error) => RouteError::Append(error.to_string()),
            };
            let wait = backoff.failed();
            tracing::error!(%error, retry_in = ?wait, "router append failed");
            weir_log::health::failing(HEALTH, &error);
            let kept: Vec<Message> = messages
                .drain(..)
                .filter_map(|message| match message {
                    Message::Events {
                        done: Done::Answer(ack),
                        ..
                    } => {
                        let _ = ack.send(Err(error.clone()));
                        None
                    }
                    Message::Events {
                        done: Done::Count(_),
                        ..
                    } => Some(message),
                    Message::Tick(_) => None,
                })
                .collect();
            if kept.is_empty() {
                return;
            }
            *messages = kept;
            std::thread::sleep(wait);
        }
    }

    /// Forgets placements idle for [`RouterConfig::forget_after_secs`];
    /// their tombstones go out with the next round's placements.
    fn forget_idle(&mut self) {
        let now = now_secs() as u64;
        let forgotten = self.registry.forget_idle(now, self.forget_after_secs);
        if forgotten > 0 {
            FORGOTTEN.inc_by(forgotten as u64);
            tracing::info!(
                forgotten,
                idle_secs = self.forget_after_secs,
                "forgot idle application placements"
            );
        }
        APPLICATIONS.set(self.registry.placed() as i64);
    }

    fn append(&mut self, messages: &[Message]) -> Result<(), LogError> {
        // Every event's partition first, placing new uids, and the
        // placements appended before any event: an event is never durable
        // before its uid's partition is.
        let mut placed = Vec::new();
        let mut ticks = Vec::new();
        for message in messages {
            match message {
                Message::Tick(time) => ticks.push(Entry::Tick(*time).encode()),
                Message::Events { events, .. } => placed.extend(
                    events
                        .iter()
                        .map(|(host, _)| self.registry.route(host, self.partitions)),
                ),
            }
        }
        if messages.iter().any(|m| matches!(m, Message::Events { .. })) {
            self.log.accepts_input()?;
        }
        let placements = self.registry.new_placements();
        if !placements.is_empty() {
            self.log
                .append(&self.topics.registry, 0, &weir_log::borrowed(&placements))?;
            // Only now: a failed append keeps them for the next round.
            self.registry.placements_persisted();
        }
        let mut by_partition: Vec<Vec<Produce>> = vec![Vec::new(); self.partitions as usize];
        let (mut placed, mut ticks) = (placed.into_iter(), ticks.iter());
        for message in messages {
            match message {
                Message::Tick(_) => {
                    let tick = ticks.next().map_or(&[][..], Vec::as_slice);
                    for records in &mut by_partition {
                        records.push((&[], tick));
                    }
                }
                Message::Events { events, .. } => {
                    for ((host, value), p) in events.iter().zip(&mut placed) {
                        let uid = self.registry.uid(host);
                        by_partition[p as usize].push((uid.as_bytes(), value));
                    }
                }
            }
        }
        let batches: Vec<(u32, Vec<Produce>)> = (0..self.partitions)
            .zip(by_partition)
            .filter(|(_, records)| !records.is_empty())
            .collect();
        self.log.append_batches(&self.topics.events, &batches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_events_come_back_in_order_as_pushed() {
        let mut events = Encoded::default();
        let pushed = [("web-1", &b"{}"[..]), ("h\u{e9}te", b""), ("", b"[1]")];
        for (host, value) in pushed {
            events.push(host, value);
        }
        assert_eq!(events.len(), 3);
        assert_eq!(events.iter().collect::<Vec<_>>(), pushed);
        let taken = events.take();
        assert!(events.is_empty() && events.iter().next().is_none());
        assert_eq!(taken.iter().collect::<Vec<_>>(), pushed);
        assert!(Encoded::default().is_empty());
    }
}
