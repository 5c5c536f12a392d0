//! weir on a real Kafka-protocol broker (tansu): the log backend's
//! contract, and the split services — 1 ingest, 2 then 3 processors,
//! 1 store, on topics grown beyond the config — compared with an
//! uninterrupted run on the embedded log.

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
use weir_event::ResultRecord;
use weir_log::{Committed, KafkaConfig, KafkaLog, Log, LogError};
use weir_router::murmur2::partition_for;

fn kafka_config() -> KafkaConfig {
    KafkaConfig {
        session_timeout_ms: 6000,
        max_poll_interval_ms: 6000,
        request_timeout_ms: 10_000,
        ..KafkaConfig::default()
    }
}

#[test]
fn the_kafka_log_keeps_the_log_contract() {
    let broker = Broker::start();
    let log = KafkaLog::connect(&broker.addr, &kafka_config()).unwrap();
    log.create_topic("t", 2, false).unwrap();
    log.create_topic("t", 2, false).unwrap(); // idempotent
    assert_eq!(log.partitions("t").unwrap(), 2);
    let error = log.create_topic("t", 4, false).unwrap_err();
    assert!(matches!(error, LogError::Incompatible { .. }), "{error}");
    assert!(error.to_string().contains("2 partitions"), "{error}");
    // A topic with more partitions than asked for (grown) is used as it is.
    log.create_topic("t", 1, false).unwrap();
    assert_eq!(log.partitions("t").unwrap(), 2);
    // tansu 0.6 answers CreatePartitions with "unsupported": a clear error.
    match log.grow_topic("t", 3) {
        Ok(before) => assert_eq!((before, log.partitions("t").unwrap()), (2, 3)),
        Err(error) => {
            let error = error.to_string();
            assert!(
                error.contains("grow topic t from 2 to 3 partitions"),
                "{error}"
            );
            assert!(
                error.contains("does not support adding partitions"),
                "{error}"
            );
            assert_eq!(log.partitions("t").unwrap(), 2);
        }
    }
    assert!(matches!(
        log.partitions("missing").unwrap_err(),
        LogError::UnknownTopic(_)
    ));

    let records: Vec<_> = (0..100)
        .map(|i| (format!("k{i}").into_bytes(), format!("v{i}").into_bytes()))
        .collect();
    let records = weir_log::borrowed(&records);
    assert_eq!(log.append("t", 1, &records).unwrap(), 100);
    log.append_batches(
        "t",
        &[(0, records[..3].to_vec()), (1, records[..2].to_vec())],
    )
    .unwrap();
    assert_eq!(log.offsets("t", 0).unwrap(), (0, 3));
    assert_eq!(log.offsets("t", 1).unwrap(), (0, 102));
    // A refused batch (no partition 7) fails the append, after what was
    // sent before it is delivered.
    let error = log
        .append_batches(
            "t",
            &[(0, records[..4].to_vec()), (7, records[..1].to_vec())],
        )
        .unwrap_err();
    assert!(error.to_string().contains("produce to t"), "{error}");
    assert_eq!(log.offsets("t", 0).unwrap(), (0, 7));

    // Reads from any offset, forwards and backwards, in order.
    for from in [0, 57, 99, 3] {
        let mut seen = Vec::new();
        let mut next = from;
        while next < 102 {
            let batch = log.read("t", 1, next, 256, Duration::from_secs(2)).unwrap();
            assert!(!batch.is_empty(), "nothing read from {next}");
            next = batch.last().unwrap().offset + 1;
            seen.extend(batch);
        }
        let offsets: Vec<u64> = seen.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (from..102).collect::<Vec<_>>());
        assert_eq!(seen[0].value, format!("v{from}").as_bytes());
    }
    // Waiting at the end returns nothing.
    assert!(log
        .read("t", 0, 7, 1 << 20, Duration::from_millis(200))
        .unwrap()
        .is_empty());

    // A producer queue far smaller than an append waits for room: every
    // record arrives, in order.
    let small_queue = KafkaConfig {
        properties: [("queue.buffering.max.messages".into(), "16".into())].into(),
        ..kafka_config()
    };
    let small = KafkaLog::connect(&broker.addr, &small_queue).unwrap();
    small.create_topic("q", 1, false).unwrap();
    assert_eq!(small.append("q", 0, &records).unwrap(), 100);
    let mut read = Vec::new();
    while read.len() < 100 {
        let batch = small.read("q", 0, read.len() as u64, 1 << 20, Duration::from_secs(2));
        let batch = batch.unwrap();
        assert!(!batch.is_empty(), "nothing read from {}", read.len());
        read.extend(batch.into_iter().map(|r| r.value));
    }
    let sent: Vec<&[u8]> = records.iter().map(|(_, value)| *value).collect();
    assert_eq!(read, sent);

    // Group offsets (tansu drops commit metadata; Kafka keeps up to 4 KiB).
    assert_eq!(log.committed("g", "t", 1).unwrap(), None);
    let committed = Committed {
        offset: 42,
        metadata: String::new(),
    };
    log.commit("g", "t", 1, &committed).unwrap();
    assert_eq!(log.committed("g", "t", 1).unwrap(), Some(committed));
}

#[test]
fn the_kafka_log_reaches_a_broker_over_sasl_scram_and_tls() {
    let certs = tempfile::tempdir().unwrap();
    common::certificates(certs.path(), "broker");
    common::certificates(certs.path(), "other");
    let pem = |name: &str| certs.path().join(name);
    let broker = Broker::start_secured(
        "weir",
        "s3cret",
        &pem("broker-cert.pem"),
        &pem("broker-key.pem"),
    );
    let secured = |password: &str, ca: &str| KafkaConfig {
        security_protocol: "sasl_ssl".into(),
        sasl_mechanism: Some("SCRAM-SHA-256".into()),
        sasl_username: Some("weir".into()),
        sasl_password: Some(weir_log::Secret(password.into())),
        ssl_ca_location: Some(pem(ca)),
        request_timeout_ms: 5000,
        ..kafka_config()
    };
    let log = KafkaLog::connect(&broker.addr, &secured("s3cret", "broker-ca.pem")).unwrap();
    log.create_topic("secured", 1, false).unwrap();
    let records = [(&b"k"[..], &b"over tls"[..])];
    assert_eq!(log.append("secured", 0, &records).unwrap(), 1);
    let read = log
        .read("secured", 0, 0, 1 << 20, Duration::from_secs(5))
        .unwrap();
    assert_eq!(read[0].value, "over tls".as_bytes());

    // A wrong password, a broker certificate from an unknown CA and a
    // plain-text client are all refused.
    for (config, what) in [
        (secured("wrong", "broker-ca.pem"), "a wrong password"),
        (secured("s3cret", "other-ca.pem"), "an unknown CA"),
        (kafka_config(), "plain text"),
    ] {
        let config = KafkaConfig {
            request_timeout_ms: 3000,
            ..config
        };
        assert!(
            KafkaLog::connect(&broker.addr, &config).is_err(),
            "{what} was let in"
        );
    }
}

#[test]
fn services_shut_down_within_their_timeout_when_the_broker_is_gone() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("kafka.toml");
    let config =
        config("kafka", &broker.addr).replacen("[log]", "shutdown_timeout_secs = 4\n[log]", 1);
    std::fs::write(&config_path, config).unwrap();
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
    let (first, second) = (start("process", "p1"), start("process", "p2"));
    let mut stream = TcpStream::connect(ingest.addr("tcp")).unwrap();
    send(&mut stream, &events(0..20));
    wait_until(Duration::from_secs(60), "the events processed", || {
        first.metric_sum("weir_processor_events_total")
            + second.metric_sum("weir_processor_events_total")
            >= (20 * PLACED) as f64
    });
    drop(broker);

    // One signal: the shutdown gives up at shutdown_timeout_secs.
    let (status, took) = first.terminate(1, Duration::from_secs(30));
    assert!(status.is_some(), "still running {took:?} after SIGTERM");
    assert!(took < Duration::from_secs(15), "{took:?}");
    // A second signal ends it at once.
    let (status, took) = second.terminate(2, Duration::from_secs(30));
    assert!(
        status.is_some(),
        "still running {took:?} after two SIGTERMs"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
    let (status, _) = ingest.terminate(1, Duration::from_secs(30));
    assert!(status.is_some(), "ingest still running");
}

/// Applications feeding; the first `PLACED` send from the start, and
/// their placement over `PARTITIONS` is recorded before weir starts.
const APPS: usize = 200;
const PLACED: usize = 150;
/// The round from which every application sends.
const ALL_FROM: usize = 40;
/// Partitions in the config…
const PARTITIONS: u32 = 4;
/// …and in the topics the processors test creates beforehand (grown).
const GROWN: u32 = 8;

const REACTORS: &str = r#"
[processor]
# The events are stamped far ahead (see `events`): no clock bound.
max_future_secs = 1e10
checkpoint_interval_ms = 200

[[reactor]]
name = "per-minute"
pipeline = "by host | count 10s"

[[reactor]]
name = "running"
pipeline = "by host | sum"
"#;

fn config(backend: &str, brokers: &str) -> String {
    format!(
        r#"
[log]
backend = "{backend}"
brokers = "{brokers}"
partitions = {PARTITIONS}
[log.kafka]
session_timeout_ms = 6000
max_poll_interval_ms = 6000
max_record_bytes = 1600
{LISTENERS}{REACTORS}"#
    )
}

/// NDJSON events: `rounds` rounds, each one event per app (the first
/// `PLACED` apps before round `ALL_FROM`). Event times lie in the future,
/// so the router's wall-clock ticks never move the clock and both runs
/// see the same event-time history.
fn events(rounds: std::ops::Range<usize>) -> Vec<String> {
    rounds
        .flat_map(|round| {
            let apps = if round < ALL_FROM { PLACED } else { APPS };
            (0..apps).map(move |app| {
                format!(
                    r#"{{"host":"app-{app}","service":"load","metric":{},"time":{}}}"#,
                    (round * 7 + app) % 13,
                    4_000_000_000u64 + round as u64
                )
            })
        })
        .collect()
}

/// Writes `lines` to one connection: events keep their order only
/// within a connection, and the reference run uses one too.
fn send(stream: &mut TcpStream, lines: &[String]) {
    for line in lines {
        writeln!(stream, "{line}").unwrap();
    }
    stream.flush().unwrap();
}

/// The reference: every event through `weir run` on the embedded log.
fn reference(dir: &Path, lines: &[String]) -> Vec<String> {
    let data = dir.join("reference");
    let weir = Weir::start(&config("embedded", ""), &data);
    send(&mut TcpStream::connect(weir.tcp).unwrap(), lines);
    let mut previous = usize::MAX;
    wait_until(Duration::from_secs(60), "the reference results", || {
        std::thread::sleep(Duration::from_millis(500));
        let now = results(&data).len();
        let settled = now == previous && now > 0;
        previous = now;
        settled
    });
    weir.stop();
    without_ids(&results(&data))
}

/// Checks from the processors' logs that no partition ever had two owners:
/// per partition, each assignment starts after the previous owner released
/// it (or was killed).
fn assert_exclusive_ownership(logs: &[(String, String)], kills: &[(String, String)]) {
    let mut timeline: Vec<(String, String, &str, Vec<u32>)> = Vec::new();
    for (process, path) in logs {
        for line in std::fs::read_to_string(path).unwrap().lines() {
            let Ok(entry) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let message = entry["fields"]["message"].as_str().unwrap_or_default();
            let kind = match message {
                "partitions assigned" => "assigned",
                "partitions released" => "released",
                _ => continue,
            };
            let partitions: Vec<u32> =
                serde_json::from_str(entry["fields"]["partitions"].as_str().unwrap()).unwrap();
            let time = entry["timestamp"].as_str().unwrap().to_owned();
            timeline.push((time, process.clone(), kind, partitions));
        }
    }
    for (time, process) in kills {
        timeline.push((time.clone(), process.clone(), "killed", Vec::new()));
    }
    timeline.sort();
    let mut owners: BTreeMap<u32, String> = BTreeMap::new();
    let mut assignments = 0;
    for (time, process, kind, partitions) in &timeline {
        match *kind {
            "assigned" => {
                assignments += 1;
                for p in partitions {
                    if let Some(other) = owners.insert(*p, process.clone()) {
                        panic!("{time}: {process} got partition {p} while {other} held it");
                    }
                }
            }
            "released" => partitions.iter().for_each(|p| {
                owners.remove(p);
            }),
            _ => owners.retain(|_, owner| owner != process),
        }
    }
    assert!(assignments >= 4, "too few assignments seen: {timeline:?}");
}

fn owned(processor: &Service) -> BTreeSet<u32> {
    (0..GROWN)
        .filter(|p| {
            processor.metric(&format!(
                "weir_processor_partition_owned{{partition=\"{p}\"}}"
            )) == 1.0
        })
        .collect()
}

/// Creates weir's topics with `GROWN` partitions and records where the
/// first `PLACED` applications live, placed over `PARTITIONS`: a
/// deployment whose topics were grown with Kafka's own tools (tansu 0.6
/// refuses CreatePartitions, so they are made this way beforehand).
fn grown_deployment(broker: &Broker) {
    let log = KafkaLog::connect(&broker.addr, &kafka_config()).unwrap();
    let topics = weir_log::Topics::new("");
    topics.create(&log, GROWN).unwrap();
    let placements: Vec<_> = (0..PLACED)
        .map(|app| {
            let uid = format!("app-{app}");
            let partition = partition_for(uid.as_bytes(), PARTITIONS);
            (
                uid.into_bytes(),
                format!(r#"{{"partition":{partition}}}"#).into_bytes(),
            )
        })
        .collect();
    log.append(&topics.registry, 0, &weir_log::borrowed(&placements))
        .unwrap();
}

#[test]
fn processors_share_grown_partitions_survive_a_kill_and_match_the_embedded_run() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let all = events(0..120);
    let expected = reference(dir.path(), &all);
    grown_deployment(&broker);

    let config_path = dir.path().join("kafka.toml");
    std::fs::write(&config_path, config("kafka", &broker.addr)).unwrap();
    let start = |command: &str, name: &str| {
        Service::start(
            command,
            &config_path,
            &dir.path().join(name),
            &["--metrics", "127.0.0.1:0", "--log-json"],
            "info",
        )
    };
    let ingest = start("ingest", "ingest");
    assert_eq!(ingest.metric("weir_router_partitions"), GROWN as f64);
    let store = start("store", "store");
    let first = start("process", "p1");
    let second = start("process", "p2");
    wait_until(
        Duration::from_secs(60),
        "both processors to own partitions",
        || {
            let (a, b) = (owned(&first), owned(&second));
            a.len() + b.len() == GROWN as usize && !a.is_empty() && !b.is_empty()
        },
    );
    assert_eq!(
        first.metric("weir_processor_partitions_owned")
            + second.metric("weir_processor_partitions_owned"),
        GROWN as f64
    );

    // Phase 1 with two processors; phase 2 trickles in and one dies mid-stream.
    let mut stream = TcpStream::connect(ingest.addr("tcp")).unwrap();
    send(&mut stream, &events(0..40));
    for (i, start) in (40..60).step_by(4).enumerate() {
        send(&mut stream, &events(start..start + 4));
        std::thread::sleep(Duration::from_millis(150));
        if i == 4 {
            // tansu 0.6 never replaces a group leader that dies (the group
            // keeps the old assignment), so the follower is the one killed.
            second.kill();
            break;
        }
    }
    let killed = now_rfc3339();
    send(&mut stream, &events(60..80));
    wait_until(
        Duration::from_secs(90),
        "the survivor to own every partition",
        || owned(&first).len() == GROWN as usize,
    );

    // Phase 3: a third processor joins and takes partitions over.
    let third = start("process", "p3");
    wait_until(
        Duration::from_secs(60),
        "the third processor to get partitions",
        || {
            let (a, c) = (owned(&first), owned(&third));
            !c.is_empty() && a.len() + c.len() == GROWN as usize
        },
    );
    send(&mut stream, &events(80..120));
    drop(stream);

    let got = assert_results_match(
        &dir.path().join("store"),
        &expected,
        Duration::from_secs(120),
    );
    // Placed applications stay where the registry put them; new ones
    // spread over every partition the topic has.
    let homes = partitions_by_host(&got);
    let mut spread = BTreeSet::new();
    for app in 0..APPS {
        let uid = format!("app-{app}");
        let count = if app < PLACED { PARTITIONS } else { GROWN };
        let home = partition_for(uid.as_bytes(), count);
        assert_eq!(homes[&uid], BTreeSet::from([home]), "{uid} moved");
        if app >= PLACED {
            spread.insert(home);
        }
    }
    assert!(spread.iter().any(|&p| p >= PARTITIONS), "{spread:?}");
    // Checkpoints larger than max_record_bytes went to weir.checkpoints
    // in chunks: the partitions moved with state restored from them.
    let kafka = KafkaLog::connect(&broker.addr, &kafka_config()).unwrap();
    let checkpoints = kafka.partitions("weir.checkpoints").unwrap();
    let chunk_keys = (0..checkpoints)
        .flat_map(|p| {
            let records = kafka.read("weir.checkpoints", p, 0, 64 << 20, Duration::from_secs(5));
            records.unwrap()
        })
        .filter(|r| r.key.contains(&b'#'))
        .count();
    assert!(chunk_keys > 0, "no checkpoint was split");

    first.stop();
    third.stop();
    let log = |name: &str| {
        (
            name.to_owned(),
            dir.path()
                .join(name)
                .with_extension("stderr")
                .display()
                .to_string(),
        )
    };
    assert_exclusive_ownership(
        &[log("p1"), log("p2"), log("p3")],
        &[(killed, "p2".to_owned())],
    );
    ingest.stop();
    store.stop();
}

#[test]
fn a_reactor_replayed_with_follow_catches_up_and_keeps_up_live() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let all = events(0..60);
    let expected: Vec<String> = reference(dir.path(), &all)
        .into_iter()
        .filter(|r| r.contains(r#""reactor":"running""#))
        .collect();

    // Live: the config's first reactor only.
    let only_first = format!(
        "{}\n[[reactor]]\nname = \"per-minute\"\npipeline = \"by host | count 10s\"\n",
        config("kafka", &broker.addr)
            .split("[[reactor]]")
            .next()
            .unwrap()
    );
    let live_config = dir.path().join("live.toml");
    std::fs::write(&live_config, only_first).unwrap();
    let start = |command: &str, name: &str| {
        Service::start(
            command,
            &live_config,
            &dir.path().join(name),
            &["--metrics", "127.0.0.1:0"],
            "warn",
        )
    };
    let ingest = start("ingest", "ingest");
    let store = start("store", "store");
    let processor = start("process", "p1");
    let mut stream = TcpStream::connect(ingest.addr("tcp")).unwrap();
    send(&mut stream, &events(0..30));

    // The new reactor is replayed from the earliest event, then follows.
    let full_config = dir.path().join("full.toml");
    std::fs::write(&full_config, config("kafka", &broker.addr)).unwrap();
    let replay = std::process::Command::new(common::bin())
        .args(["replay", "--reactor", "running", "--follow", "--config"])
        .arg(&full_config)
        .arg("--data-dir")
        .arg(dir.path().join("replay"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    send(&mut stream, &events(30..60));
    drop(stream);

    let store_data = dir.path().join("store");
    wait_until(
        Duration::from_secs(120),
        "the replayed reactor's results",
        || {
            results(&store_data)
                .iter()
                .filter(|r| r["reactor"] == "running")
                .count()
                >= expected.len()
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    std::process::Command::new("kill")
        .arg(replay.id().to_string())
        .status()
        .unwrap();
    let output = replay.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let summary = String::from_utf8(output.stdout).unwrap();
    assert!(summary.contains("results appended"), "{summary}");

    let got: Vec<Value> = results(&store_data)
        .into_iter()
        .filter(|r| r["reactor"] == "running")
        .collect();
    assert_eq!(unique_ids(&got), got.len(), "a result id was stored twice");
    assert!(
        without_ids(&got) == expected,
        "the replayed reactor's results differ from a run from the start"
    );
    processor.stop();
    ingest.stop();
    store.stop();
}

#[test]
fn the_kafka_sink_copies_routed_results_to_a_topic() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use weir_event::Event;
    use weir_storage::consumer::Source;
    use weir_storage::kafka::KafkaSinkConfig;
    use weir_storage::sink::SinkDirs;
    use weir_storage::{SinkConfig, SinkKind};

    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn Log> = Arc::new(KafkaLog::connect(&broker.addr, &kafka_config()).unwrap());
    log.create_topic("weir.results", 2, false).unwrap();
    log.create_topic("copy", 2, false).unwrap();
    let record = |i: u64, kind: &str| {
        let mut event = Event::new(format!("h{i}"), 1000.0 + i as f64);
        event.kind = Some(kind.into());
        event.metric = Some(i as f64);
        ResultRecord {
            id: format!("r@00:{}:{i}:0", i % 2).parse().unwrap(),
            notify: None,
            forward: None,
            event,
        }
    };
    for partition in 0..2 {
        let records: Vec<_> = (0..40)
            .filter(|i| i % 2 == partition)
            .map(|i| {
                let kind = if i % 4 < 2 { "metric" } else { "log" };
                (vec![], record(i, kind).encode())
            })
            .collect();
        log.append(
            "weir.results",
            partition as u32,
            &weir_log::borrowed(&records),
        )
        .unwrap();
    }
    let positions: Arc<dyn Log> = Arc::new(
        weir_log::EmbeddedLog::open(&dir.path().join("positions"), Default::default()).unwrap(),
    );
    let source = Source {
        log: log.clone(),
        topic: "weir.results".into(),
        group: String::new(),
        positions: Some(positions),
        max_lag: 0,
    };
    let config = SinkConfig {
        name: "copy".into(),
        filter: None,
        types: vec!["metric".into()],
        max_lag: 0,
        kind: SinkKind::Kafka(KafkaSinkConfig {
            topic: "copy".into(),
        }),
    };
    let dirs = SinkDirs {
        data: dir.path().to_path_buf(),
    };
    let shutdown = Arc::new(AtomicBool::new(false));
    let sink = weir_storage::sink::start(&config, &source, &dirs, shutdown.clone()).unwrap();
    let copied = || -> Vec<Value> {
        (0..2)
            .flat_map(|p| {
                log.read("copy", p, 0, 1 << 20, Duration::from_millis(500))
                    .unwrap()
                    .into_iter()
                    .map(|r| serde_json::from_slice(&r.value).unwrap())
            })
            .collect()
    };
    wait_until(Duration::from_secs(60), "20 copied results", || {
        copied().len() >= 20
    });
    shutdown.store(true, Ordering::Relaxed);
    sink.join();
    let mut copied = copied();
    copied.sort_by_key(|r| r["metric"].as_f64().unwrap() as u64);
    let expected: Vec<Value> = (0..40)
        .filter(|i| i % 4 < 2)
        .map(|i| serde_json::from_slice(&record(i, "metric").encode()).unwrap())
        .collect();
    assert_eq!(copied, expected);
}

#[test]
fn a_broker_killed_mid_stream_loses_no_acknowledged_event_and_repeats_none() {
    let mut broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("kafka.toml");
    let config = format!(
        r#"
[log]
backend = "kafka"
brokers = "{}"
partitions = 4
[log.kafka]
session_timeout_ms = 6000
max_poll_interval_ms = 6000
{LISTENERS}
[processor]
checkpoint_interval_ms = 200
[[reactor]]
name = "all"
pipeline = 'where service = "fault"'
"#,
        broker.addr
    );
    std::fs::write(&config_path, config).unwrap();
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
    let processor = start("process", "process");
    let store = start("store", "store");
    let url = format!("http://{}/events", ingest.addr("http"));

    // Two HTTP producers, each posting batches of 50 distinct events
    // (each one's description is its identity) until told to stop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producers: Vec<_> = (0..2)
        .map(|producer| {
            let (url, stop) = (url.clone(), stop.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(120))
                    .build()
                    .unwrap();
                let (mut acked, mut refused) = (Vec::new(), 0);
                let mut slowest = Duration::ZERO;
                let mut batch = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let names: Vec<String> =
                        (0..50).map(|e| format!("p{producer}-b{batch}-e{e}")).collect();
                    let body: String = names
                        .iter()
                        .enumerate()
                        .map(|(e, name)| {
                            format!("{{\"host\":\"h{}\",\"service\":\"fault\",\"description\":\"{name}\"}}\n", e % 20)
                        })
                        .collect();
                    let sent = std::time::Instant::now();
                    let response = client.post(&url).body(body).send();
                    slowest = slowest.max(sent.elapsed());
                    match response {
                        Ok(response) if response.status() == 202 => acked.extend(names),
                        Ok(_) | Err(_) => {
                            refused += 1;
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    }
                    batch += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                (acked, refused, slowest)
            })
        })
        .collect();
    let described = |results: &[Value]| -> Vec<String> {
        results
            .iter()
            .filter_map(|r| r["description"].as_str().map(str::to_owned))
            .collect()
    };
    wait_until(Duration::from_secs(60), "results flowing", || {
        results(&dir.path().join("store")).len() > 1000
    });
    broker.kill();
    // Unreachable brokers show in /readyz, and heal with them.
    let readyz = |service: &Service| {
        let response = reqwest::blocking::get(format!("http://{}/readyz", service.metrics_addr()));
        response.map_or((0, String::new()), |r| {
            (r.status().as_u16(), r.text().unwrap_or_default())
        })
    };
    wait_until(
        Duration::from_secs(20),
        "/readyz to name the brokers",
        || {
            let (status, body) = readyz(&processor);
            status == 503 && body.contains("Kafka brokers")
        },
    );
    assert_eq!(processor.metric("weir_log_brokers_reachable"), 0.0);
    broker.restart();
    wait_until(Duration::from_secs(30), "/readyz to heal", || {
        readyz(&processor).0 == 200 && readyz(&ingest).0 == 200
    });
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = BTreeSet::new();
    let (mut refused, mut slowest) = (0, Duration::ZERO);
    for producer in producers {
        let (names, failures, longest) = producer.join().unwrap();
        acked.extend(names);
        refused += failures;
        slowest = slowest.max(longest);
    }
    eprintln!(
        "{} events acknowledged, {refused} batches refused, slowest answer {slowest:?}",
        acked.len()
    );
    // The producers felt the outage: refused, or held until the broker was back.
    assert!(
        refused > 0 || slowest > Duration::from_secs(3),
        "{slowest:?}"
    );
    let missing = || {
        let got: BTreeSet<String> = described(&results(&dir.path().join("store")))
            .into_iter()
            .collect();
        acked.difference(&got).cloned().collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while !missing().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let lost = missing();
    if !lost.is_empty() {
        // Lost by the log, or stuck after it? Look for them in weir.events.
        let kafka = KafkaLog::connect(&broker.addr, &kafka_config()).unwrap();
        let logged = (0..4)
            .flat_map(|p| {
                let records = kafka.read("weir.events", p, 0, 256 << 20, Duration::from_secs(5));
                records.unwrap()
            })
            .filter(|r| {
                lost.iter()
                    .any(|name| r.value.windows(name.len()).any(|w| w == name.as_bytes()))
            })
            .count();
        let logs = ["ingest", "process", "store"].map(|name| {
            std::fs::read_to_string(dir.path().join(name).with_extension("stderr"))
                .unwrap_or_default()
        });
        panic!(
            "{} acknowledged events without a result ({logged} of them in weir.events), e.g. {:?}\n{}",
            lost.len(),
            &lost[..lost.len().min(3)],
            logs.join("\n----\n")
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    let got = described(&results(&dir.path().join("store")));
    let mut seen = BTreeSet::new();
    let repeated: Vec<_> = got.iter().filter(|name| !seen.insert(*name)).collect();
    assert!(repeated.is_empty(), "results repeated: {repeated:?}");
    drop((ingest, processor, store));
}
