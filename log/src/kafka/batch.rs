//! Partition queues, batch consume and batch produce, which rdkafka does
//! not wrap.
//!
//! Consume: one consumer per topic fetches every partition read (one fetch
//! request and connection instead of a client per partition), each
//! partition started on a queue of its own (`rd_kafka_consume_start_queue`,
//! the simple-consumer API). One `rd_kafka_consume_batch_queue` call takes
//! up to a batch of the messages waiting on a partition's queue. Polling
//! instead costs, per message, three clock reads, a queue lock round trip
//! and an event allocation.
//!
//! Produce: one `rd_kafka_produce_batch` call enqueues a partition's
//! records on a cached topic handle, without copying their values (an
//! append waits for every delivery report anyway, so the values outlive
//! librdkafka's use of them). rdkafka's `send` instead copies each value
//! into a fresh allocation, builds a C string of the topic and looks the
//! topic and partition up, and reads the clock, per record.
//!
//! Measured in docs/PERFORMANCE.md ("Batch consume", "Batch produce and
//! one consumer per topic").
//! This module is the workspace's only `unsafe` code.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message as _};

use crate::Produce;

/// Messages taken per call.
const BATCH: usize = 256;

/// One consumer fetching every partition of a topic that is read (one
/// fetch request for all of them), with librdkafka's simple-consumer API.
pub(super) struct TopicConsumer {
    /// Declared first: released before the consumer.
    topic: Topic,
    consumer: BaseConsumer,
}

impl TopicConsumer {
    /// Reads `topic` through `consumer`, which has no `group.id` (a
    /// simple consumer: it fetches what it is told, from where it is told).
    pub(super) fn new(consumer: BaseConsumer, topic: &str) -> Result<TopicConsumer, KafkaError> {
        let topic = Topic::new(consumer.client().native_ptr(), topic)
            .map_err(KafkaError::MessageConsumption)?;
        Ok(TopicConsumer { topic, consumer })
    }
}

/// A client's handle on one topic.
struct Topic(*mut rd::rd_kafka_topic_t);

// SAFETY: topic handles are thread-safe and reference counted.
unsafe impl Send for Topic {}
// SAFETY: as above; calls on one handle may run concurrently.
unsafe impl Sync for Topic {}

impl Topic {
    /// `client`'s handle on `name`, with the client's topic defaults.
    fn new(client: *mut rd::rd_kafka_t, name: &str) -> Result<Topic, RDKafkaErrorCode> {
        let name = CString::new(name).map_err(|_| RDKafkaErrorCode::InvalidTopic)?;
        // SAFETY: a live client and a NUL-terminated name; a null
        // configuration takes the client's defaults.
        let handle = unsafe { rd::rd_kafka_topic_new(client, name.as_ptr(), std::ptr::null_mut()) };
        if handle.is_null() {
            return Err(RDKafkaErrorCode::InvalidTopic);
        }
        Ok(Topic(handle))
    }
}

impl Drop for Topic {
    fn drop(&mut self) {
        // SAFETY: our own reference from `rd_kafka_topic_new`, released
        // once, while its client lives (owners declare it first).
        unsafe { rd::rd_kafka_topic_destroy(self.0) };
    }
}

/// One partition of a [`TopicConsumer`], its messages on a queue of its
/// own, read in batches.
pub(super) struct PartitionConsumer {
    topic: Arc<TopicConsumer>,
    partition: i32,
    /// Where the partition's messages arrive, released in `drop`.
    queue: *mut rd::rd_kafka_queue_t,
    /// Whether the partition is being fetched.
    started: bool,
    /// The batch being handed out, emptied before `consume` returns.
    taken: Vec<*mut rd::rd_kafka_message_t>,
}

// SAFETY: librdkafka queues and handles are thread-safe; the message
// pointers in `taken` never outlive one `consume` call.
unsafe impl Send for PartitionConsumer {}

/// One consumed message, borrowed for the duration of a callback.
pub(super) struct Message<'a> {
    /// Its offset in the partition.
    pub offset: i64,
    /// Milliseconds since the epoch, -1 when the broker gave none.
    pub timestamp_ms: i64,
    /// Its key (empty when it has none).
    pub key: &'a [u8],
    /// Its value (empty when it has none).
    pub payload: &'a [u8],
}

impl PartitionConsumer {
    /// `partition` of `topic`, not fetched until [`PartitionConsumer::start`].
    pub(super) fn new(topic: Arc<TopicConsumer>, partition: u32) -> PartitionConsumer {
        // SAFETY: a live client; the queue is released in `drop`.
        let queue = unsafe { rd::rd_kafka_queue_new(topic.consumer.client().native_ptr()) };
        PartitionConsumer {
            topic,
            partition: partition as i32,
            queue,
            started: false,
            taken: Vec::with_capacity(BATCH),
        }
    }

    /// Fetches the partition from `offset` on; nothing fetched before this
    /// call is handed out after it.
    pub(super) fn start(&mut self, offset: u64) -> Result<(), KafkaError> {
        self.stop();
        // The stop waited for the fetcher: drop what it had queued.
        while self.take(Duration::ZERO).is_ok_and(|count| count > 0) {
            self.release();
        }
        // SAFETY: our topic handle and queue, both alive.
        let started = unsafe {
            rd::rd_kafka_consume_start_queue(
                self.topic.topic.0,
                self.partition,
                offset as i64,
                self.queue,
            )
        };
        if started == -1 {
            // SAFETY: reads the calling thread's last librdkafka error.
            let code = unsafe { rd::rd_kafka_last_error() };
            return Err(KafkaError::MessageConsumption(code.into()));
        }
        self.started = true;
        Ok(())
    }

    /// Stops fetching the partition (waiting for the fetcher to stop).
    fn stop(&mut self) {
        if std::mem::take(&mut self.started) {
            // SAFETY: our topic handle; the partition was started.
            unsafe { rd::rd_kafka_consume_stop(self.topic.topic.0, self.partition) };
        }
    }

    /// Waits up to `wait` for messages, then hands each of up to a batch
    /// of them to `each`; how many were taken. A message that carries an
    /// error (e.g. an offset out of range) ends the call with that error.
    pub(super) fn consume(
        &mut self,
        wait: Duration,
        mut each: impl FnMut(Message<'_>),
    ) -> Result<usize, KafkaError> {
        let count = self.take(wait)?;
        let mut error = None;
        for &message in &self.taken {
            // SAFETY: each message stays valid until destroyed below.
            let message = unsafe { &*message };
            if message.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                error.get_or_insert(KafkaError::MessageConsumption(message.err.into()));
                continue;
            }
            if error.is_some() {
                continue;
            }
            each(Message {
                offset: message.offset,
                // SAFETY: a valid message; the type out-parameter may be null.
                timestamp_ms: unsafe {
                    rd::rd_kafka_message_timestamp(message, std::ptr::null_mut())
                },
                // SAFETY: librdkafka's pointer and length of the key and
                // payload, alive with the message.
                key: unsafe { bytes(message.key, message.key_len) },
                payload: unsafe { bytes(message.payload, message.len) },
            });
        }
        self.release();
        error.map_or(Ok(count), Err)
    }

    /// Waits up to `wait`, then moves up to a batch of the queue's
    /// messages into `taken`; how many.
    fn take(&mut self, wait: Duration) -> Result<usize, KafkaError> {
        let timeout = wait.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `taken` is empty with room for BATCH pointers, which
        // librdkafka fills and counts in the return value.
        let count = unsafe {
            rd::rd_kafka_consume_batch_queue(self.queue, timeout, self.taken.as_mut_ptr(), BATCH)
        };
        let count = usize::try_from(count)
            .map_err(|_| KafkaError::MessageConsumption(RDKafkaErrorCode::Fail))?;
        // SAFETY: librdkafka wrote `count` valid message pointers.
        unsafe { self.taken.set_len(count) };
        Ok(count)
    }

    /// Destroys the messages in `taken`.
    fn release(&mut self) {
        for message in self.taken.drain(..) {
            // SAFETY: taken from librdkafka, destroyed exactly once.
            unsafe { rd::rd_kafka_message_destroy(message) };
        }
    }
}

/// The `len` bytes at `data` (none when null).
///
/// # Safety
/// `data` is null or points to `len` bytes that outlive `'a`.
unsafe fn bytes<'a>(data: *mut std::ffi::c_void, len: usize) -> &'a [u8] {
    if data.is_null() {
        &[]
    } else {
        // SAFETY: the caller's promise.
        unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) }
    }
}

impl Drop for PartitionConsumer {
    fn drop(&mut self) {
        self.stop();
        // SAFETY: our own queue, released once, before the consumer.
        unsafe { rd::rd_kafka_queue_destroy(self.queue) };
    }
}

/// A producer that appends in batches without copying values.
pub(super) struct BatchProducer {
    /// Handles of the topics appended to (dropped before the producer).
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    producer: ThreadedProducer<Deliveries>,
}

impl BatchProducer {
    /// Creates the producer `config` describes.
    pub(super) fn new(config: &ClientConfig) -> Result<BatchProducer, KafkaError> {
        Ok(BatchProducer {
            topics: Mutex::new(HashMap::new()),
            producer: config.create_with_context(Deliveries)?,
        })
    }

    /// The handle on `name`, created on first use.
    fn topic(&self, name: &str) -> Result<Arc<Topic>, KafkaError> {
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(topic) = topics.get(name) {
            return Ok(topic.clone());
        }
        let topic = Arc::new(
            Topic::new(self.producer.client().native_ptr(), name)
                .map_err(KafkaError::MessageProduction)?,
        );
        topics.insert(name.to_owned(), topic.clone());
        Ok(topic)
    }

    /// Appends every record of `batches` (partition, records) to `topic`
    /// and waits until each one is reported; the offset after the newest
    /// delivered record. While the producer queue is full it waits for
    /// room; after a record is refused it sends no more, waits for those
    /// already sent, and returns the refusal.
    pub(super) fn produce(
        &self,
        topic: &str,
        batches: &[(u32, &[Produce<'_>])],
    ) -> Result<Option<u64>, KafkaError> {
        let topic = self.topic(topic)?;
        let pending = Arc::new(Pending::default());
        // librdkafka reads the values until their delivery reports: this
        // call returns only after every record it enqueued was reported,
        // even when it unwinds.
        let _settled = Settled(&pending);
        let mut messages = Vec::new();
        let mut refused = None;
        for &(partition, records) in batches {
            messages.clear();
            messages.extend(records.iter().map(|&(key, value)| rd::rd_kafka_message_t {
                err: rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
                rkt: std::ptr::null_mut(),
                partition: partition as i32,
                // An empty value goes as null: a tombstone on a compacted topic.
                payload: if value.is_empty() {
                    std::ptr::null_mut()
                } else {
                    value.as_ptr().cast_mut().cast()
                },
                len: value.len(),
                key: key.as_ptr().cast_mut().cast(),
                key_len: key.len(),
                offset: 0,
                _private: Arc::into_raw(pending.clone()).cast_mut().cast(),
            }));
            let (enqueued, refusal) = enqueue(&topic, partition as i32, &mut messages);
            pending.lock().outstanding += enqueued as i64;
            if refusal.is_some() {
                refused = refusal;
                break;
            }
        }
        let mut state = pending.settle();
        match refused.or_else(|| state.error.take()) {
            Some(error) => Err(error),
            None => Ok(state.next),
        }
    }
}

/// Enqueues `messages` to `partition`, retrying those refused while the
/// queue is full; how many were enqueued. On another refusal it stops,
/// releases the acknowledgement references of the messages not enqueued
/// and returns the refusal too.
fn enqueue(
    topic: &Topic,
    partition: i32,
    messages: &mut [rd::rd_kafka_message_t],
) -> (usize, Option<KafkaError>) {
    use rd::rd_kafka_resp_err_t::{
        RD_KAFKA_RESP_ERR_NO_ERROR as SENT, RD_KAFKA_RESP_ERR__QUEUE_FULL as FULL,
    };
    let mut start = 0;
    while start < messages.len() {
        let rest = &mut messages[start..];
        // SAFETY: `rest` holds valid messages whose keys and values the
        // caller keeps alive until their delivery reports (flags 0: no
        // copy, no free); librdkafka sets each message's `err`.
        unsafe {
            rd::rd_kafka_produce_batch(topic.0, partition, 0, rest.as_mut_ptr(), rest.len() as i32)
        };
        if rest.iter().any(|m| m.err != SENT && m.err != FULL) {
            let mut error = None;
            for message in rest.iter().filter(|m| m.err != SENT) {
                error.get_or_insert(message.err);
                // SAFETY: not enqueued, so the reference is still ours.
                drop(unsafe { Arc::from_raw(message._private.cast::<Pending>()) });
            }
            let sent = start + rest.iter().filter(|m| m.err == SENT).count();
            let code = error.map_or(RDKafkaErrorCode::Fail, RDKafkaErrorCode::from);
            return (sent, Some(KafkaError::MessageProduction(code)));
        }
        // After the first full refusal every later message is refused too.
        match rest.iter().position(|m| m.err == FULL) {
            Some(first_full) => {
                start += first_full;
                std::thread::sleep(Duration::from_millis(1));
            }
            None => start = messages.len(),
        }
    }
    (messages.len(), None)
}

/// Delivery reports of the records one append sent.
#[derive(Default)]
struct Pending {
    state: Mutex<PendingState>,
    all_delivered: Condvar,
}

#[derive(Default)]
struct PendingState {
    /// Records enqueued and not yet reported (below zero while reports
    /// arrive before their batch is counted).
    outstanding: i64,
    /// The offset after the newest delivered record.
    next: Option<u64>,
    /// The first failure.
    error: Option<KafkaError>,
}

impl Pending {
    fn lock(&self) -> MutexGuard<'_, PendingState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks until every record counted as enqueued is reported.
    fn settle(&self) -> MutexGuard<'_, PendingState> {
        let mut state = self.lock();
        while state.outstanding > 0 {
            state = self
                .all_delivered
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
        state
    }
}

/// Waits for an append's outstanding deliveries when dropped, so no
/// borrowed value is freed while librdkafka may still read it.
struct Settled<'a>(&'a Pending);

impl Drop for Settled<'_> {
    fn drop(&mut self) {
        drop(self.0.settle());
    }
}

/// Routes the producer's delivery reports to their append's [`Pending`]:
/// one shared count per append instead of a channel per record.
struct Deliveries;

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Arc<Pending>;

    fn delivery(&self, result: &DeliveryResult<'_>, pending: Arc<Pending>) {
        let mut state = pending.lock();
        match result {
            // A delivered message's offset can be unknown (-1): after a
            // broker restart, an idempotent retry the broker already had is
            // reported delivered without one. Taking it as a number
            // overflowed and killed the delivery thread, and every later
            // append waited for ever.
            Ok(message) => {
                if let Ok(offset) = u64::try_from(message.offset()) {
                    let next = offset.saturating_add(1);
                    state.next = Some(state.next.map_or(next, |n| n.max(next)));
                }
            }
            Err((error, _)) => {
                state.error.get_or_insert_with(|| error.clone());
            }
        }
        state.outstanding -= 1;
        if state.outstanding == 0 {
            pending.all_delivered.notify_all();
        }
    }
}
