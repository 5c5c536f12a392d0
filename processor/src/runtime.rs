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
            checkpoint_every: 50_000,
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

/// The text a panic carried, when it carried one.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

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

/// A running processor: its group membership and partition workers.
pub struct Running {
    membership: Box<dyn Membership>,
    workers: Arc<Workers>,
}

impl Running {
    /// Leaves the group: every worker checkpoints and stops. Returns the
    /// errors workers stopped with.
    pub fn stop(self) -> Vec<ProcessorError> {
        self.membership.leave();
        std::mem::take(&mut *lock(&self.workers.failures))
    }

    /// The partitions this processor owns now.
    pub fn owned(&self) -> Vec<u32> {
        lock(&self.workers.running).keys().copied().collect()
    }

    /// A live view of the owned partitions' checkpoints.
    pub fn status(&self) -> Status {
        self.workers.progress.clone()
    }
}

/// The processor's side of the admin API: the last checkpoint of each
/// owned partition, and reactor versions whose kept state is to be dropped.
#[derive(Clone, Default)]
pub struct Status {
    partitions: Arc<Mutex<BTreeMap<u32, PartitionStatus>>>,
    forget: Arc<Mutex<BTreeSet<String>>>,
    indexes: Arc<Mutex<BTreeMap<u32, SharedIndex>>>,
}

impl Status {
    /// A copy of every owned partition's status.
    pub fn partitions(&self) -> BTreeMap<u32, PartitionStatus> {
        lock(&self.partitions).clone()
    }

    /// Drops the kept state of retired version `identity` (`name@version`)
    /// from every partition at its next checkpoint.
    pub fn forget(&self, identity: String) {
        lock(&self.forget).insert(identity);
    }

    /// The index entries of every owned partition that `keep` accepts,
    /// at most `limit`, sorted by uid, host and service.
    pub fn index(
        &self,
        keep: impl Fn(&weir_event::Event) -> bool,
        limit: usize,
    ) -> Vec<IndexEntry> {
        let indexes: Vec<SharedIndex> = lock(&self.indexes).values().cloned().collect();
        let mut found: Vec<IndexEntry> = indexes
            .iter()
            .flat_map(|index| index::lock(index).query(&keep, limit))
            .collect();
        found.sort_by(|a, b| {
            (&a.uid, &a.event.host, &a.event.service).cmp(&(
                &b.uid,
                &b.event.host,
                &b.event.service,
            ))
        });
        found.truncate(limit);
        found
    }
}

/// What `weir state` shows of one partition.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PartitionStatus {
    /// The next input offset, as checkpointed.
    pub offset: u64,
    /// When the checkpoint was written, milliseconds since the epoch.
    pub saved_at_ms: u64,
    /// Bytes of state per reactor (`name@version`) in the checkpoint.
    pub reactor_bytes: BTreeMap<String, usize>,
    /// Entries behind the end of the partition when last measured.
    pub lag: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// One partition's worker thread and its stop flag.
struct Worker {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<(), ProcessorError>>,
}

/// The [`Owner`] of the processor's partitions.
struct Workers {
    processor: Processor,
    running: Mutex<BTreeMap<u32, Worker>>,
    /// Per owned partition: its last checkpoint (the progress reported).
    progress: Status,
    /// Errors of workers that stopped for good (a reactor that does not build).
    failures: Mutex<Vec<ProcessorError>>,
}

impl Owner for Workers {
    fn assigned(&self, partitions: &[u32]) {
        let mut running = lock(&self.running);
        for &partition in partitions {
            if running.contains_key(&partition) {
                continue;
            }
            let stop = Arc::new(AtomicBool::new(false));
            let (processor, flag, progress) =
                (self.processor.clone(), stop.clone(), self.progress.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("weir-processor-{partition}"))
                .spawn(move || processor.supervise(partition, &flag, &progress));
            match spawned {
                Ok(thread) => {
                    OWNED.with_label_values(&[&partition.to_string()]).set(1);
                    running.insert(partition, Worker { stop, thread });
                    OWNED_COUNT.set(running.len() as i64);
                }
                Err(error) => {
                    tracing::error!(partition, %error, "cannot start a partition worker")
                }
            }
        }
    }

    fn revoked(&self, partitions: &[u32]) -> Vec<(u32, u64)> {
        let stopping: Vec<(u32, Worker)> = {
            let mut running = lock(&self.running);
            partitions
                .iter()
                .filter_map(|p| running.remove(p).map(|w| (*p, w)))
                .collect()
        };
        for (_, worker) in &stopping {
            worker.stop.store(true, Ordering::Relaxed);
        }
        let mut last = Vec::new();
        for (partition, worker) in stopping {
            match worker.thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::error!(partition, %error, "partition worker stopped");
                    lock(&self.failures).push(error);
                }
                Err(_) => tracing::error!(partition, "partition worker panicked"),
            }
            OWNED.with_label_values(&[&partition.to_string()]).set(0);
            // No longer ours: its failures are the next owner's to report.
            weir_log::health::working(&health_name(partition));
            OWNED_COUNT.set(lock(&self.running).len() as i64);
            lock(&self.progress.indexes).remove(&partition);
            if let Some(status) = lock(&self.progress.partitions).remove(&partition) {
                last.push((partition, status.offset));
            }
        }
        last
    }

    fn progress(&self) -> Vec<(u32, u64)> {
        lock(&self.progress.partitions)
            .iter()
            .map(|(p, status)| (*p, status.offset))
            .collect()
    }
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

    /// Runs a partition until `stop`; a failure (log or checkpoint I/O)
    /// restarts it from its last checkpoint after a backoff, so a transient
    /// error never leaves a partition unprocessed. A reactor that does not
    /// build is final.
    fn supervise(
        &self,
        partition: u32,
        stop: &AtomicBool,
        progress: &Status,
    ) -> Result<(), ProcessorError> {
        let mut backoff = weir_log::backoff::Backoff::restart();
        loop {
            // A panic (a bug in a stage, an invariant broken by input) is
            // a failure like an I/O error: the partition restarts from its
            // checkpoint instead of going unprocessed.
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.run_partition(partition, stop, progress)
            }))
            .unwrap_or_else(|panic| Err(ProcessorError::Panic(panic_message(&*panic))));
            match run {
                Ok(()) => return Ok(()),
                Err(error @ ProcessorError::Reactor(_)) => return Err(error),
                Err(error) if stop.load(Ordering::Relaxed) => return Err(error),
                Err(error) => {
                    weir_log::health::failing(&health_name(partition), &error);
                    crate::metrics::WORKER_RESTARTS.inc();
                    let wait = backoff.failed();
                    tracing::error!(partition, %error, retry_in = ?wait, "processor worker failed; restarting from its checkpoint");
                    std::thread::sleep(wait);
                }
            }
        }
    }

    /// The newest checkpoint of `partition`: the local one or, when
    /// checkpoints are shared, the one in the log if that is further on.
    fn newest_checkpoint(&self, partition: u32) -> Result<Option<Checkpoint>, ProcessorError> {
        let group = &self.topics.reactors_group;
        let local = self.store.load(group, partition)?;
        if !self.share_checkpoints {
            return Ok(local);
        }
        let shared = self.shared().load(group, partition)?;
        // Further on: a later offset, or at the same offset a catch-up
        // that got further (or finished).
        let rank = |c: &Checkpoint| (c.offset, c.catch_up.as_ref().map_or(u64::MAX, |c| c.next));
        Ok(match (local, shared) {
            (Some(local), Some(shared)) if rank(&shared) > rank(&local) => Some(shared),
            (Some(local), _) => Some(local),
            (None, shared) => shared,
        })
    }

    fn shared(&self) -> SharedCheckpoints<'_> {
        SharedCheckpoints {
            log: &*self.log,
            topic: &self.topics.checkpoints,
            max_record_bytes: self.log.guarantees().max_record_bytes,
        }
    }

    /// The next batch of `partition` from `next`, waiting up to `wait` at the end.
    fn read_events(
        &self,
        partition: u32,
        next: u64,
        wait: Duration,
    ) -> Result<Vec<Record>, LogError> {
        self.log.read(
            &self.topics.events,
            partition,
            next,
            self.config.read_max_bytes,
            wait,
        )
    }

    fn build(&self, only: Option<&[String]>) -> Result<Vec<Reactor>, ProcessorError> {
        Ok(self
            .reactors
            .iter()
            .filter(|r| only.is_none_or(|names| names.contains(&r.name)))
            .map(Reactor::build)
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// The engine and next offset of `partition` from its newest
    /// checkpoint. Reactors the checkpoint does not know (added, or their
    /// pipeline changed) are left out of the engine and returned as a
    /// [`Lane`] that catches them up over the partition's history.
    fn restore(&self, partition: u32) -> Result<Restored<'_>, ProcessorError> {
        let lateness = self.config.lateness_secs;
        let all = || -> Result<Engine, ProcessorError> {
            Ok(Engine::new(partition, self.build(None)?, lateness))
        };
        let Some(mut checkpoint) = self.newest_checkpoint(partition)? else {
            return Ok((all()?, 0, None, None));
        };
        let index = checkpoint
            .state
            .as_object_mut()
            .and_then(|state| state.remove(INDEX_KEY))
            .and_then(|saved| serde_json::from_value::<SavedIndex>(saved).ok());
        // The reactors whose state the checkpoint holds run live from it;
        // the others (added, or their pipeline changed) catch up in a lane.
        let (known, fresh): (Vec<Reactor>, Vec<Reactor>) = self
            .build(None)?
            .into_iter()
            .partition(|r| Engine::saved(&checkpoint.state, &r.identity()));
        let fresh: Vec<String> = fresh.iter().map(|r| r.name().to_owned()).collect();
        let mut engine = Engine::new(partition, known, lateness);
        if let Err(error) = engine.load(checkpoint.state) {
            tracing::warn!(partition, %error, "checkpoint does not fit the reactors; rebuilding state from the log");
            crate::metrics::RESTORE_FAILURES.inc();
            return Ok((all()?, 0, None, None));
        }
        tracing::info!(partition, offset = checkpoint.offset, "restored checkpoint");
        if fresh.is_empty() {
            return Ok((engine, checkpoint.offset, None, index));
        }
        let lane = Lane::start(self, partition, fresh, checkpoint.catch_up)?;
        Ok((engine, checkpoint.offset, Some(lane), index))
    }

    /// Joins a lane that reached the live position into the live engine.
    fn merge(&self, partition: u32, live: &Engine, lane: Lane) -> Result<Engine, ProcessorError> {
        let mut state = live.save();
        if let (Some(all), Some(Value::Object(new))) = (
            state.get_mut("reactors").and_then(Value::as_object_mut),
            lane.engine.save().get_mut("reactors").map(Value::take),
        ) {
            all.extend(new);
        }
        let mut engine = Engine::new(partition, self.build(None)?, self.config.lateness_secs);
        let missing = engine.load(state)?;
        if !missing.is_empty() {
            return Err(
                StateError(format!("reactors {missing:?} missing after their catch-up")).into(),
            );
        }
        let entries = lane.next - lane.from;
        let secs = lane.started.elapsed().as_secs_f64();
        tracing::info!(partition, reactors = ?lane.names, at = lane.next, entries, secs, entries_per_sec = (entries as f64 / secs.max(1e-9)) as u64, "caught up");
        lane.lag.set(0);
        Ok(engine)
    }

    fn checkpoint(
        &self,
        partition: u32,
        engine: &mut Engine,
        index: &SharedIndex,
        next: u64,
        lane: Option<&Lane>,
        progress: &Status,
    ) -> Result<(), ProcessorError> {
        let started = Instant::now();
        for identity in lock(&progress.forget).iter() {
            if engine.forget(identity) {
                tracing::info!(
                    partition,
                    identity,
                    "dropped the kept state of a retired reactor version"
                );
            }
        }
        let mut state = engine.save();
        if let Some(state) = state.as_object_mut() {
            let saved = index::lock(index).save();
            state.insert(INDEX_KEY.into(), saved);
        }
        let checkpoint = Checkpoint {
            offset: next,
            state,
            catch_up: lane.map(|lane| CatchUp {
                reactors: lane.names.clone(),
                next: lane.next,
                state: lane.engine.save(),
            }),
        };
        let group = &self.topics.reactors_group;
        let size = self.store.save(group, partition, &checkpoint)?;
        if self.share_checkpoints {
            self.shared().save(group, partition, &checkpoint)?;
        }
        // Progress is reported only once the state it reflects is durable.
        let status = PartitionStatus {
            offset: next,
            saved_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            reactor_bytes: checkpoint
                .state
                .get("reactors")
                .and_then(Value::as_object)
                .map(|reactors| {
                    reactors
                        .iter()
                        .map(|(id, state)| (id.clone(), state.to_string().len()))
                        .collect()
                })
                .unwrap_or_default(),
            lag: lock(&progress.partitions)
                .get(&partition)
                .map_or(0, |s| s.lag),
        };
        lock(&progress.partitions).insert(partition, status);
        CHECKPOINT_SECONDS.observe(started.elapsed().as_secs_f64());
        CHECKPOINT_BYTES
            .with_label_values(&[&partition.to_string()])
            .set(size as i64);
        Ok(())
    }

    fn run_partition(
        &self,
        partition: u32,
        stop: &AtomicBool,
        progress: &Status,
    ) -> Result<(), ProcessorError> {
        let restoring = Instant::now();
        let (mut engine, mut next, mut lane, saved_index) = self.restore(partition)?;
        RESTORE_SECONDS.observe(restoring.elapsed().as_secs_f64());
        let index: SharedIndex = Arc::new(Mutex::new(PartitionIndex::new(
            self.config.index_ttl_secs,
            self.config.index_max_entries,
        )));
        if let Some(saved) = saved_index {
            index::lock(&index).restore(saved);
        }
        lock(&progress.indexes).insert(partition, index.clone());
        // Checkpoint at once: the group sees the partition's position.
        self.checkpoint(
            partition,
            &mut engine,
            &index,
            next,
            lane.as_ref(),
            progress,
        )?;
        let label = partition.to_string();
        let events = EVENTS.with_label_values(&[&label]);
        let lag = LAG.with_label_values(&[&label]);
        let mut output = Output::new(self, partition, true)?;
        if self.config.index_max_entries > 0 {
            output.index = Some(index.clone());
        }
        let mut since_checkpoint = 0u64;
        let mut last_checkpoint = Instant::now();
        let interval = Duration::from_millis(self.config.checkpoint_interval_ms);
        let mut lag_measured = Instant::now() - interval;
        while !stop.load(Ordering::Relaxed) {
            // While a lane catches up, live reads do not wait for events.
            let wait = if lane.is_some() {
                Duration::ZERO
            } else {
                READ_WAIT
            };
            let batch = self.read_events(partition, next, wait)?;
            next = output.process(&mut engine, &batch, next)?;
            events.inc_by(batch.len() as u64);
            since_checkpoint += batch.len() as u64;
            if let Some(running) = &mut lane {
                let from = running.next;
                let reached = running.advance(self, partition, next)?;
                since_checkpoint += running.next.saturating_sub(from);
                if reached {
                    if let Some(done) = lane.take() {
                        engine = self.merge(partition, &engine, done)?;
                    }
                    // The joined state is checkpointed at once.
                    since_checkpoint = since_checkpoint.max(self.config.checkpoint_every);
                }
            }
            if since_checkpoint > 0
                && (since_checkpoint >= self.config.checkpoint_every
                    || last_checkpoint.elapsed() >= interval)
            {
                self.checkpoint(
                    partition,
                    &mut engine,
                    &index,
                    next,
                    lane.as_ref(),
                    progress,
                )?;
                // Progress past a restart: whatever failed works again.
                weir_log::health::working(&health_name(partition));
                since_checkpoint = 0;
                last_checkpoint = Instant::now();
            }
            if lag_measured.elapsed() >= interval {
                let (_, end) = self.log.offsets(&self.topics.events, partition)?;
                let behind = end.saturating_sub(next);
                lag.set(behind as i64);
                if let Some(status) = lock(&progress.partitions).get_mut(&partition) {
                    status.lag = behind;
                }
                lag_measured = Instant::now();
            }
        }
        if since_checkpoint > 0 {
            self.checkpoint(
                partition,
                &mut engine,
                &index,
                next,
                lane.as_ref(),
                progress,
            )?;
        }
        if let Some(lane) = lane {
            lane.lag.set(0);
        }
        Ok(())
    }
}

/// A restored partition: its engine, next offset, catch-up lane and index.
type Restored<'a> = (Engine, u64, Option<Lane<'a>>, Option<SavedIndex>);

/// The key of the partition's index in its checkpointed state.
const INDEX_KEY: &str = "index";

/// How long a read waits at the end of a partition for new entries.
const READ_WAIT: Duration = Duration::from_millis(100);

/// History batches a catch-up lane processes per live batch: the lane
/// gets most of a worker's time while live events keep flowing.
const LANE_BATCHES_PER_ROUND: usize = 4;

/// New reactors running over a partition's history beside the live
/// engine, until they reach its position and join it. Live processing
/// of the other reactors goes on meanwhile (their alerts are not held up
/// by a long catch-up, and the group sees the partition advance), and
/// the lane's progress is part of every checkpoint, so a rebalance or a
/// crash resumes the catch-up where it was instead of starting it over.
struct Lane<'a> {
    /// The reactors catching up, sorted.
    names: Vec<String>,
    engine: Engine,
    /// The next history offset to process.
    next: u64,
    output: Output<'a>,
    /// `weir_processor_catch_up_lag` of the partition.
    lag: prometheus::IntGauge,
    /// Where this run of the catch-up started, and when.
    from: u64,
    started: Instant,
    /// When progress was last logged.
    reported: Instant,
}

impl<'a> Lane<'a> {
    /// A lane for the reactors `names` of `partition`: from `saved` when
    /// it is this lane's progress, else from the earliest retained entry.
    fn start(
        processor: &'a Processor,
        partition: u32,
        mut names: Vec<String>,
        saved: Option<CatchUp>,
    ) -> Result<Lane<'a>, ProcessorError> {
        names.sort();
        let fresh = || -> Result<Engine, ProcessorError> {
            Ok(Engine::new(
                partition,
                processor.build(Some(&names))?,
                processor.config.lateness_secs,
            ))
        };
        let mut engine = fresh()?;
        let (earliest, _) = processor.log.offsets(&processor.topics.events, partition)?;
        let mut resumed = None;
        if let Some(saved) = saved.filter(|saved| saved.reactors == names) {
            match engine.load(saved.state) {
                Ok(missing) if missing.is_empty() => resumed = Some(saved.next.max(earliest)),
                _ => {
                    tracing::warn!(partition, reactors = ?names, "saved catch-up progress does not fit; starting the catch-up over");
                    engine = fresh()?;
                }
            }
        }
        let next = resumed.unwrap_or(earliest);
        match resumed {
            Some(from) => {
                tracing::info!(partition, reactors = ?names, from, earliest, "resuming catch-up")
            }
            None => {
                tracing::info!(partition, reactors = ?names, from = next, "catching new reactors up over the partition's history")
            }
        }
        Ok(Lane {
            names,
            engine,
            next,
            output: Output::new(processor, partition, false)?,
            lag: CATCH_UP_LAG.with_label_values(&[&partition.to_string()]),
            from: next,
            started: Instant::now(),
            reported: Instant::now(),
        })
    }

    /// Processes a few history batches below `until` (the live engine's
    /// next offset), appending their results with the ids live processing
    /// would have given them; true once the lane reached `until`.
    fn advance(
        &mut self,
        processor: &Processor,
        partition: u32,
        until: u64,
    ) -> Result<bool, ProcessorError> {
        for _ in 0..LANE_BATCHES_PER_ROUND {
            if self.next >= until {
                break;
            }
            let mut batch = processor.read_events(partition, self.next, READ_WAIT)?;
            let beyond = batch.last().is_some_and(|r| r.offset >= until);
            batch.retain(|r| r.offset < until);
            self.next = self.output.process(&mut self.engine, &batch, self.next)?;
            if beyond {
                self.next = until;
            }
            if batch.is_empty() && !beyond {
                break;
            }
        }
        let left = until.saturating_sub(self.next);
        self.lag.set(left as i64);
        if self.reported.elapsed() >= Duration::from_secs(5) {
            let rate = (self.next - self.from) as f64 / self.started.elapsed().as_secs_f64();
            tracing::info!(
                partition,
                reactors = ?self.names,
                done = self.next - self.from,
                left,
                entries_per_sec = rate as u64,
                eta_secs = (left as f64 / rate.max(1.0)) as u64,
                "catching up"
            );
            self.reported = Instant::now();
        }
        Ok(self.next >= until)
    }
}

/// The part of the history a replay covers, by append time.
#[derive(Debug, Clone, Default)]
pub struct ReplayWindow {
    /// Skip entries appended before this (ms since the epoch).
    pub from_ms: Option<u64>,
    /// Stop at the first entry appended after this.
    pub to_ms: Option<u64>,
    /// After the history, go on with new entries until stopped.
    pub follow: bool,
}

/// One partition's replay progress, read by the caller's display.
#[derive(Debug, Default)]
pub struct ReplayProgress {
    /// Entries consumed since the replay (re)started.
    pub done: AtomicU64,
    /// Entries to consume: up to the end of the partition as last seen.
    pub total: AtomicU64,
    /// Results appended.
    pub results: AtomicU64,
}

impl Processor {
    /// Replays this processor's reactors over `partition` as consumer
    /// group `group`, alone: from the group's checkpoint if it has one,
    /// else from the earliest entry, to the end of the partition (or
    /// `window.to_ms`), and on live with `window.follow`, until `stop`.
    /// Results get the ids live processing gives them, so a replay from
    /// the earliest entry reproduces the live results exactly.
    pub fn replay_partition(
        &self,
        partition: u32,
        group: &str,
        window: &ReplayWindow,
        stop: &AtomicBool,
        progress: &ReplayProgress,
    ) -> Result<(), ProcessorError> {
        let mut engine = Engine::new(partition, self.build(None)?, self.config.lateness_secs);
        let (earliest, mut end) = self.log.offsets(&self.topics.events, partition)?;
        let mut next = earliest;
        if let Some(checkpoint) = self.store.load(group, partition)? {
            match engine.load(checkpoint.state) {
                Ok(_) => next = checkpoint.offset,
                Err(error) => {
                    tracing::warn!(partition, %error, "replay checkpoint does not fit; starting over");
                    engine = Engine::new(partition, self.build(None)?, self.config.lateness_secs);
                }
            }
        }
        let start = next;
        let mut output = Output::new(self, partition, false)?;
        let interval = Duration::from_millis(self.config.checkpoint_interval_ms);
        let mut last_checkpoint = Instant::now();
        let save = |engine: &Engine, next: u64| {
            let checkpoint = Checkpoint {
                offset: next,
                state: engine.save(),
                catch_up: None,
            };
            self.store.save(group, partition, &checkpoint)
        };
        loop {
            progress
                .total
                .store(end.saturating_sub(start), Ordering::Relaxed);
            progress.done.store(next - start, Ordering::Relaxed);
            progress.results.store(output.appended, Ordering::Relaxed);
            if stop.load(Ordering::Relaxed) || (next >= end && !window.follow) {
                break;
            }
            let batch = self.read_events(partition, next, READ_WAIT)?;
            let past_to = batch
                .iter()
                .position(|r| window.to_ms.is_some_and(|to| r.timestamp_ms > to));
            let batch = &batch[..past_to.unwrap_or(batch.len())];
            let first = batch
                .iter()
                .position(|r| window.from_ms.is_none_or(|from| r.timestamp_ms >= from))
                .unwrap_or(batch.len());
            if let Some(last) = batch.last() {
                next = output.process(&mut engine, &batch[first..], last.offset + 1)?;
            }
            if past_to.is_some() {
                break;
            }
            if last_checkpoint.elapsed() >= interval {
                save(&engine, next)?;
                last_checkpoint = Instant::now();
            }
            if next >= end {
                end = end.max(self.log.offsets(&self.topics.events, partition)?.1);
            }
        }
        save(&engine, next)?;
        progress.results.store(output.appended, Ordering::Relaxed);
        Ok(())
    }
}

/// Where a partition's results go, with buffers reused across batches.
struct Output<'a> {
    processor: &'a Processor,
    /// The live worker's output hands applications over; a catch-up lane
    /// or a replay only runs the hand-offs through its own state.
    live: bool,
    partition: u32,
    results_partition: u32,
    results: Vec<ResultRecord>,
    encoded: Vec<weir_log::OwnedProduce>,
    /// Results appended so far.
    appended: u64,
    /// The partition's index (live worker only).
    index: Option<SharedIndex>,
}

impl<'a> Output<'a> {
    fn new(
        processor: &'a Processor,
        partition: u32,
        live: bool,
    ) -> Result<Output<'a>, ProcessorError> {
        let results_partitions = processor.log.partitions(&processor.topics.results)?;
        Ok(Output {
            processor,
            live,
            partition,
            results_partition: partition % results_partitions,
            results: Vec::new(),
            encoded: Vec::new(),
            appended: 0,
            index: None,
        })
    }

    /// Runs `engine` over `batch` and appends what it emits to the same
    /// partition of the results topic; returns the next offset to read.
    fn process(
        &mut self,
        engine: &mut Engine,
        batch: &[Record],
        mut next: u64,
    ) -> Result<u64, ProcessorError> {
        let max_future = self.processor.config.max_future_secs;
        let mut index = self.index.as_ref().map(index::lock);
        let raw = self.live && live::wants_events();
        for record in batch {
            match engine.entry_of(record, max_future) {
                Ok(entry) => {
                    match &entry {
                        Entry::Event(event) => {
                            let uid = String::from_utf8_lossy(&record.key);
                            if let Some(index) = index.as_mut() {
                                index.update(&uid, event);
                            }
                            if raw {
                                live::publish_event(&uid, event);
                            }
                        }
                        Entry::Decommission(gone) => {
                            if let Some(index) = index.as_mut() {
                                index.remove_host(&gone.host);
                            }
                        }
                        _ => {}
                    }
                    engine.process(record.offset, entry, &mut self.results);
                }
                Err(error) => {
                    UNDECODABLE.inc();
                    weir_log::drops::dropped("processor", "undecodable", 1, || {
                        format!(
                            "partition {} offset {}: {error}",
                            self.partition, record.offset
                        )
                    });
                    tracing::warn!(partition = self.partition, offset = record.offset, %error, "skipping undecodable record");
                }
            }
            next = record.offset + 1;
        }
        if let Some(index) = index.as_mut() {
            index.advance(engine.clock());
        }
        drop(index);
        if !self.results.is_empty() {
            self.encoded.clear();
            let live = self.live && live::listening();
            self.encoded.extend(self.results.drain(..).map(|r| {
                let value = r.encode();
                if live {
                    live::publish_result(&r, &value);
                }
                (r.event.host.into_bytes(), value)
            }));
            let topics = &self.processor.topics;
            self.processor.log.append(
                &topics.results,
                self.results_partition,
                &weir_log::borrowed(&self.encoded),
            )?;
            self.appended += self.encoded.len() as u64;
        }
        for handover in engine.take_handovers() {
            if self.live {
                self.hand_over(&handover)?;
            }
        }
        Ok(next)
    }

    /// Appends an application's moved state to its new partition, then the
    /// registry record that completes the move (the routers release its
    /// events). Repeated after a crash, both are taken once: the new
    /// partition ignores a move id it has seen, the registry a completion
    /// of a move that is not under way.
    fn hand_over(&self, handover: &Handover) -> Result<(), ProcessorError> {
        let topics = &self.processor.topics;
        let log = &self.processor.log;
        let handoff = &handover.handoff;
        if let Some(moved) = &handover.moved {
            let value = Entry::Moved(moved.clone()).encode();
            log.append(
                &topics.events,
                handoff.to,
                &[(handoff.uid.as_bytes(), &value[..])],
            )?;
            crate::metrics::HANDOFFS.inc();
        }
        let (key, value) = handoff.completion();
        log.append(&topics.registry, 0, &[(&key[..], &value[..])])?;
        Ok(())
    }
}
