//! Properties the fuzzers (`fuzz/`) check on arbitrary input; each panics
//! when its property fails. Built with the `fuzzing` feature only.

use std::path::Path;

use crate::segment::{paths, Segment};

/// Offset of the fuzzed segment's first record.
const BASE: u64 = 1000;

/// Opens a segment made of `log` and `index` bytes (written under `dir`),
/// recovering it (as for a partition's last segment) or trusting its
/// index, and reads it all: torn or corrupted files give an error or
/// fewer records, never a panic, an unbounded allocation or records out
/// of order.
pub fn check_segment(dir: &Path, log: &[u8], index: &[u8], recover: bool) {
    let (log_path, index_path) = paths(dir, BASE);
    std::fs::write(&log_path, log).expect("write the fuzzed segment");
    std::fs::write(&index_path, index).expect("write the fuzzed index");
    let Ok(segment) = Segment::open(dir, BASE, recover) else {
        return;
    };
    assert!(segment.size() <= log.len() as u64);
    let next = segment.next_offset();
    let mut from = BASE;
    // Each round takes at least one record, and a record takes bytes.
    for _ in 0..=log.len() {
        let Ok(records) = segment.read(from, 1 << 12) else {
            return;
        };
        let Some(last) = records.last() else {
            return;
        };
        assert!(records[0].offset >= from, "a record before {from}");
        for pair in records.windows(2) {
            assert!(pair[0].offset < pair[1].offset, "records out of order");
        }
        if recover {
            assert!(last.offset < next, "a record past the recovered end");
        }
        from = last.offset.saturating_add(1);
    }
    panic!("reading never ended");
}
