//! `weir registry move` through the real binary: twenty applications
//! heartbeat through `by host | expire` while one moves to another
//! partition, with and without a SIGKILL during the hand-off. Every
//! acknowledged heartbeat is processed exactly once, every host expires
//! exactly once, and the moved application's hosts expire on the new
//! partition — also the one that went silent before the move, whose
//! expiry can only fire there if its state arrived.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{bin, results, wait_until, Broker, Service, Weir, LISTENERS};
use serde_json::{json, Value};

const APPS: usize = 20;
const MOVED: &str = "app-7";
/// Its host that goes silent just before the move.
const SILENT: &str = "app-7-b";

/// The reactors: every heartbeat, and each host's expiry.
const REACTORS: &str = "[[reactor]]\nname = \"beats\"\npipeline = 'where service = \"beat\"'\n\
     [[reactor]]\nname = \"expiry\"\npipeline = 'where service = \"beat\" | by host | expire 4s'\n";

fn config() -> String {
    format!("[log]\npartitions = 4\n[router]\nmove_grace_ms = 300\n{LISTENERS}\n{REACTORS}")
}

fn hosts() -> Vec<String> {
    (0..APPS)
        .flat_map(|i| [format!("app-{i}-a"), format!("app-{i}-b")])
        .collect()
}

/// Heartbeats of every host over HTTP (answered once appended), each
/// with its own sequence number as metric, spread over the addresses
/// `targets` holds (host i to target i mod n, one sender thread per
/// target, so a request waiting for a move holds up only its own hosts),
/// until `stop`. Returns the acknowledged `(host, seq)` pairs.
fn heartbeat(
    targets: Arc<Mutex<Vec<SocketAddr>>>,
    silent: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<BTreeSet<(String, u64)>> {
    let senders = targets.lock().unwrap().len();
    let threads: Vec<_> = (0..senders)
        .map(|k| {
            let (targets, silent, stop) = (targets.clone(), silent.clone(), stop.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let mut acknowledged = BTreeSet::new();
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    let batch: Vec<(String, u64)> = hosts()
                        .into_iter()
                        .enumerate()
                        .filter(|(i, h)| {
                            i % senders == k && !(silent.load(Ordering::Relaxed) && h == SILENT)
                        })
                        .map(|(_, h)| (h, seq))
                        .collect();
                    let body: String = batch
                        .iter()
                        .map(|(h, s)| {
                            format!("{}\n", json!({"host": h, "service": "beat", "metric": s}))
                        })
                        .collect();
                    let address = targets.lock().unwrap()[k];
                    let sent = client
                        .post(format!("http://{address}/events"))
                        .body(body)
                        .send();
                    if sent.is_ok_and(|r| r.status().as_u16() == 202) {
                        acknowledged.extend(batch);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                acknowledged
            })
        })
        .collect();
    std::thread::spawn(move || {
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    })
}

fn view(http: SocketAddr) -> Value {
    reqwest::blocking::get(format!("http://{http}/admin/registry"))
        .unwrap()
        .json()
        .unwrap()
}

/// The 20 applications, two hosts each, through `weir registry import`.
fn register(http: SocketAddr, dir: &Path) {
    let mut hosts = BTreeMap::new();
    for i in 0..APPS {
        hosts.insert(
            format!("app-{i}"),
            vec![format!("app-{i}-a"), format!("app-{i}-b")],
        );
    }
    let file = dir.join("apps.json");
    std::fs::write(&file, json!({ "hosts": hosts }).to_string()).unwrap();
    let status = Command::new(bin())
        .args(["registry", "import", file.to_str().unwrap()])
        .args(["--target", &http.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The partition a result was made on.
fn partition_of(result: &Value) -> u32 {
    weir_event::ResultRecord::peek_id(result.to_string().as_bytes())
        .unwrap()
        .partition
}

/// Runs the scenario; `kill_after` SIGKILLs `weir run` that long after
/// the move is asked for, and restarts it.
fn move_under_heartbeats(kill_after: Option<Duration>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut weir = Weir::start(&config(), &data);
    register(weir.http, dir.path());
    let target = Arc::new(Mutex::new(vec![weir.http]));
    let (silent, stop) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let beats = heartbeat(target.clone(), silent.clone(), stop.clone());
    wait_until(Duration::from_secs(30), "every application placed", || {
        view(weir.http)["partitions"]
            .as_object()
            .is_some_and(|p| p.len() >= APPS)
    });
    std::thread::sleep(Duration::from_secs(1));
    let placements = view(weir.http)["partitions"].clone();
    let from = placements[MOVED].as_u64().unwrap() as u32;
    let to = (from + 1) % 4;

    silent.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(300));
    match kill_after {
        None => {
            let output = Command::new(bin())
                .args(["registry", "move", MOVED, "--partition", &to.to_string()])
                .args(["--target", &weir.http.to_string()])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "{text}{}",
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(
                text.contains(&format!("moved {MOVED} to partition {to}")),
                "{text}"
            );
        }
        Some(after) => {
            let response = reqwest::blocking::Client::new()
                .post(format!(
                    "http://{}/admin/registry/uids/{MOVED}/move",
                    weir.http
                ))
                .body(json!({ "partition": to }).to_string())
                .send()
                .unwrap();
            assert_eq!(response.status().as_u16(), 200);
            std::thread::sleep(after);
            weir.kill();
            eprintln!("SIGKILL {after:?} after the move was asked for");
            weir = Weir::start(&config(), &data);
            *target.lock().unwrap() = vec![weir.http];
        }
    }
    wait_until(Duration::from_secs(30), "the move finished", || {
        let now = view(weir.http);
        now["partitions"][MOVED] == to && now["moving"].get(MOVED).is_none()
    });
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let acknowledged = beats.join().unwrap();
    let expected_expiries = APPS * 2;
    wait_until(Duration::from_secs(40), "every host expired", || {
        results(&data)
            .iter()
            .filter(|r| r["state"] == "expired")
            .count()
            >= expected_expiries
    });
    // Let anything that would be repeated arrive.
    std::thread::sleep(Duration::from_secs(2));
    let all = results(&data);
    weir.stop();

    assert_moved(&all, &acknowledged, &placements, to);
}

/// Every acknowledged heartbeat processed exactly once, no result twice,
/// every host expired exactly once on its application's partition (the
/// moved one's: `to`), the silent host included.
fn assert_moved(
    all: &[Value],
    acknowledged: &BTreeSet<(String, u64)>,
    placements: &Value,
    to: u32,
) {
    let expected_expiries = APPS * 2;
    let ids: BTreeSet<&str> = all.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), all.len(), "a result id repeated");
    let mut beats_seen: BTreeMap<(String, u64), usize> = BTreeMap::new();
    let mut expired: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for result in all {
        let host = result["host"].as_str().unwrap().to_owned();
        match result["reactor"].as_str().unwrap() {
            "beats" => {
                let seq = result["metric"].as_f64().unwrap() as u64;
                *beats_seen.entry((host, seq)).or_default() += 1;
            }
            _ => expired.entry(host).or_default().push(partition_of(result)),
        }
    }
    for beat in acknowledged {
        assert_eq!(beats_seen.get(beat), Some(&1), "acknowledged {beat:?}");
    }
    assert!(
        beats_seen.values().all(|n| *n == 1),
        "a heartbeat processed twice"
    );
    assert_eq!(expired.len(), expected_expiries, "{expired:?}");
    for (host, partitions) in &expired {
        assert_eq!(partitions.len(), 1, "{host} expired {partitions:?}");
        let app = host.rsplit_once('-').unwrap().0;
        let home = if app == MOVED {
            to
        } else {
            placements[app].as_u64().unwrap() as u32
        };
        assert_eq!(
            partitions[0], home,
            "{host} expired on partition {}",
            partitions[0]
        );
    }
    // The silent host's last heartbeat was before the move; its expiry
    // fired on the new partition from the state that moved.
    assert_eq!(expired[SILENT], vec![to]);
}

#[test]
fn a_moved_application_takes_its_state_and_nothing_is_lost_or_repeated() {
    move_under_heartbeats(None);
}

#[test]
fn a_sigkill_during_the_hand_off_changes_nothing() {
    for after in [50, 400, 900] {
        move_under_heartbeats(Some(Duration::from_millis(after)));
    }
}

/// On Kafka: three ingest nodes take the heartbeats, the move is asked of
/// one of them, and every node holds the application's events until the
/// processor has handed its state over.
#[test]
fn on_kafka_a_move_asked_of_one_node_is_held_by_all_three() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("kafka.toml");
    let config = format!(
        "[log]\nbackend = \"kafka\"\nbrokers = \"{}\"\npartitions = 4\n\
         [log.kafka]\nsession_timeout_ms = 6000\nmax_poll_interval_ms = 6000\n\
         [router]\ntick_interval_ms = 250\nmove_grace_ms = 1000\n{LISTENERS}\n{REACTORS}",
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
    let nodes = [
        start("ingest", "n1"),
        start("ingest", "n2"),
        start("ingest", "n3"),
    ];
    let processor = start("process", "process");
    let store = start("store", "store");
    let http: Vec<SocketAddr> = nodes.iter().map(|n| n.addr("http")).collect();
    register(http[0], dir.path());
    let (silent, stop) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let beats = heartbeat(
        Arc::new(Mutex::new(http.clone())),
        silent.clone(),
        stop.clone(),
    );
    wait_until(
        Duration::from_secs(60),
        "every application placed and processed",
        || {
            view(http[2])["partitions"]
                .as_object()
                .is_some_and(|p| p.len() >= APPS)
                && processor.metric_sum("weir_processor_events_total") > 0.0
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    let placements = view(http[0])["partitions"].clone();
    let to = (placements[MOVED].as_u64().unwrap() as u32 + 1) % 4;
    silent.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(500));
    let output = Command::new(bin())
        .args(["registry", "move", MOVED, "--partition", &to.to_string()])
        .args(["--target", &http[0].to_string()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&output.stdout).trim());
    wait_until(
        Duration::from_secs(5),
        "every node sees the move done",
        || {
            http.iter().all(|h| {
                let now = view(*h);
                now["partitions"][MOVED] == to && now["moving"].get(MOVED).is_none()
            })
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let acknowledged = beats.join().unwrap();
    let data = dir.path().join("store");
    wait_until(Duration::from_secs(60), "every host expired", || {
        results(&data)
            .iter()
            .filter(|r| r["state"] == "expired")
            .count()
            >= APPS * 2
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(processor.metric_sum("weir_processor_handoffs_total"), 1.0);
    assert_moved(&results(&data), &acknowledged, &placements, to);
    drop(store);
}
