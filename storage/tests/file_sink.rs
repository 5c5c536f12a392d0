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
        max_lag: 0,
    };
    let config = SinkConfig {
        name: "files".into(),
        filter: None,
        types: Vec::new(),
        max_lag: 0,
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

/// Takes results, stopping before the 11th and the 511th until the
/// gate's stage reaches 1 and 2.
struct Gated {
    gate: Arc<(std::sync::Mutex<u32>, std::sync::Condvar)>,
    handled: usize,
}

impl weir_storage::consumer::ResultHandler for Gated {
    fn name(&self) -> &str {
        "gated"
    }
    fn restore(&mut self, _: Option<serde_json::Value>) -> Result<(), weir_storage::StorageError> {
        Ok(())
    }
    fn handle(&mut self, _: &[u8]) -> Result<(), weir_storage::StorageError> {
        self.handled += 1;
        let needed = match self.handled {
            11 => 1,
            511 => 2,
            _ => 0,
        };
        let (stage, changed) = &*self.gate;
        let mut stage = stage.lock().unwrap();
        while *stage < needed {
            stage = changed.wait(stage).unwrap();
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<serde_json::Value, weir_storage::StorageError> {
        Ok(serde_json::Value::Null)
    }
}

#[test]
fn a_consumer_behind_its_max_lag_is_not_ready_until_it_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(EmbeddedLog::open(&dir.path().join("log"), LogConfig::default()).unwrap());
    log.create_topic(TOPIC, 1, false).unwrap();
    let append = |offsets: std::ops::Range<u64>| {
        let records: Vec<_> = offsets.map(|o| result(o, 0)).collect();
        log.append(TOPIC, 0, &weir_log::borrowed(&records)).unwrap();
    };
    append(0..10);
    let source = Source {
        positions: None,
        log: log.clone(),
        topic: TOPIC.into(),
        group: "lagging".into(),
        max_lag: 100,
    };
    let gate = Arc::new((std::sync::Mutex::new(0), std::sync::Condvar::new()));
    let open = |stage: u32| {
        *gate.0.lock().unwrap() = stage;
        gate.1.notify_all();
    };
    let shutdown = Arc::new(AtomicBool::new(false));
    let handler_gate = gate.clone();
    let consumers = weir_storage::consumer::spawn_consumers(
        &source,
        move |_| Gated {
            gate: handler_gate.clone(),
            handled: 0,
        },
        shutdown.clone(),
    )
    .unwrap();
    let lagging = || {
        weir_log::health::failures()
            .get("gated: results partition 0 lag")
            .cloned()
    };
    let committed_at = |offset: u64| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while log
            .committed("lagging", TOPIC, 0)
            .unwrap()
            .is_none_or(|c| c.offset < offset)
        {
            assert!(Instant::now() < deadline, "never committed {offset}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    committed_at(10);
    assert_eq!(lagging(), None, "within max_lag");
    // The next batch is read whole and held at its first result while
    // 500 more arrive: once it commits, the consumer is 500 behind.
    append(10..510);
    std::thread::sleep(Duration::from_millis(300));
    append(510..1010);
    open(1);
    committed_at(510);
    // Reported just after the commit; the handler holds batch three.
    let deadline = Instant::now() + Duration::from_secs(10);
    let why = loop {
        if let Some(why) = lagging() {
            break why;
        }
        assert!(Instant::now() < deadline, "not reported behind its max_lag");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        why.contains("500 results behind, more than max_lag = 100"),
        "{why}"
    );
    open(2);
    committed_at(1010);
    let deadline = Instant::now() + Duration::from_secs(10);
    while lagging().is_some() {
        assert!(Instant::now() < deadline, "not healed once caught up");
        std::thread::sleep(Duration::from_millis(10));
    }
    shutdown.store(true, Ordering::Relaxed);
    consumers.join().unwrap();
}

/// Panics at its fifth result, once; records the offsets it handled.
struct Panicky {
    panicked: Arc<AtomicBool>,
    handled: Arc<std::sync::Mutex<Vec<u64>>>,
    seen: usize,
}

impl weir_storage::consumer::ResultHandler for Panicky {
    fn name(&self) -> &str {
        "panicky"
    }
    fn restore(&mut self, _: Option<serde_json::Value>) -> Result<(), weir_storage::StorageError> {
        Ok(())
    }
    fn handle(&mut self, record: &[u8]) -> Result<(), weir_storage::StorageError> {
        self.seen += 1;
        if self.seen == 5 && !self.panicked.swap(true, Ordering::SeqCst) {
            panic!("a bug at the fifth result");
        }
        let offset = ResultRecord::peek_id(record).unwrap().offset;
        self.handled.lock().unwrap().push(offset);
        Ok(())
    }
    fn flush(&mut self) -> Result<serde_json::Value, weir_storage::StorageError> {
        Ok(serde_json::Value::Null)
    }
}

#[test]
fn a_panicking_handler_is_reported_and_its_partition_resumes_from_the_last_commit() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(EmbeddedLog::open(&dir.path().join("log"), LogConfig::default()).unwrap());
    log.create_topic(TOPIC, 1, false).unwrap();
    let records: Vec<_> = (0..10).map(|o| result(o, 0)).collect();
    log.append(TOPIC, 0, &weir_log::borrowed(&records)).unwrap();
    let source = Source {
        positions: None,
        log: log.clone(),
        topic: TOPIC.into(),
        group: "panicky".into(),
        max_lag: 0,
    };
    let panicked = Arc::new(AtomicBool::new(false));
    let handled = Arc::new(std::sync::Mutex::new(Vec::new()));
    let shutdown = Arc::new(AtomicBool::new(false));
    let (flag, seen) = (panicked.clone(), handled.clone());
    let consumers = weir_storage::consumer::spawn_consumers(
        &source,
        move |_| Panicky {
            panicked: flag.clone(),
            handled: seen.clone(),
            seen: 0,
        },
        shutdown.clone(),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while log
        .committed("panicky", TOPIC, 0)
        .unwrap()
        .is_none_or(|c| c.offset < 10)
    {
        assert!(Instant::now() < deadline, "the consumer never resumed");
        std::thread::sleep(Duration::from_millis(10));
    }
    shutdown.store(true, Ordering::Relaxed);
    consumers.join().unwrap();
    assert!(panicked.load(Ordering::SeqCst));
    // Four handled before the panic, then everything again from offset 0.
    let handled = handled.lock().unwrap().clone();
    assert_eq!(handled[..4], [0, 1, 2, 3]);
    assert_eq!(handled[4..], (0..10).collect::<Vec<_>>());
    let errors = prometheus::gather()
        .into_iter()
        .find(|family| family.name() == "weir_storage_errors_total")
        .and_then(|family| {
            family.get_metric().iter().find_map(|metric| {
                let sink = metric.get_label().iter().find(|l| l.name() == "sink")?;
                (sink.value() == "panicky").then(|| metric.get_counter().get_value())
            })
        });
    assert_eq!(
        errors,
        Some(1.0),
        "the panic is counted as the sink's error"
    );
    assert_eq!(
        weir_log::health::failures().get("panicky: results partition 0"),
        None,
        "healed once it worked again"
    );
}
