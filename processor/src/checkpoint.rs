//! Partition checkpoints in sled: the engine's state and the next input
//! offset, written together in one key so they can never disagree.
//!
//! Guarantee: after [`CheckpointStore::save`] returns, the checkpoint
//! survives a crash (sled's `flush` is an fsync of its log). A store that
//! cannot be opened is moved aside and replaced by an empty one, so a
//! corrupt store means a rebuild from the log, not a crash loop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use weir_log::{Log, LogError, Record};

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

impl Checkpoint {
    /// Its stored form (JSON), made once for every store it goes to.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
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
        self.save_encoded(group, partition, &checkpoint.encode())
    }

    /// Stores a checkpoint already [encoded](Checkpoint::encode).
    pub fn save_encoded(
        &self,
        group: &str,
        partition: u32,
        bytes: &[u8],
    ) -> Result<usize, CheckpointError> {
        let store_err = |source| CheckpointError::Store {
            path: self.path.clone(),
            source,
        };
        self.db
            .insert(Self::key(group, partition), bytes)
            .map_err(store_err)?;
        self.db.flush().map_err(store_err)?;
        Ok(bytes.len())
    }
}

/// Checkpoints in the log's `weir.checkpoints` topic, so a partition that
/// moves to another machine resumes with its state: the snapshot of
/// events partition P goes to partition P (modulo the topic's count),
/// keyed by group and partition; the newest record with the key wins.
///
/// A checkpoint larger than the log's record limit (Kafka brokers refuse
/// records over `message.max.bytes`, 1 MB by default) goes as chunks:
/// records keyed `KEY#0`, `KEY#1`, … (distinct keys, so compaction keeps
/// each), each value the checkpoint's id, a newline and its share of the
/// bytes, then a manifest under `KEY` naming the id and the count. A
/// reader takes the newest record under `KEY` and, for a manifest, the
/// chunks with its id before it.
pub struct SharedCheckpoints<'a> {
    /// The log.
    pub log: &'a dyn Log,
    /// The checkpoints topic.
    pub topic: &'a str,
    /// The largest record the log takes ([`weir_log::Guarantees`]).
    pub max_record_bytes: Option<usize>,
}

/// Records scanned per step when searching the topic backwards.
const SCAN_STEP: u64 = 64;

/// Bytes of a chunk record kept for its key, id and the record's framing.
const CHUNK_OVERHEAD: usize = 512;

/// The record under the checkpoint's own key when it went as chunks.
#[derive(Serialize, Deserialize)]
struct Manifest {
    chunks: usize,
    id: String,
}

impl SharedCheckpoints<'_> {
    fn place(&self, group: &str, partition: u32) -> Result<(u32, Vec<u8>), LogError> {
        let count = self.log.partitions(self.topic)?;
        Ok((
            partition % count,
            format!("{group}/{partition}").into_bytes(),
        ))
    }

    /// Appends a checkpoint, as chunks and a manifest if it is larger
    /// than the log takes in one record.
    pub fn save(
        &self,
        group: &str,
        partition: u32,
        checkpoint: &Checkpoint,
    ) -> Result<(), LogError> {
        self.save_encoded(group, partition, checkpoint.offset, &checkpoint.encode())
    }

    /// Appends a checkpoint already [encoded](Checkpoint::encode), of
    /// input offset `offset`.
    pub fn save_encoded(
        &self,
        group: &str,
        partition: u32,
        offset: u64,
        value: &[u8],
    ) -> Result<(), LogError> {
        let (target, key) = self.place(group, partition)?;
        let limit = self.max_record_bytes.unwrap_or(usize::MAX);
        if value.len() + key.len() + CHUNK_OVERHEAD <= limit {
            self.log.append(self.topic, target, &[(&key[..], value)])?;
            return Ok(());
        }
        let room = limit.saturating_sub(CHUNK_OVERHEAD).max(1024);
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let id = format!("{offset}-{at}");
        let mut records: Vec<weir_log::OwnedProduce> = value
            .chunks(room)
            .enumerate()
            .map(|(i, chunk)| {
                let mut data = format!("{id}\n").into_bytes();
                data.extend_from_slice(chunk);
                (
                    format!("{}#{i}", String::from_utf8_lossy(&key)).into_bytes(),
                    data,
                )
            })
            .collect();
        let manifest = Manifest {
            chunks: records.len(),
            id,
        };
        tracing::debug!(
            group,
            partition,
            bytes = value.len(),
            chunks = manifest.chunks,
            "shared checkpoint in chunks"
        );
        records.push((key, serde_json::to_vec(&manifest).unwrap_or_default()));
        self.log
            .append(self.topic, target, &weir_log::borrowed(&records))?;
        Ok(())
    }

    /// The newest checkpoint of `partition` for `group`, searching from
    /// the end of its topic partition backwards.
    pub fn load(&self, group: &str, partition: u32) -> Result<Option<Checkpoint>, LogError> {
        let (target, key) = self.place(group, partition)?;
        let chunk_prefix = [&key[..], b"#"].concat();
        let mut manifest: Option<Manifest> = None;
        let mut chunks: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
        let mut found = None;
        self.scan_back(target, |record| {
            let Some(wanted) = &manifest else {
                if record.key != key {
                    return false;
                }
                match serde_json::from_slice::<Manifest>(&record.value) {
                    Ok(m) if m.chunks > 0 => manifest = Some(m),
                    _ => found = Some(record.value.clone()),
                }
                return found.is_some();
            };
            let Some(index) = record.key.strip_prefix(&chunk_prefix[..]) else {
                return false;
            };
            let index = std::str::from_utf8(index).ok().and_then(|i| i.parse().ok());
            let data = record.value.strip_prefix(wanted.id.as_bytes());
            if let (Some(index), Some(data)) = (index, data.and_then(|d| d.strip_prefix(b"\n"))) {
                chunks.entry(index).or_insert_with(|| data.to_vec());
            }
            if chunks.len() == wanted.chunks {
                found = Some(chunks.values().flatten().copied().collect());
            }
            found.is_some()
        })?;
        if let (Some(manifest), None) = (&manifest, &found) {
            tracing::warn!(
                group,
                partition,
                chunks = manifest.chunks,
                found = chunks.len(),
                "shared checkpoint incomplete (chunks missing); ignoring it"
            );
            crate::metrics::RESTORE_FAILURES.inc();
        }
        Ok(found.and_then(|value| match serde_json::from_slice(&value) {
            Ok(checkpoint) => Some(checkpoint),
            Err(error) => {
                tracing::warn!(group, partition, %error, "corrupt shared checkpoint; ignoring it");
                crate::metrics::RESTORE_FAILURES.inc();
                None
            }
        }))
    }

    /// Hands the records of `target` to `visit` newest first, until it
    /// returns true or the earliest record was seen.
    fn scan_back(
        &self,
        target: u32,
        mut visit: impl FnMut(&Record) -> bool,
    ) -> Result<(), LogError> {
        let (earliest, mut end) = self.log.offsets(self.topic, target)?;
        while end > earliest {
            let from = end.saturating_sub(SCAN_STEP).max(earliest);
            let mut window = Vec::new();
            let mut at = from;
            while at < end {
                let records =
                    self.log
                        .read(self.topic, target, at, 16 << 20, Duration::from_millis(500))?;
                let Some(last) = records.last() else { break };
                at = last.offset + 1;
                window.extend(records.into_iter().filter(|r| r.offset < end));
            }
            if window.iter().rev().any(&mut visit) {
                return Ok(());
            }
            end = from;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_log::{EmbeddedLog, LogConfig};

    fn checkpoint(offset: u64, bytes: usize) -> Checkpoint {
        Checkpoint {
            offset,
            state: serde_json::json!({"blob": "é".repeat(bytes / 2)}),
            catch_up: None,
        }
    }

    #[test]
    fn a_checkpoint_larger_than_a_record_goes_in_chunks_and_comes_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(dir.path(), LogConfig::default()).unwrap();
        log.create_topic("cp", 2, true).unwrap();
        let shared = SharedCheckpoints {
            log: &log,
            topic: "cp",
            max_record_bytes: Some(4096),
        };
        let small = checkpoint(1, 100);
        shared.save("g", 0, &small).unwrap();
        let records = |partition| log.offsets("cp", partition).unwrap().1;
        assert_eq!(records(0), 1, "a small one is one record");
        assert_eq!(shared.load("g", 0).unwrap().unwrap().state, small.state);

        let large = checkpoint(2, 50_000);
        shared.save("g", 0, &large).unwrap();
        // Another group's checkpoint in between changes nothing.
        shared.save("other", 0, &checkpoint(9, 30_000)).unwrap();
        let every_record = log.read("cp", 0, 0, 16 << 20, Duration::ZERO).unwrap();
        assert!(every_record
            .iter()
            .all(|r| r.key.len() + r.value.len() <= 4096));
        assert!(records(0) > 20, "split into chunks");
        let loaded = shared.load("g", 0).unwrap().unwrap();
        assert_eq!((loaded.offset, &loaded.state), (2, &large.state));

        // Chunks of a newer checkpoint whose manifest never made it: the
        // last whole one is loaded.
        let key = b"g/0#0".to_vec();
        log.append("cp", 0, &[(&key[..], b"3-1\n{\"offset\":3")])
            .unwrap();
        assert_eq!(shared.load("g", 0).unwrap().unwrap().offset, 2);

        // A manifest whose chunks are gone: ignored, not a bad state.
        let manifest = br#"{"chunks":3,"id":"lost"}"#;
        log.append("cp", 0, &[(&b"g/0"[..], &manifest[..])])
            .unwrap();
        assert!(shared.load("g", 0).unwrap().is_none());
    }
}
