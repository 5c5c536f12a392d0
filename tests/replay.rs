//! `weir replay`: a reactor added after 1,000,000 events were ingested,
//! replayed from the earliest entry, produces what it would have produced
//! had it been running from the start; a second replay resumes and adds
//! nothing. (`tests/kafka.rs` covers `--follow` going on live.)

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{bin, results, unique_ids, wait_until, without_ids, Weir, LISTENERS};
use serde_json::Value;

const OLD: &str = r#"
[processor]
# The events are stamped far ahead: no clock bound.
max_future_secs = 1e10

[[reactor]]
name = "busy"
pipeline = "by host | count 600s"
"#;

const NEW: &str = r#"
[[reactor]]
name = "windows"
pipeline = "by host | count 60s"
"#;

const EVENTS: usize = 1_000_000;

/// Future event times: the router's wall-clock ticks never move the
/// clock, so both runs see the same event-time history. Waits until the
/// processor has taken every event.
fn send_events(weir: &Weir) {
    let mut stream = TcpStream::connect(weir.tcp).unwrap();
    let mut chunk = String::new();
    for i in 0..EVENTS {
        chunk.push_str(&format!(
            "{{\"host\":\"h{}\",\"service\":\"s\",\"metric\":{},\"time\":{}}}\n",
            i % 30,
            i % 7,
            4_000_000_000u64 + (i / 30) as u64
        ));
        if chunk.len() > 1 << 20 {
            stream.write_all(chunk.as_bytes()).unwrap();
            chunk.clear();
        }
    }
    stream.write_all(chunk.as_bytes()).unwrap();
    drop(stream);
    wait_until(Duration::from_secs(300), "every event accepted", || {
        weir.metric("weir_ingest_accepted_total{protocol=\"tcp\"}") >= EVENTS as f64
    });
    // Every entry in the log by now (events and ticks) must be processed.
    std::thread::sleep(Duration::from_millis(500));
    let appended = weir.metric("weir_log_appended_records_total{topic=\"weir.events\"}");
    wait_until(Duration::from_secs(300), "every entry processed", || {
        std::thread::sleep(Duration::from_millis(200));
        (0..4)
            .map(|p| weir.metric(&format!("weir_processor_events_total{{partition=\"{p}\"}}")))
            .sum::<f64>()
            >= appended
    });
}

fn of(reactor: &str, all: &[Value]) -> Vec<Value> {
    all.iter()
        .filter(|r| r["reactor"] == reactor)
        .cloned()
        .collect()
}

fn replay(config: &Path, data: &Path) -> String {
    let output = Command::new(bin())
        .args(["replay", "--reactor", "windows", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn a_replayed_reactor_matches_one_that_ran_from_the_start() {
    let dir = tempfile::tempdir().unwrap();

    // The reference: both reactors from the start.
    let reference = dir.path().join("reference");
    let weir = Weir::start(&format!("{LISTENERS}{OLD}{NEW}"), &reference);
    send_events(&weir);
    let settled = || {
        let mut previous = usize::MAX;
        move |data: &Path| {
            wait_until(Duration::from_secs(120), "the results to settle", || {
                std::thread::sleep(Duration::from_millis(500));
                let now = results(data).len();
                let done = now == previous && now > 0;
                previous = now;
                done
            })
        }
    };
    settled()(&reference);
    weir.stop();
    let expected = of("windows", &results(&reference));
    assert!(expected.len() > 10_000, "{}", expected.len());

    // Live with the old reactor only; the new one is replayed afterwards.
    let live = dir.path().join("live");
    let weir = Weir::start(&format!("{LISTENERS}{OLD}"), &live);
    send_events(&weir);
    settled()(&live);
    weir.stop();
    let before = results(&live).len();
    let both = dir.path().join("both.toml");
    std::fs::write(&both, format!("{LISTENERS}{OLD}{NEW}")).unwrap();
    let summary = replay(&both, &live);
    assert!(
        summary.contains(&format!("{} results appended", expected.len())),
        "{summary}"
    );
    let again = replay(&both, &live);
    assert!(again.contains(" 0 results appended"), "{again}");

    // The old config's sinks pick the replayed results up from the log.
    let weir = Weir::start(&format!("{LISTENERS}{OLD}"), &live);
    wait_until(Duration::from_secs(120), "the replayed results", || {
        results(&live).len() >= before + expected.len()
    });
    std::thread::sleep(Duration::from_millis(500));
    weir.stop();
    let got = of("windows", &results(&live));
    assert_eq!(got.len(), expected.len());
    assert!(
        without_ids(&got) == without_ids(&expected),
        "replayed results differ from a run from the start"
    );
    assert_eq!(unique_ids(&got), got.len(), "a result id was stored twice");
}
