//! A results partition's lines handed to a pool, and waiting until the
//! pool delivered them before the consumer commits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde_json::Value;
use weir_event::ResultRecord;

use super::lock;
use super::pool::{Line, Pool};
use super::template::Template;
use crate::consumer::StorageError;
use crate::metrics::SKIPPED;
use crate::sink::{DeadLetters, RecordSink};

/// Counts a handler's lines not yet delivered, so its flush can wait.
#[derive(Default)]
pub(super) struct Pending {
    count: Mutex<usize>,
    settled: Condvar,
}

impl Pending {
    pub(super) fn add(&self) {
        *lock(&self.count) += 1;
    }

    pub(super) fn settle(&self) {
        let mut count = lock(&self.count);
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.settled.notify_all();
        }
    }

    /// Waits until every line is settled; false if `stop` came first.
    pub(super) fn wait(&self, stop: &AtomicBool) -> bool {
        let mut count = lock(&self.count);
        while *count > 0 {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            count = self
                .settled
                .wait_timeout(count, Duration::from_millis(100))
                .map(|(guard, _)| guard)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        true
    }
}

/// One results partition's writer into a pool.
pub(super) struct PartitionWriter {
    pub(super) sink: String,
    pub(super) pool: Arc<Pool>,
    pub(super) template: Template,
    pub(super) pending: Arc<Pending>,
}

impl RecordSink for PartitionWriter {
    fn handle(&mut self, _raw: &[u8], record: ResultRecord) -> Result<(), StorageError> {
        let Some(metric) = record.event.metric else {
            SKIPPED.with_label_values(&[&self.sink]).inc();
            weir_log::drops::dropped(&format!("sink:{}", self.sink), "no_metric", 1, || {
                format!("{} has no metric", record.id)
            });
            return Ok(());
        };
        let path = self
            .template
            .render(&record)
            .map_err(StorageError::Rejected)?;
        let time = record.event.time.floor() as i64;
        let text = format!("{path} {metric} {time}\n").into_bytes().into();
        self.pending.add();
        let line = Line::new(text, self.pending.clone());
        self.pool
            .enqueue(line)
            .inspect_err(|_| self.pending.settle())
    }

    /// A flush waits for the pool to confirm its last lines (at least
    /// 50 ms): a batch must hold far more than 50 ms of lines, or that
    /// wait is the sink's limit (1 MB batches held it to ~290,000 lines/s).
    fn batch_bytes(&self) -> usize {
        8 << 20
    }

    fn flush(&mut self, _dead: &mut DeadLetters) -> Result<Value, StorageError> {
        if self.pending.wait(&self.pool.stop) {
            Ok(Value::Null)
        } else {
            Err(self.pool.stopping())
        }
    }
}
