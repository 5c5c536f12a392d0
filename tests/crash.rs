//! Reactor state survives SIGKILL exactly: 200,000 events of 20
//! applications, already in the (embedded) log, go through windows, ewma,
//! expire and throttle while the process is killed at random points three
//! times; the results equal an uninterrupted run's over the same log,
//! record for record (ids included), and no notification is recorded
//! twice. Then the checkpoint store is corrupted: it is rebuilt and
//! nothing changes. On Kafka, `weir process` is killed three times while
//! `weir ingest` feeds it; the results equal an uninterrupted embedded
//! run's (ids aside: they count the tick records, which differ between
//! logs), and no notification is recorded twice.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{
    results, unique_ids, wait_until, wait_until_every, without_ids, Broker, Service, Weir,
    LISTENERS,
};
use serde_json::Value;

const EVENTS: usize = 200_000;
const APPS: usize = 20;

const REACTORS: &str = r#"
[processor]
# The events are stamped far ahead (see `events`): no clock bound.
max_future_secs = 1e10
checkpoint_every = 5000
checkpoint_interval_ms = 50

[[reactor]]
name = "windows"
pipeline = "by host | count 10s"

[[reactor]]
name = "smooth"
pipeline = "by host | ewma alpha=0.3 | over 80 | throttle 1 per 30s | notify log"

[[reactor]]
name = "silence"
pipeline = "by host | expire"
"#;

/// Ten rounds per second of event time, in the future (wall-clock ticks
/// never move the clock); app-7 goes quiet for 10 s every 50 s (expiry),
/// app-3 runs hot every other 10 s (threshold, throttle).
fn lines() -> Vec<String> {
    let mut lines = Vec::with_capacity(EVENTS);
    let mut i = 0usize;
    while lines.len() < EVENTS {
        let (app, round) = (i % APPS, i / APPS);
        i += 1;
        if app == 7 && round % 500 >= 400 {
            continue;
        }
        let metric = if app == 3 && (round / 100) % 2 == 0 {
            95
        } else {
            (i * 37) % 100
        };
        lines.push(format!(
            r#"{{"host":"app-{app}","service":"load","metric":{metric},"ttl":5,"time":{}}}"#,
            4_000_000_000.0 + round as f64 / 10.0
        ));
    }
    lines
}

/// Runs `weir run` over `data` until every entry is processed and the
/// file sink has settled.
fn finish(config: &str, data: &Path) -> Vec<String> {
    let weir = Weir::start(config, data);
    let mut previous = usize::MAX;
    wait_until(Duration::from_secs(180), "every result written", || {
        std::thread::sleep(Duration::from_millis(700));
        let now = results(data).len();
        let settled = now == previous && weir.metric("weir_processor_lag{partition=\"0\"}") == 0.0;
        previous = now;
        settled
    });
    weir.stop();
    let mut all: Vec<String> = results(data).iter().map(Value::to_string).collect();
    all.sort();
    all
}

/// Sends every event to `weir` and stops it once all are accepted (the
/// router drains into the log on the way out).
fn ingest_and_stop(weir: Weir) {
    let mut stream = TcpStream::connect(weir.tcp).unwrap();
    for line in lines() {
        writeln!(stream, "{line}").unwrap();
    }
    drop(stream);
    wait_until(Duration::from_secs(60), "every event accepted", || {
        weir.metric("weir_ingest_accepted_total{protocol=\"tcp\"}") >= EVENTS as f64
    });
    weir.stop();
}

/// Every notification of the uninterrupted run `reference` was recorded
/// in `data`'s delivery log once, and no other.
fn assert_each_notification_once(data: &Path, reference: &Path) {
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for delivery in common::deliveries(data) {
        *per_id
            .entry(delivery["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert!(
        per_id.values().all(|n| *n == 1),
        "a notification recorded twice"
    );
    assert_eq!(per_id.len(), common::deliveries(reference).len());
}

#[test]
fn three_sigkills_change_no_result_and_repeat_no_notification() {
    let dir = tempfile::tempdir().unwrap();
    let ingested = dir.path().join("ingested");
    // The events go into the log first, with no reactors running (and
    // no bound on how far ahead they are stamped).
    let weir = Weir::start(
        &format!("{LISTENERS}[processor]\nmax_future_secs = 1e10\n"),
        &ingested,
    );
    ingest_and_stop(weir);
    let copy = |name: &str| {
        let target = dir.path().join(name);
        let status = Command::new("cp")
            .arg("-r")
            .arg(&ingested)
            .arg(&target)
            .status()
            .unwrap();
        assert!(status.success());
        // No checkpoints: the reactors start at the first entry, as if they
        // had been running all along (not as reactors added later).
        std::fs::remove_dir_all(target.join("checkpoints")).unwrap();
        target
    };
    let (reference, crashed) = (copy("reference"), copy("crashed"));
    let config = format!("{LISTENERS}{REACTORS}");
    let expected = finish(&config, &reference);

    let mut kills = KillPoints::new();
    for _ in 0..3 {
        let weir = Weir::start(&config, &crashed);
        let target = kills.next(5_000, 40_000);
        // Replaying from the log runs at a million entries a second or
        // more: check often (one scrape each), so that the kill lands
        // mid-stream and each run leaves work for the next.
        let every = Duration::from_millis(1);
        wait_until_every(
            Duration::from_secs(60),
            every,
            "processing under way",
            || processed(&weir.service) >= target as f64,
        );
        let done = processed(&weir.service);
        weir.kill();
        eprintln!("SIGKILL after {done} entries processed");
    }
    let got = finish(&config, &crashed);

    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "results differ from the uninterrupted run");
    for reactor in ["windows", "smooth", "silence"] {
        let pattern = format!(r#""reactor":"{reactor}""#);
        assert!(
            got.iter().any(|r| r.contains(&pattern)),
            "{reactor} emitted nothing"
        );
    }
    assert_each_notification_once(&crashed, &reference);

    // A corrupted checkpoint store is moved aside and the state rebuilt
    // from the log; the re-emitted results are dropped by id.
    for entry in walk(&crashed.join("checkpoints")) {
        let size = std::fs::metadata(&entry).unwrap().len() as usize;
        std::fs::write(&entry, vec![0xA5; size.max(64)]).unwrap();
    }
    let rebuilt = finish(&config, &crashed);
    assert!(rebuilt == expected, "results changed after the rebuild");
    let log = std::fs::read_to_string(crashed.with_extension("stderr")).unwrap();
    assert!(log.contains("rebuilding state from the log"), "{log}");
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// Random kill points: how many entries a run processes before its SIGKILL.
struct KillPoints(u64);

impl KillPoints {
    fn new() -> KillPoints {
        KillPoints(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .subsec_nanos() as u64,
        )
    }

    /// A number in `low..low + span`.
    fn next(&mut self, low: u64, span: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        low + (self.0 >> 33) % span
    }
}

fn processed(service: &Service) -> f64 {
    service.metric_sum("weir_processor_events_total")
}

#[test]
fn on_kafka_three_processor_kills_change_no_result() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    let config = format!("{LISTENERS}{REACTORS}");
    let weir = Weir::start(&config, &reference);
    ingest_and_stop(weir);
    finish(&config, &reference);
    let expected = without_ids(&results(&reference));

    let config_path = dir.path().join("kafka.toml");
    std::fs::write(
        &config_path,
        format!(
            "[log]\nbackend = \"kafka\"\nbrokers = \"{}\"\n[log.kafka]\nsession_timeout_ms = 6000\nmax_poll_interval_ms = 6000\n{LISTENERS}{REACTORS}",
            broker.addr
        ),
    )
    .unwrap();
    let start = |command: &str, name: &str| {
        Service::start(
            command,
            &config_path,
            &dir.path().join(name),
            &["--metrics", "127.0.0.1:0"],
            "warn",
        )
    };
    let ingest = start("ingest", "ingest");
    let store = start("store", "store");
    let mut stream = TcpStream::connect(ingest.addr("tcp")).unwrap();
    let feeder = std::thread::spawn(move || {
        for line in lines() {
            writeln!(stream, "{line}").unwrap();
        }
    });
    let mut kills = KillPoints::new();
    for _ in 0..3 {
        let processor = start("process", "processor");
        let target = kills.next(2_000, 20_000) as f64;
        wait_until(Duration::from_secs(120), "processing under way", || {
            processed(&processor) >= target
        });
        let done = processed(&processor);
        processor.kill();
        eprintln!("SIGKILL after {done} entries processed");
    }
    feeder.join().unwrap();
    let processor = start("process", "processor");
    let store_data = dir.path().join("store");
    let mut previous = usize::MAX;
    wait_until(Duration::from_secs(600), "every result stored", || {
        std::thread::sleep(Duration::from_secs(2));
        let now = results(&store_data).len();
        let settled = now == previous && now >= expected.len();
        previous = now;
        settled
    });
    let got = results(&store_data);
    assert_eq!(unique_ids(&got), got.len(), "a result id was stored twice");
    assert_eq!(got.len(), expected.len());
    assert!(
        without_ids(&got) == expected,
        "results differ from the uninterrupted run"
    );
    processor.stop();
    store.stop();
    ingest.stop();
    assert_each_notification_once(&store_data, &reference);
}
