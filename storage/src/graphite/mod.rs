//! The Graphite sink: carbon plaintext (`PATH VALUE TIMESTAMP\n`) to one
//! or more destinations, with polymur's guarantees.
//!
//! - **round-robin**: one consumer group; each line goes to the next
//!   destination in the pool with room in its queue (`queue_cap`), so a
//!   slow destination gets less and never stalls the rest. A destination
//!   that fails `max_failures` connects in a row leaves the pool and its
//!   queued and unconfirmed lines go to the others; it rejoins when it
//!   connects again.
//! - **broadcast**: every destination gets every line. Each destination
//!   is its own consumer group (`weir.sink.NAME.ADDRESS`) with its own
//!   position in the results log, so a dead destination only falls
//!   behind (its lag shows it) while the others go on, and it catches up
//!   from the log when it returns — nothing is dropped.
//!
//! A line counts as delivered (and the consumer may commit past it) once
//! it was written and the connection was still open 50 ms later: a write
//! into a socket whose peer has gone is seen at the next check and the
//! line is sent again. Carbon plaintext has no acknowledgements, and a
//! carbon that stops drops what it received but had not read yet, so the
//! lines of the last 2 seconds are also sent again after a break. Carbon
//! keeps one value per timestamp: a line sent twice is absorbed.
//!
//! Destinations are listed, added and removed at runtime
//! ([`Graphite::destinations`], [`Graphite::add`], [`Graphite::remove`]);
//! the set is persisted in `STATE_DIR/NAME.destinations.json` and wins
//! over the config at the next start.
//!
//! By concern: [`config`] (the sink's options), [`template`] (metric
//! paths), `delivery` (a partition's lines handed to a pool and awaited),
//! `pool` (per-destination queues and writer threads); this module keeps
//! the running sink and its runtime changes and their persistence.

mod config;
mod delivery;
mod pool;
pub mod ring;
mod template;

use std::collections::BTreeMap;
use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_log::backoff::Backoff;

use crate::consumer::{spawn_consumers, start_at_end, Source, StorageError};
use crate::sink::{DeadLetters, Route, Routed};

pub use config::{Distribution, GraphiteConfig};
use delivery::PartitionWriter;
use pool::{Pool, Spread, Writing};
pub use template::Template;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A destination as the admin API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DestinationStatus {
    /// `HOST:PORT`.
    pub address: String,
    /// Whether a connection is open.
    pub connected: bool,
    /// Whether the pool gives it lines (round-robin).
    pub in_pool: bool,
    /// Lines waiting.
    pub queued: usize,
}

/// A consumer group feeding a pool.
struct Running {
    pool: Arc<Pool>,
    consumers: JoinHandle<()>,
}

impl Running {
    fn stop(self) {
        self.pool.shut_down();
        let _ = self.consumers.join();
    }
}

/// A running Graphite sink.
pub struct Graphite {
    name: String,
    config: GraphiteConfig,
    template: Template,
    route: Route,
    source: Source,
    dead_letter_dir: PathBuf,
    state_file: PathBuf,
    /// Broadcast: one per destination address; round-robin: one, keyed "".
    running: Mutex<BTreeMap<String, Running>>,
}

#[derive(Serialize, Deserialize)]
struct Persisted {
    destinations: Vec<String>,
}

impl Graphite {
    /// Starts the sink `name` reading `source` (its group is the sink's).
    pub fn start(
        name: &str,
        config: &GraphiteConfig,
        route: Route,
        source: Source,
        dead_letter_dir: &Path,
        state_dir: &Path,
    ) -> Result<Arc<Graphite>, StorageError> {
        let template = Template::parse(&config.template).map_err(|detail| StorageError::Sink {
            sink: name.to_owned(),
            detail,
        })?;
        let state_file = state_dir.join(format!("{name}.destinations.json"));
        let mut config = config.clone();
        if let Ok(bytes) = std::fs::read(&state_file) {
            let persisted: Persisted =
                serde_json::from_slice(&bytes).map_err(|e| StorageError::Metadata {
                    group: state_file.display().to_string(),
                    detail: e.to_string(),
                })?;
            tracing::info!(sink = name, destinations = ?persisted.destinations, "destinations as last changed through the admin API");
            config.destinations = persisted.destinations;
        }
        let graphite = Arc::new(Graphite {
            name: name.to_owned(),
            template,
            route,
            source,
            dead_letter_dir: dead_letter_dir.to_path_buf(),
            state_file,
            running: Mutex::new(BTreeMap::new()),
            config: config.clone(),
        });
        let mut running = lock(&graphite.running);
        match config.distribution {
            Distribution::RoundRobin | Distribution::ConsistentHash => {
                let run = graphite.run_pool(graphite.source.clone(), &config.destinations)?;
                running.insert(String::new(), run);
            }
            Distribution::Broadcast => {
                for address in &config.destinations {
                    let run = graphite.run_pool(
                        graphite.broadcast_source(address),
                        std::slice::from_ref(address),
                    )?;
                    running.insert(address.clone(), run);
                }
            }
        }
        drop(running);
        Ok(graphite)
    }

    fn broadcast_source(&self, address: &str) -> Source {
        let mut source = self.source.clone();
        let safe: String = address
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        source.group = format!("{}.{safe}", self.source.group);
        source
    }

    fn run_pool(&self, source: Source, addresses: &[String]) -> Result<Running, StorageError> {
        let writing = Writing {
            queue_cap: self.config.queue_cap.max(1),
            max_failures: self.config.max_failures.max(1),
            backoff: Backoff::new(
                Duration::from_millis(self.config.backoff_ms),
                Duration::from_secs(10),
            ),
            connect_timeout: Duration::from_millis(self.config.connect_timeout_ms.max(1)),
        };
        let spread = match self.config.distribution {
            Distribution::Broadcast => Spread::Single,
            Distribution::RoundRobin => Spread::RoundRobin,
            Distribution::ConsistentHash => Spread::Hash {
                hash: self.config.hash,
                replication: self.config.replication_factor.max(1),
                diverse: self.config.diverse_replicas,
            },
        };
        let pool = Pool::new(&self.name, spread, writing);
        for address in addresses {
            pool.add(address)?;
        }
        let (name, route, template, letters, writers) = (
            self.name.clone(),
            self.route.clone(),
            self.template.clone(),
            self.dead_letter_dir.clone(),
            pool.clone(),
        );
        let consumers = spawn_consumers(
            &source,
            move |partition| {
                Routed::new(
                    &name,
                    route.clone(),
                    DeadLetters::new(&letters, &name, partition),
                    Box::new(PartitionWriter {
                        sink: name.clone(),
                        pool: writers.clone(),
                        template: template.clone(),
                        pending: Arc::default(),
                    }),
                )
            },
            pool.stop.clone(),
        )?;
        Ok(Running { pool, consumers })
    }

    /// The sink's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The destinations and how they are doing, by address.
    pub fn destinations(&self) -> Vec<DestinationStatus> {
        let mut destinations = lock(&self.running)
            .values()
            .flat_map(|run| {
                lock(&run.pool.destinations)
                    .iter()
                    .map(|d| DestinationStatus {
                        address: d.address.clone(),
                        connected: d.connected.load(Ordering::Relaxed),
                        in_pool: d.in_pool.load(Ordering::Relaxed),
                        queued: d.queued(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>();
        destinations.sort_by(|a, b| a.address.cmp(&b.address));
        destinations
    }

    fn addresses(running: &BTreeMap<String, Running>) -> Vec<String> {
        running
            .values()
            .flat_map(|run| {
                lock(&run.pool.destinations)
                    .iter()
                    .map(|d| d.address.clone())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Adds a destination (false if it is there already). In broadcast it
    /// starts at the end of the results log: it gets what comes from now on.
    pub fn add(&self, address: &str) -> Result<bool, StorageError> {
        let spec = ring::Destination::parse(address).map_err(StorageError::Rejected)?;
        if spec.address().to_socket_addrs().is_err() {
            return Err(StorageError::Rejected(format!(
                "{address:?} is not a HOST:PORT[:INSTANCE] address"
            )));
        }
        let mut running = lock(&self.running);
        let addresses = Self::addresses(&running);
        if addresses.iter().any(|a| a == address) {
            return Ok(false);
        }
        if addresses.len() >= self.config.max_destinations {
            return Err(StorageError::Rejected(format!(
                "sink {} has {} destinations, the most max_destinations allows",
                self.name,
                addresses.len()
            )));
        }
        match self.config.distribution {
            Distribution::RoundRobin | Distribution::ConsistentHash => {
                if let Some(run) = running.get(&String::new()) {
                    run.pool.add(address)?;
                }
            }
            Distribution::Broadcast => {
                let source = self.broadcast_source(address);
                start_at_end(&source)?;
                let run = self.run_pool(source, &[address.to_owned()])?;
                running.insert(address.to_owned(), run);
            }
        }
        tracing::info!(sink = %self.name, destination = address, "destination added");
        self.persist(&running)?;
        Ok(true)
    }

    /// Removes a destination (false if it is not there).
    pub fn remove(&self, address: &str) -> Result<bool, StorageError> {
        let mut running = lock(&self.running);
        let removed = match self.config.distribution {
            Distribution::RoundRobin | Distribution::ConsistentHash => running
                .get(&String::new())
                .is_some_and(|run| run.pool.remove(address)),
            Distribution::Broadcast => match running.remove(address) {
                Some(run) => {
                    run.pool.remove(address);
                    run.stop();
                    true
                }
                None => false,
            },
        };
        if removed {
            tracing::info!(sink = %self.name, destination = address, "destination removed");
            self.persist(&running)?;
        }
        Ok(removed)
    }

    fn persist(&self, running: &BTreeMap<String, Running>) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec_pretty(&Persisted {
            destinations: Self::addresses(running),
        })
        .unwrap_or_default();
        let io = |what| {
            let path = self.state_file.clone();
            move |source| StorageError::Io { what, path, source }
        };
        if let Some(dir) = self.state_file.parent() {
            std::fs::create_dir_all(dir).map_err(io("create"))?;
        }
        let temporary = self.state_file.with_extension("json.tmp");
        std::fs::write(&temporary, bytes).map_err(io("write"))?;
        std::fs::rename(&temporary, &self.state_file).map_err(io("rename"))
    }

    /// Stops every consumer and writer.
    pub fn stop(&self) {
        let running = std::mem::take(&mut *lock(&self.running));
        for run in running.into_values() {
            run.stop();
        }
    }
}
