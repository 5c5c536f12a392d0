//! Starts the real `weir` binary for end-to-end tests and reads what it wrote.

#![allow(dead_code)] // each test file uses a different part of this helper

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running `weir run` and where it listens.
pub struct Weir {
    /// The process.
    pub service: Service,
    /// Listener addresses by protocol, from its start-up lines.
    pub tcp: SocketAddr,
    /// UDP address.
    pub udp: SocketAddr,
    /// HTTP address.
    pub http: SocketAddr,
    /// Unix socket, if configured.
    pub unix: Option<PathBuf>,
}

/// A running weir process (any subcommand) and the addresses it printed.
pub struct Service {
    child: Child,
    /// `listening KIND ADDR` lines: KIND → ADDR.
    pub addresses: HashMap<String, String>,
}

/// Every listener on a free loopback port (`weir run` prints which).
pub const LISTENERS: &str = r#"
[ingest.tcp]
listen = "127.0.0.1:0"
[ingest.udp]
listen = "127.0.0.1:0"
[ingest.http]
listen = "127.0.0.1:0"
"#;

/// `weir send --to TO --host HOST --service SERVICE EXTRA…`, which must succeed.
pub fn weir_send(to: &str, host: &str, service: &str, extra: &[&str]) {
    let status = Command::new(bin())
        .args(["send", "--to", to, "--host", host, "--service", service])
        .args(extra)
        .status()
        .unwrap();
    assert!(status.success(), "weir send --to {to} --host {host}");
}

/// `weir ARGS --json --target TARGET`, which must succeed: what it printed, as JSON.
pub fn weir_json(args: &[&str], target: SocketAddr) -> Value {
    let output = Command::new(bin())
        .args(args)
        .args(["--json", "--target", &target.to_string()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "weir {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Runs `weir ARGS` with `input` on standard input.
pub fn weir_with_input(args: &[&str], input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// The weir binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_weir")
}

impl Service {
    /// Starts `weir COMMAND --config CONFIG --data-dir DATA EXTRA…` with
    /// `RUST_LOG=rust_log` and waits for its "data in" line; its stderr
    /// goes to `DATA.stderr`.
    pub fn start(
        command: &str,
        config: &Path,
        data: &Path,
        extra: &[&str],
        rust_log: &str,
    ) -> Service {
        std::fs::create_dir_all(data).unwrap();
        let stderr = std::fs::File::create(data.with_extension("stderr")).unwrap();
        let mut child = Command::new(bin())
            .arg(command)
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(data)
            .args(extra)
            .env("RUST_LOG", rust_log)
            .env_remove("WEIR_ADMIN_TOKEN")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut addresses = HashMap::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if line.starts_with("data in") {
                break;
            }
            if let Some(rest) = line.strip_prefix("listening ") {
                let mut words = rest.split_whitespace();
                if let (Some(kind), Some(address)) = (words.next(), words.next()) {
                    addresses.insert(kind.to_owned(), address.to_owned());
                }
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Service { child, addresses }
    }

    /// The address of listener `kind` (tcp, udp, http, metrics).
    pub fn addr(&self, kind: &str) -> SocketAddr {
        self.addresses
            .get(kind)
            .unwrap_or_else(|| panic!("no {kind} listener in {:?}", self.addresses))
            .parse()
            .unwrap()
    }

    /// SIGKILL: no shutdown, no final checkpoint.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM (`signals` times, a second apart) and waits up to
    /// `within` for the exit: its status (none if still running, then
    /// killed) and how long it took after the last signal.
    pub fn terminate(
        mut self,
        signals: u32,
        within: Duration,
    ) -> (Option<std::process::ExitStatus>, Duration) {
        for i in 0..signals {
            if i > 0 {
                std::thread::sleep(Duration::from_secs(1));
            }
            self.signal("TERM");
        }
        let sent = Instant::now();
        while sent.elapsed() < within {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (Some(status), sent.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (None, sent.elapsed())
    }

    /// Sends `signal` (e.g. `HUP`).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) {
        Command::new("kill")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "weir exited with {status}");
    }

    /// The value of one metric series, e.g. `weir_ingest_accepted_total{protocol="tcp"}`,
    /// from its metrics listener (or the HTTP one).
    pub fn metric(&self, series: &str) -> f64 {
        metric(self.metrics_addr(), series)
    }

    /// The sum of every series of metric `name`, from one scrape.
    pub fn metric_sum(&self, name: &str) -> f64 {
        metric_sum(self.metrics_addr(), name)
    }

    /// Where its `/metrics` is served: the metrics listener, else HTTP.
    pub fn metrics_addr(&self) -> SocketAddr {
        let kind = if self.addresses.contains_key("metrics") {
            "metrics"
        } else {
            "http"
        };
        self.addr(kind)
    }
}

/// One metric series from `/metrics` at `addr` (0 when absent).
pub fn metric(addr: SocketAddr, series: &str) -> f64 {
    metrics_text(addr)
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The sum of every series of metric `name` (all its labels), from one
/// scrape of `/metrics` at `addr`.
pub fn metric_sum(addr: SocketAddr, name: &str) -> f64 {
    metrics_text(addr)
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn metrics_text(addr: SocketAddr) -> String {
    reqwest::blocking::get(format!("http://{addr}/metrics"))
        .unwrap()
        .text()
        .unwrap()
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Weir {
    /// Starts `weir run --config <config> --data-dir <data>`, waiting until it listens.
    pub fn start(config: &str, data: &Path) -> Weir {
        std::fs::create_dir_all(data).unwrap();
        let config_path = data.with_extension("toml");
        std::fs::write(&config_path, config).unwrap();
        let service = Service::start("run", &config_path, data, &[], "warn");
        Weir {
            tcp: service.addr("tcp"),
            udp: service.addr("udp"),
            http: service.addr("http"),
            unix: service.addresses.get("unix").map(PathBuf::from),
            service,
        }
    }

    /// SIGKILL: no shutdown, no final checkpoint.
    pub fn kill(self) {
        self.service.kill()
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(self) {
        self.service.stop()
    }

    /// The value of one metric series.
    pub fn metric(&self, series: &str) -> f64 {
        self.service.metric(series)
    }

    /// The sum of every series of metric `name`.
    pub fn metric_sum(&self, name: &str) -> f64 {
        self.service.metric_sum(name)
    }

    /// The address of a listener it printed (`listening KIND ADDR`).
    pub fn service_addr(&self, kind: &str) -> SocketAddr {
        self.service.addr(kind)
    }
}

/// A Kafka-protocol broker (tansu, on SQLite in a temporary directory) on
/// a free loopback port. (Its in-memory engine reports the end of a
/// partition as the last batch's first offset + 1, so it is not used.)
pub struct Broker {
    child: Child,
    /// Declared before the directory it keeps its files in.
    _tls: Option<Stunnel>,
    _dir: tempfile::TempDir,
    /// `host:port` for `--brokers`.
    pub addr: String,
}

impl Broker {
    /// Starts tansu; panics when it is not installed (scripts/test installs it).
    pub fn start() -> Broker {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let child = tansu(dir.path(), port, port, &[]);
        Broker {
            child,
            _tls: None,
            _dir: dir,
            addr: format!("127.0.0.1:{port}"),
        }
    }

    /// Starts tansu requiring SASL/SCRAM-SHA-256 as `user`/`password`,
    /// behind stunnel terminating TLS with `cert`/`key` (tansu 0.6 has no
    /// TLS of its own): `addr` is the TLS port, which the broker's
    /// metadata advertises, so clients stay on TLS.
    pub fn start_secured(user: &str, password: &str, cert: &Path, key: &Path) -> Broker {
        let (plain, tls) = (free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        // Users are created before authentication is on, on the same storage.
        let mut open = tansu(dir.path(), plain, plain, &[]);
        let status = Command::new(tansu_bin())
            .args(["user", "create", user, password, "--mechanism", "scram256"])
            .args(["--broker", &format!("tcp://127.0.0.1:{plain}")])
            .status()
            .unwrap();
        assert!(status.success(), "tansu user create");
        let _ = open.kill();
        let _ = open.wait();
        let child = tansu(dir.path(), plain, tls, &["--authentication"]);
        let conf = dir.path().join("stunnel.conf");
        std::fs::write(
            &conf,
            format!(
                "foreground = yes\npid =\n[kafka]\naccept = 127.0.0.1:{tls}\n\
                 connect = 127.0.0.1:{plain}\ncert = {}\nkey = {}\n",
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        let stunnel = Command::new("stunnel")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stunnel.log")).unwrap())
            .spawn()
            .expect("stunnel (Debian's stunnel4; scripts/test installs it)");
        let addr = format!("127.0.0.1:{tls}");
        wait_until(Duration::from_secs(30), "stunnel to listen", || {
            std::net::TcpStream::connect(&addr).is_ok()
        });
        Broker {
            child,
            _tls: Some(Stunnel(stunnel)),
            _dir: dir,
            addr,
        }
    }
}

impl Broker {
    /// SIGKILLs the broker.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a killed broker again on the same port and storage (plain
    /// brokers only).
    pub fn restart(&mut self) {
        assert!(self._tls.is_none(), "a plain broker");
        let port: u16 = self.addr.rsplit(':').next().unwrap().parse().unwrap();
        self.child = tansu(self._dir.path(), port, port, &[]);
    }
}

/// stunnel in front of a broker, stopped when dropped.
pub struct Stunnel(Child);

impl Drop for Stunnel {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tansu_bin() -> PathBuf {
    ["tansu".into(), home_cargo_bin("tansu")]
        .into_iter()
        .find(|path: &PathBuf| Command::new(path).arg("--version").output().is_ok())
        .expect("the tansu broker is not installed: run scripts/test, which installs it")
}

/// tansu on SQLite under `dir`, listening on `port` and advertising
/// `advertised`, once it accepts connections.
fn tansu(dir: &Path, port: u16, advertised: u16, extra: &[&str]) -> Child {
    let output = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("broker.log"))
        .unwrap();
    let child = Command::new(tansu_bin())
        .current_dir(dir)
        .args([
            "broker",
            "--listener-url",
            &format!("tcp://127.0.0.1:{port}"),
        ])
        .args([
            "--advertised-listener-url",
            &format!("tcp://127.0.0.1:{advertised}"),
        ])
        .args(["--storage-engine", "sqlite://tansu.db"])
        .args(extra)
        .stdout(output.try_clone().unwrap())
        .stderr(output)
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(30), "the broker to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    child
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn home_cargo_bin(name: &str) -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cargo"));
    home.join("bin").join(name)
}

/// Every result line the file sink wrote under `data/results`.
pub fn results(data: &Path) -> Vec<Value> {
    ndjson_lines(&data.join("results"))
}

/// Every delivery record in the notifiers' delivery logs under `data`
/// (the logs' commit marks left out).
pub fn deliveries(data: &Path) -> Vec<Value> {
    ndjson_lines(&data.join("notifications"))
        .into_iter()
        .filter(|line| line.get("id").is_some())
        .collect()
}

/// Every complete line of the NDJSON files in `dir`, files in name order
/// (no directory yet: none). A last line without its newline is still
/// being written, and is left for the next read.
pub fn ndjson_lines(dir: &Path) -> Vec<Value> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            let mut bytes = std::fs::read(f).unwrap();
            bytes.truncate(
                bytes
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |end| end + 1),
            );
            String::from_utf8(bytes)
                .unwrap()
                .lines()
                .map(|l| {
                    serde_json::from_str(l)
                        .unwrap_or_else(|e| panic!("bad line {l:?} in {}: {e}", f.display()))
                })
                .collect::<Vec<Value>>()
        })
        .collect()
}

/// Results without their ids, sorted: for comparing runs over different
/// logs (ids hold input offsets, which count tick records too).
pub fn without_ids(results: &[Value]) -> Vec<String> {
    let mut lines: Vec<String> = results
        .iter()
        .map(|r| {
            let mut r = r.clone();
            if let Some(fields) = r.as_object_mut() {
                fields.remove("id");
            }
            r.to_string()
        })
        .collect();
    lines.sort();
    lines
}

/// How many distinct result ids `results` holds.
pub fn unique_ids(results: &[Value]) -> usize {
    results
        .iter()
        .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
        .collect::<std::collections::HashSet<_>>()
        .len()
}

/// Polls `check` until it holds or `timeout` passes; panics with `what` then.
pub fn wait_until(timeout: Duration, what: &str, check: impl FnMut() -> bool) {
    wait_until_every(timeout, Duration::from_millis(50), what, check)
}

/// [`wait_until`], checking every `every`.
pub fn wait_until_every(
    timeout: Duration,
    every: Duration,
    what: &str,
    mut check: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(every);
    }
}

/// A CA and a certificate it signed for 127.0.0.1 and localhost, written
/// as `NAME-ca.pem`, `NAME-cert.pem` and `NAME-key.pem` under `dir`.
pub fn certificates(dir: &Path, name: &str) {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let name_of = |common_name: String| {
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, common_name);
        name
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    // Distinct names: OpenSSL takes a leaf named like its issuer for
    // self-issued.
    ca.distinguished_name = name_of(format!("weir test CA {name}"));
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    leaf.distinguished_name = name_of("localhost".to_owned());
    let leaf = leaf.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join(format!("{name}-ca.pem")), ca.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}-cert.pem")), leaf.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
}

/// Now, as the RFC 3339 UTC timestamps of weir's JSON log lines.
pub fn now_rfc3339() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S.%6NZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Waits up to `timeout` until the file sink under `data` holds as many
/// results as `expected`, then checks that no id was stored twice and
/// that, without their ids, they are `expected`; returns them.
pub fn assert_results_match(data: &Path, expected: &[String], timeout: Duration) -> Vec<Value> {
    wait_until(timeout, "every result in the store", || {
        results(data).len() >= expected.len()
    });
    std::thread::sleep(Duration::from_secs(2));
    let got = results(data);
    assert_eq!(unique_ids(&got), got.len(), "a result id was stored twice");
    assert_eq!(got.len(), expected.len());
    assert!(
        without_ids(&got) == expected,
        "results differ from the uninterrupted run"
    );
    got
}

/// Per host, the input partitions its results came from (their ids).
pub fn partitions_by_host(
    results: &[Value],
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<u32>> {
    let mut seen: std::collections::BTreeMap<String, std::collections::BTreeSet<u32>> =
        Default::default();
    for result in results {
        let id = weir_event::ResultRecord::peek_id(result.to_string().as_bytes()).unwrap();
        let host = result["host"].as_str().unwrap().to_owned();
        seen.entry(host).or_default().insert(id.partition);
    }
    seen
}
