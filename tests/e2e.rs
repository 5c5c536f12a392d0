//! The whole pipeline through the real binary: every protocol, bad input
//! mixed with good, heartbeat expiry, and SIGKILL under load.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{results, wait_until, weir_send, Weir, LISTENERS};
use serde_json::{json, Value};

fn config(extra: &str, unix: Option<&std::path::Path>) -> String {
    let unix = unix.map_or(String::new(), |p| {
        format!(
            "[ingest.unix]\nlisten = {:?}\nttl_unit = \"ms\"\n",
            p.display().to_string()
        )
    });
    format!(
        r#"
{LISTENERS}
{unix}
[router]
tick_interval_ms = 200

[[reactor]]
name = "all"
pipeline = 'where service ~ "e2e*"'

[[reactor]]
name = "heartbeats"
pipeline = 'where service = "hb" | by host | expire | notify log'
{extra}
"#
    )
}

fn hosts(data: &std::path::Path, reactor: &str) -> Vec<String> {
    results(data)
        .iter()
        .filter(|r| r["reactor"] == reactor)
        .map(|r| r["host"].as_str().unwrap().to_owned())
        .collect()
}

fn send(to: &str, host: &str) {
    weir_send(to, host, "e2e/send", &["--metric", "1"]);
}

fn godot(kind: &str, target: &str, count: u32) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/godot/send.js");
    let status = Command::new("node")
        .args([script, kind, target, "e2e/godot", &count.to_string()])
        .status()
        .expect("node runs godot's client (README's test command installs it)");
    assert!(status.success(), "godot {kind} client");
}

#[test]
fn every_protocol_reaches_the_processor() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let socket = dir.path().join("weir.sock");
    let weir = Weir::start(&config("", Some(&socket)), &data);

    send(&format!("tcp://{}", weir.tcp), "send-tcp");
    send(&format!("udp://{}", weir.udp), "send-udp");
    send(&format!("unix://{}", socket.display()), "send-unix");
    send(&format!("http://{}", weir.http), "send-http");
    godot("tcp", &weir.tcp.port().to_string(), 3);
    godot("udp", &weir.udp.port().to_string(), 3);
    godot("unix", &socket.display().to_string(), 3);
    // What nc and curl do: raw bytes on a socket, a JSON array over HTTP.
    TcpStream::connect(weir.tcp)
        .unwrap()
        .write_all(b"{\"host\":\"raw-tcp\",\"service\":\"e2e/raw\"}\n")
        .unwrap();
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(b"{\"host\":\"raw-udp-1\",\"service\":\"e2e/raw\"}\n{\"host\":\"raw-udp-2\",\"service\":\"e2e/raw\"}", weir.udp)
        .unwrap();
    UnixStream::connect(&socket)
        .unwrap()
        .write_all(b"{\"host\":\"raw-unix\",\"service\":\"e2e/raw\"}")
        .unwrap();
    let reply = reqwest::blocking::Client::new()
        .post(format!("http://{}/events", weir.http))
        .body(r#"[{"host":"http-array-1","service":"e2e/http"},{"host":"http-array-2","service":"e2e/http","meta":{"k":1},"custom":"kept"}]"#)
        .send()
        .unwrap();
    assert_eq!(reply.status(), 202);
    assert_eq!(
        reply.json::<Value>().unwrap(),
        json!({"accepted": 2, "rejected": 0})
    );

    let expected = [
        "send-tcp",
        "send-udp",
        "send-unix",
        "send-http",
        "godot-tcp",
        "godot-udp",
        "godot-unix",
        "raw-tcp",
        "raw-udp-1",
        "raw-udp-2",
        "raw-unix",
        "http-array-1",
        "http-array-2",
    ];
    wait_until(
        Duration::from_secs(20),
        "every protocol's events in the results",
        || {
            let seen: HashSet<_> = hosts(&data, "all").into_iter().collect();
            expected.iter().all(|h| seen.contains(*h))
        },
    );
    let all = results(&data);
    let godot_tcp: Vec<_> = all.iter().filter(|r| r["host"] == "godot-tcp").collect();
    assert_eq!(godot_tcp.len(), 3);
    assert_eq!(
        godot_tcp[0]["ttl"],
        json!(100.0),
        "the default listener reads ttl in seconds"
    );
    let godot_unix = all.iter().find(|r| r["host"] == "godot-unix").unwrap();
    assert_eq!(
        godot_unix["ttl"],
        json!(0.1),
        "a ttl_unit=ms listener reads godot's milliseconds"
    );
    let time = godot_unix["time"].as_f64().unwrap();
    assert!(
        time > 1.7e9 && time < 1e11,
        "godot's Date.now() milliseconds are read as seconds: {time}"
    );
    let array = all.iter().find(|r| r["host"] == "http-array-2").unwrap();
    assert_eq!(
        (array["custom"].clone(), array["meta"].clone()),
        (json!("kept"), json!({"k": 1}))
    );
    weir.stop();
}

#[test]
fn malformed_lines_are_rejected_with_reasons_and_the_good_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let weir = Weir::start(&config("", None), &data);
    let good =
        |n: u32| format!("{{\"host\":\"good-{n}\",\"service\":\"e2e/mixed\",\"metric\":{n}}}\n");
    let mut stream = good(1);
    stream.push_str("{\"host\": \"broken\n");
    stream.push_str(&good(2));
    stream.push_str("{\"service\":\"e2e/mixed\"}\n");
    stream.push_str(&good(3));
    stream.push_str(&format!(
        "{{\"host\":\"long-state\",\"state\":\"{}\"}}\n",
        "s".repeat(255)
    ));
    stream.push_str(&good(4));
    stream.push_str("{\"host\":\"nan\",\"metric\":NaN}\n");
    stream.push_str(&good(5));
    stream.push_str(&format!(
        "{{\"host\":\"huge\",\"description\":\"{}\"}}\n",
        "x".repeat(10 << 20)
    ));
    stream.push_str(&good(6));
    let mut tcp = TcpStream::connect(weir.tcp).unwrap();
    tcp.write_all(stream.as_bytes()).unwrap();
    drop(tcp);

    let body = format!("{}not json at all\n{}", good(7), good(8));
    let reply = reqwest::blocking::Client::new()
        .post(format!("http://{}/events", weir.http))
        .body(body)
        .send()
        .unwrap();
    assert_eq!(reply.status(), 400);
    let reply: Value = reply.json().unwrap();
    assert_eq!(
        (reply["accepted"].clone(), reply["rejected"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(
        (
            reply["error"]["line"].clone(),
            reply["error"]["reason"].clone()
        ),
        (json!(2), json!("invalid_json"))
    );

    wait_until(
        Duration::from_secs(20),
        "every good line in the results",
        || {
            let seen: HashSet<_> = hosts(&data, "all").into_iter().collect();
            (1..=8).all(|n| seen.contains(&format!("good-{n}")))
        },
    );
    for reason in [
        "invalid_json",
        "missing_host",
        "state_too_long",
        "non_finite_number",
        "line_too_long",
    ] {
        let series = format!("weir_ingest_rejected_total{{protocol=\"tcp\",reason=\"{reason}\"}}");
        assert_eq!(weir.metric(&series), 1.0, "{series}");
    }
    assert_eq!(
        weir.metric("weir_ingest_rejected_total{protocol=\"http\",reason=\"invalid_json\"}"),
        1.0
    );
    assert_eq!(
        weir.metric("weir_ingest_accepted_total{protocol=\"tcp\"}"),
        6.0
    );
    weir.stop();
}

#[test]
fn an_expired_heartbeat_produces_an_expiry_result() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let weir = Weir::start(&config("", None), &data);
    for host in ["alive", "dies"] {
        let ttl = if host == "dies" { "1" } else { "600" };
        weir_send(&format!("tcp://{}", weir.tcp), host, "hb", &["--ttl", ttl]);
    }
    wait_until(Duration::from_secs(20), "an expiry result", || {
        !hosts(&data, "heartbeats").is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    let expired: Vec<_> = results(&data)
        .into_iter()
        .filter(|r| r["reactor"] == "heartbeats")
        .collect();
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(
        (expired[0]["host"].clone(), expired[0]["state"].clone()),
        (json!("dies"), json!("expired"))
    );
    assert_eq!(expired[0]["notify"], json!({"channel": "log"}));
    weir.stop();
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_event_and_writes_no_result_twice() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = config(
        "[processor]\ncheckpoint_every = 300\ncheckpoint_interval_ms = 50\n",
        None,
    );
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let mut next = 0u64;
    for round in 0..3 {
        let weir = Weir::start(&config, &data);
        let stop = Arc::new(AtomicBool::new(false));
        let client = {
            let (acked, stop, http) = (acked.clone(), stop.clone(), weir.http);
            let first = next;
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                let mut n = first;
                while !stop.load(Ordering::Relaxed) {
                    let batch: Vec<_> = (n..n + 50).collect();
                    let body: String = batch
                        .iter()
                        .map(|i| {
                            format!(
                                "{{\"host\":\"app-{}\",\"service\":\"e2e/load\",\"metric\":{i}}}\n",
                                i % 20
                            )
                        })
                        .collect();
                    n += 50;
                    match client
                        .post(format!("http://{http}/events"))
                        .body(body)
                        .send()
                    {
                        Ok(reply) if reply.status() == 202 => acked.lock().unwrap().extend(batch),
                        _ => break,
                    }
                }
                n
            })
        };
        let target = 2000 * (round + 1);
        wait_until(Duration::from_secs(60), "load to be acknowledged", || {
            acked.lock().unwrap().len() >= target
        });
        weir.kill();
        stop.store(true, Ordering::Relaxed);
        next = client.join().unwrap();
    }
    let weir = Weir::start(&config, &data);
    let acked = acked.lock().unwrap().clone();
    wait_until(
        Duration::from_secs(60),
        "every acknowledged event in the results",
        || {
            let seen: HashSet<u64> = results(&data)
                .iter()
                .filter(|r| r["reactor"] == "all")
                .map(|r| r["metric"].as_f64().unwrap() as u64)
                .collect();
            acked.iter().all(|m| seen.contains(m))
        },
    );
    weir.stop();
    let all: Vec<_> = results(&data)
        .into_iter()
        .filter(|r| r["reactor"] == "all")
        .collect();
    let mut ids = HashMap::new();
    let mut metrics = HashSet::new();
    for result in &all {
        *ids.entry(result["id"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
        assert!(
            metrics.insert(result["metric"].as_f64().unwrap() as u64),
            "event {} written twice",
            result["metric"]
        );
    }
    assert!(ids.values().all(|n| *n == 1));
    assert!(
        all.len() >= acked.len() && acked.len() >= 6000,
        "{} results, {} acked",
        all.len(),
        acked.len()
    );
}

/// `weir state --reactor REACTOR --target ADDR EXTRA…`.
fn weir_state(addr: SocketAddr, reactor: &str, extra: &[&str]) -> std::process::Output {
    Command::new(common::bin())
        .args(["state", "--reactor", reactor, "--target", &addr.to_string()])
        .args(extra)
        .output()
        .unwrap()
}

/// Rows of `weir state`: processor, partition, version, offset, age, size,
/// lag. None while no partition holds the reactor's state yet (right after
/// a start, before the partitions are restored, weir state says so and fails).
fn state_rows(addr: SocketAddr, reactor: &str) -> Vec<Vec<String>> {
    let output = weir_state(addr, reactor, &[]);
    if String::from_utf8_lossy(&output.stderr).contains("holds state of reactor") {
        return Vec::new();
    }
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

#[test]
fn weir_state_shows_checkpoints_and_keeps_a_retired_version_until_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let extra = "[processor]\ncheckpoint_interval_ms = 100\n";
    let weir = Weir::start(&config(extra, None), &data);
    let mut stream = TcpStream::connect(weir.tcp).unwrap();
    for i in 0..400 {
        writeln!(
            stream,
            r#"{{"host":"h{}","service":"hb","ttl":600}}"#,
            i % 40
        )
        .unwrap();
    }
    drop(stream);
    let mut rows = Vec::new();
    wait_until(
        Duration::from_secs(20),
        "checkpoints past every event",
        || {
            rows = state_rows(weir.http, "heartbeats");
            rows.iter()
                .map(|r| r[3].parse::<u64>().unwrap())
                .sum::<u64>()
                >= 400
        },
    );
    assert_eq!(rows.len(), 4, "one row per partition: {rows:?}");
    for row in &rows {
        let size: usize = row[5].parse().unwrap();
        assert!(
            size > 2,
            "the by-host state of 40 hosts is not empty: {row:?}"
        );
        assert!(row[4].ends_with('s'), "age: {row:?}");
    }
    let old = rows[0][2].clone();
    let unknown = weir_state(weir.http, "nope", &[]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("\"nope\""));
    weir.stop();

    // A changed pipeline is a new version; the old one's state is kept…
    let changed = config(extra, None).replace("| expire |", "| expire | where host ~ \"h*\" |");
    let weir = Weir::start(&changed, &data);
    let versions = |weir: &Weir| -> HashSet<String> {
        state_rows(weir.http, "heartbeats")
            .into_iter()
            .map(|r| r[2].clone())
            .collect()
    };
    wait_until(Duration::from_secs(20), "both versions listed", || {
        versions(&weir).len() == 2
    });
    assert!(versions(&weir).contains(&old));
    // …until it is forgotten.
    let forget = weir_state(weir.http, "heartbeats", &["--forget", &old]);
    assert!(forget.status.success(), "{forget:?}");
    wait_until(Duration::from_secs(20), "the old version dropped", || {
        !versions(&weir).contains(&old)
    });
    assert_eq!(versions(&weir).len(), 1);
    weir.stop();
}

#[test]
fn an_event_stamped_a_year_ahead_is_rejected_at_ingest_and_the_rest_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let weir = Weir::start(&config("", None), &dir.path().join("data"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let year_ahead = now + 365 * 24 * 3600;
    let body = format!(
        "{{\"host\":\"a\",\"service\":\"e2e/ok\",\"time\":{now}}}\n\
         {{\"host\":\"skewed\",\"service\":\"e2e/skew\",\"time\":{year_ahead}}}\n\
         {{\"host\":\"c\",\"service\":\"e2e/ok\",\"time\":{now}000}}\n"
    );
    let response = reqwest::blocking::Client::new()
        .post(format!("http://{}/events", weir.http))
        .body(body)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let reply: Value = response.json().unwrap();
    assert_eq!(reply["accepted"], 2, "{reply}");
    assert_eq!(reply["error"]["line"], 2, "{reply}");
    assert_eq!(reply["error"]["reason"], "time_in_future", "{reply}");
    assert_eq!(
        weir.metric("weir_ingest_rejected_total{protocol=\"http\",reason=\"time_in_future\"}"),
        1.0
    );
    weir.stop();
}

#[test]
fn a_thousand_idle_connections_are_closed_after_the_idle_timeout_and_a_busy_one_is_not() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    // Opening 1000 connections takes several seconds here: the timeout
    // leaves room for all to be open at once.
    let extra = "[ingest]\nidle_timeout_secs = 30\nmax_connections = 2000\n";
    let config = format!("{}\n{extra}", config("", None));
    let weir = Weir::start(&config, &dir.path().join("data"));
    let mut busy = TcpStream::connect(weir.tcp).unwrap();
    let idle: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(weir.tcp).unwrap())
        .collect();
    let connections = || weir.metric("weir_ingest_connections{protocol=\"tcp\"}");
    wait_until(Duration::from_secs(25), "1001 connections open", || {
        connections() == 1001.0
    });
    // The busy one sends a line a second, past the timeout.
    let mut sent = 0;
    let started = std::time::Instant::now();
    while connections() > 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "idle ones still open"
        );
        writeln!(
            busy,
            r#"{{"host":"busy","service":"e2e/busy","metric":{sent}}}"#
        )
        .unwrap();
        sent += 1;
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(connections(), 1.0, "the busy one stays open");
    assert_eq!(
        weir.metric("weir_ingest_idle_closed_total{protocol=\"tcp\"}"),
        1000.0
    );
    // Closed from weir's side: each reads end-of-file.
    for mut stream in idle.into_iter().take(10) {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(stream.read(&mut [0u8; 1]).unwrap(), 0);
    }
    wait_until(Duration::from_secs(10), "every busy line accepted", || {
        weir.metric("weir_ingest_accepted_total{protocol=\"tcp\"}") == sent as f64
    });
    weir.stop();
}

#[test]
fn concurrent_http_producers_beyond_max_http_requests_wait_their_turn() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{}\n[ingest]\nmax_http_requests = 1\n", config("", None));
    let weir = Weir::start(&config, &dir.path().join("data"));
    let url = format!("http://{}/events", weir.http);
    let producers: Vec<_> = (0..8)
        .map(|p| {
            let url = url.clone();
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                for r in 0..20 {
                    let body: String = (0..50)
                        .map(|i| {
                            format!(
                                "{{\"host\":\"p{p}\",\"service\":\"e2e/c\",\"metric\":{}}}\n",
                                r * 50 + i
                            )
                        })
                        .collect();
                    let status = client.post(&url).body(body).send().unwrap().status();
                    assert_eq!(status.as_u16(), 202);
                }
            })
        })
        .collect();
    // Meanwhile, requests beyond the one turn are seen waiting.
    let mut most_waiting = 0.0f64;
    while !producers.iter().all(|p| p.is_finished()) {
        most_waiting = most_waiting.max(weir.metric("weir_ingest_http_waiting"));
        std::thread::sleep(Duration::from_millis(5));
    }
    for producer in producers {
        producer.join().unwrap();
    }
    assert!(most_waiting >= 1.0, "no request ever waited for a turn");
    assert_eq!(
        weir.metric("weir_ingest_accepted_total{protocol=\"http\"}"),
        8000.0
    );
    assert_eq!(weir.metric("weir_ingest_http_waiting"), 0.0);
    weir.stop();
}

#[test]
fn a_full_disk_refuses_new_events_keeps_processing_and_heals_when_enlarged() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
        .arg(&disk)
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "mounting a tmpfs needs root (CI runs as root)"
    );
    struct Unmount<'a>(&'a std::path::Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&disk);
    let config = format!(
        "[log]\nmin_free_bytes = 25165824\n{LISTENERS}\n[[reactor]]\nname = \"all\"\npipeline = 'where service = \"e2e/disk\"'\n"
    );
    let data = disk.join("data");
    let weir = Weir::start(&config, &data);
    let client = reqwest::blocking::Client::new();
    let post = |round: usize| {
        let body: String = (0..5000)
            .map(|i| format!("{{\"host\":\"h{}\",\"service\":\"e2e/disk\",\"metric\":{round},\"description\":\"{}\"}}\n", i % 50, "x".repeat(40)))
            .collect();
        let response = client
            .post(format!("http://{}/events", weir.http))
            .body(body)
            .send()
            .unwrap();
        (response.status().as_u16(), response.text().unwrap())
    };
    let readyz = || {
        reqwest::blocking::get(format!("http://{}/readyz", weir.http))
            .unwrap()
            .status()
            .as_u16()
    };
    let mut acked = 0;
    let mut refusal = None;
    for round in 0..200 {
        match post(round) {
            (202, _) => acked += 5000,
            (503, body) => {
                refusal = Some(body);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    let refusal = refusal.expect("the disk never filled");
    assert!(refusal.contains("min_free_bytes"), "{refusal}");
    assert_eq!(readyz(), 503);
    assert!(weir.metric("weir_log_disk_free_bytes") < 25165824.0);
    // What was accepted is still processed: results fit in the reserve.
    wait_until(
        Duration::from_secs(60),
        "every accepted event's result",
        || results(&data).len() >= acked,
    );
    // A stream producer has no answer to wait for: its line is held (the
    // router retries) until there is room, not dropped.
    let mut stream = TcpStream::connect(weir.tcp).unwrap();
    writeln!(
        stream,
        r#"{{"host":"tcp-1","service":"e2e/disk","metric":7}}"#
    )
    .unwrap();
    drop(stream);
    std::thread::sleep(Duration::from_millis(500));
    // ... and counted as accepted only once it is in the log.
    let tcp_accepted = || weir.metric("weir_ingest_accepted_total{protocol=\"tcp\"}");
    assert_eq!(tcp_accepted(), 0.0, "counted before it was appended");
    // More room: new events are taken again, without a restart.
    let grown = Command::new("mount")
        .args(["-o", "remount,size=256m"])
        .arg(&disk)
        .status()
        .unwrap();
    assert!(grown.success());
    assert_eq!(post(1000).0, 202);
    acked += 5000 + 1;
    wait_until(Duration::from_secs(30), "/readyz to heal", || {
        readyz() == 200
    });
    wait_until(Duration::from_secs(60), "the last results", || {
        results(&data).len() >= acked
    });
    assert_eq!(results(&data).len(), acked, "a result missing or twice");
    assert_eq!(tcp_accepted(), 1.0);
    weir.stop();
}
