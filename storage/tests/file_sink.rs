//! The file sink over a real embedded log: de-duplication by id and
//! exactly-once files across a crash between write and commit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_event::{Event, ResultRecord};
use weir_log::{EmbeddedLog, Log, LogConfig};
use weir_storage::consumer::Source;
use weir_storage::file::FileSinkConfig;
use weir_storage::sink::SinkDirs;
use weir_storage::{SinkConfig, SinkKind};

const TOPIC: &str = "weir.results";

fn result(offset: u64, seq: u32) -> weir_log::OwnedProduce {
    let record = ResultRecord {
        id: format!("r@00:0:{offset}:{seq}").parse().unwrap(),
        notify: None,
        forward: None,
        event: Event::new("h", offset as f64),
    };
    (b"h".to_vec(), record.encode())
}

fn lines(dir: &std::path::Path) -> Vec<String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Runs the sink until it has committed everything in the topic.
fn drain(log: &Arc<EmbeddedLog>, out: &std::path::Path, max_file_bytes: u64) {
    let source = Source {
        positions: None,
        log: log.clone(),
        topic: TOPIC.into(),
        group: String::new(),
    };
    let config = SinkConfig {
        name: "files".into(),
        filter: None,
        types: Vec::new(),
        kind: SinkKind::File(FileSinkConfig {
            dir: Some(out.to_path_buf()),
            max_file_bytes,
        }),
    };
    let dirs = SinkDirs {
        data: out.parent().unwrap().to_path_buf(),
    };
    let shutdown = Arc::new(AtomicBool::new(false));
    let sink = weir_storage::sink::start(&config, &source, &dirs, shutdown.clone()).unwrap();
    let end = log.offsets(TOPIC, 0).unwrap().1;
    let deadline = Instant::now() + Duration::from_secs(10);
    while log
        .committed(&config.group(), TOPIC, 0)
        .unwrap()
        .is_none_or(|c| c.offset < end)
    {
        assert!(Instant::now() < deadline, "sink did not catch up");
        std::thread::sleep(Duration::from_millis(10));
    }
    shutdown.store(true, Ordering::Relaxed);
    sink.join();
}

#[test]
fn re_emitted_results_are_written_once_and_files_rotate() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(EmbeddedLog::open(&dir.path().join("log"), LogConfig::default()).unwrap());
    log.create_topic(TOPIC, 1, false).unwrap();
    let out = dir.path().join("results");
    // A processor crashed after offset 1 and re-emitted offsets 1..3.
    let records: Vec<_> = [(0, 0), (1, 0), (1, 1), (1, 0), (1, 1), (2, 0), (3, 0)]
        .iter()
        .map(|&(o, s)| result(o, s))
        .collect();
    log.append(TOPIC, 0, &weir_log::borrowed(&records)).unwrap();
    drain(&log, &out, 200);
    let written = lines(&out);
    assert_eq!(written.len(), 5);
    assert!(
        std::fs::read_dir(&out).unwrap().count() > 1,
        "rotated by size"
    );
    let ids: Vec<_> = written
        .iter()
        .map(|l| ResultRecord::peek_id(l.as_bytes()).unwrap().to_string())
        .collect();
    assert_eq!(
        ids,
        [
            "r@00:0:0:0",
            "r@00:0:1:0",
            "r@00:0:1:1",
            "r@00:0:2:0",
            "r@00:0:3:0"
        ]
    );
}

#[test]
fn lines_written_after_the_last_commit_are_not_written_twice() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(EmbeddedLog::open(&dir.path().join("log"), LogConfig::default()).unwrap());
    log.create_topic(TOPIC, 1, false).unwrap();
    let out = dir.path().join("results");
    let records: Vec<_> = (0..5).map(|o| result(o, 0)).collect();
    log.append(TOPIC, 0, &weir_log::borrowed(&records)).unwrap();
    drain(&log, &out, 1 << 20);
    // Simulate a crash after writing more lines but before committing them.
    let records: Vec<_> = (5..8).map(|o| result(o, 0)).collect();
    log.append(TOPIC, 0, &weir_log::borrowed(&records)).unwrap();
    let file = out.join("p0-000000.ndjson");
    let mut text = std::fs::read_to_string(&file).unwrap();
    for o in 5..7 {
        text.push_str(std::str::from_utf8(&result(o, 0).1).unwrap());
        text.push('\n');
    }
    text.push_str("{\"id\":\"torn");
    std::fs::write(&file, text).unwrap();
    drain(&log, &out, 1 << 20);
    let written = lines(&out);
    assert_eq!(written.len(), 8, "{written:#?}");
    for (i, line) in written.iter().enumerate() {
        assert_eq!(
            ResultRecord::peek_id(line.as_bytes()).unwrap().offset,
            i as u64
        );
    }
}
