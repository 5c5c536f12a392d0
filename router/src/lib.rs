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

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use weir_event::Entry;
use weir_log::{Log, LogError, Produce, Topics};

use crate::metrics::{APPEND_SECONDS, ROUTED};
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
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            registry_file: None,
            queue_batches: 64,
            tick_interval_ms: 1000,
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

/// An event already encoded as its `weir.events` record value, with its host.
pub type Encoded = (String, Vec<u8>);

enum Message {
    Events {
        events: Vec<Encoded>,
        ack: Option<oneshot::Sender<Result<(), RouteError>>>,
    },
    Tick(f64),
}

/// The sending side of the router; cheap to clone.
#[derive(Clone)]
pub struct RouterHandle {
    tx: mpsc::Sender<Message>,
}

impl RouterHandle {
    /// Queues `events`; waits while the queue is full (backpressure).
    /// Callers encode (`weir_event::Entry::from_line`, `Event::to_json`) on
    /// their own threads, so that the single router thread only looks up
    /// and appends.
    pub async fn send(&self, events: Vec<Encoded>) -> Result<(), RouteError> {
        self.tx
            .send(Message::Events { events, ack: None })
            .await
            .map_err(|_| RouteError::Closed)
    }

    /// Queues `events` and waits until they are appended (durable under
    /// the log's flush policy).
    pub async fn send_durable(&self, events: Vec<Encoded>) -> Result<(), RouteError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Message::Events {
                events,
                ack: Some(ack),
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
    let mut router = Router {
        log,
        topics,
        registry,
        partitions,
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

/// Most messages merged into one round of appends.
const MAX_MESSAGES_PER_ROUND: usize = 256;

struct Router {
    log: Arc<dyn Log>,
    topics: Topics,
    registry: Registry,
    partitions: u32,
}

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

    /// Appends everything in `messages` (one append per partition) and
    /// then acknowledges each batch.
    fn round(&mut self, messages: &mut Vec<Message>) {
        let mut by_partition: BTreeMap<u32, Vec<Produce>> = BTreeMap::new();
        let mut acks = Vec::new();
        let mut routed = 0;
        for message in messages.drain(..) {
            match message {
                Message::Tick(time) => {
                    let tick = Entry::Tick(time).encode();
                    for p in 0..self.partitions {
                        by_partition
                            .entry(p)
                            .or_default()
                            .push((Vec::new(), tick.clone()));
                    }
                }
                Message::Events { events, ack } => {
                    routed += events.len();
                    for (host, value) in events {
                        let uid = self.registry.uid(&host).to_owned();
                        let p = self.registry.partition(&uid, self.partitions);
                        by_partition
                            .entry(p)
                            .or_default()
                            .push((uid.into_bytes(), value));
                    }
                    acks.extend(ack);
                }
            }
        }
        let result = self
            .append(by_partition)
            .map_err(|e| RouteError::Append(e.to_string()));
        match &result {
            Ok(()) => ROUTED.inc_by(routed as u64),
            Err(error) => tracing::error!(%error, "router append failed"),
        }
        for ack in acks {
            // A sender that stopped waiting (client gone) needs no answer.
            let _ = ack.send(result.clone());
        }
    }

    fn append(&mut self, by_partition: BTreeMap<u32, Vec<Produce>>) -> Result<(), LogError> {
        let started = Instant::now();
        // Placements first: an event is never durable before its uid's partition is.
        let placements = self.registry.take_new_placements();
        if !placements.is_empty() {
            self.log.append(&self.topics.registry, 0, &placements)?;
        }
        let batches: Vec<(u32, Vec<Produce>)> = by_partition.into_iter().collect();
        self.log.append_batches(&self.topics.events, &batches)?;
        APPEND_SECONDS.observe(started.elapsed().as_secs_f64());
        Ok(())
    }
}
