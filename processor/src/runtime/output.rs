//! Where a partition's results go: appended to the results topic, the
//! index and the live feed updated, applications handed over.

use super::*;

/// Where a partition's results go, with buffers reused across batches.
pub(super) struct Output<'a> {
    pub(super) processor: &'a Processor,
    /// The live worker's output hands applications over; a catch-up lane
    /// or a replay only runs the hand-offs through its own state.
    pub(super) live: bool,
    pub(super) partition: u32,
    pub(super) results_partition: u32,
    pub(super) results: Vec<ResultRecord>,
    pub(super) encoded: Vec<weir_log::OwnedProduce>,
    /// Results appended so far.
    pub(super) appended: u64,
    /// The partition's index (live worker only).
    pub(super) index: Option<SharedIndex>,
}

impl<'a> Output<'a> {
    pub(super) fn new(
        processor: &'a Processor,
        partition: u32,
        live: bool,
    ) -> Result<Output<'a>, ProcessorError> {
        let results_partitions = processor.log.partitions(&processor.topics.results)?;
        Ok(Output {
            processor,
            live,
            partition,
            results_partition: partition % results_partitions,
            results: Vec::new(),
            encoded: Vec::new(),
            appended: 0,
            index: None,
        })
    }

    /// Runs `engine` over `batch` and appends what it emits to the same
    /// partition of the results topic; returns the next offset to read.
    pub(super) fn process(
        &mut self,
        engine: &mut Engine,
        batch: &[Record],
        mut next: u64,
    ) -> Result<u64, ProcessorError> {
        let max_future = self.processor.config.max_future_secs;
        let mut index = self.index.as_ref().map(index::lock);
        let raw = self.live && live::wants_events();
        for record in batch {
            match engine.entry_of(record, max_future) {
                Ok(entry) => {
                    match &entry {
                        Entry::Event(event) => {
                            let uid = String::from_utf8_lossy(&record.key);
                            if let Some(index) = index.as_mut() {
                                index.update(&uid, event);
                            }
                            if raw {
                                live::publish_event(&uid, event);
                            }
                        }
                        Entry::Decommission(gone) => {
                            if let Some(index) = index.as_mut() {
                                index.remove_host(&gone.host);
                            }
                        }
                        _ => {}
                    }
                    engine.process(record.offset, entry, &mut self.results);
                }
                Err(error) => {
                    UNDECODABLE.inc();
                    weir_log::drops::dropped("processor", "undecodable", 1, || {
                        format!(
                            "partition {} offset {}: {error}",
                            self.partition, record.offset
                        )
                    });
                    tracing::warn!(partition = self.partition, offset = record.offset, %error, "skipping undecodable record");
                }
            }
            next = record.offset + 1;
        }
        if let Some(index) = index.as_mut() {
            index.advance(engine.clock());
        }
        drop(index);
        if !self.results.is_empty() {
            self.encoded.clear();
            let live = self.live && live::listening();
            self.encoded.extend(self.results.drain(..).map(|r| {
                let value = r.encode();
                if live {
                    live::publish_result(&r, &value);
                }
                (r.event.host.into_bytes(), value)
            }));
            let topics = &self.processor.topics;
            self.processor.log.append(
                &topics.results,
                self.results_partition,
                &weir_log::borrowed(&self.encoded),
            )?;
            self.appended += self.encoded.len() as u64;
        }
        for handover in engine.take_handovers() {
            if self.live {
                self.hand_over(&handover)?;
            }
        }
        Ok(next)
    }

    /// Appends an application's moved state to its new partition, then the
    /// registry record that completes the move (the routers release its
    /// events). Repeated after a crash, both are taken once: the new
    /// partition ignores a move id it has seen, the registry a completion
    /// of a move that is not under way.
    pub(super) fn hand_over(&self, handover: &Handover) -> Result<(), ProcessorError> {
        let topics = &self.processor.topics;
        let log = &self.processor.log;
        let handoff = &handover.handoff;
        if let Some(moved) = &handover.moved {
            let value = Entry::Moved(moved.clone()).encode();
            log.append(
                &topics.events,
                handoff.to,
                &[(handoff.uid.as_bytes(), &value[..])],
            )?;
            crate::metrics::HANDOFFS.inc();
        }
        let (key, value) = handoff.completion();
        log.append(&topics.registry, 0, &[(&key[..], &value[..])])?;
        Ok(())
    }
}
