//! The embedded log: topics as directories of partitions, partitions as
//! directories of segments, consumer-group offsets as small files.
//!
//! ```text
//! DIR/topics/TOPIC/partitions          partition count
//! DIR/topics/TOPIC/compacted           present: kept whole (no retention)
//! DIR/topics/TOPIC/P/{base}.log|.index segments (see segment.rs)
//! DIR/groups/GROUP/TOPIC-P.json        committed offset + metadata
//! ```
//!
//! Each partition has one writer at a time (appends are serialized by a
//! mutex) and any number of readers, who wait on a condition variable to
//! follow the tail.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::metrics::{APPENDED_BYTES, APPENDS, DISK_FREE, FSYNC_SECONDS, SEGMENTS_DELETED};
use crate::segment::Segment;
use crate::{
    check_growth, io_err, too_few, Committed, FsyncPolicy, Guarantees, Log, LogConfig, LogError,
    Membership, Owner, Produce, Record,
};

/// The default log backend: segment files on local disk.
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    config: LogConfig,
    topics: RwLock<HashMap<String, Topic>>,
    /// Free disk bytes and when they were read: the router asks on every
    /// round, the disk is asked at most every [`FREE_SPACE_TTL`].
    free: Mutex<(Instant, u64)>,
    /// Held (an exclusive lock on `dir/lock`) while the log is open.
    _lock: fs::File,
}

/// How long a reading of the free disk space is used.
const FREE_SPACE_TTL: Duration = Duration::from_millis(100);

/// An open topic's partitions; growing replaces the list, and readers
/// holding the old one keep working on the same partitions.
type Topic = Arc<Vec<Arc<Partition>>>;

struct Partition {
    /// Compacted topics keep every record: retention never deletes the
    /// newest value of a key (the registry's placements).
    compacted: bool,
    /// `topic/partition`, for errors.
    name: String,
    /// Topic name, for metric labels.
    topic: String,
    dir: PathBuf,
    state: Mutex<State>,
    /// Signalled after every append, for readers following the tail.
    appended: Condvar,
    /// Appended since the last fsync (the `interval` policy).
    dirty: AtomicBool,
}

struct State {
    /// Ascending by base offset; the last one is written to.
    segments: Vec<Arc<Segment>>,
    /// Set by a failed fsync: whether written data reached the disk is
    /// unknown, so the partition refuses work until reopened (recovery
    /// then keeps what is really there).
    poisoned: bool,
    /// Set by a failed write (a full disk): the next append first cuts
    /// the partial frame it may have left, then goes on.
    unwritten: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl EmbeddedLog {
    /// Opens (or creates) the log under `dir`, recovering every partition.
    pub fn open(dir: &Path, config: LogConfig) -> Result<EmbeddedLog, LogError> {
        fs::create_dir_all(dir.join("topics")).map_err(io_err("create", dir))?;
        fs::create_dir_all(dir.join("groups")).map_err(io_err("create", dir))?;
        // One process owns the log: a second would interleave appends.
        let lock_path = dir.join("lock");
        let lock = fs::File::create(&lock_path).map_err(io_err("create", &lock_path))?;
        // A previous owner in this process may still be letting go (its
        // fsync thread holds it for a moment): wait a little before refusing.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(LogError::Locked(dir.to_path_buf()))
                }
                Err(fs::TryLockError::Error(error)) => {
                    return Err(io_err("lock", &lock_path)(error))
                }
            }
        }
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            config,
            topics: RwLock::new(HashMap::new()),
            free: Mutex::new((Instant::now() - FREE_SPACE_TTL, 0)),
            _lock: lock,
        });
        if inner.config.fsync == FsyncPolicy::Interval {
            let weak = Arc::downgrade(&inner);
            let period = Duration::from_millis(inner.config.fsync_interval_ms.max(1));
            std::thread::Builder::new()
                .name("weir-log-fsync".into())
                .spawn(move || flush_periodically(weak, period))
                .map_err(io_err("spawn fsync thread", dir))?;
        }
        Ok(EmbeddedLog { inner })
    }

    /// Opens `topic`, creating it with `partitions` partitions if it does
    /// not exist (`compacted`: kept whole, never cut by retention). An
    /// existing topic with more partitions is used as it is; one with
    /// fewer is an error ([`EmbeddedLog::grow_topic`] grows it).
    pub fn create_topic(
        &self,
        topic: &str,
        partitions: u32,
        compacted: bool,
    ) -> Result<(), LogError> {
        let mut topics = self.inner.topics.write().unwrap_or_else(|e| e.into_inner());
        let dir = self.inner.dir.join("topics").join(topic);
        let existing = match topics.get(topic) {
            Some(open) => open.len() as u32,
            None => read_count(&dir)?,
        };
        if existing != 0 && existing < partitions {
            return Err(too_few(topic, existing, partitions));
        }
        if topics.contains_key(topic) {
            return Ok(());
        }
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let marker = dir.join("compacted");
        if compacted && !marker.exists() {
            write_atomically(&marker, b"")?;
        }
        let compacted = marker.exists();
        if existing == 0 {
            write_atomically(&dir.join("partitions"), partitions.to_string().as_bytes())?;
        }
        let parts = (0..existing.max(partitions))
            .map(|p| Partition::open(topic, p, &dir.join(p.to_string()), compacted).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        topics.insert(topic.to_owned(), Arc::new(parts));
        Ok(())
    }

    /// Grows open `topic` to `partitions` partitions (new, empty ones
    /// after the existing); returns the count before. Fewer than it has
    /// is an error: a topic never shrinks.
    pub fn grow_topic(&self, topic: &str, partitions: u32) -> Result<u32, LogError> {
        let mut topics = self.inner.topics.write().unwrap_or_else(|e| e.into_inner());
        let open = topics
            .get(topic)
            .ok_or_else(|| LogError::UnknownTopic(topic.to_owned()))?;
        let before = open.len() as u32;
        check_growth(topic, before, partitions)?;
        let dir = self.inner.dir.join("topics").join(topic);
        let compacted = open.first().is_some_and(|p| p.compacted);
        let mut grown = open.as_ref().clone();
        for p in before..partitions {
            grown.push(Arc::new(Partition::open(
                topic,
                p,
                &dir.join(p.to_string()),
                compacted,
            )?));
        }
        // The partitions exist before the count says so.
        write_atomically(&dir.join("partitions"), partitions.to_string().as_bytes())?;
        topics.insert(topic.to_owned(), Arc::new(grown));
        Ok(before)
    }

    fn topic(&self, topic: &str) -> Result<Topic, LogError> {
        self.inner
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
            .cloned()
            .ok_or_else(|| LogError::UnknownTopic(topic.to_owned()))
    }

    fn with_partition<T>(
        &self,
        topic: &str,
        partition: u32,
        f: impl FnOnce(&Partition) -> Result<T, LogError>,
    ) -> Result<T, LogError> {
        let parts = self.topic(topic)?;
        let part = parts
            .get(partition as usize)
            .ok_or_else(|| LogError::NoSuchPartition {
                topic: topic.to_owned(),
                partition,
                count: parts.len() as u32,
            })?;
        f(part)
    }

    fn group_path(&self, group: &str, topic: &str, partition: u32) -> Result<PathBuf, LogError> {
        let safe = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        };
        if !safe(group) || !safe(topic) {
            return Err(LogError::Corrupt {
                path: self.inner.dir.join("groups"),
                detail: format!("group {group:?} / topic {topic:?} must be [A-Za-z0-9._-]+"),
            });
        }
        Ok(self
            .inner
            .dir
            .join("groups")
            .join(group)
            .join(format!("{topic}-{partition}.json")))
    }
}

/// The recorded partition count of the topic in `dir`; 0 if it has none.
fn read_count(dir: &Path) -> Result<u32, LogError> {
    let path = dir.join("partitions");
    match fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<u32>().map_err(|_| LogError::Corrupt {
            path: path.clone(),
            detail: format!("expected a partition count, found {text:?}"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_err("read", &path)(e)),
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::File::create(&tmp).map_err(io_err("create", &tmp))?;
    file.write_all(bytes).map_err(io_err("write", &tmp))?;
    file.sync_all().map_err(io_err("fsync", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("rename", path))?;
    if let Some(parent) = path.parent() {
        fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync", parent))?;
    }
    Ok(())
}

fn flush_periodically(inner: Weak<Inner>, period: Duration) {
    loop {
        std::thread::sleep(period);
        let Some(inner) = inner.upgrade() else { return };
        let topics: Vec<_> = inner
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for part in topics.iter().flat_map(|parts| parts.iter()) {
            if part.dirty.swap(false, Ordering::AcqRel) {
                let active = part.lock().segments.last().cloned();
                if let Some(segment) = active {
                    if let Err(error) = timed_sync(&segment) {
                        tracing::error!(partition = %part.name, %error, "periodic fsync failed");
                        part.lock().poisoned = true;
                    }
                }
            }
        }
    }
}

fn timed_sync(segment: &Segment) -> Result<(), LogError> {
    let started = Instant::now();
    let result = segment.sync();
    FSYNC_SECONDS.observe(started.elapsed().as_secs_f64());
    result
}

impl Partition {
    fn open(
        topic: &str,
        partition: u32,
        dir: &Path,
        compacted: bool,
    ) -> Result<Partition, LogError> {
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let mut bases = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
            let entry = entry.map_err(io_err("list", dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(base) = name
                .strip_suffix(".log")
                .and_then(|b| b.parse::<u64>().ok())
            {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        let mut segments = Vec::with_capacity(bases.len().max(1));
        for (i, &base) in bases.iter().enumerate() {
            let newest = i + 1 == bases.len();
            segments.push(Arc::new(Segment::open(dir, base, newest)?));
        }
        if segments.is_empty() {
            segments.push(Arc::new(Segment::create(dir, 0)?));
        }
        Ok(Partition {
            compacted,
            name: format!("{topic}/{partition}"),
            topic: topic.to_owned(),
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                segments,
                poisoned: false,
                unwritten: false,
            }),
            appended: Condvar::new(),
            dirty: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn append(&self, config: &LogConfig, records: &[Produce]) -> Result<u64, LogError> {
        let mut state = self.lock();
        if state.poisoned {
            return Err(LogError::Poisoned(self.name.clone()));
        }
        if state.unwritten {
            // A write failed before: cut what it left, then try again
            // (space may have come back; if not, this append fails too).
            self.active(&state)?.discard_unwritten()?;
            state.unwritten = false;
        }
        let result = self.append_locked(&mut state, config, records);
        match &result {
            Err(LogError::Io { op: "fsync", .. }) => state.poisoned = true,
            Err(_) => state.unwritten = true,
            Ok(_) => {}
        }
        drop(state);
        self.appended.notify_all();
        result
    }

    fn active(&self, state: &State) -> Result<Arc<Segment>, LogError> {
        state
            .segments
            .last()
            .cloned()
            .ok_or_else(|| LogError::Corrupt {
                path: self.dir.clone(),
                detail: "partition has no segment".into(),
            })
    }

    fn append_locked(
        &self,
        state: &mut State,
        config: &LogConfig,
        records: &[Produce],
    ) -> Result<u64, LogError> {
        let mut active = self.active(state)?;
        if active.size() >= config.segment_bytes {
            // Seal the full segment durably before starting the next one.
            timed_sync(&active)?;
            let next = Arc::new(Segment::create(&self.dir, active.next_offset())?);
            state.segments.push(next.clone());
            active = next;
            self.apply_retention(state, config)?;
        }
        let bytes = active.append(records, now_ms())?;
        APPENDS
            .with_label_values(&[&self.topic])
            .inc_by(records.len() as u64);
        APPENDED_BYTES
            .with_label_values(&[&self.topic])
            .inc_by(bytes);
        match config.fsync {
            FsyncPolicy::Batch => timed_sync(&active)?,
            FsyncPolicy::Interval => self.dirty.store(true, Ordering::Release),
            FsyncPolicy::Never => {}
        }
        Ok(active.next_offset())
    }

    /// Deletes the oldest sealed segments beyond the size or age limit.
    fn apply_retention(&self, state: &mut State, config: &LogConfig) -> Result<(), LogError> {
        if self.compacted {
            return Ok(());
        }
        let max_age = Duration::from_secs(config.retention_secs);
        let now = SystemTime::now();
        loop {
            let total: u64 = state.segments.iter().map(|s| s.size()).sum();
            let Some(oldest) = state.segments.first() else {
                break;
            };
            if state.segments.len() < 2 {
                break;
            }
            let too_old = oldest
                .modified()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age > max_age);
            if total <= config.retention_bytes && !too_old {
                break;
            }
            let oldest = state.segments.remove(0);
            tracing::info!(partition = %self.name, base = oldest.base, "retention deletes segment");
            SEGMENTS_DELETED.with_label_values(&[&self.topic]).inc();
            // Readers may still hold the segment open; on Unix its data stays
            // readable to them until they drop it.
            let (log, index) = crate::segment::paths(&self.dir, oldest.base);
            fs::remove_file(&log).map_err(io_err("remove", &log))?;
            fs::remove_file(&index).map_err(io_err("remove", &index))?;
        }
        Ok(())
    }

    fn read(&self, from: u64, max_bytes: usize, wait: Duration) -> Result<Vec<Record>, LogError> {
        let deadline = Instant::now() + wait;
        let mut from = from;
        loop {
            let segment = {
                let mut state = self.lock();
                loop {
                    let end = state.segments.last().map_or(0, |s| s.next_offset());
                    if from < end {
                        break;
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(Vec::new());
                    }
                    state = self
                        .appended
                        .wait_timeout(state, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                let start = state.segments.first().map_or(0, |s| s.base);
                from = from.max(start);
                let at = state.segments.partition_point(|s| s.base <= from);
                state.segments[at.saturating_sub(1)].clone()
            };
            let records = segment.read(from, max_bytes)?;
            if !records.is_empty() {
                return Ok(records);
            }
            // `from` was the end of a sealed segment: continue in the next one.
            from = from.max(segment.next_offset());
        }
    }

    fn offsets(&self) -> (u64, u64) {
        let state = self.lock();
        let start = state.segments.first().map_or(0, |s| s.base);
        let end = state.segments.last().map_or(0, |s| s.next_offset());
        (start, end)
    }
}

impl Log for EmbeddedLog {
    fn guarantees(&self) -> Guarantees {
        Guarantees {
            commit_metadata: true,
            shared: false,
            max_record_bytes: None,
        }
    }

    fn create_topic(&self, topic: &str, partitions: u32, compacted: bool) -> Result<(), LogError> {
        EmbeddedLog::create_topic(self, topic, partitions, compacted)
    }

    fn grow_topic(&self, topic: &str, partitions: u32) -> Result<u32, LogError> {
        EmbeddedLog::grow_topic(self, topic, partitions)
    }

    fn join(
        &self,
        group: &str,
        topic: &str,
        owner: Arc<dyn Owner>,
    ) -> Result<Box<dyn Membership>, LogError> {
        let log = Arc::new(EmbeddedLog {
            inner: self.inner.clone(),
        });
        Ok(Box::new(crate::group::join_sole(log, group, topic, owner)?))
    }

    fn partitions(&self, topic: &str) -> Result<u32, LogError> {
        Ok(self.topic(topic)?.len() as u32)
    }

    fn accepts_input(&self) -> Result<(), LogError> {
        let dir = &self.inner.dir;
        let free = {
            let mut known = self.inner.free.lock().unwrap_or_else(|e| e.into_inner());
            if known.0.elapsed() >= FREE_SPACE_TTL {
                let stat = rustix::fs::statvfs(dir.as_path())
                    .map_err(|errno| io_err("statvfs", dir)(errno.into()))?;
                *known = (Instant::now(), stat.f_bavail.saturating_mul(stat.f_frsize));
                DISK_FREE.set(known.1 as i64);
            }
            known.1
        };
        let reserve = self.inner.config.min_free_bytes;
        if free < reserve {
            return Err(LogError::DiskFull {
                path: dir.clone(),
                free,
                reserve,
            });
        }
        Ok(())
    }

    fn append(&self, topic: &str, partition: u32, records: &[Produce]) -> Result<u64, LogError> {
        let config = &self.inner.config;
        self.with_partition(topic, partition, |p| p.append(config, records))
    }

    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Vec<Record>, LogError> {
        self.with_partition(topic, partition, |p| p.read(from, max_bytes, wait))
    }

    fn offsets(&self, topic: &str, partition: u32) -> Result<(u64, u64), LogError> {
        self.with_partition(topic, partition, |p| Ok(p.offsets()))
    }

    fn commit(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        committed: &Committed,
    ) -> Result<(), LogError> {
        let path = self.group_path(group, topic, partition)?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err("create", parent))?;
        }
        let bytes = serde_json::to_vec(committed).unwrap_or_default();
        write_atomically(&path, &bytes)
    }

    fn committed(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<Committed>, LogError> {
        let path = self.group_path(group, topic, partition)?;
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| LogError::Corrupt {
                    path,
                    detail: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }
}
