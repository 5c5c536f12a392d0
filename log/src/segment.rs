//! One segment file of a partition and its sparse offset index.
//!
//! File `{base:020}.log` holds frames, all integers big-endian:
//!
//! ```text
//! frame = len:u32  crc:u32  body          (crc = crc32c(body), len = body length)
//! body  = offset:u64  timestamp_ms:u64  key_len:u32  key  value
//! ```
//!
//! `{base:020}.index` holds `(offset:u64, position:u64)` pairs, one per
//! [`INDEX_INTERVAL_BYTES`] of log, to start a read near its offset.
//!
//! Recovery rule: the newest segment is scanned from the start; the first
//! frame that is short, fails its CRC, or has an unexpected offset marks a
//! torn tail, and the file is truncated there. Every complete record before
//! it is kept. Older segments were fsynced when they were rolled.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;

use crate::{io_err, LogError, Produce, Record};

/// Bytes of log between two index entries.
pub(crate) const INDEX_INTERVAL_BYTES: u64 = 4096;
const HEADER: usize = 8;
const BODY_FIXED: usize = 20;

/// An open segment, shared between the partition's single writer and its readers.
pub(crate) struct Segment {
    /// Offset of the first record.
    pub base: u64,
    path: PathBuf,
    file: File,
    index_file: File,
    /// Sparse `(offset, position)` entries, ascending.
    index: Mutex<Vec<(u64, u64)>>,
    /// Bytes of complete frames; readers never look past it.
    size: AtomicU64,
    /// Offset after the last record.
    next: AtomicU64,
    /// Log position of the last index entry.
    last_indexed: AtomicU64,
}

/// Result of looking at the start of a byte buffer.
enum Frame {
    /// A whole valid record and the bytes it took.
    Complete(Record, usize),
    /// The buffer ends inside the frame, whose total length is given when known.
    Incomplete(Option<usize>),
    /// The bytes are not a valid frame.
    Corrupt(&'static str),
}

/// Parses the frame at the start of `buf`; key and value share `buf`'s memory.
fn parse_frame(buf: &Bytes) -> Frame {
    if buf.len() < HEADER {
        return Frame::Incomplete(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len < BODY_FIXED {
        return Frame::Corrupt("frame shorter than its fixed fields");
    }
    let Some(body) = buf.get(HEADER..HEADER + len) else {
        return Frame::Incomplete(Some(HEADER + len));
    };
    if crc32c::crc32c(body) != crc {
        return Frame::Corrupt("checksum mismatch");
    }
    let offset = u64::from_be_bytes(body[0..8].try_into().unwrap_or_default());
    let timestamp_ms = u64::from_be_bytes(body[8..16].try_into().unwrap_or_default());
    let key_len = u32::from_be_bytes(body[16..20].try_into().unwrap_or_default()) as usize;
    if BODY_FIXED + key_len > len {
        return Frame::Corrupt("key longer than its frame");
    }
    let record = Record {
        offset,
        timestamp_ms,
        key: buf.slice(HEADER + BODY_FIXED..HEADER + BODY_FIXED + key_len),
        value: buf.slice(HEADER + BODY_FIXED + key_len..HEADER + len),
    };
    Frame::Complete(record, HEADER + len)
}

fn encode_frame(out: &mut Vec<u8>, offset: u64, timestamp_ms: u64, key: &[u8], value: &[u8]) {
    let len = BODY_FIXED + key.len() + value.len();
    let start = out.len();
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    let crc = crc32c::crc32c(&out[start + HEADER..]);
    out[start + 4..start + HEADER].copy_from_slice(&crc.to_be_bytes());
}

/// File names of a segment with `base` in `dir`.
pub(crate) fn paths(dir: &Path, base: u64) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{base:020}.log")),
        dir.join(format!("{base:020}.index")),
    )
}

impl Segment {
    /// Creates an empty segment starting at `base`.
    pub fn create(dir: &Path, base: u64) -> Result<Segment, LogError> {
        let (path, index_path) = paths(dir, base);
        let file = open_rw(&path, true)?;
        let index_file = open_rw(&index_path, true)?;
        Ok(Segment::assemble(
            base,
            path,
            file,
            index_file,
            Vec::new(),
            0,
            base,
        ))
    }

    /// Opens an existing segment. `recover` scans it (truncating a torn
    /// tail and rebuilding the index); otherwise the index file is trusted.
    pub fn open(dir: &Path, base: u64, recover: bool) -> Result<Segment, LogError> {
        let (path, index_path) = paths(dir, base);
        let file = open_rw(&path, false)?;
        let index_file = open_rw(&index_path, false)?;
        let (index, size, next) = if recover {
            let (index, size, next) = scan(&file, &path, base)?;
            let on_disk = file.metadata().map_err(io_err("stat", &path))?.len();
            if on_disk != size {
                tracing::warn!(path = %path.display(), kept = size, dropped = on_disk - size, "truncating torn segment tail");
                file.set_len(size).map_err(io_err("truncate", &path))?;
                file.sync_all().map_err(io_err("fsync", &path))?;
            }
            let mut bytes = Vec::with_capacity(index.len() * 16);
            for (offset, position) in &index {
                bytes.extend_from_slice(&offset.to_be_bytes());
                bytes.extend_from_slice(&position.to_be_bytes());
            }
            index_file
                .set_len(0)
                .map_err(io_err("truncate", &index_path))?;
            (&index_file)
                .write_all(&bytes)
                .map_err(io_err("write", &index_path))?;
            (index, size, next)
        } else {
            let index = read_index(&index_file, &index_path)?;
            let size = file.metadata().map_err(io_err("stat", &path))?.len();
            let next = last_offset_after(&file, &path, &index, size)?.unwrap_or(base);
            (index, size, next)
        };
        Ok(Segment::assemble(
            base, path, file, index_file, index, size, next,
        ))
    }

    fn assemble(
        base: u64,
        path: PathBuf,
        file: File,
        index_file: File,
        index: Vec<(u64, u64)>,
        size: u64,
        next: u64,
    ) -> Segment {
        let last_indexed = index.last().map_or(0, |&(_, position)| position);
        Segment {
            base,
            path,
            file,
            index_file,
            index: Mutex::new(index),
            size: AtomicU64::new(size),
            next: AtomicU64::new(next),
            last_indexed: AtomicU64::new(last_indexed),
        }
    }

    /// Bytes of complete records.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// Offset after the last record.
    pub fn next_offset(&self) -> u64 {
        self.next.load(Ordering::Acquire)
    }

    /// Appends records; only the partition's writer calls this.
    pub fn append(&self, records: &[Produce], timestamp_ms: u64) -> Result<u64, LogError> {
        let mut offset = self.next_offset();
        let start = self.size();
        let mut buf = Vec::with_capacity(records.iter().map(|(k, v)| 28 + k.len() + v.len()).sum());
        let mut new_index = Vec::new();
        let mut last_indexed = self.last_indexed.load(Ordering::Relaxed);
        for (key, value) in records {
            let position = start + buf.len() as u64;
            if position == 0 || position - last_indexed >= INDEX_INTERVAL_BYTES {
                new_index.push((offset, position));
                last_indexed = position;
            }
            encode_frame(&mut buf, offset, timestamp_ms, key, value);
            offset += 1;
        }
        (&self.file)
            .write_all(&buf)
            .map_err(io_err("append", &self.path))?;
        if !new_index.is_empty() {
            let mut bytes = Vec::with_capacity(new_index.len() * 16);
            for (o, p) in &new_index {
                bytes.extend_from_slice(&o.to_be_bytes());
                bytes.extend_from_slice(&p.to_be_bytes());
            }
            // The index is rebuilt on recovery, so it is never fsynced on its own.
            (&self.index_file)
                .write_all(&bytes)
                .map_err(io_err("append", &self.path))?;
            self.index
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(new_index);
            self.last_indexed.store(last_indexed, Ordering::Relaxed);
        }
        self.size.store(start + buf.len() as u64, Ordering::Release);
        self.next.store(offset, Ordering::Release);
        Ok(buf.len() as u64)
    }

    /// Cuts the file back to its complete frames: what a failed append
    /// (a full disk) may have left after them goes, so the next append
    /// continues the log where the last good one ended.
    pub fn discard_unwritten(&self) -> Result<(), LogError> {
        self.file
            .set_len(self.size())
            .map_err(io_err("truncate", &self.path))
    }

    /// Forces appended data (and the index) to disk.
    pub fn sync(&self) -> Result<(), LogError> {
        self.file.sync_data().map_err(io_err("fsync", &self.path))?;
        self.index_file
            .sync_data()
            .map_err(io_err("fsync", &self.path))
    }

    /// Reads records with offset ≥ `from`, about `max_bytes` worth.
    pub fn read(&self, from: u64, max_bytes: usize) -> Result<Vec<Record>, LogError> {
        let size = self.size();
        let mut position = {
            let index = self.index.lock().unwrap_or_else(|e| e.into_inner());
            let at = index.partition_point(|&(offset, _)| offset <= from);
            if at == 0 {
                0
            } else {
                index[at - 1].1
            }
        };
        let mut records = Vec::new();
        let mut taken = 0usize;
        while position < size && taken < max_bytes {
            let want = ((size - position) as usize).min(max_bytes.max(64 << 10));
            let mut bytes = vec![0; want];
            self.file
                .read_exact_at(&mut bytes, position)
                .map_err(io_err("read", &self.path))?;
            let mut buf = Bytes::from(bytes);
            let mut at = 0;
            loop {
                match parse_frame(&buf.slice(at..)) {
                    Frame::Complete(record, used) => {
                        // A trusted segment is not scanned on open: frames
                        // out of order (a botched copy) would send readers
                        // back and round for ever.
                        if records
                            .last()
                            .is_some_and(|r: &Record| r.offset >= record.offset)
                        {
                            let detail = format!("offset {} out of order", record.offset);
                            return Err(self.corrupt(&detail, position + at as u64));
                        }
                        at += used;
                        if record.offset >= from {
                            taken += record.value.len() + record.key.len();
                            records.push(record);
                            if taken >= max_bytes {
                                break;
                            }
                        }
                    }
                    Frame::Incomplete(Some(total)) if at == 0 => {
                        // A length past the end is corruption (a trusted
                        // segment is never torn), not a size to allocate.
                        if total as u64 > size - position {
                            return Err(self.corrupt("frame runs past the segment's end", position));
                        }
                        // One record larger than the buffer: read exactly it.
                        let mut whole = vec![0; total];
                        self.file
                            .read_exact_at(&mut whole, position)
                            .map_err(io_err("read", &self.path))?;
                        buf = Bytes::from(whole);
                    }
                    Frame::Incomplete(_) => break,
                    Frame::Corrupt(detail) => {
                        return Err(self.corrupt(detail, position + at as u64))
                    }
                }
            }
            if at == 0 {
                // Not even one frame before the end of the complete bytes:
                // without this, the read would spin here for ever.
                return Err(self.corrupt("a partial frame before the segment's end", position));
            }
            position += at as u64;
        }
        Ok(records)
    }

    fn corrupt(&self, detail: &str, position: u64) -> LogError {
        LogError::Corrupt {
            path: self.path.clone(),
            detail: format!("{detail} at byte {position}"),
        }
    }

    /// Modification time of the segment file.
    pub fn modified(&self) -> Option<std::time::SystemTime> {
        self.file.metadata().and_then(|m| m.modified()).ok()
    }
}

fn open_rw(path: &Path, create_new: bool) -> Result<File, LogError> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(create_new)
        .open(path)
        .map_err(io_err("open", path))
}

fn read_index(file: &File, path: &Path) -> Result<Vec<(u64, u64)>, LogError> {
    let mut bytes = Vec::new();
    (&*file)
        .read_to_end(&mut bytes)
        .map_err(io_err("read", path))?;
    Ok(bytes
        .chunks_exact(16)
        .map(|c| {
            let offset = u64::from_be_bytes(c[0..8].try_into().unwrap_or_default());
            let position = u64::from_be_bytes(c[8..16].try_into().unwrap_or_default());
            (offset, position)
        })
        .collect())
}

/// Offset after the last record of a sealed segment, walking frame headers
/// from its last index entry.
fn last_offset_after(
    file: &File,
    path: &Path,
    index: &[(u64, u64)],
    size: u64,
) -> Result<Option<u64>, LogError> {
    let (mut offset, mut position) = match index.last() {
        Some(&(offset, position)) => (offset, position),
        None if size == 0 => return Ok(None),
        None => (0, 0),
    };
    let mut last = None;
    let mut header = [0u8; HEADER + 8];
    while position < size {
        file.read_exact_at(&mut header, position)
            .map_err(io_err("read", path))?;
        let len = u32::from_be_bytes(header[0..4].try_into().unwrap_or_default()) as u64;
        offset = u64::from_be_bytes(header[8..16].try_into().unwrap_or_default());
        // Headers are not checksummed here: a corrupt one may hold any offset.
        let after = offset.checked_add(1).ok_or_else(|| LogError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("record offset {offset} at byte {position}"),
        })?;
        last = Some(after);
        position += HEADER as u64 + len;
    }
    Ok(last.or(Some(offset)))
}

/// Sparse `(offset, position)` index entries.
type Index = Vec<(u64, u64)>;

/// Validates every frame; returns the index, the valid length and the next offset.
fn scan(file: &File, path: &Path, base: u64) -> Result<(Index, u64, u64), LogError> {
    let mut bytes = Vec::new();
    (&*file)
        .read_to_end(&mut bytes)
        .map_err(io_err("read", path))?;
    let bytes = Bytes::from(bytes);
    let mut index = Vec::new();
    let mut position = 0usize;
    let mut next = base;
    let mut last_indexed = 0u64;
    while let Frame::Complete(record, used) = parse_frame(&bytes.slice(position..)) {
        if record.offset != next {
            break;
        }
        let at = position as u64;
        if at == 0 || at - last_indexed >= INDEX_INTERVAL_BYTES {
            index.push((next, at));
            last_indexed = at;
        }
        next += 1;
        position += used;
    }
    Ok((index, position as u64, next))
}
