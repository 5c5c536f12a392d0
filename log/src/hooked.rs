//! A [`Log`] wrapper that runs a hook before every append, for tests that
//! need a slow or failing log (feature `test-util`).

use std::sync::Arc;
use std::time::Duration;

use crate::{Committed, EmbeddedLog, Log, LogError, Membership, Owner, Produce, Record};

/// Called with the topic and partition before each append; an error is
/// returned to the appender instead of appending.
pub type AppendHook = Box<dyn Fn(&str, u32) -> Result<(), LogError> + Send + Sync>;

/// An embedded log whose appends first go through a hook.
pub struct HookedLog {
    /// The log that does the work.
    pub inner: EmbeddedLog,
    hook: AppendHook,
}

impl HookedLog {
    /// Wraps `inner`, calling `hook` before each append.
    pub fn new(inner: EmbeddedLog, hook: AppendHook) -> HookedLog {
        HookedLog { inner, hook }
    }
}

impl Log for HookedLog {
    fn guarantees(&self) -> crate::Guarantees {
        self.inner.guarantees()
    }

    fn create_topic(&self, topic: &str, partitions: u32, compacted: bool) -> Result<(), LogError> {
        Log::create_topic(&self.inner, topic, partitions, compacted)
    }

    fn grow_topic(&self, topic: &str, partitions: u32) -> Result<u32, LogError> {
        self.inner.grow_topic(topic, partitions)
    }

    fn join(
        &self,
        group: &str,
        topic: &str,
        owner: Arc<dyn Owner>,
    ) -> Result<Box<dyn Membership>, LogError> {
        self.inner.join(group, topic, owner)
    }

    fn partitions(&self, topic: &str) -> Result<u32, LogError> {
        self.inner.partitions(topic)
    }

    fn accepts_input(&self) -> Result<(), LogError> {
        self.inner.accepts_input()
    }

    fn append(&self, topic: &str, partition: u32, records: &[Produce]) -> Result<u64, LogError> {
        (self.hook)(topic, partition)?;
        self.inner.append(topic, partition, records)
    }

    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Vec<Record>, LogError> {
        self.inner.read(topic, partition, from, max_bytes, wait)
    }

    fn offsets(&self, topic: &str, partition: u32) -> Result<(u64, u64), LogError> {
        self.inner.offsets(topic, partition)
    }

    fn commit(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        committed: &Committed,
    ) -> Result<(), LogError> {
        self.inner.commit(group, topic, partition, committed)
    }

    fn committed(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<Committed>, LogError> {
        self.inner.committed(group, topic, partition)
    }
}
