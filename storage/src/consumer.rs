//! The shared consumer loop of every results sink.
//!
//! Per partition: restore the committed position, whose metadata holds the
//! handler's own resume point and the de-duplication watermarks; read a
//! batch; drop every result whose id is not newer than the watermark of its
//! (reactor version, input partition) — a processor that re-runs after a
//! crash re-emits the same ids in the same order; hand the rest to the
//! handler; let the handler make them durable; then commit. A failure
//! restarts the partition from its last commit after a backoff, so an
//! outage loses nothing: the log is the buffer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use weir_event::{ResultId, ResultRecord};
use weir_log::{Committed, Log, LogError};

use crate::metrics::{DUPLICATES, ERRORS, LAG, WRITTEN};

/// Errors of a sink.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Writing to the destination failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The destination refused a record as invalid (it goes to the
    /// sink's dead letters; the sink goes on).
    #[error("rejected: {0}")]
    Rejected(String),
    /// The destination failed (down, timed out, refused a batch); retried.
    #[error("sink {sink}: {detail}")]
    Sink {
        /// The sink's name.
        sink: String,
        /// What failed.
        detail: String,
    },
    /// The sink's code panicked (a bug); the consumer restarts.
    #[error("panicked: {0}")]
    Panic(String),
    /// The committed metadata is not what this sink writes.
    #[error("committed position of {group} is unreadable: {detail}")]
    Metadata {
        /// The consumer group.
        group: String,
        /// What is wrong.
        detail: String,
    },
}

/// What a sink does with results; the consumer loop does the rest.
pub trait ResultHandler: Send {
    /// The metric label and the name in logs.
    fn name(&self) -> &str;

    /// Resumes from the handler's part of the last commit (`None`: fresh).
    fn restore(&mut self, resume: Option<Value>) -> Result<(), StorageError>;

    /// Takes one new result, as its encoded JSON line.
    fn handle(&mut self, record: &[u8]) -> Result<(), StorageError>;

    /// Makes everything handled so far durable; returns the resume point.
    fn flush(&mut self) -> Result<Value, StorageError>;

    /// The most results (in bytes) one read hands the handler before its
    /// flush; a handler whose flush waits a fixed time takes more at once.
    fn batch_bytes(&self) -> usize {
        DEFAULT_BATCH_BYTES
    }

    /// Called when a read found nothing new (about every 100 ms while
    /// caught up), for work that waits on time, such as retries.
    fn idle(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// The newest (input offset, sequence) applied, per reactor version and input partition.
type Watermarks = BTreeMap<String, (u64, u32)>;

#[derive(Deserialize)]
struct Metadata {
    resume: Value,
    watermarks: Watermarks,
}

/// [`Metadata`] as written, borrowing the watermarks.
#[derive(Serialize)]
struct MetadataRef<'a> {
    resume: Value,
    watermarks: &'a Watermarks,
}

/// Where the consumers read from.
#[derive(Clone)]
pub struct Source {
    /// The log.
    pub log: Arc<dyn Log>,
    /// The results topic.
    pub topic: String,
    /// The consumer group.
    pub group: String,
    /// Where committed positions (with the handler's resume point and the
    /// de-duplication watermarks) are kept: `None` in the log itself; a
    /// local store for a log that drops commit metadata (Kafka brokers
    /// limit and some drop it), in which case the log gets the bare offset
    /// as progress (lag).
    pub positions: Option<Arc<dyn Log>>,
    /// Results a consumer may be behind the end of its partition before
    /// `/readyz` reports it (0: no bound).
    pub max_lag: u64,
}

impl Source {
    fn positions(&self) -> &dyn Log {
        self.positions.as_deref().unwrap_or(&*self.log)
    }
}

/// [`ResultHandler::batch_bytes`] unless a handler says otherwise.
pub const DEFAULT_BATCH_BYTES: usize = 1 << 20;

/// A batch smaller than this was read too soon after the one before…
const LINGER_BELOW: usize = 256 << 10;
/// …so the consumer waits this long before reading again (at most this
/// much latency for a result that arrives right after a small batch; the
/// first result after a quiet spell is read at once).
const LINGER: Duration = Duration::from_millis(5);

/// How often the consumers look for partitions the topic grew by.
const GROWTH_CHECK: Duration = Duration::from_secs(1);

/// Starts one consumer thread per partition of the results topic, each
/// with the handler `make(partition)` returns, and one more for every
/// partition the topic grows by while they run. They stop when
/// `shutdown` is set; the returned thread joins them all.
pub fn spawn_consumers<H, F>(
    source: &Source,
    mut make: F,
    shutdown: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, StorageError>
where
    H: ResultHandler + 'static,
    F: FnMut(u32) -> H + Send + 'static,
{
    let spawn_err = |source| StorageError::Io {
        what: "spawn consumer thread",
        path: Default::default(),
        source,
    };
    let mut spawn = {
        let (source, shutdown) = (source.clone(), shutdown.clone());
        move |partition: u32| {
            let mut handler = make(partition);
            let (source, shutdown) = (source.clone(), shutdown.clone());
            std::thread::Builder::new()
                .name(format!("weir-{}-{partition}", handler.name()))
                .spawn(move || supervise(&source, partition, &mut handler, &shutdown))
        }
    };
    let mut count = source.log.partitions(&source.topic)?;
    let mut threads = (0..count)
        .map(&mut spawn)
        .collect::<Result<Vec<_>, _>>()
        .map_err(spawn_err)?;
    let source = source.clone();
    std::thread::Builder::new()
        .name("weir-consumers".into())
        .spawn(move || {
            while !shutdown.load(Ordering::Relaxed) {
                std::thread::sleep(GROWTH_CHECK);
                let now = match source.log.partitions(&source.topic) {
                    Ok(now) => now,
                    Err(error) => {
                        tracing::warn!(group = %source.group, %error, "partition count");
                        continue;
                    }
                };
                for partition in count..now {
                    tracing::info!(group = %source.group, topic = %source.topic, partition, "the topic grew; consuming its new partition");
                    match spawn(partition) {
                        Ok(thread) => threads.push(thread),
                        Err(error) => tracing::error!(partition, %error, "cannot start a consumer"),
                    }
                }
                count = count.max(now);
            }
            for thread in threads {
                let _ = thread.join();
            }
        })
        .map_err(spawn_err)
}

/// Makes a consumer group without a commit start at the current end of
/// every partition (it gets what comes from now on) instead of the
/// beginning; a group that has committed keeps its positions.
pub fn start_at_end(source: &Source) -> Result<(), StorageError> {
    for partition in 0..source.log.partitions(&source.topic)? {
        let positions = source.positions();
        if positions
            .committed(&source.group, &source.topic, partition)?
            .is_some()
        {
            continue;
        }
        let (_, end) = source.log.offsets(&source.topic, partition)?;
        let metadata = serde_json::to_string(&MetadataRef {
            resume: Value::Null,
            watermarks: &Watermarks::new(),
        })
        .unwrap_or_default();
        let committed = Committed {
            offset: end,
            metadata,
        };
        positions.commit(&source.group, &source.topic, partition, &committed)?;
    }
    Ok(())
}

fn supervise(
    source: &Source,
    partition: u32,
    handler: &mut dyn ResultHandler,
    shutdown: &AtomicBool,
) {
    let mut backoff = weir_log::backoff::Backoff::restart();
    let health = health_name(handler.name(), partition);
    while !shutdown.load(Ordering::Relaxed) {
        // A panic (a bug in a handler, an invariant broken by a record) is
        // a failure like a lost server: reported, and the partition
        // resumes from its last commit instead of going unconsumed.
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            consume(source, partition, handler, shutdown)
        }))
        .unwrap_or_else(|panic| {
            Err(StorageError::Panic(weir_log::health::panic_message(
                &*panic,
            )))
        });
        match run {
            Ok(()) => return,
            Err(_) if shutdown.load(Ordering::Relaxed) => return,
            Err(error) => {
                weir_log::health::failing(&health, &error);
                ERRORS.with_label_values(&[handler.name()]).inc();
                let wait = backoff.failed();
                tracing::warn!(sink = handler.name(), partition, %error, retry_in = ?wait, "sink failed; resuming from the last commit");
                std::thread::sleep(wait);
            }
        }
    }
}

/// A consumer's name in `/readyz`.
fn health_name(handler: &str, partition: u32) -> String {
    format!("{handler}: results partition {partition}")
}

fn consume(
    source: &Source,
    partition: u32,
    handler: &mut dyn ResultHandler,
    shutdown: &AtomicBool,
) -> Result<(), StorageError> {
    let name = handler.name().to_owned();
    let health = health_name(&name, partition);
    let committed = source
        .positions()
        .committed(&source.group, &source.topic, partition)?;
    let (mut next, mut watermarks) = match committed {
        None => {
            handler.restore(None)?;
            (0, Watermarks::new())
        }
        Some(committed) => {
            let metadata: Metadata =
                serde_json::from_str(&committed.metadata).map_err(|e| StorageError::Metadata {
                    group: source.group.clone(),
                    detail: e.to_string(),
                })?;
            handler.restore(Some(metadata.resume))?;
            (committed.offset, metadata.watermarks)
        }
    };
    let written = WRITTEN.with_label_values(&[&name]);
    let duplicates = DUPLICATES.with_label_values(&[&name]);
    let lag = LAG.with_label_values(&[&name, &partition.to_string()]);
    while !shutdown.load(Ordering::Relaxed) {
        let batch = source.log.read(
            &source.topic,
            partition,
            next,
            handler.batch_bytes(),
            Duration::from_millis(100),
        )?;
        if batch.is_empty() {
            handler.idle()?;
            // Caught up, nothing to write: nothing failing.
            weir_log::health::working(&health);
            continue;
        }
        let batch_bytes: usize = batch.iter().map(|r| r.value.len()).sum();
        for record in &batch {
            next = record.offset + 1;
            let head = ResultRecord::peek(&record.value);
            let Some((series, offset, seq)) = head.as_ref().and_then(|h| ResultId::split(&h.id))
            else {
                tracing::warn!(
                    sink = %name,
                    partition,
                    offset = record.offset,
                    "skipping a result without a valid id"
                );
                continue;
            };
            let position = (offset, seq);
            if watermarks.get(series).is_some_and(|seen| position <= *seen) {
                duplicates.inc();
                continue;
            }
            handler.handle(&record.value)?;
            match watermarks.get_mut(series) {
                Some(seen) => *seen = position,
                None => {
                    watermarks.insert(series.to_owned(), position);
                }
            }
            written.inc();
        }
        let resume = handler.flush()?;
        let metadata = serde_json::to_string(&MetadataRef {
            resume,
            watermarks: &watermarks,
        })
        .unwrap_or_default();
        // Commit only after the handler made everything before `next` durable.
        source.positions().commit(
            &source.group,
            &source.topic,
            partition,
            &Committed {
                offset: next,
                metadata,
            },
        )?;
        if source.positions.is_some() {
            let progress = Committed {
                offset: next,
                metadata: String::new(),
            };
            source
                .log
                .commit(&source.group, &source.topic, partition, &progress)?;
        }
        let (_, end) = source.log.offsets(&source.topic, partition)?;
        let behind = end.saturating_sub(next);
        lag.set(behind as i64);
        let lag_health = format!("{health} lag");
        if source.max_lag > 0 && behind > source.max_lag {
            let why = format!(
                "{behind} results behind, more than max_lag = {}",
                source.max_lag
            );
            weir_log::health::failing(&lag_health, why);
        } else {
            weir_log::health::working(&lag_health);
        }
        weir_log::health::working(&health);
        if batch_bytes < LINGER_BELOW {
            // Let a few more results arrive: a reader woken by every append
            // would take them a handful at a time, each with its own flush.
            std::thread::sleep(LINGER);
        }
    }
    Ok(())
}
