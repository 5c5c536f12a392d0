//! One partition: restored from its newest checkpoint, processed in log
//! order, checkpointed, and restarted by its supervisor after a failure.

use super::*;

impl Processor {
    /// Runs a partition until `stop`; a failure (log or checkpoint I/O)
    /// restarts it from its last checkpoint after a backoff, so a transient
    /// error never leaves a partition unprocessed. A reactor that does not
    /// build is final.
    pub(super) fn supervise(
        &self,
        partition: u32,
        stop: &AtomicBool,
        progress: &Status,
    ) -> Result<(), ProcessorError> {
        let mut backoff = weir_log::backoff::Backoff::restart();
        loop {
            // A panic (a bug in a stage, an invariant broken by input) is
            // a failure like an I/O error: the partition restarts from its
            // checkpoint instead of going unprocessed.
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.run_partition(partition, stop, progress)
            }))
            .unwrap_or_else(|panic| {
                Err(ProcessorError::Panic(weir_log::health::panic_message(
                    &*panic,
                )))
            });
            match run {
                Ok(()) => return Ok(()),
                Err(error @ ProcessorError::Reactor(_)) => return Err(error),
                Err(error) if stop.load(Ordering::Relaxed) => return Err(error),
                Err(error) => {
                    weir_log::health::failing(&health_name(partition), &error);
                    crate::metrics::WORKER_RESTARTS.inc();
                    let wait = backoff.failed();
                    tracing::error!(partition, %error, retry_in = ?wait, "processor worker failed; restarting from its checkpoint");
                    std::thread::sleep(wait);
                }
            }
        }
    }

    /// The newest checkpoint of `partition`: the local one or, when
    /// checkpoints are shared, the one in the log if that is further on.
    pub(super) fn newest_checkpoint(
        &self,
        partition: u32,
    ) -> Result<Option<Checkpoint>, ProcessorError> {
        let group = &self.topics.reactors_group;
        let local = self.store.load(group, partition)?;
        if !self.share_checkpoints {
            return Ok(local);
        }
        let shared = self.shared().load(group, partition)?;
        // Further on: a later offset, or at the same offset a catch-up
        // that got further (or finished).
        let rank = |c: &Checkpoint| (c.offset, c.catch_up.as_ref().map_or(u64::MAX, |c| c.next));
        Ok(match (local, shared) {
            (Some(local), Some(shared)) if rank(&shared) > rank(&local) => Some(shared),
            (Some(local), _) => Some(local),
            (None, shared) => shared,
        })
    }

    pub(super) fn shared(&self) -> SharedCheckpoints<'_> {
        SharedCheckpoints {
            log: &*self.log,
            topic: &self.topics.checkpoints,
            max_record_bytes: self.log.guarantees().max_record_bytes,
        }
    }

    /// The next batch of `partition` from `next`, waiting up to `wait` at the end.
    pub(super) fn read_events(
        &self,
        partition: u32,
        next: u64,
        wait: Duration,
    ) -> Result<Vec<Record>, LogError> {
        self.log.read(
            &self.topics.events,
            partition,
            next,
            self.config.read_max_bytes,
            wait,
        )
    }

    pub(super) fn build(&self, only: Option<&[String]>) -> Result<Vec<Reactor>, ProcessorError> {
        Ok(self
            .reactors
            .iter()
            .filter(|r| only.is_none_or(|names| names.contains(&r.name)))
            .map(Reactor::build)
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// The engine and next offset of `partition` from its newest
    /// checkpoint. Reactors the checkpoint does not know (added, or their
    /// pipeline changed) are left out of the engine and returned as a
    /// [`Lane`] that catches them up over the partition's history.
    pub(super) fn restore(&self, partition: u32) -> Result<Restored<'_>, ProcessorError> {
        let lateness = self.config.lateness_secs;
        let all = || -> Result<Engine, ProcessorError> {
            Ok(Engine::new(partition, self.build(None)?, lateness))
        };
        let Some(mut checkpoint) = self.newest_checkpoint(partition)? else {
            return Ok((all()?, 0, None, None));
        };
        let index = checkpoint
            .state
            .as_object_mut()
            .and_then(|state| state.remove(INDEX_KEY))
            .and_then(|saved| serde_json::from_value::<SavedIndex>(saved).ok());
        // The reactors whose state the checkpoint holds run live from it;
        // the others (added, or their pipeline changed) catch up in a lane.
        let (known, fresh): (Vec<Reactor>, Vec<Reactor>) = self
            .build(None)?
            .into_iter()
            .partition(|r| Engine::saved(&checkpoint.state, &r.identity()));
        let fresh: Vec<String> = fresh.iter().map(|r| r.name().to_owned()).collect();
        let mut engine = Engine::new(partition, known, lateness);
        if let Err(error) = engine.load(checkpoint.state) {
            tracing::warn!(partition, %error, "checkpoint does not fit the reactors; rebuilding state from the log");
            crate::metrics::RESTORE_FAILURES.inc();
            return Ok((all()?, 0, None, None));
        }
        tracing::info!(partition, offset = checkpoint.offset, "restored checkpoint");
        if fresh.is_empty() {
            return Ok((engine, checkpoint.offset, None, index));
        }
        let lane = Lane::start(self, partition, fresh, checkpoint.catch_up)?;
        Ok((engine, checkpoint.offset, Some(lane), index))
    }

    /// Joins a lane that reached the live position into the live engine.
    pub(super) fn merge(
        &self,
        partition: u32,
        live: &Engine,
        lane: Lane,
    ) -> Result<Engine, ProcessorError> {
        let mut state = live.save();
        if let (Some(all), Some(Value::Object(new))) = (
            state.get_mut("reactors").and_then(Value::as_object_mut),
            lane.engine.save().get_mut("reactors").map(Value::take),
        ) {
            all.extend(new);
        }
        let mut engine = Engine::new(partition, self.build(None)?, self.config.lateness_secs);
        let missing = engine.load(state)?;
        if !missing.is_empty() {
            return Err(
                StateError(format!("reactors {missing:?} missing after their catch-up")).into(),
            );
        }
        let entries = lane.next - lane.from;
        let secs = lane.started.elapsed().as_secs_f64();
        tracing::info!(partition, reactors = ?lane.names, at = lane.next, entries, secs, entries_per_sec = (entries as f64 / secs.max(1e-9)) as u64, "caught up");
        lane.lag.set(0);
        Ok(engine)
    }

    pub(super) fn checkpoint(
        &self,
        partition: u32,
        engine: &mut Engine,
        index: &SharedIndex,
        next: u64,
        lane: Option<&Lane>,
        progress: &Status,
    ) -> Result<(), ProcessorError> {
        let started = Instant::now();
        for identity in lock(&progress.forget).iter() {
            if engine.forget(identity) {
                tracing::info!(
                    partition,
                    identity,
                    "dropped the kept state of a retired reactor version"
                );
            }
        }
        let mut state = engine.save();
        if let Some(state) = state.as_object_mut() {
            let saved = index::lock(index).save();
            state.insert(INDEX_KEY.into(), saved);
        }
        let checkpoint = Checkpoint {
            offset: next,
            state,
            catch_up: lane.map(|lane| CatchUp {
                reactors: lane.names.clone(),
                next: lane.next,
                state: lane.engine.save(),
            }),
        };
        let group = &self.topics.reactors_group;
        let bytes = checkpoint.encode();
        let size = self.store.save_encoded(group, partition, &bytes)?;
        if self.share_checkpoints {
            self.shared().save_encoded(group, partition, next, &bytes)?;
        }
        // Progress is reported only once the state it reflects is durable.
        let status = PartitionStatus {
            offset: next,
            saved_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            reactor_bytes: checkpoint
                .state
                .get("reactors")
                .and_then(Value::as_object)
                .map(|reactors| {
                    reactors
                        .iter()
                        .map(|(id, state)| (id.clone(), json_len(state)))
                        .collect()
                })
                .unwrap_or_default(),
            lag: lock(&progress.partitions)
                .get(&partition)
                .map_or(0, |s| s.lag),
        };
        lock(&progress.partitions).insert(partition, status);
        CHECKPOINT_SECONDS.observe(started.elapsed().as_secs_f64());
        CHECKPOINT_BYTES
            .with_label_values(&[&partition.to_string()])
            .set(size as i64);
        Ok(())
    }

    pub(super) fn run_partition(
        &self,
        partition: u32,
        stop: &AtomicBool,
        progress: &Status,
    ) -> Result<(), ProcessorError> {
        let restoring = Instant::now();
        let (mut engine, mut next, mut lane, saved_index) = self.restore(partition)?;
        RESTORE_SECONDS.observe(restoring.elapsed().as_secs_f64());
        let index: SharedIndex = Arc::new(Mutex::new(PartitionIndex::new(
            self.config.index_ttl_secs,
            self.config.index_max_entries,
        )));
        if let Some(saved) = saved_index {
            index::lock(&index).restore(saved);
        }
        lock(&progress.indexes).insert(partition, index.clone());
        // Checkpoint at once: the group sees the partition's position.
        self.checkpoint(
            partition,
            &mut engine,
            &index,
            next,
            lane.as_ref(),
            progress,
        )?;
        let label = partition.to_string();
        let events = EVENTS.with_label_values(&[&label]);
        let lag = LAG.with_label_values(&[&label]);
        let mut output = Output::new(self, partition, true)?;
        if self.config.index_max_entries > 0 {
            output.index = Some(index.clone());
        }
        let mut since_checkpoint = 0u64;
        let mut last_checkpoint = Instant::now();
        let interval = Duration::from_millis(self.config.checkpoint_interval_ms);
        let mut lag_measured = Instant::now() - interval;
        while !stop.load(Ordering::Relaxed) {
            // While a lane catches up, live reads do not wait for events.
            let wait = if lane.is_some() {
                Duration::ZERO
            } else {
                READ_WAIT
            };
            let batch = self.read_events(partition, next, wait)?;
            next = output.process(&mut engine, &batch, next)?;
            events.inc_by(batch.len() as u64);
            since_checkpoint += batch.len() as u64;
            if let Some(running) = &mut lane {
                let from = running.next;
                let reached = running.advance(self, partition, next)?;
                since_checkpoint += running.next.saturating_sub(from);
                if reached {
                    if let Some(done) = lane.take() {
                        engine = self.merge(partition, &engine, done)?;
                    }
                    // The joined state is checkpointed at once.
                    since_checkpoint = since_checkpoint.max(self.config.checkpoint_every);
                }
            }
            if since_checkpoint > 0
                && (since_checkpoint >= self.config.checkpoint_every
                    || last_checkpoint.elapsed() >= interval)
            {
                self.checkpoint(
                    partition,
                    &mut engine,
                    &index,
                    next,
                    lane.as_ref(),
                    progress,
                )?;
                // Progress past a restart: whatever failed works again.
                weir_log::health::working(&health_name(partition));
                since_checkpoint = 0;
                last_checkpoint = Instant::now();
            }
            if lag_measured.elapsed() >= interval {
                let (_, end) = self.log.offsets(&self.topics.events, partition)?;
                let behind = end.saturating_sub(next);
                lag.set(behind as i64);
                if let Some(status) = lock(&progress.partitions).get_mut(&partition) {
                    status.lag = behind;
                }
                lag_measured = Instant::now();
            }
        }
        if since_checkpoint > 0 {
            self.checkpoint(
                partition,
                &mut engine,
                &index,
                next,
                lane.as_ref(),
                progress,
            )?;
        }
        if let Some(lane) = lane {
            lane.lag.set(0);
        }
        Ok(())
    }
}

/// A restored partition: its engine, next offset, catch-up lane and index.
pub(super) type Restored<'a> = (Engine, u64, Option<Lane<'a>>, Option<SavedIndex>);

/// The key of the partition's index in its checkpointed state.
pub(super) const INDEX_KEY: &str = "index";

/// The length of `value` as JSON, counted without writing it out.
fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}
