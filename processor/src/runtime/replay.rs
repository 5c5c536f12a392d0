//! Replaying a partition's history through the reactors.

use super::*;

/// The part of the history a replay covers, by append time.
#[derive(Debug, Clone, Default)]
pub struct ReplayWindow {
    /// Skip entries appended before this (ms since the epoch).
    pub from_ms: Option<u64>,
    /// Stop at the first entry appended after this.
    pub to_ms: Option<u64>,
    /// After the history, go on with new entries until stopped.
    pub follow: bool,
}

/// One partition's replay progress, read by the caller's display.
#[derive(Debug, Default)]
pub struct ReplayProgress {
    /// Entries consumed since the replay (re)started.
    pub done: AtomicU64,
    /// Entries to consume: up to the end of the partition as last seen.
    pub total: AtomicU64,
    /// Results appended.
    pub results: AtomicU64,
}

impl Processor {
    /// Replays this processor's reactors over `partition` as consumer
    /// group `group`, alone: from the group's checkpoint if it has one,
    /// else from the earliest entry, to the end of the partition (or
    /// `window.to_ms`), and on live with `window.follow`, until `stop`.
    /// Results get the ids live processing gives them, so a replay from
    /// the earliest entry reproduces the live results exactly.
    pub fn replay_partition(
        &self,
        partition: u32,
        group: &str,
        window: &ReplayWindow,
        stop: &AtomicBool,
        progress: &ReplayProgress,
    ) -> Result<(), ProcessorError> {
        let mut engine = Engine::new(partition, self.build(None)?, self.config.lateness_secs);
        let (earliest, mut end) = self.log.offsets(&self.topics.events, partition)?;
        let mut next = earliest;
        if let Some(checkpoint) = self.store.load(group, partition)? {
            match engine.load(checkpoint.state) {
                Ok(_) => next = checkpoint.offset,
                Err(error) => {
                    tracing::warn!(partition, %error, "replay checkpoint does not fit; starting over");
                    engine = Engine::new(partition, self.build(None)?, self.config.lateness_secs);
                }
            }
        }
        let start = next;
        let mut output = Output::new(self, partition, false)?;
        let interval = Duration::from_millis(self.config.checkpoint_interval_ms);
        let mut last_checkpoint = Instant::now();
        let save = |engine: &Engine, next: u64| {
            let checkpoint = Checkpoint {
                offset: next,
                state: engine.save(),
                catch_up: None,
            };
            self.store.save(group, partition, &checkpoint)
        };
        loop {
            progress
                .total
                .store(end.saturating_sub(start), Ordering::Relaxed);
            progress.done.store(next - start, Ordering::Relaxed);
            progress.results.store(output.appended, Ordering::Relaxed);
            if stop.load(Ordering::Relaxed) || (next >= end && !window.follow) {
                break;
            }
            let batch = self.read_events(partition, next, READ_WAIT)?;
            let past_to = batch
                .iter()
                .position(|r| window.to_ms.is_some_and(|to| r.timestamp_ms > to));
            let batch = &batch[..past_to.unwrap_or(batch.len())];
            let first = batch
                .iter()
                .position(|r| window.from_ms.is_none_or(|from| r.timestamp_ms >= from))
                .unwrap_or(batch.len());
            if let Some(last) = batch.last() {
                next = output.process(&mut engine, &batch[first..], last.offset + 1)?;
            }
            if past_to.is_some() {
                break;
            }
            if last_checkpoint.elapsed() >= interval {
                save(&engine, next)?;
                last_checkpoint = Instant::now();
            }
            if next >= end {
                end = end.max(self.log.offsets(&self.topics.events, partition)?.1);
            }
        }
        save(&engine, next)?;
        progress.results.store(output.appended, Ordering::Relaxed);
        Ok(())
    }
}
