//! The processor runtime: a member of the reactors' consumer group that
//! runs one worker thread per partition of `weir.events` it owns, each
//! running an [`Engine`] over its partition in log order and appending
//! results to the same partition of `weir.results`.
//!
//! Order of effects per batch: results are appended first, then every N
//! entries or T ms the state and next offset are checkpointed to sled (and,
//! on Kafka, to `weir.checkpoints` so another processor can take the
//! partition over), and only then is the progress reported to the group.
//! A partition's state is restored when it is assigned and checkpointed
//! when it is revoked. After a crash a worker resumes from its checkpoint
//! and reproduces the same results with the same ids, which downstream
//! consumers drop.
//!
//! By job: [`group`] is the processor's membership in the reactors' group
//! (which partitions it owns, their workers and status); [`partition`]
//! runs one partition (restore, process, checkpoint, supervision);
//! [`lane`] catches new reactors up beside it; [`replay`] re-runs the
//! history; [`output`] appends results and hands applications over.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use weir_event::{Entry, ResultRecord};
use weir_log::{Log, LogError, Membership, Owner, Record, Topics};

use crate::checkpoint::{CatchUp, Checkpoint, CheckpointError, CheckpointStore, SharedCheckpoints};
use crate::index::{self, IndexEntry, PartitionIndex, SavedIndex, SharedIndex};
use crate::live;
use crate::metrics::{
    CATCH_UP_LAG, CHECKPOINT_BYTES, CHECKPOINT_SECONDS, EVENTS, LAG, OWNED, OWNED_COUNT,
    RESTORE_SECONDS, UNDECODABLE,
};
use crate::reactor::{Engine, Handover, Reactor, ReactorConfig, ReactorError};
use crate::stage::StateError;

mod group;
mod lane;
mod output;
mod partition;
mod replay;

use group::Workers;
pub use group::{PartitionStatus, Running, Status};
use lane::Lane;
use output::Output;
pub use replay::{ReplayProgress, ReplayWindow};

/// Processor settings (`[processor]` in the config).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessorConfig {
    /// Checkpoint after this many entries…
    pub checkpoint_every: u64,
    /// …or after this long, whichever comes first.
    pub checkpoint_interval_ms: u64,
    /// Events older than the partition clock minus this are counted late.
    pub lateness_secs: f64,
    /// Bytes read from the log per batch.
    pub read_max_bytes: usize,
    /// How far ahead of its append time an entry may move the partition
    /// clock (ingest also rejects events stamped further ahead of its
    /// clock): one event from a host whose clock is a year off cannot
    /// stop a partition's timers.
    pub max_future_secs: f64,
    /// The index's ttl for events that carry none.
    pub index_ttl_secs: f64,
    /// Most (host, service) entries a partition's index keeps (0: no index).
    pub index_max_entries: usize,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        ProcessorConfig {
            // The interval governs under load: at 50,000 a busy partition
            // checkpointed ten times a second (5.7 % of throughput,
            // docs/PERFORMANCE.md), at 1,000,000 about once (0.6 %).
            checkpoint_every: 1_000_000,
            checkpoint_interval_ms: 1000,
            lateness_secs: 60.0,
            read_max_bytes: 1 << 20,
            max_future_secs: 300.0,
            index_ttl_secs: 300.0,
            index_max_entries: 100_000,
        }
    }
}

/// Errors that stop a partition worker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessorError {
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The checkpoint store failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A reactor does not build.
    #[error(transparent)]
    Reactor(#[from] ReactorError),
    /// Saved reactor state does not fit the reactors.
    #[error(transparent)]
    State(#[from] StateError),
    /// The worker panicked.
    #[error("partition worker panicked: {0}")]
    Panic(String),
}

/// A partition worker's name in `/readyz`.
fn health_name(partition: u32) -> String {
    format!("processor: partition {partition}")
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long a read waits at the end of a partition for new entries.
const READ_WAIT: Duration = Duration::from_millis(100);

/// Everything a partition worker needs.
#[derive(Clone)]
pub struct Processor {
    /// The log to read events from and append results to.
    pub log: Arc<dyn Log>,
    /// Topic names and the reactors' group.
    pub topics: Topics,
    /// The reactors to run.
    pub reactors: Vec<ReactorConfig>,
    /// Settings.
    pub config: ProcessorConfig,
    /// Where checkpoints live on this machine.
    pub store: CheckpointStore,
    /// Also snapshot to `weir.checkpoints`, for partitions that move
    /// between machines (the Kafka backend).
    pub share_checkpoints: bool,
}

impl Processor {
    /// Validates every reactor, returning all errors at once.
    pub fn check(reactors: &[ReactorConfig]) -> Result<Vec<Reactor>, Vec<ReactorError>> {
        let (ok, errors): (Vec<_>, Vec<_>) =
            reactors.iter().map(Reactor::build).partition(Result::is_ok);
        if errors.is_empty() {
            Ok(ok.into_iter().filter_map(Result::ok).collect())
        } else {
            Err(errors.into_iter().filter_map(Result::err).collect())
        }
    }

    /// Joins the reactors' group; partitions are worked on while assigned.
    pub fn start(&self) -> Result<Running, ProcessorError> {
        let workers = Arc::new(Workers {
            processor: self.clone(),
            running: Mutex::new(BTreeMap::new()),
            progress: Status::default(),
            failures: Mutex::new(Vec::new()),
        });
        let membership = self.log.join(
            &self.topics.reactors_group,
            &self.topics.events,
            workers.clone(),
        )?;
        Ok(Running {
            membership,
            workers,
        })
    }
}
