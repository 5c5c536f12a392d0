//! The file sink: results as NDJSON under `DIR`, one series of files per
//! results partition (`p{P}-{SEQ:06}.ndjson`), rotated by size.
//!
//! Exactly-once on disk: the commit's resume point is (file, length) after
//! an fsync. On restart the file is cut back to that length and later
//! files of the partition are removed, then the results after the
//! committed offset are written again — so a crash between a write and its
//! commit never leaves a line twice.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use weir_event::ResultRecord;

use crate::consumer::StorageError;
use crate::sink::{DeadLetters, RecordSink};

/// File sink settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileSinkConfig {
    /// Output directory; default `DATA_DIR/results`.
    pub dir: Option<PathBuf>,
    /// A file is closed and the next one started past this size.
    pub max_file_bytes: u64,
}

impl Default for FileSinkConfig {
    fn default() -> Self {
        FileSinkConfig {
            dir: None,
            max_file_bytes: 64 << 20,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Resume {
    seq: u32,
    len: u64,
}

/// Writes one results partition to rotated NDJSON files.
pub struct FileSink {
    dir: PathBuf,
    partition: u32,
    max_file_bytes: u64,
    seq: u32,
    file: Option<File>,
    len: u64,
    buffer: Vec<u8>,
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StorageError + 'a {
    move |source| StorageError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

impl FileSink {
    /// A sink for `partition` writing under `dir`.
    pub fn new(dir: &Path, partition: u32, max_file_bytes: u64) -> FileSink {
        FileSink {
            dir: dir.to_path_buf(),
            partition,
            max_file_bytes,
            seq: 0,
            file: None,
            len: 0,
            buffer: Vec::new(),
        }
    }

    fn path(&self, seq: u32) -> PathBuf {
        self.dir
            .join(format!("p{}-{seq:06}.ndjson", self.partition))
    }

    /// Sequence numbers of this partition's files, ascending.
    fn existing(&self) -> Result<Vec<u32>, StorageError> {
        let prefix = format!("p{}-", self.partition);
        let mut seqs = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io("list", &self.dir))? {
            let name = entry.map_err(io("list", &self.dir))?.file_name();
            let name = name.to_string_lossy();
            if let Some(seq) = name
                .strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix(".ndjson"))
                .and_then(|seq| seq.parse().ok())
            {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        Ok(seqs)
    }

    fn open(&mut self) -> Result<(), StorageError> {
        let path = self.path(self.seq);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io("open", &path))?;
        self.len = file.metadata().map_err(io("stat", &path))?.len();
        self.file = Some(file);
        Ok(())
    }

    fn write_buffer(&mut self) -> Result<(), StorageError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        if self.file.is_none() {
            self.open()?;
        }
        let path = self.path(self.seq);
        if let Some(file) = &mut self.file {
            file.write_all(&self.buffer).map_err(io("write", &path))?;
        }
        self.len += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(())
    }
}

impl RecordSink for FileSink {
    fn restore(&mut self, resume: Option<Value>) -> Result<(), StorageError> {
        fs::create_dir_all(&self.dir).map_err(io("create", &self.dir))?;
        self.buffer.clear();
        self.file = None;
        let resume: Resume = match resume {
            None => Resume { seq: 0, len: 0 },
            Some(value) => serde_json::from_value(value).map_err(|e| StorageError::Metadata {
                group: "file sink".into(),
                detail: e.to_string(),
            })?,
        };
        for seq in self.existing()? {
            let path = self.path(seq);
            if seq > resume.seq {
                fs::remove_file(&path).map_err(io("remove", &path))?;
            } else if seq == resume.seq {
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io("open", &path))?;
                file.set_len(resume.len).map_err(io("truncate", &path))?;
                file.sync_all().map_err(io("fsync", &path))?;
            }
        }
        self.seq = resume.seq;
        self.open()
    }

    fn handle(&mut self, raw: &[u8], _record: ResultRecord) -> Result<(), StorageError> {
        self.buffer.extend_from_slice(raw);
        self.buffer.push(b'\n');
        if self.len + self.buffer.len() as u64 >= self.max_file_bytes {
            self.write_buffer()?;
            let path = self.path(self.seq);
            if let Some(file) = self.file.take() {
                file.sync_all().map_err(io("fsync", &path))?;
            }
            self.seq += 1;
            self.open()?;
        }
        Ok(())
    }

    fn flush(&mut self, _dead: &mut DeadLetters) -> Result<Value, StorageError> {
        self.write_buffer()?;
        let path = self.path(self.seq);
        if let Some(file) = &self.file {
            file.sync_data().map_err(io("fsync", &path))?;
        }
        Ok(serde_json::to_value(Resume {
            seq: self.seq,
            len: self.len,
        })
        .unwrap_or(Value::Null))
    }
}
