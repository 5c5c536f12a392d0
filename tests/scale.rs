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

use common::{
    assert_results_match, now_rfc3339, partitions_by_host, results, unique_ids, wait_until,
    without_ids, Broker, Service, Weir, LISTENERS,
};
use serde_json::Value;
use weir_router::murmur2::partition_for;

const REACTORS: &str = r#"
[processor]
# The events are stamped far ahead (see `events`): no clock bound.
max_future_secs = 1e10
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

/// History before the new reactor, in rounds of `APPS` events.
const HISTORY_ROUNDS: u64 = 2500;
const APPS: usize = 200;

fn catch_up_config(brokers: &str, with_new: bool) -> String {
    let new = if with_new {
        "[[reactor]]\nname = \"high\"\npipeline = \"over 6 | by host | count 10s\"\n"
    } else {
        ""
    };
    format!(
        r#"
[log]
backend = "kafka"
brokers = "{brokers}"
partitions = 4
[log.kafka]
session_timeout_ms = 6000
max_poll_interval_ms = 6000
# Every append waits this long: catch-ups last long enough to kill midway.
linger_ms = 50
{LISTENERS}
[processor]
# The events are stamped far ahead (see `events`): no clock bound.
max_future_secs = 1e10
checkpoint_interval_ms = 200
read_max_bytes = 4096

[[reactor]]
name = "per-10s"
pipeline = "by host | count 10s"
{new}"#
    )
}

/// What a processor's log says about catch-ups: when and where each
/// resumed (time, partition, entry), and which partitions started one
/// from the beginning.
fn catch_up_starts(stderr: &Path) -> (Vec<(String, u32, u64)>, Vec<u32>) {
    let mut resumed = Vec::new();
    let mut from_start = Vec::new();
    for line in std::fs::read_to_string(stderr).unwrap().lines() {
        let Ok(entry) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let fields = &entry["fields"];
        let partition = fields["partition"].as_u64().unwrap_or_default() as u32;
        match fields["message"].as_str() {
            Some("resuming catch-up") => resumed.push((
                entry["timestamp"].as_str().unwrap().to_owned(),
                partition,
                fields["from"].as_u64().unwrap(),
            )),
            Some("catching new reactors up over the partition's history") => {
                from_start.push(partition)
            }
            _ => {}
        }
    }
    (resumed, from_start)
}

/// Per partition, the catch-up entries left on `processor`.
fn catch_up_left(processor: &Service) -> BTreeMap<u32, f64> {
    (0..4)
        .map(|p| {
            let series = format!("weir_processor_catch_up_lag{{partition=\"{p}\"}}");
            (p, processor.metric(&series))
        })
        .filter(|(_, left)| *left > 0.0)
        .collect()
}

#[test]
fn a_reactor_added_over_500k_events_catches_up_through_a_kill_without_starting_over() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let apps = apps("app", APPS);
    let history = events(&apps, 0..HISTORY_ROUNDS);
    let live = events(&apps, HISTORY_ROUNDS..HISTORY_ROUNDS + 100);
    let embedded =
        catch_up_config("", true).replace("backend = \"kafka\"", "backend = \"embedded\"");
    let expected = reference(
        dir.path(),
        &embedded,
        &[history.clone(), live.clone()].concat(),
    );

    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let before = write("before.toml", catch_up_config(&broker.addr, false));
    let after = write("after.toml", catch_up_config(&broker.addr, true));
    let start = |command: &str, config: &Path, name: &str| {
        Service::start(
            command,
            config,
            &dir.path().join(name),
            &["--metrics", "127.0.0.1:0", "--log-json"],
            "info",
        )
    };
    let ingest = start("ingest", &before, "ingest");
    let store = start("store", &before, "store");
    let first = start("process", &before, "p0");
    let mut stream = TcpStream::connect(ingest.addr("tcp")).unwrap();
    send(&mut stream, &history);
    wait_until(Duration::from_secs(180), "the history processed", || {
        std::thread::sleep(Duration::from_millis(200));
        ingest.metric("weir_router_events_total") >= history.len() as f64
            && first.metric_sum("weir_processor_lag") == 0.0
            && first.metric_sum("weir_processor_events_total") >= history.len() as f64
    });
    first.stop();

    // The new reactor: two processors share its catch-up; the second
    // (never the group's leader: tansu 0.6 does not replace a dead one)
    // dies once its catch-up has made checkpointed progress.
    let first = start("process", &after, "p1");
    let second = start("process", &after, "p2");
    let mut seen: BTreeMap<u32, f64> = BTreeMap::new();
    // A rebalance can also take its lanes between the wait and the kill:
    // look again right before it, and wait again if it holds none.
    let left = loop {
        wait_until(
            Duration::from_secs(120),
            "the second processor's catch-up to progress, checkpointed, not finished",
            || {
                let left = catch_up_left(&second);
                for (p, now) in &left {
                    seen.entry(*p).or_insert(*now);
                }
                if !left.iter().any(|(p, now)| *now < seen[p] * 0.95) {
                    return false;
                }
                // Past a checkpoint interval (200 ms): the progress seen is
                // in weir.checkpoints. A rebalance (tansu misses heartbeats
                // under load) may have taken its lanes meanwhile: look again.
                std::thread::sleep(Duration::from_millis(250));
                !catch_up_left(&second).is_empty()
            },
        );
        let left = catch_up_left(&second);
        if !left.is_empty() {
            break left;
        }
    };
    second.kill();
    let killed = now_rfc3339();
    send(&mut stream, &live);
    drop(stream);

    assert_results_match(
        &dir.path().join("store"),
        &expected,
        Duration::from_secs(240),
    );
    first.stop();
    ingest.stop();
    store.stop();

    // The survivor resumed the killed processor's catch-ups where their
    // last checkpoint left them, and no partition's catch-up started from
    // the beginning twice.
    let (resumed, first_from_start) = catch_up_starts(&dir.path().join("p1.stderr"));
    let (_, second_from_start) = catch_up_starts(&dir.path().join("p2.stderr"));
    let after_kill: Vec<_> = resumed
        .iter()
        .filter(|(time, p, from)| *time > killed && left.contains_key(p) && *from > 0)
        .collect();
    assert!(
        !after_kill.is_empty(),
        "killed with {left:?} left; resumed {resumed:?}"
    );
    let mut from_start = [first_from_start, second_from_start].concat();
    from_start.sort();
    assert_eq!(from_start, vec![0, 1, 2, 3], "a catch-up started over");
}
