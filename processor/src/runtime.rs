//! The processor runtime: one worker thread per partition of
//! `weir.events`, each running an [`Engine`] over its partition in log
//! order and appending results to the same partition of `weir.results`.
//!
//! Order of effects per batch: results are appended first, then every N
//! entries or T ms the state and next offset are checkpointed to sled, and
//! only after that the offset is committed to the log's consumer group.
//! After a crash a worker resumes from its checkpoint and reproduces the
//! same results with the same ids, which downstream consumers drop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use weir_event::Entry;
use weir_log::{Committed, Log, LogError, Topics};

use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointStore};
use crate::metrics::{CHECKPOINT_BYTES, CHECKPOINT_SECONDS, EVENTS, LAG, UNDECODABLE};
use crate::reactor::{Engine, Reactor, ReactorConfig, ReactorError};

/// Processor settings (`[processor]` in the config).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessorConfig {
    /// Consumer group name of the reactors.
    pub group: String,
    /// Checkpoint after this many entries…
    pub checkpoint_every: u64,
    /// …or after this long, whichever comes first.
    pub checkpoint_interval_ms: u64,
    /// Events older than the partition clock minus this are counted late.
    pub lateness_secs: f64,
    /// Bytes read from the log per batch.
    pub read_max_bytes: usize,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        ProcessorConfig {
            group: "weir.reactors".into(),
            checkpoint_every: 50_000,
            checkpoint_interval_ms: 1000,
            lateness_secs: 60.0,
            read_max_bytes: 1 << 20,
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
}

/// Everything a partition worker needs.
#[derive(Clone)]
pub struct Processor {
    /// The log to read events from and append results to.
    pub log: Arc<dyn Log>,
    /// Topic names.
    pub topics: Topics,
    /// The reactors to run.
    pub reactors: Vec<ReactorConfig>,
    /// Settings.
    pub config: ProcessorConfig,
    /// Where checkpoints live.
    pub store: CheckpointStore,
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

    /// Starts one worker per partition; they stop when `shutdown` is set.
    pub fn spawn(
        &self,
        shutdown: Arc<AtomicBool>,
    ) -> Result<Vec<JoinHandle<Result<(), ProcessorError>>>, ProcessorError> {
        let partitions = self.log.partitions(&self.topics.events)?;
        (0..partitions)
            .map(|partition| {
                let worker = self.clone();
                let shutdown = shutdown.clone();
                std::thread::Builder::new()
                    .name(format!("weir-processor-{partition}"))
                    .spawn(move || worker.supervise(partition, &shutdown))
                    .map_err(|source| {
                        ProcessorError::Log(LogError::Io {
                            op: "spawn processor thread",
                            path: Default::default(),
                            source,
                        })
                    })
            })
            .collect()
    }

    /// Runs a partition until shutdown; a failure (log or checkpoint I/O)
    /// restarts it from its last checkpoint after a backoff, so a transient
    /// error never leaves a partition unprocessed. A reactor that does not
    /// build is final.
    fn supervise(&self, partition: u32, shutdown: &AtomicBool) -> Result<(), ProcessorError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.run_partition(partition, shutdown) {
                Ok(()) => return Ok(()),
                Err(error @ ProcessorError::Reactor(_)) => return Err(error),
                Err(error) if shutdown.load(Ordering::Relaxed) => return Err(error),
                Err(error) => {
                    crate::metrics::WORKER_RESTARTS.inc();
                    tracing::error!(partition, %error, retry_in = ?backoff, "processor worker failed; restarting from its checkpoint");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    fn restore(&self, partition: u32) -> Result<(Engine, u64), ProcessorError> {
        let reactors = self
            .reactors
            .iter()
            .map(Reactor::build)
            .collect::<Result<Vec<_>, _>>()?;
        let fresh_engine = |reactors| Engine::new(partition, reactors, self.config.lateness_secs);
        let mut engine = fresh_engine(reactors);
        let Some(checkpoint) = self.store.load(&self.config.group, partition)? else {
            return Ok((engine, 0));
        };
        match engine.load(checkpoint.state) {
            Ok(fresh) => {
                if !fresh.is_empty() {
                    tracing::info!(partition, reactors = ?fresh, "new reactor versions start with empty state at the checkpoint");
                }
                tracing::info!(partition, offset = checkpoint.offset, "restored checkpoint");
                Ok((engine, checkpoint.offset))
            }
            Err(error) => {
                tracing::warn!(partition, %error, "checkpoint does not fit the reactors; rebuilding state from the log");
                crate::metrics::RESTORE_FAILURES.inc();
                let reactors = self
                    .reactors
                    .iter()
                    .map(Reactor::build)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((fresh_engine(reactors), 0))
            }
        }
    }

    fn checkpoint(&self, partition: u32, engine: &Engine, next: u64) -> Result<(), ProcessorError> {
        let started = Instant::now();
        let checkpoint = Checkpoint {
            offset: next,
            state: engine.save(),
        };
        let size = self
            .store
            .save(&self.config.group, partition, &checkpoint)?;
        // The offset is committed only once the state it reflects is durable.
        self.log.commit(
            &self.config.group,
            &self.topics.events,
            partition,
            &Committed {
                offset: next,
                metadata: String::new(),
            },
        )?;
        CHECKPOINT_SECONDS.observe(started.elapsed().as_secs_f64());
        CHECKPOINT_BYTES
            .with_label_values(&[&partition.to_string()])
            .set(size as i64);
        Ok(())
    }

    fn run_partition(&self, partition: u32, shutdown: &AtomicBool) -> Result<(), ProcessorError> {
        let (mut engine, mut next) = self.restore(partition)?;
        let label = partition.to_string();
        let events = EVENTS.with_label_values(&[&label]);
        let lag = LAG.with_label_values(&[&label]);
        let results_partitions = self.log.partitions(&self.topics.results)?;
        let results_partition = partition % results_partitions;
        let mut since_checkpoint = 0u64;
        let mut last_checkpoint = Instant::now();
        let interval = Duration::from_millis(self.config.checkpoint_interval_ms);
        let mut results = Vec::new();
        let mut encoded = Vec::new();
        while !shutdown.load(Ordering::Relaxed) {
            let batch = self.log.read(
                &self.topics.events,
                partition,
                next,
                self.config.read_max_bytes,
                Duration::from_millis(100),
            )?;
            for record in &batch {
                match Entry::decode(&record.value) {
                    Ok(entry) => engine.process(record.offset, entry, &mut results),
                    Err(error) => {
                        UNDECODABLE.inc();
                        tracing::warn!(partition, offset = record.offset, %error, "skipping undecodable record");
                    }
                }
                next = record.offset + 1;
            }
            events.inc_by(batch.len() as u64);
            since_checkpoint += batch.len() as u64;
            if !results.is_empty() {
                encoded.clear();
                encoded.extend(results.drain(..).map(|r| {
                    let value = r.encode();
                    (r.event.host.into_bytes(), value)
                }));
                self.log
                    .append(&self.topics.results, results_partition, &encoded)?;
            }
            if since_checkpoint > 0
                && (since_checkpoint >= self.config.checkpoint_every
                    || last_checkpoint.elapsed() >= interval)
            {
                self.checkpoint(partition, &engine, next)?;
                since_checkpoint = 0;
                last_checkpoint = Instant::now();
            }
            let (_, end) = self.log.offsets(&self.topics.events, partition)?;
            lag.set(end.saturating_sub(next) as i64);
        }
        if since_checkpoint > 0 {
            self.checkpoint(partition, &engine, next)?;
        }
        Ok(())
    }
}
