//! The sinks against the real servers (Debian's graphite-carbon,
//! victoria-metrics and postgresql): a known input arrives complete and
//! correct, read back through the server's own interface; a server
//! stopped for 30 seconds under load loses nothing and duplicates nothing;
//! Graphite round-robin survives a killed destination and takes one added
//! at runtime; invalid records become dead letters.

mod common;
mod servers;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use servers::{Carbon, CarbonRelay, LineRecorder, Postgres, Victoria};
use weir_event::{Event, ResultRecord};
use weir_log::{EmbeddedLog, Log, LogConfig, OwnedProduce};
use weir_storage::consumer::Source;
use weir_storage::graphite::{Distribution, GraphiteConfig};
use weir_storage::postgres::PostgresConfig;
use weir_storage::sink::{RunningSink, SinkDirs};
use weir_storage::victoria::VictoriaConfig;
use weir_storage::{SinkConfig, SinkKind};

const TOPIC: &str = "weir.results";
const PARTITIONS: u32 = 4;

/// An embedded log with a results topic, and the results fed into it.
struct Results {
    dir: tempfile::TempDir,
    log: Arc<EmbeddedLog>,
    /// Event time of result 0, whole seconds, recent enough for every store.
    base: i64,
    fed: AtomicU64,
    /// Distinct hosts the results cycle through.
    hosts: u64,
}

impl Results {
    fn new() -> Arc<Results> {
        Self::with_hosts(10)
    }

    fn with_hosts(hosts: u64) -> Arc<Results> {
        let dir = tempfile::tempdir().unwrap();
        let log =
            Arc::new(EmbeddedLog::open(&dir.path().join("log"), LogConfig::default()).unwrap());
        log.create_topic(TOPIC, PARTITIONS, false).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        Arc::new(Results {
            dir,
            log,
            base: now - 20_000,
            fed: AtomicU64::new(0),
            hosts,
        })
    }

    /// Result `i`: host `h{i % hosts}`, one second after that host's
    /// previous result, metric `i`.
    fn result(&self, i: u64) -> (u32, ResultRecord) {
        let host = i % self.hosts;
        let partition = (host % PARTITIONS as u64) as u32;
        let mut event = Event::new(
            format!("h{host}"),
            (self.base + (i / self.hosts) as i64) as f64,
        );
        event.service = Some("load".into());
        event.metric = Some(i as f64);
        event.tags = vec!["t1".into(), "t2".into()];
        event.meta.insert("dc".into(), json!("fra"));
        let record = ResultRecord {
            id: format!("load@v1:{partition}:{i}:0").parse().unwrap(),
            notify: None,
            forward: None,
            event,
        };
        (partition, record)
    }

    fn append(&self, records: impl IntoIterator<Item = (u32, ResultRecord)>) {
        let mut by_partition: BTreeMap<u32, Vec<OwnedProduce>> = BTreeMap::new();
        for (partition, record) in records {
            by_partition
                .entry(partition)
                .or_default()
                .push((record.event.host.clone().into_bytes(), record.encode()));
        }
        for (partition, records) in by_partition {
            self.log
                .append(TOPIC, partition, &weir_log::borrowed(&records))
                .unwrap();
        }
    }

    /// Appends the next `n` results.
    fn feed(&self, n: u64) {
        let from = self.fed.fetch_add(n, Ordering::SeqCst);
        self.append((from..from + n).map(|i| self.result(i)));
    }

    /// Feeds `per_tick` results every 50 ms until `stop`.
    fn feed_until(
        self: &Arc<Self>,
        per_tick: u64,
        stop: Arc<AtomicBool>,
    ) -> std::thread::JoinHandle<()> {
        let results = self.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                results.feed(per_tick);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    }

    fn source(&self) -> Source {
        Source {
            log: self.log.clone(),
            topic: TOPIC.into(),
            group: String::new(),
            positions: None,
            max_lag: 0,
        }
    }

    fn start(&self, name: &str, kind: SinkKind) -> Sink {
        let config = SinkConfig {
            name: name.into(),
            filter: None,
            types: Vec::new(),
            max_lag: 0,
            kind,
        };
        let shutdown = Arc::new(AtomicBool::new(false));
        let dirs = SinkDirs {
            data: self.dir.path().to_path_buf(),
        };
        let running =
            weir_storage::sink::start(&config, &self.source(), &dirs, shutdown.clone()).unwrap();
        Sink {
            running: Some(running),
            shutdown,
        }
    }

    /// The expected (host, time) → metric of every result fed.
    fn expected(&self) -> BTreeMap<(String, i64), f64> {
        (0..self.fed.load(Ordering::SeqCst))
            .map(|i| {
                let (_, record) = self.result(i);
                let time = record.event.time as i64;
                ((record.event.host, time), i as f64)
            })
            .collect()
    }

    fn dead_letters(&self, sink: &str) -> Vec<Value> {
        common::ndjson_lines(&self.dir.path().join("dead-letters").join(sink))
    }
}

struct Sink {
    running: Option<RunningSink>,
    shutdown: Arc<AtomicBool>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
        if let Some(running) = self.running.take() {
            running.join();
        }
    }
}

/// Polls `check` until it returns true, for up to `secs` seconds.
fn eventually(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Whisper points as (host, time) → value, for paths `HOST.load`.
fn carbon_points(carbon: &Carbon) -> BTreeMap<(String, i64), f64> {
    carbon
        .points()
        .into_iter()
        .filter_map(|(path, series)| Some((path.strip_suffix(".load")?.to_owned(), series)))
        .flat_map(|(host, series)| {
            series
                .into_iter()
                .map(move |(time, value)| ((host.clone(), time), value))
        })
        .collect()
}

/// Asserts `stored` holds exactly `expected`, naming a few differences.
fn assert_stored(stored: &BTreeMap<(String, i64), f64>, expected: &BTreeMap<(String, i64), f64>) {
    let missing: Vec<_> = expected
        .iter()
        .filter(|(k, v)| stored.get(*k) != Some(*v))
        .take(5)
        .collect();
    let extra: Vec<_> = stored
        .iter()
        .filter(|(k, _)| !expected.contains_key(*k))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && stored.len() == expected.len(),
        "{} stored, {} expected; missing or wrong e.g. {missing:?}; extra e.g. {extra:?}",
        stored.len(),
        expected.len()
    );
}

fn graphite(destinations: &[&Carbon], distribution: Distribution) -> SinkKind {
    SinkKind::Graphite(GraphiteConfig {
        destinations: destinations.iter().map(|c| c.address()).collect(),
        distribution,
        backoff_ms: 100,
        ..GraphiteConfig::default()
    })
}

fn victoria_samples(victoria: &Victoria) -> BTreeMap<(String, i64), f64> {
    victoria
        .samples("weir_metric")
        .into_iter()
        .map(|(labels, millis, value)| ((labels["host"].clone(), millis / 1000), value))
        .collect()
}

fn victoria(server: &Victoria) -> SinkKind {
    SinkKind::VictoriaMetrics(VictoriaConfig {
        url: server.write_url(),
        meta: vec!["dc".into()],
        timeout_ms: 2000,
        ..VictoriaConfig::default()
    })
}

fn postgres(server: &Postgres) -> SinkKind {
    SinkKind::Postgres(PostgresConfig {
        url: server.url(),
        ..PostgresConfig::default()
    })
}

fn postgres_rows(server: &Postgres) -> BTreeMap<(String, i64), f64> {
    let mut client = server.client();
    let exists = client
        .query_one("SELECT to_regclass('weir_events') IS NOT NULL", &[])
        .unwrap()
        .get::<_, bool>(0);
    if !exists {
        return BTreeMap::new();
    }
    client
        .query(
            "SELECT host, extract(epoch FROM time)::float8, metric FROM weir_events",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| ((row.get(0), row.get::<_, f64>(1) as i64), row.get(2)))
        .collect()
}

/// Runs a load for ~40 s, stops the server after 3 s for 30 s, and checks
/// that every result arrived exactly once.
fn survives_a_30_second_outage(
    results: &Arc<Results>,
    stop_server: impl FnOnce(),
    resume_server: impl FnOnce(),
    stored: impl Fn() -> BTreeMap<(String, i64), f64>,
    count: impl Fn() -> usize,
) {
    let stop_feeding = Arc::new(AtomicBool::new(false));
    let feeder = results.feed_until(20, stop_feeding.clone());
    std::thread::sleep(Duration::from_secs(3));
    stop_server();
    std::thread::sleep(Duration::from_secs(30));
    resume_server();
    std::thread::sleep(Duration::from_secs(7));
    stop_feeding.store(true, Ordering::Relaxed);
    feeder.join().unwrap();
    let expected = results.expected();
    assert!(expected.len() > 10_000, "the load ran: {}", expected.len());
    eventually(120, "every result stored after the outage", || {
        count() >= expected.len()
    });
    assert_eq!(count(), expected.len(), "nothing stored twice");
    assert_stored(&stored(), &expected);
}

#[test]
fn graphite_stores_every_result_as_a_point_and_dead_letters_what_it_cannot_name() {
    let results = Results::new();
    let carbon = Carbon::start(&results.dir.path().join("carbon"));
    results.feed(2000);
    // Ids grow per partition, as a processor emits them.
    results.append((0..5).map(|i| {
        let (partition, mut record) = results.result(100_000 + i);
        record.event.service = None;
        (partition, record)
    }));
    results.append((0..5).map(|i| {
        let (partition, mut record) = results.result(200_000 + i);
        record.event.metric = None;
        (partition, record)
    }));
    let _sink = results.start("carbon", graphite(&[&carbon], Distribution::Broadcast));
    let expected = results.expected();
    eventually(60, "every point in whisper", || {
        carbon.count() >= expected.len()
    });
    assert_stored(&carbon_points(&carbon), &expected);
    eventually(20, "dead letters written", || {
        results.dead_letters("carbon").len() >= 5
    });
    let dead = results.dead_letters("carbon");
    assert_eq!(dead.len(), 5, "{dead:#?}");
    assert!(dead
        .iter()
        .all(|d| d["reason"].as_str().unwrap().contains("needs service")));
}

#[test]
fn graphite_broadcast_keeps_feeding_the_live_destination_and_the_stopped_one_catches_up() {
    let results = Results::new();
    let live = Carbon::start(&results.dir.path().join("live"));
    let mut stopped = Carbon::start(&results.dir.path().join("stopped"));
    let _sink = results.start(
        "carbon",
        graphite(&[&live, &stopped], Distribution::Broadcast),
    );
    let stop_feeding = Arc::new(AtomicBool::new(false));
    let feeder = results.feed_until(20, stop_feeding.clone());
    std::thread::sleep(Duration::from_secs(3));
    stopped.stop();
    std::thread::sleep(Duration::from_secs(20));
    // While one destination is down, the other is kept up to date.
    let fed_before = results.fed.load(Ordering::SeqCst) as usize;
    eventually(10, "the live destination keeps up", || {
        live.count() >= fed_before
    });
    std::thread::sleep(Duration::from_secs(10));
    stopped.resume();
    std::thread::sleep(Duration::from_secs(5));
    stop_feeding.store(true, Ordering::Relaxed);
    feeder.join().unwrap();
    let expected = results.expected();
    eventually(120, "both destinations complete", || {
        live.count() >= expected.len() && stopped.count() >= expected.len()
    });
    assert_stored(&carbon_points(&live), &expected);
    assert_stored(&carbon_points(&stopped), &expected);
}

#[test]
fn graphite_round_robin_hands_a_killed_destinations_share_to_the_rest_and_takes_new_ones() {
    let results = Results::new();
    let a = Carbon::start(&results.dir.path().join("a"));
    let b = Carbon::start(&results.dir.path().join("b"));
    let mut killed = Carbon::start(&results.dir.path().join("killed"));
    let sink = results.start(
        "carbon",
        graphite(&[&a, &b, &killed], Distribution::RoundRobin),
    );
    let graphite = sink.running.as_ref().unwrap().graphite.clone().unwrap();
    let stop_feeding = Arc::new(AtomicBool::new(false));
    let feeder = results.feed_until(30, stop_feeding.clone());
    std::thread::sleep(Duration::from_secs(3));
    killed.kill();
    let after_kill = results.fed.load(Ordering::SeqCst);
    eventually(30, "the killed destination leaves the pool", || {
        graphite
            .destinations()
            .iter()
            .any(|d| d.address == killed.address() && !d.in_pool)
    });
    std::thread::sleep(Duration::from_secs(3));
    let added = Carbon::start(&results.dir.path().join("added"));
    assert!(graphite.add(&added.address()).unwrap());
    let after_add = results.fed.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(4));
    stop_feeding.store(true, Ordering::Relaxed);
    feeder.join().unwrap();

    let expected = results.expected();
    let later = |from: u64| -> BTreeSet<(String, i64)> {
        expected
            .iter()
            .filter(|(_, &i)| i as u64 >= from)
            .map(|(key, _)| key.clone())
            .collect()
    };
    let after_the_kill = later(after_kill);
    let survivors = [&a, &b, &added];
    eventually(
        60,
        "every result after the kill stored by the others",
        || {
            let stored: BTreeSet<_> = survivors
                .iter()
                .flat_map(|c| carbon_points(c).into_keys())
                .collect();
            after_the_kill.is_subset(&stored)
        },
    );
    for carbon in [&a, &b] {
        let got: BTreeSet<_> = carbon_points(carbon).into_keys().collect();
        assert!(
            got.intersection(&after_the_kill).count() > after_the_kill.len() / 4,
            "each survivor took a share after the kill"
        );
    }
    let got: BTreeSet<_> = carbon_points(&added).into_keys().collect();
    assert!(
        got.intersection(&later(after_add)).count() > 0,
        "the destination added at runtime receives"
    );
    let values_agree = survivors
        .iter()
        .flat_map(|c| carbon_points(c))
        .all(|(key, value)| expected.get(&key) == Some(&value));
    assert!(values_agree);
}

/// `n` results, each its own path `node-I.cpu`; the paths.
fn feed_paths(results: &Results, n: u64) -> Vec<String> {
    let records: Vec<(u32, ResultRecord)> = (0..n)
        .map(|i| {
            let (partition, mut record) = results.result(i);
            record.event.host = format!("node-{i}");
            record.event.service = Some("cpu".into());
            (partition, record)
        })
        .collect();
    results.append(records);
    (0..n).map(|i| format!("node-{i}.cpu")).collect()
}

/// Which of `recorders` (by index) received each path.
fn placements(recorders: &[LineRecorder]) -> BTreeMap<String, BTreeSet<usize>> {
    let mut placed: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    for (i, recorder) in recorders.iter().enumerate() {
        for path in recorder.distinct() {
            placed.entry(path).or_default().insert(i);
        }
    }
    placed
}

/// The differential test with the real peer: Debian's carbon-relay and
/// weir's sink, both with consistent hashing over the same three
/// destinations (same hosts and instances; the ring is keyed by those,
/// not the port, so each side gets its own recording listeners), are
/// given the same 10,000 paths: every path lands on the same destination
/// from both, also with two replicas per path, and with `fnv1a_ch`.
#[test]
fn graphite_consistent_hash_places_every_path_where_carbon_relay_does() {
    use weir_storage::graphite::ring::HashType;
    const PATHS: u64 = 10_000;
    for (replication, hash) in [
        (1, HashType::CarbonCh),
        (2, HashType::CarbonCh),
        (1, HashType::Fnv1aCh),
    ] {
        let hash_name = match hash {
            HashType::CarbonCh => "carbon_ch",
            HashType::Fnv1aCh => "fnv1a_ch",
        };
        let results = Results::new();
        let ips = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
        let instances = ["a", "b", "c"];
        let relay_side: Vec<LineRecorder> = ips.iter().map(|ip| LineRecorder::start(ip)).collect();
        let weir_side: Vec<LineRecorder> = ips.iter().map(|ip| LineRecorder::start(ip)).collect();
        let specs = |recorders: &[LineRecorder]| -> Vec<String> {
            recorders
                .iter()
                .zip(instances)
                .map(|(r, instance)| format!("{}:{}:{instance}", r.address.ip(), r.address.port()))
                .collect()
        };
        let relay = CarbonRelay::start(
            &results
                .dir
                .path()
                .join(format!("relay-{hash_name}-{replication}")),
            &specs(&relay_side),
            replication,
            hash_name,
        );
        let _sink = results.start(
            "ring",
            SinkKind::Graphite(GraphiteConfig {
                destinations: specs(&weir_side),
                distribution: Distribution::ConsistentHash,
                replication_factor: replication,
                hash,
                backoff_ms: 100,
                ..GraphiteConfig::default()
            }),
        );
        let paths = feed_paths(&results, PATHS);
        let mut relay_input = std::net::TcpStream::connect(("127.0.0.1", relay.port)).unwrap();
        let text: String = paths
            .iter()
            .map(|p| format!("{p} 1 {}\n", results.base))
            .collect();
        std::io::Write::write_all(&mut relay_input, text.as_bytes()).unwrap();
        let complete = |recorders: &[LineRecorder]| {
            let placed = placements(recorders);
            placed.len() == paths.len() && placed.values().all(|d| d.len() == replication)
        };
        eventually(120, "every path at both sides", || {
            complete(&relay_side) && complete(&weir_side)
        });
        let (relay_placed, weir_placed) = (placements(&relay_side), placements(&weir_side));
        let differing: Vec<_> = relay_placed
            .iter()
            .filter(|(path, d)| weir_placed.get(*path) != Some(d))
            .take(5)
            .collect();
        assert!(
            differing.is_empty(),
            "replication {replication}: relay placed {differing:?} elsewhere"
        );
        let shares: Vec<usize> = weir_side.iter().map(|r| r.distinct().len()).collect();
        assert!(shares.iter().all(|&n| n > 0), "{shares:?}");
        eprintln!(
            "{hash_name}, replication {replication}: shares {shares:?}, all {PATHS} paths agree"
        );
    }
}

/// What a failover run measured: lines written per point, and points
/// stored by more than one destination.
struct Failover {
    lines_per_point: f64,
    stored_twice: usize,
}

/// Three carbon-caches behind one sink; one SIGKILLed mid-stream and
/// started again. Every point fed after the kill is stored by a survivor
/// (or by it, once back).
fn fail_over(distribution: Distribution, sink: &str) -> Failover {
    let results = Results::with_hosts(30);
    let dir = results.dir.path().to_path_buf();
    let (a, mut killed, c) = (
        Carbon::start(&dir.join("a")),
        Carbon::start(&dir.join("b")),
        Carbon::start(&dir.join("c")),
    );
    let specs: Vec<String> = [&a, &killed, &c]
        .iter()
        .zip(["a", "b", "c"])
        .map(|(carbon, instance)| format!("{}:{instance}", carbon.address()))
        .collect();
    let running = results.start(
        sink,
        SinkKind::Graphite(GraphiteConfig {
            destinations: specs.clone(),
            distribution,
            backoff_ms: 100,
            ..GraphiteConfig::default()
        }),
    );
    let graphite = running.running.as_ref().unwrap().graphite.clone().unwrap();
    let in_pool = |spec: &str| {
        graphite
            .destinations()
            .iter()
            .any(|d| d.address == spec && d.in_pool)
    };
    let stop_feeding = Arc::new(AtomicBool::new(false));
    let feeder = results.feed_until(30, stop_feeding.clone());
    std::thread::sleep(Duration::from_secs(3));
    let homes: BTreeSet<String> = carbon_points(&killed).into_keys().map(|k| k.0).collect();
    killed.kill();
    let after_kill = results.fed.load(Ordering::SeqCst);
    eventually(30, "the killed destination leaves the pool", || {
        !in_pool(&specs[1])
    });
    std::thread::sleep(Duration::from_secs(3));
    killed.resume();
    eventually(30, "it rejoins", || in_pool(&specs[1]));
    let after_return = results.fed.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(3));
    stop_feeding.store(true, Ordering::Relaxed);
    feeder.join().unwrap();
    let expected = results.expected();
    let from = |first: u64| -> BTreeMap<(String, i64), f64> {
        (first..results.fed.load(Ordering::SeqCst))
            .map(|i| {
                let (_, record) = results.result(i);
                ((record.event.host, record.event.time as i64), i as f64)
            })
            .collect()
    };
    let carbons = [&a, &killed, &c];
    let stored_by_all = || -> BTreeMap<(String, i64), f64> {
        carbons.iter().flat_map(|c| carbon_points(c)).collect()
    };
    eventually(60, "every point after the kill stored", || {
        let stored = stored_by_all();
        from(after_kill).keys().all(|k| stored.contains_key(k))
    });
    let stored = stored_by_all();
    assert!(from(after_kill)
        .iter()
        .all(|(k, v)| stored.get(k) == Some(v)));
    if distribution == Distribution::ConsistentHash {
        // Back in the ring, its paths go to it again.
        let back: BTreeSet<(String, i64)> = carbon_points(&killed).into_keys().collect();
        let its_own: Vec<_> = from(after_return + 300)
            .into_keys()
            .filter(|(host, _)| homes.contains(host))
            .collect();
        assert!(!its_own.is_empty());
        assert!(
            its_own.iter().all(|k| back.contains(k)),
            "its paths went back to it"
        );
    }
    let sent: f64 = specs
        .iter()
        .map(|spec| {
            weir_storage::metrics::DESTINATION_SENT
                .with_label_values(&[sink, spec])
                .get() as f64
        })
        .sum();
    let mut copies: BTreeMap<(String, i64), usize> = BTreeMap::new();
    for carbon in carbons {
        for key in carbon_points(carbon).into_keys() {
            *copies.entry(key).or_default() += 1;
        }
    }
    let failover = Failover {
        lines_per_point: sent / expected.len() as f64,
        stored_twice: copies.values().filter(|n| **n > 1).count(),
    };
    eprintln!(
        "{sink}: {} points, {sent} lines written ({:.3} per point), {} points stored by two destinations",
        expected.len(),
        failover.lines_per_point,
        failover.stored_twice
    );
    failover
}

/// Consistent hash: a SIGKILLed carbon leaves the ring, its share moves
/// to the next destinations, every point after the kill is stored, and
/// back in the ring it takes its paths again.
#[test]
fn graphite_consistent_hash_fails_over_on_the_ring_and_takes_its_paths_back() {
    let measured = fail_over(Distribution::ConsistentHash, "ring-failover");
    assert!(measured.lines_per_point < 1.5);
    assert!(
        measured.stored_twice < 60,
        "{} points stored by two destinations",
        measured.stored_twice
    );
}

/// Round-robin: the killed carbon's undelivered lines go to the others,
/// the ones it had confirmed do not (they would be stored twice).
#[test]
fn graphite_round_robin_fails_over_without_storing_points_twice() {
    let measured = fail_over(Distribution::RoundRobin, "rr-failover");
    assert!(measured.lines_per_point < 1.5);
    assert!(
        measured.stored_twice < 60,
        "{} points stored by two destinations",
        measured.stored_twice
    );
}

#[test]
fn graphite_survives_a_30_second_outage() {
    let results = Results::new();
    let carbon = std::cell::RefCell::new(Carbon::start(&results.dir.path().join("carbon")));
    let address = carbon.borrow().address();
    let kind = SinkKind::Graphite(GraphiteConfig {
        destinations: vec![address],
        backoff_ms: 100,
        ..GraphiteConfig::default()
    });
    let _sink = results.start("carbon", kind);
    survives_a_30_second_outage(
        &results,
        || carbon.borrow_mut().stop(),
        || carbon.borrow_mut().resume(),
        || carbon_points(&carbon.borrow()),
        || carbon.borrow().count(),
    );
}

#[test]
fn victoriametrics_stores_every_result_with_its_labels() {
    let results = Results::new();
    let server = Victoria::start(&results.dir.path().join("victoria"));
    results.feed(2000);
    let _sink = results.start("vm", victoria(&server));
    eventually(60, "every sample exported", || {
        server.samples("weir_metric").len() >= 2000
    });
    let samples = server.samples("weir_metric");
    assert_eq!(samples.len(), 2000);
    for (labels, millis, value) in samples {
        let (_, record) = results.result(value as u64);
        assert_eq!(labels["host"], record.event.host);
        assert_eq!(labels["service"], "load");
        assert_eq!(labels["reactor"], "load");
        assert_eq!(labels["tags"], "t1;t2");
        assert_eq!(labels["dc"], "fra");
        assert_eq!(millis, record.event.time as i64 * 1000);
    }
}

#[test]
fn victoriametrics_survives_a_30_second_outage() {
    let results = Results::new();
    let server = std::cell::RefCell::new(Victoria::start(&results.dir.path().join("victoria")));
    let _sink = results.start("vm", victoria(&server.borrow()));
    survives_a_30_second_outage(
        &results,
        || server.borrow_mut().stop(),
        || server.borrow_mut().resume(),
        || victoria_samples(&server.borrow()),
        || server.borrow().samples("weir_metric").len(),
    );
}

#[test]
fn postgres_stores_events_and_notifications_once_and_dead_letters_bad_rows() {
    let results = Results::new();
    let server = Postgres::start();
    results.feed(1000);
    let (partition, mut notification) = results.result(1000);
    notification.notify = Some(json!({"channel": "email", "to": "ops@example.com"}));
    let (bad_partition, mut bad) = results.result(1001);
    bad.event.description = Some("nul \u{0} byte".into());
    results.append([(partition, notification), (bad_partition, bad)]);
    results.fed.store(1002, Ordering::SeqCst);
    {
        let _sink = results.start("pg", postgres(&server));
        eventually(60, "every row inserted", || {
            postgres_rows(&server).len() >= 1000
        });
        eventually(20, "the notification inserted", || {
            server
                .client()
                .query_one("SELECT count(*) FROM weir_notifications", &[])
                .unwrap()
                .get::<_, i64>(0)
                == 1
        });
    }
    let mut expected = results.expected();
    expected.retain(|_, &mut i| i < 1000.0);
    assert_stored(&postgres_rows(&server), &expected);
    let mut client = server.client();
    let row = client
        .query_one(
            "SELECT channel, options->>'to', host FROM weir_notifications",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "email");
    assert_eq!(row.get::<_, String>(1), "ops@example.com");
    let row = client
        .query_one(
            "SELECT tags, meta->>'dc', reactor FROM weir_events WHERE id = 'load@v1:0:0:0'",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, Vec<String>>(0), ["t1", "t2"]);
    assert_eq!(row.get::<_, String>(1), "fra");
    assert_eq!(row.get::<_, String>(2), "load");
    eventually(20, "the dead letter written", || {
        !results.dead_letters("pg").is_empty()
    });
    let dead = results.dead_letters("pg");
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0]["record"]["id"], "load@v1:1:1001:0");

    // Everything delivered again (a new group starts from the beginning)
    // adds no row.
    let _again = results.start("pg-again", postgres(&server));
    let committed = |group: &str| {
        (0..PARTITIONS)
            .map(|p| {
                results
                    .log
                    .committed(group, TOPIC, p)
                    .unwrap()
                    .map_or(0, |c| c.offset)
            })
            .sum::<u64>()
    };
    eventually(60, "the second sink caught up", || {
        committed("weir.sink.pg-again") == committed("weir.sink.pg")
    });
    assert_stored(&postgres_rows(&server), &expected);
}

#[test]
fn postgres_over_tls_verifies_the_server_when_asked_and_refuses_an_unknown_ca() {
    let results = Results::new();
    let certs = tempfile::tempdir().unwrap();
    common::certificates(certs.path(), "pg");
    common::certificates(certs.path(), "other");
    let pem = |name: &str| certs.path().join(name);
    // TCP connections to it must use TLS (pg_hba: hostssl only).
    let server = Postgres::start_tls(&pem("pg-cert.pem"), &pem("pg-key.pem"));
    results.feed(200);
    let sink = |sslmode: &str, ca: Option<&str>, prefix: &str| {
        SinkKind::Postgres(PostgresConfig {
            url: format!("{} sslmode={sslmode}", server.url()),
            table_prefix: prefix.into(),
            ca_file: ca.map(pem),
        })
    };
    let _verified = results.start(
        "verified",
        sink("verify-full", Some("pg-ca.pem"), "verified_"),
    );
    let _encrypted = results.start("encrypted", sink("require", None, "encrypted_"));
    let _refused = results.start(
        "refused",
        sink("verify-full", Some("other-ca.pem"), "refused_"),
    );
    let _plain = results.start("plain", sink("disable", None, "plain_"));
    let rows = |prefix: &str| -> Option<i64> {
        let mut client = server.client();
        let table = format!("{prefix}events");
        let exists: bool = client
            .query_one(&format!("SELECT to_regclass('{table}') IS NOT NULL"), &[])
            .unwrap()
            .get(0);
        exists.then(|| {
            client
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .unwrap()
                .get(0)
        })
    };
    eventually(60, "rows over verified and encrypted TLS", || {
        rows("verified_") == Some(200) && rows("encrypted_") == Some(200)
    });
    // An unknown CA and plain text never get a connection (no table).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(rows("refused_"), None);
    assert_eq!(rows("plain_"), None);
}

#[test]
fn postgres_survives_a_30_second_outage() {
    let results = Results::new();
    let server = std::cell::RefCell::new(Postgres::start());
    let _sink = results.start("pg", postgres(&server.borrow()));
    let count = || {
        let server = server.borrow();
        let mut client = server.client();
        let exists: bool = client
            .query_one("SELECT to_regclass('weir_events') IS NOT NULL", &[])
            .unwrap()
            .get(0);
        if !exists {
            return 0;
        }
        client
            .query_one("SELECT count(*) FROM weir_events", &[])
            .unwrap()
            .get::<_, i64>(0) as usize
    };
    survives_a_30_second_outage(
        &results,
        || server.borrow_mut().stop(),
        || server.borrow_mut().resume(),
        || postgres_rows(&server.borrow()),
        count,
    );
}

/// Posts `events` (JSON objects) to weir's HTTP listener.
fn post_events(weir: &common::Weir, events: &[Value]) {
    let body: String = events.iter().map(|e| format!("{e}\n")).collect();
    let response = reqwest::blocking::Client::new()
        .post(format!("http://{}/events", weir.http))
        .body(body)
        .send()
        .unwrap();
    assert!(response.status().is_success(), "{response:?}");
}

fn cpu_events(base: i64, from: u64, n: u64) -> Vec<Value> {
    (from..from + n)
        .map(|i| {
            json!({"host": format!("web-{}", i % 5), "service": "cpu",
                   "time": base + (i / 5) as i64, "metric": (i % 100) as f64 / 100.0})
        })
        .collect()
}

#[test]
fn weir_run_feeds_every_configured_sink_and_changes_graphite_destinations_at_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let first = Carbon::start(&dir.path().join("first"));
    let second = Carbon::start(&dir.path().join("second"));
    let victoria_server = Victoria::start(&dir.path().join("victoria"));
    let postgres_server = Postgres::start();
    let config = format!(
        r#"
{listeners}
[[reactor]]
name = "cpu"
pipeline = 'where service = "cpu"'

[[reactor]]
name = "hot"
pipeline = 'where service = "cpu" and metric >= 0.9 | notify log'

[[sink]]
name = "carbon"
type = "graphite"
destinations = ["{first}"]
backoff_ms = 100
max_destinations = 2
filter = 'metric exists'

[[sink]]
name = "vm"
type = "victoriametrics"
url = "{vm}"

[[sink]]
name = "pg"
type = "postgres"
url = "{pg}"

[[sink]]
name = "file"
type = "file"
filter = "metric >= 0.5"
"#,
        listeners = common::LISTENERS,
        first = first.address(),
        vm = victoria_server.write_url(),
        pg = postgres_server.url(),
    );
    let data = dir.path().join("data");
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - 10_000;
    let weir = common::Weir::start(&config, &data);
    post_events(&weir, &cpu_events(base, 0, 500));

    // Graphite: one point per host and second (both reactors' results
    // for an event share path, time and value).
    eventually(60, "graphite points", || first.count() >= 500);
    assert_eq!(first.count(), 500);
    // VictoriaMetrics: a series per host and reactor.
    let hot = 5 * 10; // metrics 0.90..0.99, 5 of each
    eventually(60, "victoriametrics samples", || {
        victoria_server.samples("weir_metric").len() >= 500 + hot
    });
    let samples = victoria_server.samples("weir_metric");
    assert_eq!(samples.len(), 500 + hot);
    assert_eq!(
        samples
            .iter()
            .filter(|(l, _, _)| l["reactor"] == "hot")
            .count(),
        hot
    );
    // PostgreSQL: results and notifications apart.
    let count = |table: &str| -> i64 {
        let mut client = postgres_server.client();
        let exists: bool = client
            .query_one(&format!("SELECT to_regclass('{table}') IS NOT NULL"), &[])
            .unwrap()
            .get(0);
        if !exists {
            return 0;
        }
        client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .unwrap()
            .get(0)
    };
    eventually(60, "postgres rows", || {
        count("weir_events") >= 500 && count("weir_notifications") >= hot as i64
    });
    assert_eq!(count("weir_events"), 500);
    assert_eq!(count("weir_notifications"), hot as i64);
    // The filtered file sink: only metric >= 0.5 (cpu and hot alike).
    eventually(30, "filtered files", || {
        common::results(&data).len() >= 250 + hot
    });
    let files = common::results(&data);
    assert_eq!(files.len(), 250 + hot);
    assert!(files.iter().all(|r| r["metric"].as_f64().unwrap() >= 0.5));

    // The destinations admin API.
    let admin = format!("http://{}/admin/sinks/carbon/destinations", weir.http);
    let client = reqwest::blocking::Client::new();
    let listed = |weir_admin: &str| -> Vec<String> {
        let list: Vec<Value> = client.get(weir_admin).send().unwrap().json().unwrap();
        list.iter()
            .map(|d| d["address"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(listed(&admin), [first.address()]);
    let put = client
        .put(format!("{admin}/{}", second.address()))
        .send()
        .unwrap();
    assert_eq!(put.status(), 201);
    let mut both = [first.address(), second.address()];
    both.sort();
    assert_eq!(listed(&admin), both, "listed by address");
    let bad = client.put(format!("{admin}/no-port")).send().unwrap();
    assert_eq!(bad.status(), 400);
    let third = client.put(format!("{admin}/127.0.0.1:9")).send().unwrap();
    assert_eq!(third.status(), 400, "beyond max_destinations");
    assert!(third.text().unwrap().contains("max_destinations"));
    let unknown = client
        .get(format!(
            "http://{}/admin/sinks/nope/destinations",
            weir.http
        ))
        .send()
        .unwrap();
    assert_eq!(unknown.status(), 404);
    // The added destination gets what comes from now on.
    post_events(&weir, &cpu_events(base, 500, 100));
    eventually(60, "points at the added destination", || {
        second.count() >= 100 && first.count() >= 600
    });
    assert_eq!(second.count(), 100);
    let removed = client
        .delete(format!("{admin}/{}", first.address()))
        .send()
        .unwrap();
    assert_eq!(removed.status(), 204);
    weir.stop();

    // The change outlives a restart.
    let weir = common::Weir::start(&config, &data);
    let admin = format!("http://{}/admin/sinks/carbon/destinations", weir.http);
    assert_eq!(listed(&admin), [second.address()]);
    post_events(&weir, &cpu_events(base, 600, 50));
    eventually(60, "points after the restart", || second.count() >= 150);
    assert_eq!(first.count(), 600, "the removed destination gets nothing");
    weir.stop();
}

#[test]
fn readyz_names_a_failing_sink_and_heals_when_its_server_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Victoria::start(&dir.path().join("victoria"));
    server.stop();
    let config = format!(
        r#"{}
[[reactor]]
name = "all"
pipeline = "emit"

[[sink]]
name = "vm"
type = "victoriametrics"
url = "{}"
timeout_ms = 1000
"#,
        common::LISTENERS,
        server.write_url()
    );
    let data = dir.path().join("data");
    let weir = common::Weir::start(&config, &data);
    let readyz = || {
        let response = reqwest::blocking::get(format!("http://{}/readyz", weir.http)).unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().unwrap())
    };
    assert_eq!(readyz().0, 200, "{:?}", readyz().1);
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    post_events(&weir, &cpu_events(base, 0, 20));
    eventually(30, "/readyz to name the sink", || readyz().0 == 503);
    let (_, body) = readyz();
    let failing = body["failing"].as_object().unwrap();
    let (component, reason) = failing.iter().next().unwrap();
    assert!(component.starts_with("vm: results partition"), "{body}");
    assert!(reason.as_str().unwrap().contains("127.0.0.1"), "{body}");
    assert!(weir.metric("weir_failing_components") >= 1.0);
    // The process itself is fine.
    let healthz = reqwest::blocking::get(format!("http://{}/healthz", weir.http)).unwrap();
    assert_eq!(healthz.status().as_u16(), 200);

    // The server returns: delivery resumes and readiness heals, no restart.
    server.resume();
    eventually(60, "every point stored", || {
        server.samples("weir_metric").len() >= 20
    });
    eventually(30, "/readyz to heal", || readyz().0 == 200);
    weir.stop();
}
