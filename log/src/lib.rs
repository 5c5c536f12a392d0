//! The log abstraction every weir stage talks to, and its embedded backend.
//!
//! A [`Log`] is a set of topics, each split into numbered partitions of
//! records with dense offsets, plus consumer-group offsets. The API is
//! blocking: stages drive it from their own threads (or `spawn_blocking`),
//! which suits both a local file log and a Kafka client.
//!
//! [`EmbeddedLog`] is the default backend: segment files on local disk,
//! see `segment.rs` for the format and the crash-recovery rule.

mod embedded;
#[cfg(feature = "test-util")]
pub mod hooked;
mod metrics;
mod segment;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use embedded::EmbeddedLog;

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Position in its partition, dense from 0.
    pub offset: u64,
    /// Append time, milliseconds since the epoch.
    pub timestamp_ms: u64,
    /// Routing key (the app uid for weir's topics).
    pub key: Bytes,
    /// Payload.
    pub value: Bytes,
}

/// A record to append: key and value.
pub type Produce = (Vec<u8>, Vec<u8>);

/// A consumer group's committed position in one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// The next offset to read.
    pub offset: u64,
    /// Consumer-defined metadata committed atomically with the offset.
    pub metadata: String,
}

/// Errors of log operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The topic does not exist.
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    /// The partition number is not below the topic's partition count.
    #[error("topic {topic:?} has {count} partitions, no partition {partition}")]
    NoSuchPartition {
        /// Topic name.
        topic: String,
        /// Requested partition.
        partition: u32,
        /// Partitions the topic has.
        count: u32,
    },
    /// A file holds something the log did not write.
    #[error("corrupt {path}: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// An earlier write failed; the partition refuses further work until reopened.
    #[error("partition {0} is poisoned by an earlier I/O error; restart to recover")]
    Poisoned(String),
}

/// Wraps an I/O error with what was being done and to which path.
pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(std::io::Error) -> LogError + 'a {
    move |source| LogError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The operations weir needs from a log backend.
pub trait Log: Send + Sync + 'static {
    /// The partition count of `topic`.
    fn partitions(&self, topic: &str) -> Result<u32, LogError>;

    /// Appends records to one partition in order and returns the offset
    /// after the last one. On return the records are as durable as the
    /// backend's flush policy promises.
    fn append(&self, topic: &str, partition: u32, records: &[Produce]) -> Result<u64, LogError>;

    /// Reads records from `from` on, up to about `max_bytes` (at least one
    /// record if any). Waits up to `wait` when there is nothing yet. A
    /// `from` below the earliest retained offset reads from that offset.
    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Vec<Record>, LogError>;

    /// The earliest retained and the next-to-be-written offsets.
    fn offsets(&self, topic: &str, partition: u32) -> Result<(u64, u64), LogError>;

    /// Stores a consumer group's position durably.
    fn commit(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        committed: &Committed,
    ) -> Result<(), LogError>;

    /// A consumer group's stored position, if it has one.
    fn committed(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<Committed>, LogError>;
}

/// When appended data is forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Every append is fsynced before it returns ("durable on ack").
    #[default]
    Batch,
    /// A background thread fsyncs every `fsync_interval_ms`.
    Interval,
    /// Left to the operating system.
    Never,
}

/// Embedded log settings (`[log]` in the config).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// Namespace prefixed to every topic name.
    pub namespace: String,
    /// Partitions of `weir.events` and `weir.results`.
    pub partitions: u32,
    /// When appends are fsynced.
    pub fsync: FsyncPolicy,
    /// Period of the `interval` fsync policy.
    pub fsync_interval_ms: u64,
    /// A segment file is rolled once it reaches this size.
    pub segment_bytes: u64,
    /// Oldest segments are deleted while a partition is larger than this.
    pub retention_bytes: u64,
    /// Segments whose newest record is older than this are deleted.
    pub retention_secs: u64,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            namespace: String::new(),
            partitions: 4,
            fsync: FsyncPolicy::Batch,
            fsync_interval_ms: 200,
            segment_bytes: 64 << 20,
            retention_bytes: 8 << 30,
            retention_secs: 7 * 24 * 3600,
        }
    }
}

/// Full topic names under a namespace (DESIGN.md §3).
#[derive(Debug, Clone)]
pub struct Topics {
    /// Validated events, keyed by app uid.
    pub events: String,
    /// Reactor outputs, keyed by app uid.
    pub results: String,
    /// Registry changes: uid → partition, keyed by uid.
    pub registry: String,
}

impl Topics {
    /// Topic names for `namespace` (empty: plain `weir.*`).
    pub fn new(namespace: &str) -> Self {
        let name = |topic: &str| {
            if namespace.is_empty() {
                format!("weir.{topic}")
            } else {
                format!("{namespace}.weir.{topic}")
            }
        };
        Topics {
            events: name("events"),
            results: name("results"),
            registry: name("registry"),
        }
    }
}
