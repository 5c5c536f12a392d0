//! The processor's membership in the reactors' group: the partitions it
//! owns, a worker thread for each, and their status.

use super::*;

/// A running processor: its group membership and partition workers.
pub struct Running {
    pub(super) membership: Box<dyn Membership>,
    pub(super) workers: Arc<Workers>,
}

impl Running {
    /// Leaves the group: every worker checkpoints and stops. Returns the
    /// errors workers stopped with.
    pub fn stop(self) -> Vec<ProcessorError> {
        self.membership.leave();
        std::mem::take(&mut *lock(&self.workers.failures))
    }

    /// The partitions this processor owns now.
    pub fn owned(&self) -> Vec<u32> {
        lock(&self.workers.running).keys().copied().collect()
    }

    /// A live view of the owned partitions' checkpoints.
    pub fn status(&self) -> Status {
        self.workers.progress.clone()
    }
}

/// The processor's side of the admin API: the last checkpoint of each
/// owned partition, and reactor versions whose kept state is to be dropped.
#[derive(Clone, Default)]
pub struct Status {
    pub(super) partitions: Arc<Mutex<BTreeMap<u32, PartitionStatus>>>,
    pub(super) forget: Arc<Mutex<BTreeSet<String>>>,
    pub(super) indexes: Arc<Mutex<BTreeMap<u32, SharedIndex>>>,
}

impl Status {
    /// A copy of every owned partition's status.
    pub fn partitions(&self) -> BTreeMap<u32, PartitionStatus> {
        lock(&self.partitions).clone()
    }

    /// Drops the kept state of retired version `identity` (`name@version`)
    /// from every partition at its next checkpoint.
    pub fn forget(&self, identity: String) {
        lock(&self.forget).insert(identity);
    }

    /// The index entries of every owned partition that `keep` accepts,
    /// at most `limit`, sorted by uid, host and service.
    pub fn index(
        &self,
        keep: impl Fn(&weir_event::Event) -> bool,
        limit: usize,
    ) -> Vec<IndexEntry> {
        let indexes: Vec<SharedIndex> = lock(&self.indexes).values().cloned().collect();
        let found = indexes
            .iter()
            .flat_map(|index| index::lock(index).query(&keep, limit))
            .collect();
        index::sorted(found, limit)
    }
}

/// What `weir state` shows of one partition.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PartitionStatus {
    /// The next input offset, as checkpointed.
    pub offset: u64,
    /// When the checkpoint was written, milliseconds since the epoch.
    pub saved_at_ms: u64,
    /// Bytes of state per reactor (`name@version`) in the checkpoint.
    pub reactor_bytes: BTreeMap<String, usize>,
    /// Entries behind the end of the partition when last measured.
    pub lag: u64,
}

/// One partition's worker thread and its stop flag.
pub(super) struct Worker {
    pub(super) stop: Arc<AtomicBool>,
    pub(super) thread: JoinHandle<Result<(), ProcessorError>>,
}

/// The [`Owner`] of the processor's partitions.
pub(super) struct Workers {
    pub(super) processor: Processor,
    pub(super) running: Mutex<BTreeMap<u32, Worker>>,
    /// Per owned partition: its last checkpoint (the progress reported).
    pub(super) progress: Status,
    /// Errors of workers that stopped for good (a reactor that does not build).
    pub(super) failures: Mutex<Vec<ProcessorError>>,
}

impl Owner for Workers {
    fn assigned(&self, partitions: &[u32]) {
        let mut running = lock(&self.running);
        for &partition in partitions {
            if running.contains_key(&partition) {
                continue;
            }
            let stop = Arc::new(AtomicBool::new(false));
            let (processor, flag, progress) =
                (self.processor.clone(), stop.clone(), self.progress.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("weir-processor-{partition}"))
                .spawn(move || processor.supervise(partition, &flag, &progress));
            match spawned {
                Ok(thread) => {
                    OWNED.with_label_values(&[&partition.to_string()]).set(1);
                    running.insert(partition, Worker { stop, thread });
                    OWNED_COUNT.set(running.len() as i64);
                }
                Err(error) => {
                    tracing::error!(partition, %error, "cannot start a partition worker")
                }
            }
        }
    }

    fn revoked(&self, partitions: &[u32]) -> Vec<(u32, u64)> {
        let stopping: Vec<(u32, Worker)> = {
            let mut running = lock(&self.running);
            partitions
                .iter()
                .filter_map(|p| running.remove(p).map(|w| (*p, w)))
                .collect()
        };
        for (_, worker) in &stopping {
            worker.stop.store(true, Ordering::Relaxed);
        }
        let mut last = Vec::new();
        for (partition, worker) in stopping {
            match worker.thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::error!(partition, %error, "partition worker stopped");
                    lock(&self.failures).push(error);
                }
                Err(_) => tracing::error!(partition, "partition worker panicked"),
            }
            OWNED.with_label_values(&[&partition.to_string()]).set(0);
            // No longer ours: its failures are the next owner's to report.
            weir_log::health::working(&health_name(partition));
            OWNED_COUNT.set(lock(&self.running).len() as i64);
            lock(&self.progress.indexes).remove(&partition);
            if let Some(status) = lock(&self.progress.partitions).remove(&partition) {
                last.push((partition, status.offset));
            }
        }
        last
    }

    fn progress(&self) -> Vec<(u32, u64)> {
        lock(&self.progress.partitions)
            .iter()
            .map(|(p, status)| (*p, status.offset))
            .collect()
    }
}
