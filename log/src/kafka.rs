//! The Kafka backend, on librdkafka (rdkafka, bundled).
//!
//! Appends go through one idempotent, batching producer to explicit
//! partitions (the router already placed every uid with Kafka's own
//! murmur2, so the mapping matches Java clients), a partition's records
//! enqueued in one call without copying ([`batch`]). Reads go through one
//! simple consumer per topic, which fetches every partition read here in
//! one request; each partition's messages wait on a queue of their own,
//! read in batches, so partition workers never contend. Group offsets of
//! simple consumers (the sinks) are committed through a per-group
//! consumer that never subscribes. Group membership ([`Log::join`]) is a
//! subscribing consumer whose partitions stay paused: it only carries the
//! assignment and the progress commits.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::executor::block_on;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::group::{Member, Membership, Owner, PROGRESS_INTERVAL};
use crate::metrics::{BROKERS_REACHABLE, REBALANCES};
use crate::{
    check_growth, too_few, Committed, Guarantees, KafkaConfig, Log, LogError, Produce, Record,
};
use batch::{BatchProducer, PartitionConsumer, TopicConsumer};

mod batch;

/// The Kafka log backend.
pub struct KafkaLog {
    brokers: String,
    config: KafkaConfig,
    producer: BatchProducer,
    /// Metadata and watermark queries.
    meta: BaseConsumer,
    /// Per partition read, its readers: one per position read from, so
    /// consumers of one partition in different places (several sinks, a
    /// catch-up beside live processing) never move each other's fetcher.
    readers: Mutex<Readers>,
    /// Per topic read and reader slot, the consumer the slot's readers
    /// share (dropped after them): reader `i` of every partition fetches
    /// through slot `i`.
    topic_consumers: Mutex<HashMap<(String, usize), Arc<TopicConsumer>>>,
    committers: Mutex<HashMap<String, Arc<BaseConsumer>>>,
    /// Stops the broker watch when the log is dropped.
    _watch: BrokerWatch,
}

/// The name `/readyz` lists unreachable brokers under.
const BROKERS_HEALTH: &str = "log: Kafka brokers";

/// How often the brokers are asked for metadata to tell they answer.
const WATCH_INTERVAL: Duration = Duration::from_secs(5);

/// A thread asking the brokers for metadata every [`WATCH_INTERVAL`]:
/// brokers that do not answer show in `/readyz` and
/// `weir_log_brokers_reachable` whether or not anything is being read or
/// written, and heal when they answer again. Stops when dropped.
struct BrokerWatch {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl BrokerWatch {
    fn start(client: BaseConsumer, timeout: Duration) -> BrokerWatch {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        BROKERS_REACHABLE.set(1);
        let watch = move || {
            while !stopped.load(Ordering::Relaxed) {
                match client.fetch_metadata(None, timeout) {
                    Ok(_) => {
                        BROKERS_REACHABLE.set(1);
                        crate::health::working(BROKERS_HEALTH);
                    }
                    Err(error) => {
                        BROKERS_REACHABLE.set(0);
                        tracing::warn!(%error, "the Kafka brokers do not answer");
                        crate::health::failing(BROKERS_HEALTH, format!("no metadata: {error}"));
                    }
                }
                let next = Instant::now() + WATCH_INTERVAL;
                while Instant::now() < next && !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        if let Err(error) = std::thread::Builder::new()
            .name("weir-kafka-watch".into())
            .spawn(watch)
        {
            tracing::warn!(%error, "cannot start the broker watch");
        }
        BrokerWatch { stop }
    }
}

impl Drop for BrokerWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A partition's reader, locked by the one thread that reads it.
type SharedReader = Arc<Mutex<Reader>>;

/// A partition's readers, each with its topic consumer slot.
type ReaderPool = Vec<(usize, SharedReader)>;

/// Every partition's readers, and when idle ones were last dropped.
struct Readers {
    pools: HashMap<(String, u32), ReaderPool>,
    swept: Instant,
}

/// Readers kept per partition; beyond this the least recently used one
/// is moved to where it is needed.
const READERS_PER_PARTITION: usize = 8;

/// A reader unused this long stops fetching and is dropped.
const READER_IDLE: Duration = Duration::from_secs(30);

/// One partition's consumer and where it stands.
struct Reader {
    consumer: PartitionConsumer,
    /// When it was last read.
    used: Instant,
    /// The offset the next read starts at (`None`: not started yet, or
    /// to be started again after a failed read).
    next: Option<u64>,
    /// The memory batches are copied into, reused once the caller dropped
    /// the previous batch's records.
    buffer: BytesMut,
    /// Per message of the batch being read: offset, timestamp, key and
    /// value lengths (kept for its capacity).
    placed: Vec<(u64, u64, usize, usize)>,
}

/// Maps a client error to a [`LogError`] naming the operation; the
/// operation's text is only formatted when there is an error (pass
/// `format_args!`), since reads and appends build one per call.
fn kafka_err(op: impl std::fmt::Display) -> impl FnOnce(KafkaError) -> LogError {
    move |error| LogError::Kafka {
        op: op.to_string(),
        detail: error.to_string(),
    }
}

impl KafkaLog {
    /// Connects to `brokers` and checks they answer.
    pub fn connect(brokers: &str, config: &KafkaConfig) -> Result<KafkaLog, LogError> {
        let mut producer = client_config(
            brokers,
            config,
            &[
                ("queue.buffering.max.messages", "1000000"),
                ("queue.buffering.max.kbytes", "1048576"),
                ("batch.num.messages", "100000"),
                ("message.max.bytes", "67108864"),
            ],
        );
        producer
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", config.linger_ms.to_string())
            .set("compression.type", &config.compression)
            .set("partitioner", "murmur2_random");
        let producer = BatchProducer::new(&producer).map_err(kafka_err("create producer"))?;
        let meta: BaseConsumer = client_config(brokers, config, &[])
            .create()
            .map_err(kafka_err("create metadata client"))?;
        // Fail fast on start-up when no broker answers.
        let timeout = Duration::from_millis(config.request_timeout_ms.min(10_000));
        meta.fetch_metadata(None, timeout)
            .map_err(kafka_err(format_args!("connect to brokers {brokers}")))?;
        let watch = client_config(brokers, config, &[])
            .create()
            .map_err(kafka_err("create broker watch client"))?;
        Ok(KafkaLog {
            _watch: BrokerWatch::start(watch, timeout),
            brokers: brokers.to_owned(),
            config: config.clone(),
            producer,
            meta,
            readers: Mutex::new(Readers {
                pools: HashMap::new(),
                swept: Instant::now(),
            }),
            topic_consumers: Mutex::new(HashMap::new()),
            committers: Mutex::new(HashMap::new()),
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.request_timeout_ms)
    }

    /// Settings of a consumer that reads explicitly assigned partitions.
    fn consumer_config(&self) -> ClientConfig {
        let mut config = client_config(
            &self.brokers,
            &self.config,
            &[
                ("queued.max.messages.kbytes", "16384"),
                ("fetch.wait.max.ms", "50"),
            ],
        );
        config
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest");
        config
    }

    /// The reader of `partition` to read from `from`: the one positioned
    /// there, else a new one, else the least recently used idle one.
    fn reader(&self, topic: &str, partition: u32, from: u64) -> Result<SharedReader, LogError> {
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if now.duration_since(readers.swept) >= READER_IDLE {
            // Idle readers (a finished catch-up, a removed sink, a revoked
            // partition) stop fetching.
            for pool in readers.pools.values_mut() {
                pool.retain(|(_, reader)| {
                    reader
                        .try_lock()
                        .map_or(true, |r| now.duration_since(r.used) < READER_IDLE)
                });
            }
            readers.pools.retain(|_, pool| !pool.is_empty());
            readers.swept = now;
        }
        let pool = readers
            .pools
            .entry((topic.to_owned(), partition))
            .or_default();
        let mut idle: Option<(Instant, &SharedReader)> = None;
        for (_, reader) in pool.iter() {
            let Ok(r) = reader.try_lock() else { continue };
            if r.next == Some(from) {
                return Ok(reader.clone());
            }
            if idle.is_none_or(|(used, _)| r.used < used) {
                idle = Some((r.used, reader));
            }
        }
        if pool.len() >= READERS_PER_PARTITION {
            if let Some((_, reader)) = idle.or(pool.first().map(|(_, r)| (now, r))) {
                return Ok(reader.clone());
            }
        }
        let slot = (0..)
            .find(|slot| pool.iter().all(|(taken, _)| taken != slot))
            .unwrap_or_default();
        let reader = Arc::new(Mutex::new(Reader {
            consumer: PartitionConsumer::new(self.topic_consumer(topic, slot)?, partition),
            used: now,
            next: None,
            buffer: BytesMut::new(),
            placed: Vec::new(),
        }));
        pool.push((slot, reader.clone()));
        Ok(reader)
    }

    /// The consumer that fetches `topic` for reader slot `slot`.
    fn topic_consumer(&self, topic: &str, slot: usize) -> Result<Arc<TopicConsumer>, LogError> {
        let mut consumers = self
            .topic_consumers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(consumer) = consumers.get(&(topic.to_owned(), slot)) {
            return Ok(consumer.clone());
        }
        let consumer = self
            .consumer_config()
            .create()
            .map_err(kafka_err("create reader"))?;
        let consumer = Arc::new(
            TopicConsumer::new(consumer, topic).map_err(kafka_err(format_args!("read {topic}")))?,
        );
        consumers.insert((topic.to_owned(), slot), consumer.clone());
        Ok(consumer)
    }

    fn committer(&self, group: &str) -> Result<Arc<BaseConsumer>, LogError> {
        let mut committers = self.committers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(consumer) = committers.get(group) {
            return Ok(consumer.clone());
        }
        let consumer: BaseConsumer = self
            .consumer_config()
            .set("group.id", group)
            .create()
            .map_err(kafka_err("create committer"))?;
        let consumer = Arc::new(consumer);
        committers.insert(group.to_owned(), consumer.clone());
        Ok(consumer)
    }

    /// The partition count of `topic`, `None` if it does not exist.
    fn partition_count(&self, topic: &str) -> Result<Option<u32>, LogError> {
        let metadata = self
            .meta
            .fetch_metadata(Some(topic), self.timeout())
            .map_err(kafka_err(format_args!("metadata of {topic}")))?;
        Ok(metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.partitions().len() as u32))
    }

    /// A client for topic administration.
    fn admin(&self) -> Result<AdminClient<DefaultClientContext>, LogError> {
        client_config(&self.brokers, &self.config, &[])
            .create()
            .map_err(kafka_err("create admin client"))
    }

    /// The partition count of `topic` once the metadata shows at least
    /// `at_least` (creation and growth propagate asynchronously).
    fn wait_for_partitions(&self, topic: &str, at_least: u32) -> Result<u32, LogError> {
        let deadline = Instant::now() + self.timeout();
        loop {
            match self.partition_count(topic)? {
                Some(found) if found >= at_least => return Ok(found),
                _ if Instant::now() > deadline => {
                    return Err(LogError::Kafka {
                        op: format!("metadata of {topic}"),
                        detail: format!(
                            "fewer than {at_least} partitions after {:?}",
                            self.timeout()
                        ),
                    })
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Appends `batches` (partition, records) to `topic`; the offset after
    /// the newest delivered record.
    fn produce(
        &self,
        topic: &str,
        batches: &[(u32, &[Produce<'_>])],
    ) -> Result<Option<u64>, LogError> {
        self.producer
            .produce(topic, batches)
            .map_err(kafka_err(format_args!("produce to {topic}")))
    }
}

/// Settings every client shares: the brokers, weir's `tuning` for this
/// kind of client, then the user's extra properties (which win over the
/// tuning; callers set what must not be overridden afterwards).
fn client_config(brokers: &str, config: &KafkaConfig, tuning: &[(&str, &str)]) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", brokers)
        .set("security.protocol", &config.security_protocol);
    if let Some(mechanism) = &config.sasl_mechanism {
        client.set("sasl.mechanisms", mechanism);
    }
    if let Some(username) = &config.sasl_username {
        client.set("sasl.username", username);
    }
    if let Some(password) = &config.sasl_password {
        client.set("sasl.password", &password.0);
    }
    if let Some(ca) = &config.ssl_ca_location {
        client.set("ssl.ca.location", ca.display().to_string());
    }
    for (key, value) in tuning {
        client.set(*key, *value);
    }
    for (key, value) in &config.properties {
        client.set(key, value);
    }
    client
}

impl Log for KafkaLog {
    fn guarantees(&self) -> Guarantees {
        Guarantees {
            commit_metadata: false,
            shared: true,
            max_record_bytes: Some(self.config.max_record_bytes),
        }
    }

    fn create_topic(&self, topic: &str, partitions: u32, compacted: bool) -> Result<(), LogError> {
        if self.partition_count(topic)?.is_none() {
            let admin = self.admin()?;
            let mut new = NewTopic::new(
                topic,
                partitions as i32,
                TopicReplication::Fixed(self.config.replication_factor),
            );
            if compacted {
                new = new.set("cleanup.policy", "compact");
            }
            let options = AdminOptions::new().operation_timeout(Some(self.timeout()));
            let results = block_on(admin.create_topics([&new], &options))
                .map_err(kafka_err(format_args!("create topic {topic}")))?;
            for result in results {
                match result {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((_, code)) => {
                        return Err(LogError::Kafka {
                            op: format!("create topic {topic}"),
                            detail: code.to_string(),
                        })
                    }
                }
            }
            tracing::info!(topic, partitions, compacted, "created topic");
        }
        match self.wait_for_partitions(topic, 1)? {
            found if found >= partitions => Ok(()),
            found => Err(too_few(topic, found, partitions)),
        }
    }

    fn grow_topic(&self, topic: &str, partitions: u32) -> Result<u32, LogError> {
        let before = self.partitions(topic)?;
        check_growth(topic, before, partitions)?;
        if partitions == before {
            return Ok(before);
        }
        let admin = self.admin()?;
        let options = AdminOptions::new().operation_timeout(Some(self.timeout()));
        let grow = NewPartitions::new(topic, partitions as usize);
        let op = format!("grow topic {topic} from {before} to {partitions} partitions");
        let results = block_on(admin.create_partitions([&grow], &options)).map_err(|error| {
            let unsupported = matches!(
                error,
                KafkaError::AdminOp(RDKafkaErrorCode::UnsupportedFeature)
            );
            LogError::Kafka {
                op: op.clone(),
                detail: if unsupported {
                    "the broker does not support adding partitions (CreatePartitions); add them with the broker's own tools, weir takes them up".into()
                } else {
                    error.to_string()
                },
            }
        })?;
        for result in results {
            if let Err((_, code)) = result {
                return Err(LogError::Kafka {
                    op,
                    detail: code.to_string(),
                });
            }
        }
        self.wait_for_partitions(topic, partitions)?;
        Ok(before)
    }

    fn partitions(&self, topic: &str) -> Result<u32, LogError> {
        self.partition_count(topic)?
            .ok_or_else(|| LogError::UnknownTopic(topic.to_owned()))
    }

    fn join(
        &self,
        group: &str,
        topic: &str,
        owner: Arc<dyn Owner>,
    ) -> Result<Box<dyn Membership>, LogError> {
        let context = GroupContext {
            owner: owner.clone(),
            topic: topic.to_owned(),
        };
        let consumer: BaseConsumer<GroupContext> = self
            .consumer_config()
            .set("group.id", group)
            .set(
                "session.timeout.ms",
                self.config.session_timeout_ms.to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (self.config.session_timeout_ms / 5).max(100).to_string(),
            )
            .set(
                "max.poll.interval.ms",
                self.config.max_poll_interval_ms.to_string(),
            )
            // A grown topic reaches the group (a rebalance over every
            // partition) within this, unless the user set their own.
            .set(
                "topic.metadata.refresh.interval.ms",
                self.config
                    .properties
                    .get("topic.metadata.refresh.interval.ms")
                    .map_or("5000", String::as_str),
            )
            .create_with_context(context)
            .map_err(kafka_err(format_args!("join group {group}")))?;
        consumer
            .subscribe(&[topic])
            .map_err(kafka_err(format_args!("subscribe {group} to {topic}")))?;
        let topic = topic.to_owned();
        // Short timeouts: the watch must notice, not wait on a busy broker.
        let mut watch = StallWatch::new(
            &topic,
            Duration::from_millis(2 * self.config.session_timeout_ms),
            self.timeout().min(Duration::from_secs(5)),
        );
        let member = Member::spawn(move |stop| {
            let rejoin = AtomicBool::new(false);
            std::thread::scope(|scope| {
                // Broker queries run beside the poll loop, never in it: a
                // poll loop that stalls past max.poll.interval.ms is
                // thrown out of the group.
                scope.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(PROGRESS_INTERVAL);
                        let owned: Vec<u32> = owner.progress().iter().map(|(p, _)| *p).collect();
                        if let Some(stalled) = watch.stalled(&consumer, &owned) {
                            tracing::warn!(partitions = ?stalled, "partitions owned by no live member make no progress; rejoining the group to force a rebalance");
                            rejoin.store(true, Ordering::Relaxed);
                        }
                    }
                });
                let mut last = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    // Partitions are paused: polls serve heartbeats and rebalances.
                    if let Some(Err(error)) = consumer.poll(Duration::from_millis(100)) {
                        tracing::warn!(%error, "group consumer");
                    }
                    if last.elapsed() >= PROGRESS_INTERVAL {
                        commit(&consumer, &topic, &owner.progress(), CommitMode::Async);
                        last = Instant::now();
                    }
                    if rejoin.swap(false, Ordering::Relaxed) {
                        consumer.unsubscribe();
                        if let Err(error) = consumer.subscribe(&[&topic]) {
                            tracing::error!(%error, "rejoining the group failed");
                        }
                    }
                }
            });
            let owned: Vec<u32> = owner.progress().iter().map(|(p, _)| *p).collect();
            let last = owner.revoked(&owned);
            commit(&consumer, &topic, &last, CommitMode::Sync);
            tracing::info!(partitions = ?owned, "partitions released");
            consumer.unsubscribe();
        })?;
        Ok(Box::new(member))
    }

    fn append(&self, topic: &str, partition: u32, records: &[Produce]) -> Result<u64, LogError> {
        match self.produce(topic, &[(partition, records)])? {
            Some(next) => Ok(next),
            None => Ok(self.offsets(topic, partition)?.1),
        }
    }

    fn append_batches(&self, topic: &str, batches: &[(u32, Vec<Produce>)]) -> Result<(), LogError> {
        let batches: Vec<(u32, &[Produce])> = batches
            .iter()
            .map(|(partition, records)| (*partition, records.as_slice()))
            .collect();
        self.produce(topic, &batches).map(|_| ())
    }

    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Vec<Record>, LogError> {
        let reader = self.reader(topic, partition, from)?;
        let mut guard = reader.lock().unwrap_or_else(|e| e.into_inner());
        let reader = &mut *guard;
        reader.used = Instant::now();
        if reader.next != Some(from) {
            reader
                .consumer
                .start(from)
                .map_err(kafka_err(format_args!("seek {topic}/{partition}")))?;
            reader.next = Some(from);
        }
        // Keys and values are copied into one buffer that every record
        // slices (no allocation per record).
        let mut timeout = wait;
        while reader.buffer.len() < max_bytes {
            let (buffer, placed) = (&mut reader.buffer, &mut reader.placed);
            let consumed = reader.consumer.consume(timeout, |message| {
                if message.offset < from as i64 {
                    return;
                }
                buffer.extend_from_slice(message.key);
                buffer.extend_from_slice(message.payload);
                placed.push((
                    message.offset as u64,
                    message.timestamp_ms.max(0) as u64,
                    message.key.len(),
                    message.payload.len(),
                ));
            });
            let taken = match consumed {
                Ok(taken) => taken,
                Err(error) => {
                    // Drop what this read took and seek back to `from` on
                    // the next one: nothing is skipped, nothing reordered.
                    reader.buffer.clear();
                    reader.placed.clear();
                    reader.next = None;
                    return Err(kafka_err(format_args!("read {topic}/{partition}"))(error));
                }
            };
            if taken == 0 {
                break;
            }
            timeout = Duration::ZERO;
        }
        let buffer = reader.buffer.split().freeze();
        let mut at = 0;
        let records: Vec<Record> = reader
            .placed
            .drain(..)
            .map(|(offset, timestamp_ms, key_len, value_len)| {
                let key = buffer.slice(at..at + key_len);
                at += key_len;
                let value = buffer.slice(at..at + value_len);
                at += value_len;
                Record {
                    offset,
                    timestamp_ms,
                    key,
                    value,
                }
            })
            .collect();
        if let Some(last) = records.last() {
            reader.next = Some(last.offset + 1);
        }
        Ok(records)
    }

    fn offsets(&self, topic: &str, partition: u32) -> Result<(u64, u64), LogError> {
        let (low, high) = self
            .meta
            .fetch_watermarks(topic, partition as i32, self.timeout())
            .map_err(kafka_err(format_args!("watermarks of {topic}/{partition}")))?;
        Ok((low.max(0) as u64, high.max(0) as u64))
    }

    fn commit(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        committed: &Committed,
    ) -> Result<(), LogError> {
        let mut offsets = TopicPartitionList::new();
        let mut entry = offsets.add_partition(topic, partition as i32);
        entry
            .set_offset(Offset::Offset(committed.offset as i64))
            .map_err(kafka_err("commit"))?;
        entry.set_metadata(&committed.metadata);
        self.committer(group)?
            .commit(&offsets, CommitMode::Sync)
            .map_err(kafka_err(format_args!(
                "commit {group} {topic}/{partition}"
            )))
    }

    fn committed(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<Committed>, LogError> {
        let mut wanted = TopicPartitionList::new();
        wanted.add_partition(topic, partition as i32);
        let found = self
            .committer(group)?
            .committed_offsets(wanted, self.timeout())
            .map_err(kafka_err(format_args!(
                "committed {group} {topic}/{partition}"
            )))?;
        let Some(entry) = found.find_partition(topic, partition as i32) else {
            return Ok(None);
        };
        Ok(match entry.offset() {
            Offset::Offset(offset) if offset >= 0 => Some(Committed {
                offset: offset as u64,
                metadata: entry.metadata().to_owned(),
            }),
            _ => None,
        })
    }
}

/// Commits `progress` of a group member.
fn commit<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    progress: &[(u32, u64)],
    mode: CommitMode,
) {
    if progress.is_empty() {
        return;
    }
    let mut offsets = TopicPartitionList::new();
    for &(partition, offset) in progress {
        if let Err(error) =
            offsets.add_partition_offset(topic, partition as i32, Offset::Offset(offset as i64))
        {
            tracing::warn!(%error, "progress offset");
        }
    }
    if let Err(error) = consumer.commit(&offsets, mode) {
        tracing::warn!(%error, "progress commit failed");
    }
}

/// A workaround for brokers whose group coordinator misses a rebalance:
/// notices partitions that nobody processes, whose group progress stands
/// still while records wait. A Kafka coordinator rebalances by itself
/// when a member dies; some Kafka-protocol brokers (tansu 0.6) evict the
/// dead member but keep the old assignment, leaving its partitions
/// orphaned. Rejoining the group forces the rebalance they missed.
///
/// Only a committed offset that stands still counts: a partition whose
/// owner advances it — live processing goes on while new reactors catch
/// up beside it — is never taken for stalled, and nothing is judged
/// within the patience (twice the session timeout) of a start or rejoin.
struct StallWatch {
    topic: String,
    /// How long progress may stand still with records waiting.
    patience: Duration,
    timeout: Duration,
    /// Per partition: the committed offset last seen and since when.
    seen: BTreeMap<u32, (i64, Instant)>,
    /// No verdict before this (after start and after each rejoin).
    quiet_until: Instant,
}

impl StallWatch {
    fn new(topic: &str, patience: Duration, timeout: Duration) -> StallWatch {
        StallWatch {
            topic: topic.to_owned(),
            patience,
            timeout,
            seen: BTreeMap::new(),
            quiet_until: Instant::now() + patience,
        }
    }

    /// Partitions not in `owned` whose progress stood still for longer
    /// than the patience while records wait; `None` when all move.
    fn stalled<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        owned: &[u32],
    ) -> Option<Vec<u32>> {
        // Read each time: the topic may have grown.
        let partitions = consumer
            .fetch_metadata(Some(&self.topic), self.timeout)
            .ok()?
            .topics()
            .first()?
            .partitions()
            .len() as i32;
        let mut wanted = TopicPartitionList::new();
        for p in 0..partitions {
            wanted.add_partition(&self.topic, p);
        }
        let committed = consumer.committed_offsets(wanted, self.timeout).ok()?;
        let now = Instant::now();
        let mut stalled = Vec::new();
        for p in 0..partitions as u32 {
            let offset = match committed.find_partition(&self.topic, p as i32)?.offset() {
                Offset::Offset(offset) => offset,
                _ => 0,
            };
            let since = match self.seen.get(&p) {
                Some(&(seen, since)) if seen == offset => since,
                _ => {
                    self.seen.insert(p, (offset, now));
                    now
                }
            };
            if owned.contains(&p) || now < self.quiet_until || now - since < self.patience {
                continue;
            }
            let (_, high) = consumer
                .fetch_watermarks(&self.topic, p as i32, self.timeout)
                .ok()?;
            if high > offset {
                stalled.push(p);
            }
        }
        if stalled.is_empty() {
            return None;
        }
        self.seen.clear();
        self.quiet_until = now + self.patience;
        Some(stalled)
    }
}

/// Connects rebalances to the [`Owner`].
struct GroupContext {
    owner: Arc<dyn Owner>,
    topic: String,
}

impl GroupContext {
    fn partitions(&self, list: &TopicPartitionList) -> Vec<u32> {
        list.elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition() as u32)
            .collect()
    }
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let partitions = self.partitions(list);
            // The owner checkpoints before returning; the commit then reports it.
            let last = self.owner.revoked(&partitions);
            commit(consumer, &self.topic, &last, CommitMode::Sync);
            tracing::info!(?partitions, "partitions released");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                REBALANCES.inc();
                // This consumer only holds the assignment; workers read.
                if let Err(error) = consumer.pause(list) {
                    tracing::warn!(%error, "pausing the membership consumer");
                }
                let partitions = self.partitions(list);
                tracing::info!(?partitions, "partitions assigned");
                self.owner.assigned(&partitions);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance failed"),
        }
    }
}
