//! The real servers the sink tests write to, from Debian's packages:
//! carbon-cache (whisper), VictoriaMetrics and PostgreSQL, each in its own
//! directory on free loopback ports, stopped and started again at will.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn signal(child: &mut Child, name: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn log_file(path: &Path) -> Stdio {
    Stdio::from(std::fs::File::create(path).unwrap())
}

/// A carbon-cache writing whisper files with one-second points.
pub struct Carbon {
    dir: PathBuf,
    /// The plaintext line port.
    pub port: u16,
    child: Option<Child>,
}

impl Carbon {
    /// Starts a carbon-cache under `dir`.
    pub fn start(dir: &Path) -> Carbon {
        std::fs::create_dir_all(dir.join("whisper")).unwrap();
        let port = free_port();
        let conf = format!(
            "[cache]\nSTORAGE_DIR = {d}\nLOCAL_DATA_DIR = {d}/whisper\nWHITELISTS_DIR = {d}\n\
             CONF_DIR = {d}\nLOG_DIR = {d}\nPID_DIR = {d}\nUSER =\nMAX_CACHE_SIZE = inf\n\
             MAX_UPDATES_PER_SECOND = 100000\nMAX_CREATES_PER_MINUTE = inf\n\
             LINE_RECEIVER_INTERFACE = 127.0.0.1\nLINE_RECEIVER_PORT = {port}\n\
             PICKLE_RECEIVER_INTERFACE = 127.0.0.1\nPICKLE_RECEIVER_PORT = {}\n\
             CACHE_QUERY_INTERFACE = 127.0.0.1\nCACHE_QUERY_PORT = {}\n\
             CARBON_METRIC_INTERVAL = 0\n",
            free_port(),
            free_port(),
            d = dir.display()
        );
        std::fs::write(dir.join("carbon.conf"), conf).unwrap();
        std::fs::write(
            dir.join("storage-schemas.conf"),
            "[all]\npattern = .*\nretentions = 1s:2d\n",
        )
        .unwrap();
        let mut carbon = Carbon {
            dir: dir.to_path_buf(),
            port,
            child: None,
        };
        carbon.resume();
        carbon
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts it again after [`Carbon::stop`] or [`Carbon::kill`].
    pub fn resume(&mut self) {
        let child = Command::new("carbon-cache")
            .arg(format!(
                "--config={}",
                self.dir.join("carbon.conf").display()
            ))
            .arg(format!(
                "--pidfile={}",
                self.dir.join("carbon.pid").display()
            ))
            .args(["--nodaemon", "start"])
            .stdout(log_file(&self.dir.join("carbon.out")))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("carbon-cache (Debian's graphite-carbon) runs");
        self.child = Some(child);
        wait_for_port(self.port, "carbon-cache");
    }

    /// SIGTERM: carbon writes its cache out and exits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&mut child, "TERM");
        }
        let _ = std::fs::remove_file(self.dir.join("carbon.pid"));
    }

    /// SIGKILL: whatever carbon held in memory is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&mut child, "KILL");
        }
        let _ = std::fs::remove_file(self.dir.join("carbon.pid"));
    }

    /// Every point in the whisper files: metric path → time → value.
    pub fn points(&self) -> BTreeMap<String, BTreeMap<i64, f64>> {
        let root = self.dir.join("whisper");
        let mut points = BTreeMap::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let name = path.strip_prefix(&root).unwrap().with_extension("");
                let metric = name.to_string_lossy().replace('/', ".");
                // (Its `--drop` renumbers the remaining points' times: filter here.)
                let from = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs()
                    - 86_400;
                let out = Command::new("whisper-fetch")
                    .args(["--from", &from.to_string()])
                    .arg(&path)
                    .output()
                    .expect("whisper-fetch runs");
                let series: &mut BTreeMap<i64, f64> = points.entry(metric).or_default();
                for line in String::from_utf8_lossy(&out.stdout).lines() {
                    match line.split_once('\t') {
                        Some((_, "None")) | None => {}
                        Some((time, value)) => {
                            series.insert(time.parse().unwrap(), value.parse().unwrap());
                        }
                    }
                }
            }
        }
        points
    }

    /// How many points the whisper files hold.
    pub fn count(&self) -> usize {
        self.points().values().map(BTreeMap::len).sum()
    }
}

impl Drop for Carbon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A single-node VictoriaMetrics that collapses identical samples.
pub struct Victoria {
    dir: PathBuf,
    /// The HTTP port.
    pub port: u16,
    child: Option<Child>,
}

impl Victoria {
    /// Starts VictoriaMetrics with its data under `dir`.
    pub fn start(dir: &Path) -> Victoria {
        std::fs::create_dir_all(dir).unwrap();
        let mut victoria = Victoria {
            dir: dir.to_path_buf(),
            port: free_port(),
            child: None,
        };
        victoria.resume();
        victoria
    }

    /// The line-protocol endpoint.
    pub fn write_url(&self) -> String {
        format!("http://127.0.0.1:{}/write", self.port)
    }

    /// Starts it again after [`Victoria::stop`].
    pub fn resume(&mut self) {
        let child = Command::new("victoria-metrics")
            .arg(format!(
                "-storageDataPath={}",
                self.dir.join("data").display()
            ))
            .arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .args([
                "-dedup.minScrapeInterval=1ms",
                "-retentionPeriod=100y",
                "-search.disableCache",
                "-loggerLevel=ERROR",
            ])
            .stdout(log_file(&self.dir.join("victoria.out")))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("victoria-metrics (Debian's package) runs");
        self.child = Some(child);
        wait_for_port(self.port, "victoria-metrics");
    }

    /// SIGTERM, and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&mut child, "TERM");
        }
    }

    /// Every sample of series named `name`: (labels, milliseconds, value).
    pub fn samples(&self, name: &str) -> Vec<(BTreeMap<String, String>, i64, f64)> {
        let base = format!("http://127.0.0.1:{}", self.port);
        reqwest::blocking::get(format!("{base}/internal/force_flush")).unwrap();
        let text = reqwest::blocking::Client::new()
            .get(format!("{base}/api/v1/export"))
            .query(&[
                ("match[]", format!("{{__name__=\"{name}\"}}")),
                ("start", "0".into()),
            ])
            .send()
            .unwrap()
            .text()
            .unwrap();
        let mut samples = Vec::new();
        for line in text.lines() {
            let series: Value = serde_json::from_str(line).unwrap();
            let labels: BTreeMap<String, String> = series["metric"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect();
            let times = series["timestamps"].as_array().unwrap();
            let values = series["values"].as_array().unwrap();
            for (time, value) in times.iter().zip(values) {
                samples.push((
                    labels.clone(),
                    time.as_i64().unwrap(),
                    value.as_f64().unwrap(),
                ));
            }
        }
        samples
    }
}

impl Drop for Victoria {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&mut child, "KILL");
        }
    }
}

/// A PostgreSQL cluster with a trusted superuser `weir`, in its own
/// temporary directory (owned by `postgres` when we are root).
pub struct Postgres {
    _temporary: tempfile::TempDir,
    dir: PathBuf,
    /// The TCP port.
    pub port: u16,
    child: Option<Child>,
}

fn postgres_bin(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL (Debian's postgresql package) is installed")
        .map(|e| e.unwrap().path())
        .collect();
    versions.sort();
    versions.last().unwrap().join("bin").join(name)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// A command running as the `postgres` user when we are root (the server refuses root).
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

impl Postgres {
    /// Creates a cluster and starts it.
    pub fn start() -> Postgres {
        Postgres::create(None)
    }

    /// Creates a cluster that takes TCP connections only over TLS, with
    /// the PEM certificate `cert` and key `key`, and starts it. Its Unix socket
    /// ([`Postgres::client`]) stays plain.
    pub fn start_tls(cert: &Path, key: &Path) -> Postgres {
        Postgres::create(Some((cert, key)))
    }

    fn create(tls: Option<(&Path, &Path)>) -> Postgres {
        let temporary = tempfile::Builder::new()
            .prefix("weir-pg")
            .tempdir()
            .unwrap();
        let dir = temporary.path().to_path_buf();
        let dir = dir.as_path();
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir)
                .status()
                .unwrap();
            assert!(status.success());
        }
        let status = as_postgres(&postgres_bin("initdb"))
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-U", "weir", "--auth=trust", "--no-sync"])
            .stdout(log_file(&dir.join("initdb.out")))
            .status()
            .unwrap();
        assert!(status.success(), "initdb failed");
        if let Some((cert, key)) = tls {
            let data = dir.join("data");
            std::fs::copy(cert, data.join("server.crt")).unwrap();
            std::fs::copy(key, data.join("server.key")).unwrap();
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )
            .unwrap();
            let mut conf = std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("postgresql.conf"))
                .unwrap();
            use std::io::Write as _;
            writeln!(conf, "ssl = on").unwrap();
            for file in ["server.crt", "server.key"] {
                let path = data.join(file);
                std::fs::set_permissions(
                    &path,
                    std::os::unix::fs::PermissionsExt::from_mode(0o600),
                )
                .unwrap();
                if is_root() {
                    let status = Command::new("chown")
                        .arg("postgres")
                        .arg(&path)
                        .status()
                        .unwrap();
                    assert!(status.success());
                }
            }
        }
        let mut postgres = Postgres {
            _temporary: temporary,
            dir: dir.to_path_buf(),
            port: free_port(),
            child: None,
        };
        postgres.resume();
        postgres
    }

    /// The TCP connection string of the `postgres` database.
    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=weir dbname=postgres",
            self.port
        )
    }

    /// The connection string over its Unix socket (plain, also with TLS).
    fn socket_url(&self) -> String {
        format!(
            "host={} port={} user=weir dbname=postgres",
            self.dir.display(),
            self.port
        )
    }

    /// Starts it again after [`Postgres::stop`].
    pub fn resume(&mut self) {
        let child = as_postgres(&postgres_bin("postgres"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(log_file(&self.dir.join("postgres.out")))
            .spawn()
            .expect("postgres runs");
        self.child = Some(child);
        wait_for_port(self.port, "postgres");
        let deadline = Instant::now() + Duration::from_secs(30);
        while postgres::Client::connect(&self.socket_url(), postgres::NoTls).is_err() {
            assert!(
                Instant::now() < deadline,
                "postgres does not take connections"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Fast shutdown (SIGINT to the postmaster), and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
                .ok()
                .and_then(|text| text.lines().next().map(str::to_owned));
            if let Some(pid) = pid {
                let _ = Command::new("kill").args(["-INT", &pid]).status();
            }
            let _ = child.wait();
        }
    }

    /// A client of the `postgres` database, over its Unix socket.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.socket_url(), postgres::NoTls).unwrap()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A plaintext listener on `IP:PORT` recording the metric path of every
/// line it receives (a carbon stand-in that shows where lines went).
pub struct LineRecorder {
    /// Where it listens.
    pub address: std::net::SocketAddr,
    /// Paths received, in order, repeats included.
    pub paths: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl LineRecorder {
    /// Listens on a free port of `ip` (any of 127.0.0.0/8).
    pub fn start(ip: &str) -> LineRecorder {
        use std::io::BufRead;
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let address = listener.local_addr().unwrap();
        let paths = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorded = paths.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let recorded = recorded.clone();
                std::thread::spawn(move || {
                    for line in std::io::BufReader::new(stream).lines() {
                        let Ok(line) = line else { return };
                        if let Some(path) = line.split_whitespace().next() {
                            recorded.lock().unwrap().push(path.to_owned());
                        }
                    }
                });
            }
        });
        LineRecorder { address, paths }
    }

    /// The distinct paths received.
    pub fn distinct(&self) -> std::collections::BTreeSet<String> {
        self.paths.lock().unwrap().iter().cloned().collect()
    }
}

/// Debian's carbon-relay with `RELAY_METHOD = consistent-hashing`,
/// relaying plaintext to `destinations` (carbon's `HOST:PORT:INSTANCE`).
pub struct CarbonRelay {
    /// Its plaintext line port.
    pub port: u16,
    child: Child,
}

impl CarbonRelay {
    /// Starts it under `dir`.
    pub fn start(
        dir: &Path,
        destinations: &[String],
        replication_factor: usize,
        hash_type: &str,
    ) -> CarbonRelay {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let conf = format!(
            "[relay]\nSTORAGE_DIR = {d}\nLOCAL_DATA_DIR = {d}\nCONF_DIR = {d}\nLOG_DIR = {d}\n\
             PID_DIR = {d}\nUSER =\nLINE_RECEIVER_INTERFACE = 127.0.0.1\nLINE_RECEIVER_PORT = {port}\n\
             PICKLE_RECEIVER_INTERFACE = 127.0.0.1\nPICKLE_RECEIVER_PORT = {}\n\
             RELAY_METHOD = consistent-hashing\nREPLICATION_FACTOR = {replication_factor}\n\
             ROUTER_HASH_TYPE = {hash_type}\n\
             DESTINATIONS = {}\nDESTINATION_PROTOCOL = line\nMAX_QUEUE_SIZE = 1000000\n\
             USE_FLOW_CONTROL = True\nCARBON_METRIC_INTERVAL = 0\n",
            free_port(),
            destinations.join(", "),
            d = dir.display()
        );
        std::fs::write(dir.join("carbon.conf"), conf).unwrap();
        std::fs::write(
            dir.join("storage-schemas.conf"),
            "[all]\npattern = .*\nretentions = 1s:2d\n",
        )
        .unwrap();
        let child = Command::new("carbon-relay")
            .arg(format!("--config={}", dir.join("carbon.conf").display()))
            .arg(format!("--pidfile={}", dir.join("relay.pid").display()))
            .args(["--nodaemon", "start"])
            .stdout(log_file(&dir.join("relay.out")))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("carbon-relay (Debian's graphite-carbon) runs");
        wait_for_port(port, "carbon-relay");
        CarbonRelay { port, child }
    }
}

impl Drop for CarbonRelay {
    fn drop(&mut self) {
        signal(&mut self.child, "KILL");
    }
}
