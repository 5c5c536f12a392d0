//! Scaling out: topics grown while weir runs (every application keeps its
//! partition, new ones spread over all, results equal an uninterrupted
//! run's), and a reactor added over a long history on the real
//! Kafka-protocol broker, whose catch-up survives a processor killed
//! midway without starting over.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::{results, unique_ids, wait_until, without_ids, Broker, Service, Weir, LISTENERS};
use serde_json::Value;
use weir_event::ResultRecord;
use weir_router::murmur2::partition_for;

const REACTORS: &str = r#"
[processor]
checkpoint_interval_ms = 200

[[reactor]]
name = "per-10s"
pipeline = "by host | count 10s"

[[reactor]]
name = "running"
pipeline = "by host | sum"
"#;

/// One event per app of `apps` per round of `rounds`. Event times lie in
/// the future, so the router's wall-clock ticks never move the clock and
/// every run sees the same event-time history.
fn events(apps: &[String], rounds: std::ops::Range<u64>) -> Vec<String> {
    rounds
        .flat_map(|round| {
            apps.iter().enumerate().map(move |(i, app)| {
                format!(
                    r#"{{"host":"{app}","service":"load","metric":{},"time":{}}}"#,
                    (round as usize * 7 + i) % 13,
                    4_000_000_000 + round
                )
            })
        })
        .collect()
}

fn apps(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

fn send(stream: &mut TcpStream, lines: &[String]) {
    for line in lines {
        writeln!(stream, "{line}").unwrap();
    }
    stream.flush().unwrap();
}

/// Waits until the file sink under `data` holds a number of results that
/// stays the same for a second.
fn settled_results(data: &Path, what: &str) -> Vec<Value> {
    let mut previous = usize::MAX;
    wait_until(Duration::from_secs(120), what, || {
        std::thread::sleep(Duration::from_millis(1000));
        let now = results(data).len();
        let settled = now == previous && now > 0;
        previous = now;
        settled
    });
    results(data)
}

/// The reference: every line through one uninterrupted `weir run` with
/// `config` on the embedded log.
fn reference(dir: &Path, config: &str, lines: &[String]) -> Vec<String> {
    let data = dir.join("reference");
    let weir = Weir::start(config, &data);
    send(&mut TcpStream::connect(weir.tcp).unwrap(), lines);
    let got = settled_results(&data, "the reference results");
    weir.stop();
    without_ids(&got)
}

/// Per host, the input partitions its results came from.
fn partitions_by_host(results: &[Value]) -> BTreeMap<String, BTreeSet<u32>> {
    let mut seen: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    for result in results {
        let id = ResultRecord::peek_id(result.to_string().as_bytes()).unwrap();
        let host = result["host"].as_str().unwrap().to_owned();
        seen.entry(host).or_default().insert(id.partition);
    }
    seen
}

#[test]
fn topics_grown_while_weir_runs_keep_every_application_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("[log]\npartitions = 4\n{LISTENERS}{REACTORS}");
    let (old, new) = (apps("old", 200), apps("new", 200));
    let both: Vec<String> = old.iter().chain(&new).cloned().collect();
    let phases = [
        events(&old, 0..20),
        events(&both, 20..40),
        events(&both, 40..60),
    ];
    let all: Vec<String> = phases.concat();
    let expected = reference(dir.path(), &config, &all);

    let data = dir.path().join("data");
    let weir = Weir::start(&config, &data);
    send(&mut TcpStream::connect(weir.tcp).unwrap(), &phases[0]);
    wait_until(Duration::from_secs(30), "phase 1 routed", || {
        weir.metric("weir_router_events_total") >= phases[0].len() as f64
    });
    let grow = std::process::Command::new(common::bin())
        .args(["topics", "grow", "--partitions", "8", "--target"])
        .arg(weir.http.to_string())
        .output()
        .unwrap();
    assert!(grow.status.success(), "{grow:?}");
    let listing = String::from_utf8(grow.stdout).unwrap();
    assert!(
        listing.contains("weir.events                         8 partitions"),
        "{listing}"
    );
    // The router takes the new count at its next tick.
    wait_until(Duration::from_secs(10), "the router to see 8", || {
        weir.metric("weir_router_partitions") == 8.0
    });
    send(&mut TcpStream::connect(weir.tcp).unwrap(), &phases[1]);
    wait_until(Duration::from_secs(30), "phase 2 routed", || {
        weir.metric("weir_router_events_total") >= (phases[0].len() + phases[1].len()) as f64
    });
    // A crash after the growth: the restart keeps the 8 partitions
    // (the config still says 4) and every placement.
    std::thread::sleep(Duration::from_millis(500));
    weir.kill();
    let weir = Weir::start(&config, &data);
    assert_eq!(weir.metric("weir_router_partitions"), 8.0);
    send(&mut TcpStream::connect(weir.tcp).unwrap(), &phases[2]);
    let got = settled_results(&data, "every result");
    weir.stop();

    assert_eq!(unique_ids(&got), got.len(), "a result id was stored twice");
    assert!(
        without_ids(&got) == expected,
        "results differ from the uninterrupted run"
    );
    let placed = partitions_by_host(&got);
    for host in &old {
        let home = partition_for(host.as_bytes(), 4);
        assert_eq!(placed[host], BTreeSet::from([home]), "{host} moved");
    }
    let mut spread = BTreeSet::new();
    for host in &new {
        let home = partition_for(host.as_bytes(), 8);
        assert_eq!(placed[host], BTreeSet::from([home]), "{host} moved");
        spread.insert(home);
    }
    assert_eq!(spread, (0..8).collect(), "new applications land on all 8");
}
