//! weir's fuzz targets. Each takes arbitrary bytes and panics when a
//! property fails: the binaries under `src/bin` feed them from AFL++
//! (`scripts/fuzz`), and `tests/corpus.rs` replays every committed input
//! (`corpus/TARGET/`, found crashes included) and mutations of them under
//! `cargo test`.

use std::path::Path;

use weir_event::Entry;
use weir_processor::{Engine, Reactor, ReactorConfig};

/// A fuzz target: takes any bytes, panics when its property fails.
pub type Target = fn(&[u8]);

/// The targets, by the name of their corpus directory.
pub const TARGETS: [(&str, Target); 5] = [
    ("event_line", event_line),
    ("http_body", http_body),
    ("protocols", protocols),
    ("reactor", reactor),
    ("segment", segment),
];

/// An ingested line through every event decoder
/// ([`weir_event::fuzzing::check_line`]).
pub fn event_line(data: &[u8]) {
    weir_event::fuzzing::check_line(data);
}

/// A `POST /events` body ([`weir_ingest::fuzzing::check_http_body`]).
pub fn http_body(data: &[u8]) {
    weir_ingest::fuzzing::check_http_body(data);
}

/// Bytes through every other ingest protocol's decoder
/// ([`weir_ingest::fuzzing::check_protocols`]).
pub fn protocols(data: &[u8]) {
    weir_ingest::fuzzing::check_protocols(data);
}

/// A pipeline's text: it builds or is refused with a position inside the
/// text; a pipeline that builds runs over a few events and ticks, and its
/// state saves and loads back to the same state.
pub fn reactor(data: &[u8]) {
    let Ok(pipeline) = std::str::from_utf8(data) else {
        return;
    };
    let config = ReactorConfig {
        name: "fuzzed".into(),
        pipeline: pipeline.into(),
    };
    let reactor = match Reactor::build(&config) {
        Ok(reactor) => reactor,
        Err(error) => {
            let column = error.error.column;
            assert!(
                column <= pipeline.chars().count() + 1,
                "{pipeline:?}: error at column {column}: {error}"
            );
            return;
        }
    };
    let mut engine = Engine::new(0, vec![reactor], 1.0);
    let mut out = Vec::new();
    let lines = [
        r#"{"host":"a","service":"cpu","metric":95,"state":"ok","time":100,"ttl":5,"tags":["x"]}"#,
        r#"{"host":"b","service":"cpu","metric":-3.5,"time":101,"description":"d"}"#,
        r#"{"host":"a","service":"disk","metric":1e300,"time":102,"meta":{"k":"v"}}"#,
        r#"{"host":"a","service":"cpu","time":140}"#,
    ];
    for (offset, line) in lines.iter().enumerate() {
        let entry = Entry::decode(line.as_bytes()).expect("a valid event");
        engine.process(offset as u64, entry, &mut out);
    }
    engine.advance(1000.0, lines.len() as u64, &mut out);
    let saved = engine.save();
    let reactor = Reactor::build(&config).expect("it built once");
    let mut restored = Engine::new(0, vec![reactor], 1.0);
    restored.load(saved.clone()).expect("its own state loads");
    assert_eq!(
        restored.save(),
        saved,
        "{pipeline:?}: state changed by a save and load"
    );
}

/// A segment file and its index ([`weir_log::fuzzing::check_segment`]):
/// the first byte picks recovery (odd) and where the index ends.
pub fn segment(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let index_len = (usize::from(first >> 1) * 8).min(rest.len());
    let (index, log) = rest.split_at(index_len);
    let dir = scratch_dir();
    weir_log::fuzzing::check_segment(dir, log, index, first & 1 == 1);
}

/// A directory for the segment target's files, one per process.
fn scratch_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a scratch directory"))
        .path()
}
