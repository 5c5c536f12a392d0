//! Ingest protocols through the real binary, each driven by a real client
//! someone else wrote, through to a reactor's result: Riemann's C client
//! (`riemann-client`, TCP with acknowledgements and UDP) and collectd's
//! `write_riemann`; netcat and collectd's `write_graphite` for Graphite
//! plaintext; curl and collectd's `write_influxdb_udp` for the InfluxDB
//! line protocol; Prometheus scraping weir and itself and remote-writing
//! to weir, and vmagent (VictoriaMetrics' agent) remote-writing what it
//! scrapes from weir and what it is sent; Python's `websockets` and
//! `msgpack` as a poa-netstats agent on `GET /ws`; PyPI's `statsd` client
//! over UDP and TCP; the OpenTelemetry Python SDK's OTLP exporters over
//! HTTP and gRPC.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{results, wait_until, Weir, LISTENERS};
use serde_json::Value;

const REACTOR: &str = "[[reactor]]\nname = \"all\"\npipeline = 'where host != \"\"'\n";

fn find<'a>(results: &'a [Value], host: &str) -> Option<&'a Value> {
    results.iter().find(|r| r["host"] == host)
}

/// collectd in the foreground with `plugins` (config text), reporting
/// as host `cd1` every second, for `seconds` (SIGKILL then: collectd hangs
/// on SIGTERM).
fn collectd(dir: &Path, plugins: &str, seconds: u64) -> std::process::Child {
    let conf = dir.join("collectd.conf");
    std::fs::write(
        &conf,
        format!(
            "Hostname \"cd1\"\nFQDNLookup false\nInterval 1\nBaseDir \"{base}\"\nPIDFile \"{base}/collectd.pid\"\n\
             PluginDir \"/usr/lib/collectd\"\nTypesDB \"/usr/share/collectd/types.db\"\nLoadPlugin load\n{plugins}",
            base = dir.display()
        ),
    )
    .unwrap();
    Command::new("timeout")
        .args(["-s", "KILL", &seconds.to_string(), "collectd", "-f", "-C"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("collectd (collectd-core; scripts/test installs it)")
}

#[test]
fn riemann_clients_send_over_tcp_with_acks_and_over_udp() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = format!(
        "{LISTENERS}[ingest]\nmax_line_bytes = 65536\n[ingest.riemann]\nlisten = \"127.0.0.1:0\"\n{REACTOR}"
    );
    let weir = Weir::start(&config, &data);
    let port = weir.service_addr("riemann").port().to_string();
    let client = |args: &[&str]| {
        Command::new("riemann-client")
            .arg("send")
            .args(args)
            .args(["127.0.0.1", &port])
            .output()
            .expect("riemann-client (riemann-c-client; scripts/test installs it)")
    };
    // Acknowledged after the append: exit 0.
    let sent = client(&[
        "-h", "web1", "-S", "svc", "-s", "ok", "-d", "3.5", "-t", "a", "-a", "k=v", "-L", "60",
    ]);
    assert!(sent.status.success(), "{sent:?}");
    let sent = client(&["-U", "-h", "udp1", "-S", "svc", "-i", "7"]);
    assert!(sent.status.success(), "{sent:?}");
    // An event without a host is refused by name: exit 1.
    let refused = client(&["-S", "svc", "-d", "1"]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let said = String::from_utf8_lossy(&refused.stderr) + String::from_utf8_lossy(&refused.stdout);
    assert!(said.contains("host"), "{said}");

    wait_until(Duration::from_secs(30), "both results", || {
        let all = results(&data);
        find(&all, "web1").is_some() && find(&all, "udp1").is_some()
    });
    let all = results(&data);
    let web1 = find(&all, "web1").unwrap();
    assert_eq!(
        (&web1["service"], &web1["state"], &web1["metric"]),
        (&"svc".into(), &"ok".into(), &3.5.into())
    );
    assert_eq!(
        (&web1["tags"][0], &web1["meta"]["k"], &web1["ttl"]),
        (&"a".into(), &"v".into(), &60.0.into())
    );
    let stamped = web1["time"].as_f64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - stamped).abs() < 120.0,
        "no time sent: stamped at ingest ({stamped})"
    );
    assert_eq!(find(&all, "udp1").unwrap()["metric"], 7.0, "metric_sint64");
    assert_eq!(
        weir.metric("weir_ingest_rejected_total{protocol=\"riemann\",reason=\"missing_host\"}"),
        1.0
    );

    // A message longer than the limit: answered with why, counted, closed.
    let mut oversized = std::net::TcpStream::connect(weir.service_addr("riemann")).unwrap();
    // One byte past the limit, all of it read before the answer (no
    // unread bytes to turn the close into a reset).
    oversized.write_all(&1_000_000u32.to_be_bytes()).unwrap();
    oversized.write_all(&vec![0; 65_537 - 4]).unwrap();
    let mut answer = Vec::new();
    std::io::Read::read_to_end(&mut oversized, &mut answer).unwrap();
    let said = String::from_utf8_lossy(&answer);
    assert!(said.contains("exceeds 65536"), "{said}");
    assert_eq!(
        weir.metric("weir_ingest_rejected_total{protocol=\"riemann\",reason=\"line_too_long\"}"),
        1.0
    );

    // collectd's write_riemann, a real agent stream.
    let agent = collectd(
        dir.path(),
        &format!(
            "LoadPlugin write_riemann\n<Plugin write_riemann>\n<Node \"w\">\nHost \"127.0.0.1\"\nPort \"{port}\"\nProtocol TCP\nBatch false\n</Node>\n</Plugin>\n"
        ),
        20,
    );
    let _agent = Killed(agent);
    wait_until(
        Duration::from_secs(20),
        "collectd's load through write_riemann",
        || {
            results(&data).iter().any(|r| {
                r["host"] == "cd1" && r["service"].as_str().is_some_and(|s| s.starts_with("load"))
            })
        },
    );
    weir.stop();
}

#[test]
fn graphite_plaintext_from_netcat_and_collectd_becomes_events_through_templates() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = format!(
        "{LISTENERS}[ingest.graphite]\nlisten = \"127.0.0.1:0\"\ntemplates = [\"servers.* .host.service*\", \"collectd.* .host.service*\"]\n{REACTOR}"
    );
    let weir = Weir::start(&config, &data);
    let port = weir.service_addr("graphite").port().to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let netcat = |args: &[&str], input: String| {
        let mut nc = Command::new("nc")
            .args(args)
            .args(["127.0.0.1", &port])
            .stdin(Stdio::piped())
            .spawn()
            .expect("nc (netcat-openbsd; scripts/test installs it)");
        nc.stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        assert!(nc.wait().unwrap().success());
    };
    // A bad line between good ones loses neither.
    netcat(
        &["-N"],
        format!("servers.web-1.cpu.user 42 {now}\nservers.web-1.cpu.user abc {now}\nservers.web-2.disk.used 0.5 {now}\n"),
    );
    netcat(&["-u", "-w1"], format!("servers.web-3.mem.free 9 {now}\n"));
    wait_until(Duration::from_secs(30), "three results", || {
        let all = results(&data);
        ["web-1", "web-2", "web-3"]
            .iter()
            .all(|h| find(&all, h).is_some())
    });
    let all = results(&data);
    let web1 = find(&all, "web-1").unwrap();
    assert_eq!(
        (&web1["service"], &web1["metric"], &web1["time"]),
        (&"cpu.user".into(), &42.0.into(), &(now as f64).into())
    );
    assert_eq!(
        find(&all, "web-3").unwrap()["service"],
        "mem.free",
        "over UDP"
    );
    assert_eq!(
        weir.metric("weir_ingest_rejected_total{protocol=\"graphite\",reason=\"malformed\"}"),
        1.0
    );

    // collectd's write_graphite.
    let agent = collectd(
        dir.path(),
        &format!(
            "LoadPlugin write_graphite\n<Plugin write_graphite>\n<Node \"w\">\nHost \"127.0.0.1\"\nPort \"{port}\"\nProtocol \"tcp\"\nPrefix \"collectd.\"\n</Node>\n</Plugin>\n"
        ),
        20,
    );
    let _agent = Killed(agent);
    wait_until(
        Duration::from_secs(20),
        "collectd's load through write_graphite",
        || {
            results(&data)
                .iter()
                .any(|r| r["host"] == "cd1" && r["service"] == "load.load.shortterm")
        },
    );
    weir.stop();
}

#[test]
fn influx_lines_over_http_and_from_collectd_over_udp() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = format!("{LISTENERS}[ingest.influx]\nlisten = \"127.0.0.1:0\"\n{REACTOR}");
    let weir = Weir::start(&config, &data);
    let body = "cpu,host=web-1,core=0 user=42.5,idle=50i 1700000000\ncpu,core=1 user=1 1700000000\nmem,host=web-2 free=7 1700000000\n";
    let curl = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "--data-binary", body])
        .arg(format!("http://{}/write?precision=s", weir.http))
        .output()
        .expect("curl");
    let answer = String::from_utf8_lossy(&curl.stdout).into_owned();
    assert!(answer.ends_with("400"), "a partial write: {answer}");
    assert!(
        answer.contains("line 2") && answer.contains("no host tag"),
        "{answer}"
    );
    wait_until(Duration::from_secs(30), "the good lines' events", || {
        let all = results(&data);
        all.iter().filter(|r| r["host"] == "web-1").count() == 2 && find(&all, "web-2").is_some()
    });
    let all = results(&data);
    let user = all.iter().find(|r| r["service"] == "cpu.user").unwrap();
    assert_eq!(
        (&user["metric"], &user["time"], &user["meta"]["core"]),
        (&42.5.into(), &1.7e9.into(), &"0".into())
    );

    // collectd's write_influxdb_udp (milliseconds, buffered to 1 KiB).
    let port = weir.service_addr("influx").port();
    let agent = collectd(
        dir.path(),
        &format!(
            "LoadPlugin cpu\nLoadPlugin write_influxdb_udp\n<Plugin write_influxdb_udp>\nServer \"127.0.0.1\" \"{port}\"\nMaxPacketSize 1024\n</Plugin>\n"
        ),
        40,
    );
    let _agent = Killed(agent);
    wait_until(
        Duration::from_secs(40),
        "collectd's load through write_influxdb_udp",
        || {
            results(&data).iter().any(|r| {
                r["host"] == "cd1"
                    && r["service"].as_str().is_some_and(|s| s.starts_with("load"))
                    && r["time"]
                        .as_f64()
                        .is_some_and(|t| (t - now_secs()).abs() < 600.0)
            })
        },
    );
    weir.stop();
}

#[test]
fn prometheus_remote_writes_what_it_scrapes_from_weir_and_itself() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let weir = Weir::start(&format!("{LISTENERS}{REACTOR}"), &data);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n\
             scrape_configs:\n\
             \x20 - job_name: weir\n    static_configs:\n      - targets: [\"{weir}\"]\n\
             \x20 - job_name: prometheus\n    static_configs:\n      - targets: [\"127.0.0.1:{port}\"]\n\
             remote_write:\n  - url: http://{weir}/api/v1/write\n    queue_config:\n      batch_send_deadline: 1s\n",
            weir = weir.http
        ),
    )
    .unwrap();
    let prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus (Debian's prometheus; scripts/test installs it)");
    let _prometheus = Killed(prometheus);
    wait_until(
        Duration::from_secs(60),
        "series scraped from weir and from prometheus",
        || {
            let all = results(&data);
            let from_weir = all.iter().any(|r| {
                r["service"] == "weir_ingest_accepted_total" && r["host"] == weir.http.to_string()
            });
            let from_itself = all.iter().any(|r| {
                r["service"] == "prometheus_build_info" && r["meta"]["job"] == "prometheus"
            });
            from_weir && from_itself
        },
    );
    weir.stop();
}

#[test]
fn vmagent_remote_writes_scraped_and_pushed_series() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = format!("{LISTENERS}{REACTOR}");
    let weir = Weir::start(&config, &data);
    let scrape = dir.path().join("scrape.yml");
    std::fs::write(
        &scrape,
        format!(
            "scrape_configs:\n  - job_name: weir\n    scrape_interval: 1s\n    static_configs:\n      - targets: [\"{}\"]\n",
            weir.http
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let agent = Command::new("vmagent")
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg(format!(
            "-remoteWrite.url=http://{}/api/v1/write",
            weir.http
        ))
        .arg(format!(
            "-remoteWrite.tmpDataPath={}",
            dir.path().join("vmagent").display()
        ))
        .arg("-remoteWrite.flushInterval=200ms")
        .arg(format!("-promscrape.config={}", scrape.display()))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("vmagent.log")).unwrap())
        .spawn()
        .expect("vmagent (victoria-metrics; scripts/test installs it)");
    let _agent = Killed(agent);
    wait_until(Duration::from_secs(20), "vmagent to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    // Pushed to vmagent as an Influx line; written to weir as a series.
    let pushed = Command::new("curl")
        .args(["-s", "-f", "--data-binary", "probe,host=vm-1 value=5"])
        .arg(format!("http://127.0.0.1:{port}/write"))
        .status()
        .unwrap();
    assert!(pushed.success());
    wait_until(
        Duration::from_secs(30),
        "the pushed and the scraped series",
        || {
            let all = results(&data);
            let pushed = all.iter().any(|r| {
                r["host"] == "vm-1" && r["service"] == "probe_value" && r["metric"] == 5.0
            });
            let scraped = all.iter().any(|r| {
                r["service"] == "weir_ingest_accepted_total"
                    && r["meta"]["job"] == "weir"
                    && r["host"] == weir.http.to_string()
            });
            pushed && scraped
        },
    );
    assert!(weir.metric("weir_ingest_accepted_total{protocol=\"remote_write\"}") > 0.0);
    weir.stop();
}

#[test]
fn websocket_agents_send_typed_json_and_msgpack_messages_acknowledged_after_the_append() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config =
        format!("{LISTENERS}[ingest.websocket]\ntypes = [\"metric\", \"block\"]\n{REACTOR}");
    let weir = Weir::start(&config, &data);
    let agent = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ws/agent.py"))
        .arg(format!("ws://{}/ws", weir.http))
        .output()
        .expect("python3 with websockets and msgpack (scripts/test installs them)");
    assert!(
        agent.status.success(),
        "{}",
        String::from_utf8_lossy(&agent.stderr)
    );
    let answers: Vec<Value> = String::from_utf8_lossy(&agent.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), 4, "{answers:?}");
    assert_eq!(
        answers[0]["text"],
        serde_json::json!({"ack": 1, "accepted": 1})
    );
    // Answered in the message's own encoding; the bad item named, the good kept.
    let batch = &answers[1]["binary"];
    assert_eq!(
        (&batch["ack"], &batch["accepted"]),
        (&2.into(), &2.into()),
        "{batch}"
    );
    assert_eq!(
        (
            &batch["rejected"][0]["item"],
            &batch["rejected"][0]["reason"]
        ),
        (&2.into(), &"missing_host".into())
    );
    let unknown = &answers[2]["text"]["error"];
    assert_eq!(unknown["seq"], 3);
    assert!(
        unknown["detail"]
            .as_str()
            .unwrap()
            .contains("\"nope\" is not one of block, metric"),
        "{unknown}"
    );
    assert_eq!(answers[3]["text"]["ack"], 4, "no seq: the message's number");
    wait_until(Duration::from_secs(30), "four results", || {
        let all = results(&data);
        ["ws-1", "ws-2", "ws-3", "ws-4"]
            .iter()
            .all(|h| find(&all, h).is_some())
    });
    let all = results(&data);
    assert_eq!(find(&all, "ws-2").unwrap()["type"], "metric");
    assert_eq!(find(&all, "ws-4").unwrap()["type"], "block");
    assert!(find(&all, "ws-x").is_none());
    weir.stop();
}

#[test]
fn statsd_clients_are_aggregated_per_flush() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = format!("{LISTENERS}[ingest.statsd]\nlisten = \"127.0.0.1:0\"\nflush_secs = 1\nhost = \"app-1\"\n{REACTOR}");
    let weir = Weir::start(&config, &data);
    let port = weir.service_addr("statsd").port();
    let script = format!(
        "import statsd\n\
         udp = statsd.StatsClient('127.0.0.1', {port})\n\
         tcp = statsd.TCPStatsClient('127.0.0.1', {port})\n\
         udp.incr('hits', 3)\n\
         tcp.incr('hits', 2)\n\
         udp.gauge('load', 5)\n\
         udp.gauge('load', 2, delta=True)\n\
         for ms in (10, 30, 20):\n    udp.timing('render', ms)\n\
         udp.set('users', 'a')\n\
         udp.set('users', 'b')\n\
         udp.set('users', 'a')\n\
         tcp.close()\n"
    );
    let client = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        client.status.success(),
        "{}",
        String::from_utf8_lossy(&client.stderr)
    );
    wait_until(Duration::from_secs(30), "the flushed aggregates", || {
        let all = results(&data);
        let hits: f64 = all
            .iter()
            .filter(|r| r["service"] == "hits")
            .filter_map(|r| r["metric"].as_f64())
            .sum();
        hits == 5.0
            && ["load", "render", "users"]
                .iter()
                .all(|s| all.iter().any(|r| r["service"] == *s))
    });
    let all = results(&data);
    let by = |service: &str| all.iter().find(|r| r["service"] == service).unwrap();
    assert_eq!(
        (&by("load")["metric"], &by("load")["host"]),
        (&7.0.into(), &"app-1".into())
    );
    let render = by("render");
    assert_eq!(
        (
            &render["metric"],
            &render["meta"]["count"],
            &render["meta"]["p90"]
        ),
        (&20.0.into(), &3.into(), &30.0.into())
    );
    assert_eq!(by("users")["metric"], 2.0);
    weir.stop();
}

#[test]
fn the_opentelemetry_sdk_exports_metrics_over_otlp_http_and_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = format!("{LISTENERS}[ingest.otlp_grpc]\nlisten = \"127.0.0.1:0\"\n{REACTOR}");
    let weir = Weir::start(&config, &data);
    let export = |transport: &str, endpoint: String| {
        let exporter = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/otel/export.py"))
            .args([transport, &endpoint])
            .output()
            .expect("python3 with the OpenTelemetry SDK (scripts/test installs it)");
        assert!(
            exporter.status.success(),
            "{}",
            String::from_utf8_lossy(&exporter.stderr)
        );
    };
    export("http", format!("http://{}/v1/metrics", weir.http));
    export("grpc", weir.service_addr("otlp-grpc").to_string());
    for host in ["otel-http", "otel-grpc"] {
        wait_until(Duration::from_secs(30), "the three metrics", || {
            let all = results(&data);
            ["shop/orders", "shop/latency", "shop/queue"]
                .iter()
                .all(|s| all.iter().any(|r| r["service"] == *s && r["host"] == host))
        });
        let all = results(&data);
        let by = |service: &str| {
            all.iter()
                .find(|r| r["service"] == service && r["host"] == host)
                .unwrap()
        };
        let orders = by("shop/orders");
        assert_eq!(
            (&orders["metric"], &orders["meta"]["region"]),
            (&3.0.into(), &"eu".into())
        );
        assert_eq!(orders["meta"]["temporality"], "cumulative");
        let latency = by("shop/latency");
        assert_eq!(
            (
                &latency["metric"],
                &latency["meta"]["count"],
                &latency["meta"]["sum"]
            ),
            (&25.0.into(), &4.into(), &100.0.into())
        );
        assert_eq!(by("shop/queue")["metric"], 7.0);
    }
    assert_eq!(weir.metric_sum("weir_ingest_rejected_total"), 0.0);
    assert!(weir.metric("weir_ingest_accepted_total{protocol=\"otlp-grpc\"}") > 0.0);
    weir.stop();
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A child process killed when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
