//! Catch-up lanes: new reactors running over a partition's history
//! beside the live engine until they reach it.

use super::*;

/// History batches a catch-up lane processes per live batch: the lane
/// gets most of a worker's time while live events keep flowing.
pub(super) const LANE_BATCHES_PER_ROUND: usize = 4;

/// New reactors running over a partition's history beside the live
/// engine, until they reach its position and join it. Live processing
/// of the other reactors goes on meanwhile (their alerts are not held up
/// by a long catch-up, and the group sees the partition advance), and
/// the lane's progress is part of every checkpoint, so a rebalance or a
/// crash resumes the catch-up where it was instead of starting it over.
pub(super) struct Lane<'a> {
    /// The reactors catching up, sorted.
    pub(super) names: Vec<String>,
    pub(super) engine: Engine,
    /// The next history offset to process.
    pub(super) next: u64,
    pub(super) output: Output<'a>,
    /// `weir_processor_catch_up_lag` of the partition.
    pub(super) lag: prometheus::IntGauge,
    /// Where this run of the catch-up started, and when.
    pub(super) from: u64,
    pub(super) started: Instant,
    /// When progress was last logged.
    pub(super) reported: Instant,
}

impl<'a> Lane<'a> {
    /// A lane for the reactors `names` of `partition`: from `saved` when
    /// it is this lane's progress, else from the earliest retained entry.
    pub(super) fn start(
        processor: &'a Processor,
        partition: u32,
        mut names: Vec<String>,
        saved: Option<CatchUp>,
    ) -> Result<Lane<'a>, ProcessorError> {
        names.sort();
        let fresh = || -> Result<Engine, ProcessorError> {
            Ok(Engine::new(
                partition,
                processor.build(Some(&names))?,
                processor.config.lateness_secs,
            ))
        };
        let mut engine = fresh()?;
        let (earliest, _) = processor.log.offsets(&processor.topics.events, partition)?;
        let mut resumed = None;
        if let Some(saved) = saved.filter(|saved| saved.reactors == names) {
            match engine.load(saved.state) {
                Ok(missing) if missing.is_empty() => resumed = Some(saved.next.max(earliest)),
                _ => {
                    tracing::warn!(partition, reactors = ?names, "saved catch-up progress does not fit; starting the catch-up over");
                    engine = fresh()?;
                }
            }
        }
        let next = resumed.unwrap_or(earliest);
        match resumed {
            Some(from) => {
                tracing::info!(partition, reactors = ?names, from, earliest, "resuming catch-up")
            }
            None => {
                tracing::info!(partition, reactors = ?names, from = next, "catching new reactors up over the partition's history")
            }
        }
        Ok(Lane {
            names,
            engine,
            next,
            output: Output::new(processor, partition, false)?,
            lag: CATCH_UP_LAG.with_label_values(&[&partition.to_string()]),
            from: next,
            started: Instant::now(),
            reported: Instant::now(),
        })
    }

    /// Processes a few history batches below `until` (the live engine's
    /// next offset), appending their results with the ids live processing
    /// would have given them; true once the lane reached `until`.
    pub(super) fn advance(
        &mut self,
        processor: &Processor,
        partition: u32,
        until: u64,
    ) -> Result<bool, ProcessorError> {
        for _ in 0..LANE_BATCHES_PER_ROUND {
            if self.next >= until {
                break;
            }
            let mut batch = processor.read_events(partition, self.next, READ_WAIT)?;
            let beyond = batch.last().is_some_and(|r| r.offset >= until);
            batch.retain(|r| r.offset < until);
            self.next = self.output.process(&mut self.engine, &batch, self.next)?;
            if beyond {
                self.next = until;
            }
            if batch.is_empty() && !beyond {
                break;
            }
        }
        let left = until.saturating_sub(self.next);
        self.lag.set(left as i64);
        if self.reported.elapsed() >= Duration::from_secs(5) {
            let rate = (self.next - self.from) as f64 / self.started.elapsed().as_secs_f64();
            tracing::info!(
                partition,
                reactors = ?self.names,
                done = self.next - self.from,
                left,
                entries_per_sec = rate as u64,
                eta_secs = (left as f64 / rate.max(1.0)) as u64,
                "catching up"
            );
            self.reported = Instant::now();
        }
        Ok(self.next >= until)
    }
}
