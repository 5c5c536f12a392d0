//! `weir replay`: a reactor added after the events were ingested, replayed
//! from the earliest entry, produces what it would have produced had it
//! been running from the start; a second replay resumes and adds nothing.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{bin, results, wait_until, Weir, LISTENERS};
use serde_json::Value;

const OLD: &str = r#"
[[reactor]]
name = "running"
pipeline = "by host | sum"
"#;

const NEW: &str = r#"
[[reactor]]
name = "windows"
pipeline = "by host | count 5s"
"#;

const EVENTS: usize = 3000;

/// Future event times: the router's wall-clock ticks never move the
/// clock, so both runs see the same event-time history.
fn send_events(weir: &Weir) {
    let mut stream = TcpStream::connect(weir.tcp).unwrap();
    for i in 0..EVENTS {
        writeln!(
            stream,
            r#"{{"host":"h{}","service":"s","metric":{},"time":{}}}"#,
            i % 30,
            i % 7,
            4_000_000_000u64 + (i / 30) as u64
        )
        .unwrap();
    }
}

fn of(reactor: &str, all: &[Value]) -> Vec<Value> {
    all.iter()
        .filter(|r| r["reactor"] == reactor)
        .cloned()
        .collect()
}

/// Without ids (their offsets count tick records too), sorted.
fn contents(results: &[Value]) -> Vec<String> {
    let mut lines: Vec<String> = results
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.as_object_mut().unwrap().remove("id");
            r.to_string()
        })
        .collect();
    lines.sort();
    lines
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

/// Waits until the file sink has written `count` results and they settle.
fn wait_for(data: &Path, count: usize) {
    wait_until(Duration::from_secs(60), "the results", || {
        results(data).len() >= count
    });
    std::thread::sleep(Duration::from_millis(500));
}

#[test]
fn a_replayed_reactor_matches_one_that_ran_from_the_start() {
    let dir = tempfile::tempdir().unwrap();

    // The reference: both reactors from the start.
    let reference = dir.path().join("reference");
    let weir = Weir::start(&format!("{LISTENERS}{OLD}{NEW}"), &reference);
    send_events(&weir);
    wait_until(Duration::from_secs(60), "the reference results", || {
        of("running", &results(&reference)).len() == EVENTS
    });
    std::thread::sleep(Duration::from_secs(1));
    weir.stop();
    let expected = of("windows", &results(&reference));
    assert!(expected.len() > 300, "{}", expected.len());

    // Live with the old reactor only; the new one is replayed afterwards.
    let live = dir.path().join("live");
    let weir = Weir::start(&format!("{LISTENERS}{OLD}"), &live);
    send_events(&weir);
    wait_for(&live, EVENTS);
    weir.stop();
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
    wait_for(&live, EVENTS + expected.len());
    weir.stop();
    let got = of("windows", &results(&live));
    assert_eq!(got.len(), expected.len());
    assert!(
        contents(&got) == contents(&expected),
        "replayed results differ from a run from the start"
    );
    let ids: std::collections::HashSet<_> = got.iter().map(|r| r["id"].clone()).collect();
    assert_eq!(ids.len(), got.len());
}
