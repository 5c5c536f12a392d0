//! The live API and the dashboard through the real binary: the index
//! (queried, across a SIGKILL, across a partition move on Kafka), the SSE
//! and WebSocket feeds (filters, a slow listener dropped without slowing
//! the pipeline, resuming after a reconnect), and the dashboard in
//! Debian's headless Chromium.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{results, wait_until, Broker, Service, Weir, LISTENERS};
use serde_json::{json, Value};

fn post(http: SocketAddr, lines: &[Value]) {
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let response = reqwest::blocking::Client::new()
        .post(format!("http://{http}/events"))
        .body(body)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
}

fn index(http: SocketAddr, filter: &str) -> Vec<Value> {
    let response: Value = reqwest::blocking::Client::new()
        .get(format!("http://{http}/api/index"))
        .query(&[("where", filter)])
        .send()
        .unwrap()
        .json()
        .unwrap();
    response["entries"].as_array().unwrap().clone()
}

/// An SSE listener on a raw socket (so that it can stop reading).
struct Sse {
    reader: BufReader<TcpStream>,
}

impl Sse {
    fn open(http: SocketAddr, query: &str, last_id: Option<u64>) -> Sse {
        let mut stream = TcpStream::connect(http).unwrap();
        let resume = last_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
        write!(
            stream,
            "GET /api/live?{query} HTTP/1.1\r\nHost: weir\r\nAccept: text/event-stream\r\n{resume}\r\n"
        )
        .unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.contains("200"), "{line}");
        while line != "\r\n" {
            line.clear();
            reader.read_line(&mut line).unwrap();
        }
        Sse { reader }
    }

    /// The next message: (event type, id, data); none at the end.
    fn next(&mut self) -> Option<(String, Option<u64>, Value)> {
        let (mut kind, mut id, mut data) = (String::new(), None, String::new());
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            // Chunked transfer: chunk-size lines are not SSE fields.
            let line = line.trim_end();
            if let Some(v) = line.strip_prefix("event: ") {
                kind = v.to_owned();
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = v.parse().ok();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            } else if line.is_empty() && !data.is_empty() {
                return Some((kind, id, serde_json::from_str(&data).unwrap()));
            }
        }
    }
}

const FEED_CONFIG: &str = "[log]\npartitions = 2\n[processor]\ncheckpoint_interval_ms = 100\n\
    [[reactor]]\nname = \"all\"\npipeline = 'where service = \"load\"'\n\
    [[reactor]]\nname = \"hot\"\npipeline = 'where metric > 90'\n";

#[test]
fn the_live_feeds_filter_drop_a_slow_listener_and_resume_after_a_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let weir = Weir::start(&format!("{FEED_CONFIG}{LISTENERS}"), &data);
    let http = weir.http;

    // Filters: the reactor, a predicate, raw events only when asked.
    let mut hot = Sse::open(http, "reactor=hot", None);
    let mut db = Sse::open(http, "events=true&where=host%20%3D%20%22db%22", None);
    let (mut ws, _) = tungstenite::connect(format!(
        "ws://{http}/api/live/ws?reactor=all&where=metric%20%3C%2010"
    ))
    .unwrap();
    let lines: Vec<Value> = (0..100)
        .map(|i| json!({"host": if i % 2 == 0 { "web" } else { "db" }, "service": "load", "metric": i}))
        .collect();
    post(http, &lines);
    let mut hot_metrics = Vec::new();
    while hot_metrics.len() < 9 {
        let (kind, _, data) = hot.next().unwrap();
        assert_eq!(
            (kind.as_str(), data["reactor"].as_str()),
            ("result", Some("hot"))
        );
        hot_metrics.push(data["metric"].as_f64().unwrap());
    }
    assert_eq!(hot_metrics, (91..100).map(f64::from).collect::<Vec<_>>());
    let mut db_kinds = std::collections::BTreeMap::new();
    while db_kinds.values().sum::<usize>() < 50 + 50 + 4 {
        let (kind, _, data) = db.next().unwrap();
        assert_eq!(data["host"], "db", "{data}");
        *db_kinds.entry(kind).or_insert(0usize) += 1;
    }
    // db's 50 events, their 50 "all" results and the 4 "hot" ones (93, 95, 97, 99).
    assert_eq!(db_kinds["event"], 50);
    assert_eq!(db_kinds["result"], 54);
    let mut ws_metrics = Vec::new();
    while ws_metrics.len() < 10 {
        let text = ws.read().unwrap().into_text().unwrap();
        let message: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (message["kind"].as_str(), message["reactor"].as_str()),
            (Some("result"), Some("all"))
        );
        ws_metrics.push(message["data"]["metric"].as_f64().unwrap());
    }
    assert_eq!(ws_metrics, (0..10).map(f64::from).collect::<Vec<_>>());
    let bad = reqwest::blocking::get(format!("http://{http}/api/live?where=metric%20%3E")).unwrap();
    assert_eq!(bad.status().as_u16(), 400);

    // Reconnect: a feed that comes back with the last id it saw resumes
    // after it, without a gap.
    let mut all = Sse::open(http, "reactor=all", None);
    post(
        http,
        &[json!({"host": "web", "service": "load", "metric": 1000})],
    );
    let (_, first_id, _) = all.next().unwrap();
    drop(all);
    let more: Vec<Value> = (1001..1011)
        .map(|m| json!({"host": "web", "service": "load", "metric": m}))
        .collect();
    post(http, &more);
    std::thread::sleep(Duration::from_millis(500));
    let mut resumed = Sse::open(http, "reactor=all", first_id);
    let mut metrics = Vec::new();
    while metrics.len() < 10 {
        let (_, _, data) = resumed.next().unwrap();
        metrics.push(data["metric"].as_f64().unwrap());
    }
    assert_eq!(metrics, (1001..1011).map(f64::from).collect::<Vec<_>>());
    // A WebSocket resumes the same way, with `after=ID`.
    let (mut again, _) = tungstenite::connect(format!(
        "ws://{http}/api/live/ws?reactor=all&after={}",
        first_id.unwrap()
    ))
    .unwrap();
    let text = again.read().unwrap().into_text().unwrap();
    let message: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(message["data"]["metric"], 1001.0);
    let _ = again.close(None);
    let _ = again.flush();
    drop(again);

    // A listener that stops reading: the pipeline goes on (every result
    // is written while it stalls), and it is dropped with the count.
    let mut slow = Sse::open(http, "", None);
    let before = results(&data).len();
    let burst = 40_000;
    for chunk in 0..(burst / 2000) {
        let lines: Vec<Value> = (0..2000)
            .map(|i| json!({"host": format!("h{}", i % 50), "service": "load", "metric": 5, "description": format!("{chunk}-{i}")}))
            .collect();
        post(http, &lines);
    }
    wait_until(
        Duration::from_secs(60),
        "every result of the burst written",
        || results(&data).len() >= before + burst,
    );
    let mut dropped = None;
    while let Some((kind, _, data)) = slow.next() {
        if kind == "dropped" {
            dropped = data["missed"].as_u64();
        }
    }
    let missed = dropped.expect("the slow listener was told it was dropped");
    assert!(missed > 0);
    wait_until(Duration::from_secs(5), "the drop counted", || {
        weir.metric_sum("weir_live_dropped_total") >= missed as f64
    });
    drop((hot, db, resumed));
    let _ = ws.close(None);
    let _ = ws.flush();
    drop(ws);
    // A feed notices its listener left when a write fails (after a
    // message its filter passes, or its keep-alive every 15 s).
    wait_until(Duration::from_secs(20), "no listener left", || {
        post(
            http,
            &[json!({"host": "db", "service": "load", "metric": 95})],
        );
        weir.metric("weir_live_clients") == 0.0
    });
}

#[test]
fn the_index_answers_queries_and_survives_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = format!("{FEED_CONFIG}{LISTENERS}");
    let weir = Weir::start(&config, &data);
    let events: Vec<Value> = (0..20)
        .map(|i| json!({"host": format!("h{i}"), "service": if i < 10 { "cpu" } else { "disk" }, "metric": i, "state": "ok", "ttl": 3600}))
        .collect();
    post(weir.http, &events);
    post(
        weir.http,
        &[json!({"host": "h3", "service": "cpu", "metric": 99, "state": "critical", "ttl": 3600})],
    );
    wait_until(Duration::from_secs(10), "20 entries indexed", || {
        index(weir.http, "").len() == 20
    });
    let cpu = index(weir.http, "service = \"cpu\" and metric > 5");
    let hosts: Vec<&str> = cpu
        .iter()
        .map(|e| e["event"]["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["h3", "h6", "h7", "h8", "h9"]);
    assert_eq!(cpu[0]["event"]["state"], "critical");
    assert_eq!(cpu[0]["uid"], "h3");
    let before = index(weir.http, "");
    // Checkpointed (100 ms), then killed.
    std::thread::sleep(Duration::from_millis(500));
    weir.kill();
    let weir = Weir::start(&config, &data);
    assert_eq!(index(weir.http, ""), before);
    weir.stop();
}

#[test]
fn the_index_merges_its_peers_and_names_one_that_does_not_answer() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{FEED_CONFIG}{LISTENERS}");
    let peer = Weir::start(&config, &dir.path().join("peer"));
    // A port that was free a moment ago: nothing answers there.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dead = format!("http://{dead}");
    let merging = format!(
        "{config}\n[admin]\nindex_peers = [\"http://{}\", \"{dead}\"]\n",
        peer.http
    );
    let node = Weir::start(&merging, &dir.path().join("node"));
    let load = |host: &str| json!({"host": host, "service": "load", "metric": 1, "ttl": 3600});
    post(peer.http, &[load("b0"), load("b1")]);
    post(node.http, &[load("a0")]);
    wait_until(Duration::from_secs(10), "both nodes indexed", || {
        index(peer.http, "").len() == 2 && !index(node.http, "").is_empty()
    });
    let series = format!("weir_index_peer_errors_total{{peer=\"{dead}\"}}");
    let failed_before = node.metric(&series);
    let answer: Value = reqwest::blocking::get(format!("http://{}/api/index", node.http))
        .unwrap()
        .json()
        .unwrap();
    let hosts: Vec<&str> = answer["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["a0", "b0", "b1"], "{answer}");
    let errors = answer["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{answer}");
    assert_eq!(errors[0]["peer"], dead.as_str());
    // Counted once per query it failed.
    assert_eq!(node.metric(&series), failed_before + 1.0);
    // The peer's own index is its own: asked with local=true by the node.
    assert_eq!(index(peer.http, "").len(), 2);
    node.stop();
    peer.stop();
}

#[test]
fn on_kafka_the_index_moves_with_its_partitions() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("kafka.toml");
    let config = format!(
        "[log]\nbackend = \"kafka\"\nbrokers = \"{}\"\npartitions = 4\n\
         [log.kafka]\nsession_timeout_ms = 6000\nmax_poll_interval_ms = 6000\n\
         [processor]\ncheckpoint_interval_ms = 100\n{LISTENERS}\n\
         [[reactor]]\nname = \"all\"\npipeline = 'where service = \"load\"'\n",
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
    let first = start("process", "p1");
    let second = start("process", "p2");
    wait_until(
        Duration::from_secs(60),
        "both processors own partitions",
        || {
            [&first, &second]
                .iter()
                .all(|p| p.metric("weir_processor_partitions_owned") > 0.0)
        },
    );
    let events: Vec<Value> = (0..40)
        .map(|i| json!({"host": format!("h{i}"), "service": "load", "metric": i, "ttl": 3600}))
        .collect();
    post(ingest.addr("http"), &events);
    let both = |processors: &[&Service]| -> Vec<Value> {
        let mut all: Vec<Value> = processors
            .iter()
            .flat_map(|p| index(p.addr("metrics"), ""))
            .collect();
        all.sort_by_key(|e| e["event"]["host"].as_str().unwrap().to_owned());
        all
    };
    wait_until(Duration::from_secs(60), "40 entries over the two", || {
        both(&[&first, &second]).len() == 40
    });
    let before = both(&[&first, &second]);
    assert!(!index(first.addr("metrics"), "").is_empty());
    assert!(!index(second.addr("metrics"), "").is_empty());
    second.stop();
    wait_until(
        Duration::from_secs(60),
        "the survivor serves every entry",
        || both(&[&first]) == before,
    );
}

#[test]
fn the_dashboard_shows_the_fleet_live_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let (admin_token, read_token) = (
        dir.path().join("admin.token"),
        dir.path().join("read.token"),
    );
    std::fs::write(&admin_token, "admin-secret").unwrap();
    std::fs::write(&read_token, "read-secret").unwrap();
    let seed = dir.path().join("registry.json");
    std::fs::write(
        &seed,
        r#"{"hosts": {"shop": ["web-1", "web-2"], "db": ["pg-1"]}}"#,
    )
    .unwrap();
    let config = format!(
        "[log]\npartitions = 4\n[admin]\ntoken_file = {:?}\nread_token_file = {:?}\n\
         [router]\nregistry_file = {:?}\n{LISTENERS}\n\
         [[reactor]]\nname = \"alerts\"\npipeline = 'where state = \"critical\" | notify log'\n",
        admin_token.display().to_string(),
        read_token.display().to_string(),
        seed.display().to_string()
    );
    let weir = Weir::start(&config, &dir.path().join("data"));
    let http = weir.http;
    // Without a token the API refuses; the read-only token reads but
    // changes nothing.
    let client = reqwest::blocking::Client::new();
    assert_eq!(
        client
            .get(format!("http://{http}/api/index"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    let read = |request: reqwest::blocking::RequestBuilder| {
        request
            .bearer_auth("read-secret")
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(read(client.get(format!("http://{http}/api/index"))), 200);
    assert_eq!(
        read(client.delete(format!("http://{http}/admin/registry/hosts/web-1"))),
        403
    );

    let stop = Arc::new(AtomicBool::new(false));
    let db_silent = Arc::new(AtomicBool::new(false));
    let beats = {
        let (stop, db_silent) = (stop.clone(), db_silent.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut lines = vec![
                    json!({"host": "web-1", "service": "cpu", "state": "ok", "metric": 0.31, "ttl": 10}),
                    json!({"host": "web-1", "service": "disk", "state": "warning", "metric": 0.86, "ttl": 10}),
                    json!({"host": "web-2", "service": "cpu", "state": "critical", "metric": 0.97, "ttl": 10}),
                    json!({"host": "web-2", "service": "disk", "state": "ok", "metric": 0.4, "ttl": 10}),
                ];
                if !db_silent.load(Ordering::Relaxed) {
                    lines.push(json!({"host": "pg-1", "service": "cpu", "state": "ok", "metric": 0.2, "ttl": 2}));
                }
                post(http, &lines);
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let expected = json!({
        "web-1|cpu": "ok", "web-1|disk": "warning", "web-2|cpu": "critical",
        "web-2|disk": "ok", "pg-1|cpu": "ok"
    });
    let mut browser = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/dashboard/check.py"
        ))
        .arg(format!("http://{http}/"))
        .arg("read-secret")
        .arg(&screenshot)
        .arg(expected.to_string())
        .arg("pg-1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with selenium runs");
    let mut seen = String::new();
    for line in BufReader::new(browser.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        eprintln!("browser: {line}");
        if line.starts_with("cells:") {
            // Every cell is on the page: pg-1 goes silent and must expire there.
            db_silent.store(true, Ordering::Relaxed);
        }
        seen.push_str(&line);
        seen.push('\n');
    }
    let status = browser.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    beats.join().unwrap();
    assert!(status.success(), "the browser check failed:\n{seen}");
    assert!(seen.contains(r#"applications: ["db", "shop"]"#), "{seen}");
    assert!(seen.contains("expired: pg-1"), "{seen}");
    let mut png = Vec::new();
    std::fs::File::open(&screenshot)
        .unwrap()
        .read_to_end(&mut png)
        .unwrap();
    assert!(
        png.starts_with(b"\x89PNG"),
        "a screenshot at {}",
        screenshot.display()
    );
}
