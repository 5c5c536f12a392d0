//! The Kafka sink: results copied to a topic of the (Kafka) log for other
//! consumers, keyed by host, into the results partition's number (modulo
//! the topic's partitions) so a host's results stay in order.
//!
//! Appended at each flush before the commit: after a crash between the
//! two a result can appear twice in the topic, with the same `id`, which
//! readers use to drop the repeat.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use weir_event::ResultRecord;
use weir_log::{Log, OwnedProduce};

use crate::consumer::StorageError;
use crate::sink::{DeadLetters, RecordSink};

/// `type = "kafka"` options.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// The topic (created with the log's partition count if missing).
    pub topic: String,
}

/// Copies one results partition to a topic.
pub struct KafkaSink {
    log: Arc<dyn Log>,
    topic: String,
    partition: u32,
    pending: Vec<OwnedProduce>,
}

impl KafkaSink {
    /// A sink for results `partition` appending to `topic` of `log`.
    pub fn new(log: Arc<dyn Log>, topic: &str, partition: u32) -> KafkaSink {
        KafkaSink {
            log,
            topic: topic.to_owned(),
            partition,
            pending: Vec::new(),
        }
    }
}

impl RecordSink for KafkaSink {
    fn restore(&mut self, _resume: Option<Value>) -> Result<(), StorageError> {
        self.pending.clear();
        Ok(())
    }

    fn handle(&mut self, raw: &[u8], record: ResultRecord) -> Result<(), StorageError> {
        self.pending
            .push((record.event.host.into_bytes(), raw.to_vec()));
        Ok(())
    }

    fn flush(&mut self, _dead: &mut DeadLetters) -> Result<Value, StorageError> {
        if !self.pending.is_empty() {
            let partitions = self.log.partitions(&self.topic)?;
            self.log.append(
                &self.topic,
                self.partition % partitions,
                &weir_log::borrowed(&self.pending),
            )?;
            self.pending.clear();
        }
        Ok(Value::Null)
    }
}
