//! The router: the seed's multiplexer. It looks each event's host up in
//! the [`registry::Registry`] to find its application uid, and appends the
//! event to the partition of `weir.events` that owns that uid, so one
//! processor sees every event of an application. Once a second it appends
//! a tick record to every partition to move event time forward (§5 Time).
//!
//! Ingest talks to the router through a [`RouterHandle`]: a bounded queue,
//! so a slow log makes ingest wait (and stop reading sockets) instead of
//! buffering without bound. The admin API reads and changes the registry
//! through the same queue ([`RouterHandle::registry`]); on every tick the
//! router applies what other nodes and the sources changed.

mod metrics;
pub mod murmur2;
pub mod registry;
mod sources;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::IntCounter;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use weir_event::Entry;
use weir_log::backoff::Backoff;
use weir_log::{Log, LogError, OwnedProduce, Produce, Topics};

use crate::metrics::{
    APPEND_SECONDS, APPLICATIONS, APPLY_LAG, FORGOTTEN, HELD, MOVES_DONE, MOVES_PENDING,
    PARTITIONS, ROUTED, SOURCE_ERRORS, VERSION,
};
use crate::registry::{read_seed_file, Registry, RegistryError, Seed, View, ADMIN_ORIGIN};
use crate::sources::{file_source, Alive, Sources, Update};

/// Router settings (`[router]` in the config).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// Seed registry file in the seed's format, applied at start and
    /// whenever it changes; none: hosts are their own uid unless set
    /// through the admin API or `registry_url`.
    pub registry_file: Option<PathBuf>,
    /// An HTTP source of the registry in the seed's format, polled every
    /// `registry_poll_secs` (with `If-None-Match`).
    pub registry_url: Option<String>,
    /// Seconds between polls of `registry_url`.
    pub registry_poll_secs: u64,
    /// Batches that may wait for the router before ingest blocks.
    pub queue_batches: usize,
    /// Period of tick records, in milliseconds.
    pub tick_interval_ms: u64,
    /// An application not seen for this long loses its placement (seed
    /// placements excepted), keeping the registry bounded under host
    /// churn; 0 keeps every placement forever.
    pub forget_after_secs: u64,
    /// After recording a move, how long the initiating router waits for
    /// every other router to apply it (and hold the application's events)
    /// before it appends the hand-off marker.
    pub move_grace_ms: u64,
    /// Events a router holds for moving applications before it stops
    /// taking any (backpressure).
    pub move_hold_events: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            registry_file: None,
            registry_url: None,
            registry_poll_secs: 30,
            queue_batches: 64,
            tick_interval_ms: 1000,
            forget_after_secs: 7 * 24 * 3600,
            move_grace_ms: 3000,
            move_hold_events: 100_000,
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
    /// A registry change was refused (invalid, or the log failed).
    #[error(transparent)]
    Registry(#[from] Arc<RegistryError>),
}

/// What the admin API asks of the registry.
#[derive(Debug, Clone)]
pub enum RegistryRequest {
    /// The whole view.
    View,
    /// Map `host` to `uid`.
    SetHost {
        /// The host.
        host: String,
        /// Its application.
        uid: String,
    },
    /// Remove `host`'s mapping (it becomes its own uid).
    RemoveHost {
        /// The host.
        host: String,
    },
    /// Make `hosts` exactly `uid`'s hosts.
    ReplaceHosts {
        /// The application.
        uid: String,
        /// Its hosts.
        hosts: Vec<String>,
    },
    /// Apply a whole seed (`weir registry import`).
    Import(Seed),
    /// Move an application, with the state kept for its hosts, to another
    /// partition (`weir registry move`).
    Move {
        /// The application.
        uid: String,
        /// Its new partition.
        partition: u32,
    },
}

/// The router's answer to a [`RegistryRequest`].
#[derive(Debug, Clone)]
pub enum RegistryAnswer {
    /// The view, for [`RegistryRequest::View`].
    View(View),
    /// The change is in the registry topic and applied here.
    Changed {
        /// The registry version that includes it.
        version: u64,
        /// Records it took (0: nothing to change).
        records: usize,
    },
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
    Registry {
        request: RegistryRequest,
        answer: oneshot::Sender<Result<RegistryAnswer, RouteError>>,
    },
}

/// How a batch's sender learns it was appended.
enum Done {
    /// A waiting sender (HTTP) gets the result and counts for itself.
    Answer(oneshot::Sender<Result<(), RouteError>>),
    /// A stream listener cannot answer: its batch is retried until the
    /// log takes it, and only then counted on this counter.
    Count(IntCounter),
    /// One part of a waiting sender's batch that was split because some
    /// of its events wait for a move: answered once every part is in.
    Part(Arc<SplitAnswer>),
}

/// The answer of a batch split in parts ([`Done::Part`]).
struct SplitAnswer {
    /// Parts not appended yet.
    parts: std::sync::atomic::AtomicUsize,
    /// The sender, until answered.
    ack: std::sync::Mutex<Option<oneshot::Sender<Result<(), RouteError>>>>,
}

impl SplitAnswer {
    fn ack(&self) -> std::sync::MutexGuard<'_, Option<oneshot::Sender<Result<(), RouteError>>>> {
        self.ack.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One part is appended; the last one answers.
    fn appended(&self) {
        if self.parts.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            if let Some(ack) = self.ack().take() {
                let _ = ack.send(Ok(()));
            }
        }
    }

    /// A part failed: the sender learns it now.
    fn failed(&self, error: &RouteError) {
        if let Some(ack) = self.ack().take() {
            let _ = ack.send(Err(error.clone()));
        }
    }

    /// Whether the sender was already told the batch failed (its other
    /// parts are then not appended).
    fn abandoned(&self) -> bool {
        self.ack().is_none()
    }
}

/// The sending side of the router; cheap to clone.
#[derive(Clone)]
pub struct RouterHandle {
    tx: mpsc::Sender<Message>,
}

/// A [`RouterHandle`] that does not keep the router running (for the
/// admin API, which outlives ingest's listeners at shutdown).
#[derive(Clone)]
pub struct WeakRouterHandle {
    tx: mpsc::WeakSender<Message>,
}

impl WeakRouterHandle {
    /// The handle, while the router runs.
    pub fn upgrade(&self) -> Option<RouterHandle> {
        self.tx.upgrade().map(|tx| RouterHandle { tx })
    }
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

    /// Asks the registry: a view, or a change, answered once it is in the
    /// registry topic and applied by this router.
    pub async fn registry(&self, request: RegistryRequest) -> Result<RegistryAnswer, RouteError> {
        let (answer, answered) = oneshot::channel();
        self.tx
            .send(Message::Registry { request, answer })
            .await
            .map_err(|_| RouteError::Closed)?;
        answered.await.map_err(|_| RouteError::Closed)?
    }

    /// A handle that does not keep the router running.
    pub fn downgrade(&self) -> WeakRouterHandle {
        WeakRouterHandle {
            tx: self.tx.downgrade(),
        }
    }
}

/// Starts the router thread and its tick thread. Both stop once every
/// [`RouterHandle`] is dropped.
pub fn start(
    log: Arc<dyn Log>,
    topics: Topics,
    config: &RouterConfig,
) -> Result<(RouterHandle, JoinHandle<()>), RegistryError> {
    let mut registry = Registry::load(log.as_ref(), &topics.registry)?;
    // The seed file as it is now, before the first event is routed.
    let file = match &config.registry_file {
        Some(path) => {
            let (seed, hash) = read_seed_file(path)?;
            let records = registry.apply_source(&file_source(path), &seed, hash);
            append_registry(log.as_ref(), &topics.registry, &records)?;
            registry.follow(log.as_ref(), &topics.registry, REGISTRY_WAIT)?;
            Some((path.clone(), sources::stamp(path)))
        }
        None => None,
    };
    let partitions = log.partitions(&topics.events)?;
    registry.check(partitions)?;
    VERSION.set(registry.version() as i64);
    let alive = Alive::default();
    let (updates_tx, updates) = std::sync::mpsc::channel();
    let url = config.registry_url.clone().map(|url| {
        let every = Duration::from_secs(config.registry_poll_secs.max(1));
        (url, every)
    });
    if file.is_some() || url.is_some() {
        let sources = Sources { file, url };
        sources
            .watch(updates_tx, Arc::downgrade(&alive))
            .map_err(|source| LogError::Io {
                op: "spawn registry sources thread",
                path: PathBuf::new(),
                source,
            })?;
    }
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
    let grace = Duration::from_millis(config.move_grace_ms);
    // A move found under way may never have had its marker appended (its
    // router stopped during the grace): append it again; the old
    // partition hands over once per move id.
    let moves = registry
        .handoffs()
        .into_iter()
        .map(|(_, handoff)| (handoff.uid, PendingMove::ours(grace)))
        .collect();
    let mut router = Router {
        log,
        topics,
        registry,
        partitions,
        forget_after_secs: config.forget_after_secs,
        last_sweep: Instant::now(),
        updates,
        _alive: alive,
        moves,
        grace,
        held: Vec::new(),
        held_events: 0,
        max_held: config.move_hold_events.max(1),
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
    /// New content of the registry sources.
    updates: std::sync::mpsc::Receiver<Update>,
    /// Keeps the sources thread running while the router does.
    _alive: Alive,
    /// Moves under way, by uid.
    moves: HashMap<String, PendingMove>,
    /// [`RouterConfig::move_grace_ms`].
    grace: Duration,
    /// Batches of moving applications' events, in arrival order.
    held: Vec<Message>,
    /// Events in `held`.
    held_events: usize,
    /// [`RouterConfig::move_hold_events`].
    max_held: usize,
}

/// A move under way as this router sees it.
struct PendingMove {
    /// When this router first saw it.
    since: Instant,
    /// When this router is to append the hand-off marker (it started the
    /// move, or found it under way at start); `None`: not its to append.
    marker_due: Option<Instant>,
}

impl PendingMove {
    /// A move whose marker this router appends after `grace`.
    fn ours(grace: Duration) -> PendingMove {
        PendingMove {
            since: Instant::now(),
            marker_due: Some(Instant::now() + grace),
        }
    }
}

/// A move taking longer than this shows in `/readyz`.
const MOVE_TOO_LONG: Duration = Duration::from_secs(30);

/// The moves' name in `/readyz`.
const MOVES_HEALTH: &str = "router: application moves";

/// How long applying the registry topic at start waits for a remote log.
const REGISTRY_WAIT: Duration = Duration::from_secs(5);

/// How long the routing thread waits for the registry topic to deliver:
/// what has not arrived is applied at the next tick.
const FOLLOW_WAIT: Duration = Duration::from_millis(200);

/// Appends a decommission marker for every host `records` remove from
/// the registry, to the partition its application is on (`registry`
/// before the records apply): the reactors there drop its state.
fn decommission(
    log: &dyn Log,
    topics: &Topics,
    registry: &Registry,
    records: &[OwnedProduce],
) -> Result<(), LogError> {
    for (host, partition) in registry.removed_hosts(records) {
        let marker = Entry::Decommission(weir_event::Decommission { host: host.clone() }).encode();
        log.append(&topics.events, partition, &[(host.as_bytes(), &marker[..])])?;
        tracing::info!(%host, partition, "host removed from the registry: decommission marker appended");
    }
    Ok(())
}

/// Appends registry `records` (none: nothing); the offset after them.
fn append_registry(
    log: &dyn Log,
    topic: &str,
    records: &[OwnedProduce],
) -> Result<Option<u64>, LogError> {
    if records.is_empty() {
        return Ok(None);
    }
    log.append(topic, 0, &weir_log::borrowed(records)).map(Some)
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
            self.sync_registry();
            if self.last_sweep.elapsed() >= SWEEP_INTERVAL {
                self.last_sweep = Instant::now();
                self.forget_idle();
            }
            self.progress_moves();
            self.release(messages);
        }
        if messages
            .iter()
            .any(|m| matches!(m, Message::Registry { .. }))
        {
            let (requests, rest): (Vec<_>, Vec<_>) = messages
                .drain(..)
                .partition(|m| matches!(m, Message::Registry { .. }));
            *messages = rest;
            for message in requests {
                if let Message::Registry { request, answer } = message {
                    let answered = self
                        .answer(request)
                        .map_err(|e| RouteError::Registry(Arc::new(e)));
                    // An asker that stopped waiting needs no answer.
                    let _ = answer.send(answered);
                }
            }
            if messages.is_empty() {
                return;
            }
        }
        self.hold(messages);
        self.deliver(messages);
        while self.held_events > self.max_held {
            // Backpressure: no more events are taken until the moves let
            // some go (ingest stops reading its sockets meanwhile).
            std::thread::sleep(Duration::from_millis(200));
            self.sync_registry();
            self.progress_moves();
            let mut released = Vec::new();
            self.release(&mut released);
            self.deliver(&mut released);
        }
    }

    /// Appends `messages` and answers their senders, retrying what the
    /// stream listeners sent until the log takes it.
    fn deliver(&mut self, messages: &mut Vec<Message>) {
        if messages.is_empty() {
            return;
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
                                Done::Part(answer) => answer.appended(),
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
                        done: Done::Part(answer),
                        ..
                    } => {
                        answer.failed(&error);
                        None
                    }
                    Message::Events {
                        done: Done::Count(_),
                        ..
                    } => Some(message),
                    Message::Tick(_) | Message::Registry { .. } => None,
                })
                .collect();
            if kept.is_empty() {
                return;
            }
            *messages = kept;
            std::thread::sleep(wait);
        }
    }

    /// Takes the events of moving applications out of `messages` to wait
    /// in `held`; the rest of each batch goes on. A waiting sender (HTTP)
    /// is answered once every part of its batch is appended.
    fn hold(&mut self, messages: &mut Vec<Message>) {
        if !self.registry.any_moving() {
            return;
        }
        let mut going = Vec::with_capacity(messages.len());
        for message in messages.drain(..) {
            let Message::Events { events, done } = message else {
                going.push(message);
                continue;
            };
            if !events.iter().any(|(host, _)| self.registry.is_moving(host)) {
                going.push(Message::Events { events, done });
                continue;
            }
            let (mut now, mut later) = (Encoded::default(), Encoded::default());
            for (host, value) in events.iter() {
                let part = if self.registry.is_moving(host) {
                    &mut later
                } else {
                    &mut now
                };
                part.push(host, value);
            }
            let (done_later, done_now) = match done {
                Done::Count(accepted) => (Done::Count(accepted.clone()), Done::Count(accepted)),
                Done::Answer(ack) => {
                    let answer = Arc::new(SplitAnswer {
                        parts: (1 + usize::from(!now.is_empty())).into(),
                        ack: Some(ack).into(),
                    });
                    (Done::Part(answer.clone()), Done::Part(answer))
                }
                Done::Part(answer) => {
                    answer.parts.fetch_add(
                        usize::from(!now.is_empty()),
                        std::sync::atomic::Ordering::AcqRel,
                    );
                    (Done::Part(answer.clone()), Done::Part(answer))
                }
            };
            self.held_events += later.len();
            self.held.push(Message::Events {
                events: later,
                done: done_later,
            });
            if !now.is_empty() {
                going.push(Message::Events {
                    events: now,
                    done: done_now,
                });
            }
        }
        *messages = going;
        HELD.set(self.held_events as i64);
    }

    /// Puts the held batches none of whose applications is moving any
    /// more at the front of `messages`, in the order they arrived.
    fn release(&mut self, messages: &mut Vec<Message>) {
        if self.held.is_empty() {
            return;
        }
        // A part whose sender was told its batch failed is not appended.
        self.held.retain(|message| {
            !matches!(message, Message::Events { done: Done::Part(answer), .. } if answer.abandoned())
        });
        let (ready, waiting): (Vec<Message>, Vec<Message>) =
            self.held.drain(..).partition(|message| match message {
                Message::Events { events, .. } => {
                    !events.iter().any(|(host, _)| self.registry.is_moving(host))
                }
                _ => true,
            });
        self.held = waiting;
        self.held_events = self
            .held
            .iter()
            .map(|m| match m {
                Message::Events { events, .. } => events.len(),
                _ => 0,
            })
            .sum();
        HELD.set(self.held_events as i64);
        messages.splice(0..0, ready);
    }

    /// Notes moves started and finished elsewhere, appends the hand-off
    /// markers that are due, and reports a move that takes too long.
    fn progress_moves(&mut self) {
        let handoffs = self.registry.handoffs();
        let under_way: HashMap<&str, &(u32, weir_event::Handoff)> =
            handoffs.iter().map(|h| (h.1.uid.as_str(), h)).collect();
        self.moves.retain(|uid, pending| {
            let going_on = under_way.contains_key(uid.as_str());
            if !going_on {
                MOVES_DONE.inc();
                tracing::info!(%uid, secs = pending.since.elapsed().as_secs_f64(), "application moved");
            }
            going_on
        });
        for uid in under_way.keys() {
            self.moves.entry((*uid).to_owned()).or_insert(PendingMove {
                since: Instant::now(),
                marker_due: None,
            });
        }
        for (uid, pending) in &mut self.moves {
            let Some((from, handoff)) = under_way.get(uid.as_str()) else {
                continue;
            };
            if pending.marker_due.is_none_or(|due| due > Instant::now()) {
                continue;
            }
            let value = Entry::Handoff(handoff.clone()).encode();
            match self
                .log
                .append(&self.topics.events, *from, &[(uid.as_bytes(), &value[..])])
            {
                Ok(_) => {
                    pending.marker_due = None;
                    tracing::info!(%uid, from, to = handoff.to, hosts = handoff.hosts.len(), "hand-off marker appended");
                }
                Err(error) => {
                    tracing::warn!(%uid, %error, "cannot append a hand-off marker; retrying")
                }
            }
        }
        MOVES_PENDING.set(self.moves.len() as i64);
        let slow = self
            .moves
            .iter()
            .find(|(_, pending)| pending.since.elapsed() > MOVE_TOO_LONG);
        match slow {
            Some((uid, pending)) => {
                let to = under_way.get(uid.as_str()).map_or(0, |h| h.1.to);
                let from = under_way.get(uid.as_str()).map_or(0, |h| h.0);
                weir_log::health::failing(
                    MOVES_HEALTH,
                    format!(
                        "application {uid:?} has been moving from partition {from} to {to} for {}s: is a processor working on partition {from}?",
                        pending.since.elapsed().as_secs()
                    ),
                );
            }
            None => weir_log::health::working(MOVES_HEALTH),
        }
    }

    /// Applies what other nodes appended to the registry topic, then what
    /// the sources changed (as records, which every node applies).
    fn sync_registry(&mut self) {
        let (log, topic) = (self.log.clone(), self.topics.registry.clone());
        let follow = |registry: &mut Registry| {
            // Short: this is the routing thread; the rest comes next tick.
            if let Err(error) = registry.follow(log.as_ref(), &topic, FOLLOW_WAIT) {
                tracing::debug!(%error, "registry not fully applied yet");
            }
        };
        follow(&mut self.registry);
        while let Ok(update) = self.updates.try_recv() {
            let records = self
                .registry
                .apply_source(&update.name, &update.seed, update.hash);
            if records.is_empty() {
                continue;
            }
            let appended = append_registry(log.as_ref(), &topic, &records)
                .and_then(|_| decommission(log.as_ref(), &self.topics, &self.registry, &records));
            match appended {
                Ok(()) => {
                    tracing::info!(source = %update.name, records = records.len(), "registry source applied");
                    self.registry.apply_own(&records);
                    follow(&mut self.registry);
                }
                Err(error) => {
                    SOURCE_ERRORS.with_label_values(&[&update.name]).inc();
                    tracing::warn!(source = %update.name, %error, "cannot record a registry source's change");
                }
            }
        }
        self.registry_applied();
    }

    /// Updates the registry's version and apply-lag gauges.
    fn registry_applied(&self) {
        VERSION.set(self.registry.version() as i64);
        if self.registry.applied_ms() > 0 {
            let lag = now_secs() - self.registry.applied_ms() as f64 / 1000.0;
            APPLY_LAG.set(lag.max(0.0));
        }
    }

    /// Answers an admin request; a change is answered once applied here.
    fn answer(&mut self, request: RegistryRequest) -> Result<RegistryAnswer, RegistryError> {
        let registry = &self.registry;
        let records = match request {
            RegistryRequest::View => return Ok(RegistryAnswer::View(registry.view())),
            RegistryRequest::SetHost { host, uid } => {
                registry.set_host(&host, &uid, ADMIN_ORIGIN)?
            }
            RegistryRequest::RemoveHost { host } => registry.remove_host(&host)?,
            RegistryRequest::ReplaceHosts { uid, hosts } => {
                registry.replace_hosts(&uid, &hosts, ADMIN_ORIGIN)?
            }
            RegistryRequest::Import(seed) => registry.apply_source(ADMIN_ORIGIN, &seed, 0),
            RegistryRequest::Move { uid, partition } => {
                let records = registry.move_to(&uid, partition, self.partitions)?;
                if !records.is_empty() && registry.placement(&uid).is_some() {
                    self.moves.insert(uid, PendingMove::ours(self.grace));
                }
                records
            }
        };
        let appended = append_registry(self.log.as_ref(), &self.topics.registry, &records)?;
        decommission(self.log.as_ref(), &self.topics, &self.registry, &records)?;
        // Applied here at once, so the routing thread never waits for a
        // slow broker to deliver them back; following the topic applies
        // them again in log order with everyone else's (the same result).
        self.registry.apply_own(&records);
        if let Err(error) =
            self.registry
                .follow(self.log.as_ref(), &self.topics.registry, FOLLOW_WAIT)
        {
            tracing::debug!(%error, "registry not fully applied yet");
        }
        self.registry_applied();
        Ok(RegistryAnswer::Changed {
            version: self.registry.version().max(appended.unwrap_or(0)),
            records: records.len(),
        })
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
                Message::Registry { .. } => {}
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
                Message::Registry { .. } => {}
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
