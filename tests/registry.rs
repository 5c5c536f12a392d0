//! The live service registry through the real binary: the admin API and
//! `weir registry` on the embedded log, the seed file watched, an HTTP
//! source polled, and three ingest nodes on the real Kafka-protocol broker
//! converging on one view.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{bin, partitions_by_host, results, wait_until, Broker, Service, Weir, LISTENERS};
use serde_json::{json, Value};
use weir_log::{KafkaConfig, KafkaLog, Log};

fn view(http: impl std::fmt::Display) -> Value {
    reqwest::blocking::get(format!("http://{http}/admin/registry"))
        .unwrap()
        .json()
        .unwrap()
}

/// `PUT`/`DELETE` an admin path; the status and the body.
fn change(
    method: reqwest::Method,
    http: impl std::fmt::Display,
    path: &str,
    body: Value,
) -> (u16, String) {
    let response = reqwest::blocking::Client::new()
        .request(method, format!("http://{http}{path}"))
        .body(body.to_string())
        .send()
        .unwrap();
    (response.status().as_u16(), response.text().unwrap())
}

fn send(weir: &Weir, hosts: &[&str]) {
    let mut stream = TcpStream::connect(weir.tcp).unwrap();
    for host in hosts {
        writeln!(stream, r#"{{"host":"{host}","service":"reg"}}"#).unwrap();
    }
}

#[test]
fn the_admin_api_and_the_seed_file_change_the_registry_at_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("registry.json");
    std::fs::write(&seed, r#"{"hosts": {"shop": ["web-1", "web-2"]}}"#).unwrap();
    let config = format!(
        "[log]\npartitions = 8\n[router]\nregistry_file = {:?}\n{LISTENERS}\n[[reactor]]\nname = \"all\"\npipeline = 'where service = \"reg\"'\n",
        seed.display().to_string()
    );
    let data = dir.path().join("data");
    let weir = Weir::start(&config, &data);
    let start = view(weir.http);
    assert_eq!(start["uids"]["web-1"], "shop");
    assert_eq!(start["hosts"]["shop"], json!(["web-1", "web-2"]));
    let version = start["version"].as_u64().unwrap();
    assert!(version > 0);

    // Bad input: a 400 naming the problem, and nothing applied.
    let put = |path: &str, body: Value| change(reqwest::Method::PUT, weir.http, path, body);
    let refusals = [
        put(
            "/admin/registry/hosts/web-3",
            json!({"uid": "shop", "extra": 1}),
        ),
        put("/admin/registry/hosts/web-3", json!({"uid": ""})),
        put("/admin/registry/hosts/web-3", json!({"id": "shop"})),
        put(
            "/admin/registry/uids/shop",
            json!({"hosts": ["ok-host", "bad host"]}),
        ),
    ];
    let expected = [
        "unknown field `extra`",
        "uid is empty",
        "unknown field `id`",
        "contains whitespace",
    ];
    for ((status, body), expected) in refusals.iter().zip(expected) {
        assert_eq!(*status, 400, "{body}");
        assert!(body.contains(expected), "{body} should name {expected}");
    }
    let unchanged = view(weir.http);
    assert_eq!(unchanged["version"], version, "nothing half-applied");
    assert!(unchanged["uids"].get("ok-host").is_none());

    // A host added to an application: its events go to the application's partition.
    let (status, body) = put("/admin/registry/hosts/web-3", json!({"uid": "shop"}));
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert!(answer["version"].as_u64().unwrap() > version);
    send(&weir, &["web-1", "web-3", "web-2"]);
    wait_until(Duration::from_secs(30), "three results", || {
        results(&data).len() == 3
    });
    let homes = partitions_by_host(&results(&data));
    assert_eq!(homes["web-1"], homes["web-3"]);
    assert_eq!(homes["web-1"], homes["web-2"]);

    // The seed file changes: web-2 moves to its own application; the
    // host set through the admin API stays.
    std::fs::write(
        &seed,
        r#"{"hosts": {"shop": ["web-1"], "cart": ["web-2"]}}"#,
    )
    .unwrap();
    wait_until(Duration::from_secs(10), "the file's change applied", || {
        view(weir.http)["uids"]["web-2"] == "cart"
    });
    let now = view(weir.http);
    assert_eq!(now["uids"]["web-3"], "shop");
    // A file that breaks changes nothing, and is counted.
    std::fs::write(&seed, r#"{"hosts": {"shop": "#).unwrap();
    wait_until(Duration::from_secs(10), "the broken file counted", || {
        weir.metric_sum("weir_registry_source_errors_total") >= 1.0
    });
    assert_eq!(view(weir.http)["uids"], now["uids"]);

    // The CLI: set, rm, list, import.
    let cli = |args: &[&str]| {
        let output = Command::new(bin())
            .arg("registry")
            .args(args)
            .args(["--target", &weir.http.to_string()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        (output.status.success(), text)
    };
    assert!(cli(&["set", "web-9", "cart"]).0);
    assert!(cli(&["rm", "web-3"]).0);
    let import = dir.path().join("import.json");
    std::fs::write(&import, r#"{"uids": {"db-1": "pg", "db-2": "pg"}}"#).unwrap();
    assert!(cli(&["import", import.to_str().unwrap()]).0);
    let (ok, listed) = cli(&["list"]);
    assert!(ok, "{listed}");
    assert!(
        listed.contains("web-9") && listed.contains("db-2"),
        "{listed}"
    );
    assert!(!listed.contains("web-3"), "{listed}");
    std::fs::write(&import, r#"{"uids": {"db-3": ""}}"#).unwrap();
    let (ok, refused) = cli(&["import", import.to_str().unwrap()]);
    assert!(!ok && refused.contains("uid is empty"), "{refused}");
    weir.stop();
}

/// A registry source over HTTP: serves `body` with `etag`, answers 304 to
/// a matching `If-None-Match`, and counts requests.
#[derive(Clone, Default)]
struct Inventory {
    served: Arc<Mutex<(u16, String, String)>>,
    requests: Arc<Mutex<u32>>,
}

impl Inventory {
    fn start(&self) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let this = self.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut if_none_match = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some(tag) = line.to_ascii_lowercase().strip_prefix("if-none-match:") {
                        if_none_match = Some(tag.trim().to_owned());
                    }
                }
                *this.requests.lock().unwrap() += 1;
                let (status, body, etag) = this.served.lock().unwrap().clone();
                let reply = if if_none_match.as_deref() == Some(etag.to_ascii_lowercase().as_str())
                {
                    "HTTP/1.1 304 Not Modified\r\nconnection: close\r\n\r\n".to_owned()
                } else {
                    format!(
                        "HTTP/1.1 {status} X\r\netag: {etag}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                let _ = stream.write_all(reply.as_bytes());
                let _ = stream.read(&mut [0; 1]);
            }
        });
        port
    }

    fn serve(&self, status: u16, body: &str, etag: &str) {
        *self.served.lock().unwrap() = (status, body.to_owned(), etag.to_owned());
    }
}

#[test]
fn an_http_source_is_followed_and_a_broken_one_changes_nothing() {
    let inventory = Inventory::default();
    inventory.serve(200, r#"{"uids": {"db-1": "pg"}}"#, "\"v1\"");
    let port = inventory.start();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[log]\npartitions = 8\n[router]\nregistry_url = \"http://127.0.0.1:{port}/registry\"\nregistry_poll_secs = 1\n{LISTENERS}\n[[reactor]]\nname = \"all\"\npipeline = 'where service = \"reg\"'\n"
    );
    let data = dir.path().join("data");
    let weir = Weir::start(&config, &data);
    wait_until(Duration::from_secs(3), "the first content", || {
        view(weir.http)["uids"]["db-1"] == "pg"
    });
    // Unchanged content is asked for with If-None-Match and not applied again.
    let version = view(weir.http)["version"].clone();
    let asked = *inventory.requests.lock().unwrap();
    wait_until(Duration::from_secs(5), "two more polls", || {
        *inventory.requests.lock().unwrap() >= asked + 2
    });
    assert_eq!(view(weir.http)["version"], version);

    // The inventory moves db-1: its route follows within two polls.
    inventory.serve(
        200,
        r#"{"uids": {"db-1": "mysql", "db-2": "mysql"}}"#,
        "\"v2\"",
    );
    wait_until(
        Duration::from_secs(3),
        "the change within two polls",
        || view(weir.http)["uids"]["db-1"] == "mysql",
    );
    send(&weir, &["db-1", "db-2"]);
    wait_until(Duration::from_secs(30), "two results", || {
        results(&data).len() == 2
    });
    let homes = partitions_by_host(&results(&data));
    assert_eq!(homes["db-1"], homes["db-2"]);
    let now = view(weir.http);

    // Garbage, then an error status, then the source gone: counted, nothing changes.
    let errors = || weir.metric_sum("weir_registry_source_errors_total");
    inventory.serve(200, r#"{"uids": {"db-1": 7}}"#, "\"v3\"");
    wait_until(Duration::from_secs(5), "the garbage counted", || {
        errors() >= 1.0
    });
    inventory.serve(500, "down for maintenance", "\"v4\"");
    wait_until(Duration::from_secs(5), "the error counted", || {
        errors() >= 2.0
    });
    assert_eq!(view(weir.http)["uids"], now["uids"]);
    assert_eq!(view(weir.http)["hosts"], now["hosts"]);
    weir.stop();
}

#[test]
fn three_ingest_nodes_on_kafka_converge_on_one_view() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("kafka.toml");
    let config = format!(
        "[log]\nbackend = \"kafka\"\nbrokers = \"{}\"\npartitions = 8\n[router]\ntick_interval_ms = 250\n{LISTENERS}",
        broker.addr
    );
    std::fs::write(&config_path, config).unwrap();
    let start = |name: &str| {
        Service::start(
            "ingest",
            &config_path,
            &dir.path().join(name),
            &["--metrics", "127.0.0.1:0"],
            "warn",
        )
    };
    let mut nodes = vec![start("n1"), start("n2"), start("n3")];
    let (status, body) = change(
        reqwest::Method::PUT,
        nodes[0].addr("http"),
        "/admin/registry/uids/shop",
        json!({"hosts": ["web-1", "web-2", "web-3"]}),
    );
    assert_eq!(status, 200, "{body}");
    let version = serde_json::from_str::<Value>(&body).unwrap()["version"]
        .as_u64()
        .unwrap();
    // Applied by every node within 2 s.
    wait_until(
        Duration::from_secs(2),
        "every node at the change's version",
        || {
            nodes
                .iter()
                .all(|node| view(node.addr("http"))["version"].as_u64().unwrap() >= version)
        },
    );
    // One host through each node: all land on shop's partition.
    for (node, host) in nodes.iter().zip(["web-1", "web-2", "web-3"]) {
        let mut stream = TcpStream::connect(node.addr("tcp")).unwrap();
        writeln!(stream, r#"{{"host":"{host}","service":"reg"}}"#).unwrap();
    }
    let kafka = KafkaLog::connect(&broker.addr, &KafkaConfig::default()).unwrap();
    let partitions_of = |host: &str| -> Vec<u32> {
        (0..8)
            .filter(|&p| {
                let records = kafka.read("weir.events", p, 0, 1 << 20, Duration::from_millis(500));
                records
                    .unwrap()
                    .iter()
                    .any(|r| r.value.windows(host.len()).any(|w| w == host.as_bytes()))
            })
            .collect()
    };
    wait_until(Duration::from_secs(30), "the three events", || {
        ["web-1", "web-2", "web-3"]
            .iter()
            .all(|h| !partitions_of(h).is_empty())
    });
    let shop = partitions_of("web-1");
    assert_eq!(shop.len(), 1);
    assert_eq!(partitions_of("web-2"), shop);
    assert_eq!(partitions_of("web-3"), shop);
    assert_eq!(view(nodes[2].addr("http"))["partitions"]["shop"], shop[0]);

    // A restarted node rebuilds the same view from the topic.
    let before = view(nodes[0].addr("http"));
    nodes.remove(1).stop();
    let restarted = start("n2");
    wait_until(
        Duration::from_secs(10),
        "the same view after a restart",
        || view(restarted.addr("http")) == before,
    );
}

/// A host removed from the registry is decommissioned, not expired: its
/// state is dropped in every reactor, with one `decommissioned` result.
#[test]
fn a_host_removed_from_the_registry_is_decommissioned_not_expired() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("registry.json");
    std::fs::write(&seed, r#"{"hosts": {"shop": ["web-1", "web-2"]}}"#).unwrap();
    let config = format!(
        "[log]\npartitions = 2\n[processor]\ncheckpoint_interval_ms = 100\n\
         [router]\nregistry_file = {:?}\n{LISTENERS}\n\
         [[reactor]]\nname = \"beats\"\npipeline = 'where service = \"beat\" | by host | expire 2s'\n",
        seed.display().to_string()
    );
    let data = dir.path().join("data");
    let weir = Weir::start(&config, &data);
    let state_bytes = || -> usize {
        let partitions: Value = reqwest::blocking::get(format!("http://{}/admin/state", weir.http))
            .unwrap()
            .json()
            .unwrap();
        partitions
            .as_object()
            .unwrap()
            .values()
            .flat_map(|p| p["reactor_bytes"].as_object().unwrap().values())
            .map(|b| b.as_u64().unwrap() as usize)
            .sum()
    };
    for _ in 0..3 {
        let mut stream = TcpStream::connect(weir.tcp).unwrap();
        for host in ["web-1", "web-2"] {
            writeln!(stream, r#"{{"host":"{host}","service":"beat"}}"#).unwrap();
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_millis(500));
    let with_both = state_bytes();
    let (status, body) = change(
        reqwest::Method::DELETE,
        weir.http,
        "/admin/registry/hosts/web-2",
        Value::Null,
    );
    assert_eq!(status, 200, "{body}");
    wait_until(
        Duration::from_secs(10),
        "the decommission and the expiry",
        || {
            let all = results(&data);
            all.iter().any(|r| r["state"] == "decommissioned")
                && all.iter().any(|r| r["state"] == "expired")
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    let all = results(&data);
    let of = |host: &str, state: &str| {
        all.iter()
            .filter(|r| r["host"] == host && r["state"] == state)
            .count()
    };
    assert_eq!(of("web-2", "decommissioned"), 1, "{all:?}");
    assert_eq!(of("web-2", "expired"), 0, "{all:?}");
    assert_eq!(of("web-1", "expired"), 1, "{all:?}");
    assert_eq!(of("web-1", "decommissioned"), 0);
    assert!(state_bytes() < with_both, "web-2's state is gone");
}
