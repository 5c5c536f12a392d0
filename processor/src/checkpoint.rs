//! Partition checkpoints in sled: the engine's state and the next input
//! offset, written together in one key so they can never disagree.
//!
//! Guarantee: after [`CheckpointStore::save`] returns, the checkpoint
//! survives a crash (sled's `flush` is an fsync of its log). A store that
//! cannot be opened is moved aside and replaced by an empty one, so a
//! corrupt store means a rebuild from the log, not a crash loop.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;
use weir_log::{Log, LogError};

/// Errors of the checkpoint store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// sled failed.
    #[error("checkpoint store {path}: {source}")]
    Store {
        /// The store's directory.
        path: PathBuf,
        /// sled's error.
        source: sled::Error,
    },
    /// The shared checkpoints topic failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Moving a broken store aside failed.
    #[error("moving broken checkpoint store {path} aside: {source}")]
    MoveAside {
        /// The store's directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A partition's saved position and state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The next input offset to process.
    pub offset: u64,
    /// The engine's state at that offset.
    pub state: Value,
    /// Reactors still catching up over the partition's history, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CatchUp>,
}

/// How far new reactors got over the history: a catch-up interrupted by
/// a rebalance or a crash resumes here instead of starting over.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CatchUp {
    /// The reactors catching up (names, sorted).
    pub reactors: Vec<String>,
    /// The next history offset they process.
    pub next: u64,
    /// Their engine's state at `next`.
    pub state: Value,
}

/// The sled database holding every partition's checkpoint.
#[derive(Clone)]
pub struct CheckpointStore {
    db: sled::Db,
    path: PathBuf,
}

impl CheckpointStore {
    /// Opens the store at `path`, replacing it if it is unreadable.
    pub fn open(path: &Path) -> Result<CheckpointStore, CheckpointError> {
        let config = || sled::Config::new().path(path).cache_capacity(16 << 20);
        let db = match config().open() {
            Ok(db) => db,
            Err(error) => {
                let aside = path.with_extension(format!("broken-{}", std::process::id()));
                tracing::warn!(path = %path.display(), %error, aside = %aside.display(),
                    "checkpoint store unreadable; moving it aside and rebuilding state from the log");
                crate::metrics::RESTORE_FAILURES.inc();
                std::fs::rename(path, &aside).map_err(|source| CheckpointError::MoveAside {
                    path: path.to_path_buf(),
                    source,
                })?;
                config().open().map_err(|source| CheckpointError::Store {
                    path: path.to_path_buf(),
                    source,
                })?
            }
        };
        Ok(CheckpointStore {
            db,
            path: path.to_path_buf(),
        })
    }

    fn key(group: &str, partition: u32) -> Vec<u8> {
        let mut key = group.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(&partition.to_be_bytes());
        key
    }

    /// The checkpoint of `partition` for `group`; `None` if absent or unreadable.
    pub fn load(&self, group: &str, partition: u32) -> Result<Option<Checkpoint>, CheckpointError> {
        let bytes =
            self.db
                .get(Self::key(group, partition))
                .map_err(|source| CheckpointError::Store {
                    path: self.path.clone(),
                    source,
                })?;
        Ok(bytes.and_then(|b| match serde_json::from_slice(&b) {
            Ok(checkpoint) => Some(checkpoint),
            Err(error) => {
                tracing::warn!(group, partition, %error, "corrupt checkpoint; rebuilding from the log");
                crate::metrics::RESTORE_FAILURES.inc();
                None
            }
        }))
    }

    /// Stores a checkpoint durably; returns its size in bytes.
    pub fn save(
        &self,
        group: &str,
        partition: u32,
        checkpoint: &Checkpoint,
    ) -> Result<usize, CheckpointError> {
        let bytes = serde_json::to_vec(checkpoint).unwrap_or_default();
        let store_err = |source| CheckpointError::Store {
            path: self.path.clone(),
            source,
        };
        self.db
            .insert(Self::key(group, partition), bytes.as_slice())
            .map_err(store_err)?;
        self.db.flush().map_err(store_err)?;
        Ok(bytes.len())
    }
}

/// Checkpoints in the log's `weir.checkpoints` topic, so a partition that
/// moves to another machine resumes with its state: the snapshot of
/// events partition P goes to partition P (modulo the topic's count),
/// keyed by group and partition; the newest record with the key wins.
pub struct SharedCheckpoints<'a> {
    /// The log.
    pub log: &'a dyn Log,
    /// The checkpoints topic.
    pub topic: &'a str,
}

/// Records scanned per step when searching the topic backwards.
const SCAN_STEP: u64 = 64;

impl SharedCheckpoints<'_> {
    fn place(&self, group: &str, partition: u32) -> Result<(u32, Vec<u8>), LogError> {
        let count = self.log.partitions(self.topic)?;
        Ok((
            partition % count,
            format!("{group}/{partition}").into_bytes(),
        ))
    }

    /// Appends a checkpoint.
    pub fn save(
        &self,
        group: &str,
        partition: u32,
        checkpoint: &Checkpoint,
    ) -> Result<(), LogError> {
        let (target, key) = self.place(group, partition)?;
        let value = serde_json::to_vec(checkpoint).unwrap_or_default();
        self.log
            .append(self.topic, target, &[(&key[..], &value[..])])?;
        Ok(())
    }

    /// The newest checkpoint of `partition` for `group`, searching from
    /// the end of its topic partition backwards.
    pub fn load(&self, group: &str, partition: u32) -> Result<Option<Checkpoint>, LogError> {
        let (target, key) = self.place(group, partition)?;
        let (earliest, mut end) = self.log.offsets(self.topic, target)?;
        while end > earliest {
            let from = end.saturating_sub(SCAN_STEP).max(earliest);
            let mut newest = None;
            let mut at = from;
            while at < end {
                let records =
                    self.log
                        .read(self.topic, target, at, 16 << 20, Duration::from_millis(500))?;
                let Some(last) = records.last() else { break };
                at = last.offset + 1;
                newest = records
                    .iter()
                    .filter(|r| r.offset < end && r.key == key.as_slice())
                    .last()
                    .cloned()
                    .or(newest);
            }
            if let Some(record) = newest {
                return Ok(match serde_json::from_slice(&record.value) {
                    Ok(checkpoint) => Some(checkpoint),
                    Err(error) => {
                        tracing::warn!(group, partition, %error, "corrupt shared checkpoint; ignoring it");
                        crate::metrics::RESTORE_FAILURES.inc();
                        None
                    }
                });
            }
            end = from;
        }
        Ok(None)
    }
}
