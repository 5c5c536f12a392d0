//! Batch consume (`rd_kafka_consume_batch_queue`), which rdkafka does not
//! wrap: one call takes up to a batch of the messages waiting on a
//! consumer's queue. Polling instead costs, per message, three clock reads,
//! a queue lock round trip and an event allocation (docs/PERFORMANCE.md,
//! "Batch consume"). This module is the workspace's only `unsafe` code.
#![allow(unsafe_code)]

use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Messages taken per call.
const BATCH: usize = 256;

/// An assign-only consumer read in batches from its queue.
pub(super) struct BatchConsumer {
    /// Our reference to `consumer`'s queue, released before the consumer.
    queue: *mut rd::rd_kafka_queue_t,
    consumer: BaseConsumer,
    /// The batch being handed out, emptied before `consume` returns.
    taken: Vec<*mut rd::rd_kafka_message_t>,
}

// SAFETY: librdkafka queues and handles are thread-safe; the message
// pointers in `taken` never outlive one `consume` call.
unsafe impl Send for BatchConsumer {}

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

impl BatchConsumer {
    /// Reads `consumer` (which has a `group.id`, so its main queue is
    /// forwarded to its consumer queue) in batches.
    pub(super) fn new(consumer: BaseConsumer) -> BatchConsumer {
        // SAFETY: the handle is valid while `consumer` lives, and the
        // returned reference is released in `drop` before it.
        let queue = unsafe { rd::rd_kafka_queue_get_consumer(consumer.client().native_ptr()) };
        BatchConsumer {
            queue,
            consumer,
            taken: Vec::with_capacity(BATCH),
        }
    }

    /// The consumer, for assignments.
    pub(super) fn consumer(&self) -> &BaseConsumer {
        &self.consumer
    }

    /// Waits up to `wait` for messages, then hands each of up to a batch
    /// of them to `each`; how many were taken. A message that carries an
    /// error (e.g. an offset out of range) ends the call with that error.
    pub(super) fn consume(
        &mut self,
        wait: Duration,
        mut each: impl FnMut(Message<'_>),
    ) -> Result<usize, KafkaError> {
        let timeout = wait.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `taken` has room for BATCH pointers, which librdkafka
        // fills and counts in the return value.
        let count = unsafe {
            rd::rd_kafka_consume_batch_queue(self.queue, timeout, self.taken.as_mut_ptr(), BATCH)
        };
        let Ok(count) = usize::try_from(count) else {
            return Err(KafkaError::MessageConsumption(RDKafkaErrorCode::Fail));
        };
        // SAFETY: librdkafka wrote `count` valid message pointers.
        unsafe { self.taken.set_len(count) };
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
        for message in self.taken.drain(..) {
            // SAFETY: taken from librdkafka above, destroyed exactly once.
            unsafe { rd::rd_kafka_message_destroy(message) };
        }
        error.map_or(Ok(count), Err)
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

impl Drop for BatchConsumer {
    fn drop(&mut self) {
        // SAFETY: our own reference, released once, before the consumer.
        unsafe { rd::rd_kafka_queue_destroy(self.queue) };
    }
}
