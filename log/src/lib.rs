//! The log abstraction every weir stage talks to, and its embedded backend.
//!
//! A [`Log`] is a set of topics, each split into numbered partitions of
//! records with dense offsets, plus consumer-group offsets. The API is
//! blocking: stages drive it from their own threads (or `spawn_blocking`),
//! which suits both a local file log and a Kafka client.
//!
//! [`EmbeddedLog`] is the default backend: segment files on local disk,
//! see `segment.rs` for the format and the crash-recovery rule.

pub mod backoff;
pub mod drops;
mod embedded;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod group;
pub mod health;
#[cfg(feature = "test-util")]
pub mod hooked;
#[cfg(feature = "kafka")]
mod kafka;
mod metrics;
mod segment;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use embedded::EmbeddedLog;
pub use group::{Membership, Owner};
#[cfg(feature = "kafka")]
pub use kafka::KafkaLog;

/// A secret string from the config (a password): serialized as itself,
/// but its `Debug` form never shows it, so a config printed for a
/// diagnosis leaks nothing.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    /// Whether `offered` is this secret (a bearer token); takes the same
    /// time for every offered value of the same length.
    pub fn matches(&self, offered: &[u8]) -> bool {
        let wanted = self.0.as_bytes();
        wanted.len() == offered.len()
            && wanted
                .iter()
                .zip(offered)
                .fold(0, |diff, (a, b)| diff | (a ^ b))
                == 0
    }
}

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

/// A record to append: key and value, borrowed (the log copies them), so
/// callers can append straight from their own buffers.
pub type Produce<'a> = (&'a [u8], &'a [u8]);

/// A record to append that owns its key and value.
pub type OwnedProduce = (Vec<u8>, Vec<u8>);

/// Borrows owned records for an append.
pub fn borrowed(records: &[OwnedProduce]) -> Vec<Produce<'_>> {
    records
        .iter()
        .map(|(key, value)| (key.as_slice(), value.as_slice()))
        .collect()
}

/// A consumer group's committed position in one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// The next offset to read.
    pub offset: u64,
    /// Consumer-defined metadata, committed atomically with the offset
    /// where the backend keeps it ([`Guarantees::commit_metadata`]).
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
    /// An fsync failed (whether written data is on disk is unknown); the
    /// partition refuses further work until reopened.
    #[error("partition {0} is poisoned by a failed fsync; restart to recover what is on disk")]
    Poisoned(String),
    /// Another process has the embedded log open.
    #[error("{0} is in use by another weir process (stop it first: the embedded log belongs to one process)")]
    Locked(PathBuf),
    /// The Kafka client or broker failed.
    #[error("kafka: {op}: {detail}")]
    Kafka {
        /// What was being done.
        op: String,
        /// The client's error.
        detail: String,
    },
    /// The disk is too full to take new input (room is kept for results
    /// and checkpoints).
    #[error("only {free} bytes free under {path}, below the reserve of {reserve} ([log] min_free_bytes): new events are refused until there is room")]
    DiskFull {
        /// The log's directory.
        path: PathBuf,
        /// Bytes free there.
        free: u64,
        /// The reserve.
        reserve: u64,
    },
    /// A topic exists with settings weir cannot use.
    #[error("topic {topic:?} exists with {found}, but the config needs {wanted}")]
    Incompatible {
        /// Topic name.
        topic: String,
        /// What the topic has.
        found: String,
        /// What weir needs.
        wanted: String,
    },
}

/// The error for a topic that has fewer partitions than wanted.
pub(crate) fn too_few(topic: &str, found: u32, wanted: u32) -> LogError {
    LogError::Incompatible {
        topic: topic.to_owned(),
        found: format!("{found} partitions"),
        wanted: format!("{wanted} (grow it with `weir topics grow --partitions {wanted}`)"),
    }
}

/// The most partitions a topic may be grown to: each is a set of files
/// (embedded) or a broker-side log, per topic, so a typo must not ask
/// for millions.
pub const MAX_PARTITIONS: u32 = 4096;

/// Refuses growing `topic` from `before` to fewer partitions, or to more
/// than [`MAX_PARTITIONS`].
pub(crate) fn check_growth(topic: &str, before: u32, partitions: u32) -> Result<(), LogError> {
    let refuse = |why: &str| LogError::Incompatible {
        topic: topic.to_owned(),
        found: format!("{before} partitions"),
        wanted: format!("{partitions} ({why})"),
    };
    if partitions < before {
        return Err(refuse("a topic never shrinks"));
    }
    if partitions > MAX_PARTITIONS {
        return Err(refuse(&format!("at most {MAX_PARTITIONS}")));
    }
    Ok(())
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

/// What a backend keeps beyond records and plain group offsets. Stages
/// decide from this where to keep the rest (commit metadata, state that
/// must follow a partition to another machine), never from the
/// backend's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guarantees {
    /// [`Committed::metadata`] is kept whole with its offset. Kafka
    /// brokers cap it (4 KiB) and some drop it.
    pub commit_metadata: bool,
    /// Other processes share the log, so a partition can move to another
    /// machine: state that must follow it has to travel in the log.
    pub shared: bool,
    /// The largest record an append takes (`None`: no limit); larger
    /// state has to be split.
    pub max_record_bytes: Option<usize>,
}

/// The operations weir needs from a log backend.
pub trait Log: Send + Sync + 'static {
    /// What this backend keeps (see [`Guarantees`]).
    fn guarantees(&self) -> Guarantees;

    /// Creates `topic` with `partitions` partitions if it is missing
    /// (`compacted`: only the newest record per key needs keeping). An
    /// existing topic with more partitions is used as it is (it was
    /// grown); one with fewer is an error, not a resize.
    fn create_topic(&self, topic: &str, partitions: u32, compacted: bool) -> Result<(), LogError>;

    /// Grows existing `topic` to `partitions` partitions, appended after
    /// the existing ones (no record moves); returns the count before.
    /// Asking for fewer than the topic has is an error.
    fn grow_topic(&self, topic: &str, partitions: u32) -> Result<u32, LogError>;

    /// The partition count of `topic`.
    fn partitions(&self, topic: &str) -> Result<u32, LogError>;

    /// Whether new input (events from producers) may be appended now: an
    /// error when the backend keeps its remaining room for what the
    /// pipeline must still write (results, checkpoints, registry). The
    /// embedded log refuses while its disk's free space is below
    /// [`LogConfig::min_free_bytes`].
    fn accepts_input(&self) -> Result<(), LogError> {
        Ok(())
    }

    /// Joins consumer group `group` on `topic`: `owner` is told which
    /// partitions this member owns as the group (re)assigns them, and the
    /// progress it reports is committed to the group. The embedded log has
    /// one member, which owns every partition.
    fn join(
        &self,
        group: &str,
        topic: &str,
        owner: Arc<dyn Owner>,
    ) -> Result<Box<dyn Membership>, LogError>;

    /// Appends to several partitions of one topic; returns once all are as
    /// durable as [`Log::append`] promises. Backends with pipelined writes
    /// send all before waiting for any.
    fn append_batches(
        &self,
        topic: &str,
        batches: &[(u32, Vec<Produce<'_>>)],
    ) -> Result<(), LogError> {
        for (partition, records) in batches {
            self.append(topic, *partition, records)?;
        }
        Ok(())
    }

    /// Appends records to one partition in order and returns the offset
    /// after the last one. On return the records are as durable as the
    /// backend's flush policy promises. An empty value is a tombstone: on
    /// a compacted topic it deletes its key (Kafka gets a null value).
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

    /// Stores a consumer group's position durably (its metadata only
    /// where [`Guarantees::commit_metadata`] holds).
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

/// Which log backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Segment files under the data directory (one machine).
    #[default]
    Embedded,
    /// A Kafka cluster (`brokers`).
    Kafka,
}

impl std::str::FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "embedded" => Ok(Backend::Embedded),
            "kafka" => Ok(Backend::Kafka),
            other => Err(format!("unknown log backend {other:?} (embedded or kafka)")),
        }
    }
}

/// Log settings (`[log]` in the config); the file settings apply to the
/// embedded backend, `brokers` and `[log.kafka]` to Kafka.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// The backend.
    pub backend: Backend,
    /// Namespace prefixed to every topic name.
    pub namespace: String,
    /// Partitions of `weir.events`, `weir.results` and `weir.checkpoints`.
    pub partitions: u32,
    /// Kafka bootstrap servers, `host:port,…`.
    pub brokers: String,
    /// Kafka client settings.
    pub kafka: KafkaConfig,
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
    /// Below this much free disk space new events are refused, so that
    /// results and checkpoints can still be written.
    pub min_free_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            backend: Backend::Embedded,
            namespace: String::new(),
            partitions: 4,
            brokers: "127.0.0.1:9092".into(),
            kafka: KafkaConfig::default(),
            fsync: FsyncPolicy::Batch,
            fsync_interval_ms: 200,
            segment_bytes: 64 << 20,
            retention_bytes: 8 << 30,
            retention_secs: 7 * 24 * 3600,
            min_free_bytes: 64 << 20,
        }
    }
}

/// Kafka client settings (`[log.kafka]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Replication factor of the topics weir creates.
    pub replication_factor: i32,
    /// Producer batching delay.
    pub linger_ms: u64,
    /// Producer compression codec (none, gzip, snappy, lz4, zstd).
    pub compression: String,
    /// A group member that sends no heartbeat for this long is removed.
    pub session_timeout_ms: u64,
    /// The longest a rebalance waits for members (the group coordinator
    /// waits up to this long for every member to rejoin).
    pub max_poll_interval_ms: u64,
    /// Timeout of metadata, commit and admin requests.
    pub request_timeout_ms: u64,
    /// The largest record weir appends: larger state (shared checkpoints)
    /// is split below it. Keep it within the brokers' `message.max.bytes`
    /// (and librdkafka's, both 1 MB by default).
    pub max_record_bytes: usize,
    /// How clients reach the brokers: `plaintext` (default), `ssl`,
    /// `sasl_plaintext` or `sasl_ssl` (librdkafka's `security.protocol`).
    pub security_protocol: String,
    /// SASL mechanism: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub sasl_mechanism: Option<String>,
    /// SASL user name.
    pub sasl_username: Option<String>,
    /// SASL password; keep it out of the file (`{ env = "…" }`).
    pub sasl_password: Option<Secret>,
    /// PEM file of the CA that signed the brokers' certificates (besides
    /// the system's).
    pub ssl_ca_location: Option<PathBuf>,
    /// Further librdkafka properties, applied to every client. They
    /// override weir's tuning (queue, batch and fetch sizes), not what
    /// weir relies on: the fields above, idempotence, acks, the
    /// partitioner, offset handling and group ids.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            replication_factor: 1,
            linger_ms: 5,
            compression: "lz4".into(),
            session_timeout_ms: 10_000,
            max_poll_interval_ms: 300_000,
            request_timeout_ms: 30_000,
            max_record_bytes: 1_000_000,
            security_protocol: "plaintext".into(),
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
            properties: BTreeMap::new(),
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
    /// Reactor state snapshots, keyed by group and partition.
    pub checkpoints: String,
    /// The consumer group of the reactors.
    pub reactors_group: String,
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
            checkpoints: name("checkpoints"),
            reactors_group: if namespace.is_empty() {
                "weir.reactors".into()
            } else {
                format!("weir.{namespace}.reactors")
            },
        }
    }

    /// Creates weir's topics if missing: events, results and checkpoints
    /// with `partitions` each, the registry with one (both compacted).
    /// Topics grown beyond `partitions` keep their count.
    pub fn create(&self, log: &dyn Log, partitions: u32) -> Result<(), LogError> {
        log.create_topic(&self.events, partitions, false)?;
        log.create_topic(&self.results, partitions, false)?;
        log.create_topic(&self.checkpoints, partitions, true)?;
        log.create_topic(&self.registry, 1, true)
    }

    /// Grows events, results and checkpoints to `partitions` each; returns
    /// the events' count before. Results and checkpoints grow first, so a
    /// processor that sees a new events partition finds its results and
    /// checkpoints partitions already there.
    pub fn grow(&self, log: &dyn Log, partitions: u32) -> Result<u32, LogError> {
        log.grow_topic(&self.results, partitions)?;
        log.grow_topic(&self.checkpoints, partitions)?;
        let before = log.grow_topic(&self.events, partitions)?;
        tracing::info!(topic = %self.events, before, after = partitions, "grew weir's topics");
        Ok(before)
    }
}

/// Opens the configured backend: the embedded log under `data_dir/log`,
/// or a client of the Kafka cluster (with the `kafka` feature).
pub fn open(config: &LogConfig, data_dir: &Path) -> Result<Arc<dyn Log>, LogError> {
    Ok(match config.backend {
        Backend::Embedded => Arc::new(EmbeddedLog::open(&data_dir.join("log"), config.clone())?),
        #[cfg(feature = "kafka")]
        Backend::Kafka => Arc::new(KafkaLog::connect(&config.brokers, &config.kafka)?),
        #[cfg(not(feature = "kafka"))]
        Backend::Kafka => {
            return Err(LogError::Kafka {
                op: format!("connect to {}", config.brokers),
                detail: "this build has no Kafka backend (weir-log's `kafka` feature)".into(),
            })
        }
    })
}
