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
    child: Child,
    /// Listener addresses by protocol, from its start-up lines.
    pub tcp: SocketAddr,
    /// UDP address.
    pub udp: SocketAddr,
    /// HTTP address.
    pub http: SocketAddr,
    /// Unix socket, if configured.
    pub unix: Option<PathBuf>,
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

impl Weir {
    /// Starts `weir run --config <config> --data-dir <data>`, waiting until it listens.
    pub fn start(config: &str, data: &Path) -> Weir {
        std::fs::create_dir_all(data).unwrap();
        let config_path = data.with_extension("toml");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new(bin())
            .args(["run", "--config"])
            .arg(&config_path)
            .arg("--data-dir")
            .arg(data)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut addresses = HashMap::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if line.starts_with("data in") {
                break;
            }
            let mut words = line.split_whitespace().skip(1);
            if let (Some(protocol), Some(address)) = (words.next(), words.next()) {
                addresses.insert(protocol.to_owned(), address.to_owned());
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let addr = |p: &str| {
            addresses
                .get(p)
                .unwrap_or_else(|| panic!("no {p} listener in {addresses:?}"))
                .parse()
                .unwrap()
        };
        Weir {
            tcp: addr("tcp"),
            udp: addr("udp"),
            http: addr("http"),
            unix: addresses.get("unix").map(PathBuf::from),
            child,
        }
    }

    /// SIGKILL: no shutdown, no final checkpoint.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
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

    /// The value of one metric series, e.g. `weir_ingest_accepted_total{protocol="tcp"}`.
    pub fn metric(&self, series: &str) -> f64 {
        let text = reqwest::blocking::get(format!("http://{}/metrics", self.http))
            .unwrap()
            .text()
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for Weir {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every result line the file sink wrote under `data/results`.
pub fn results(data: &Path) -> Vec<Value> {
    let Ok(entries) = std::fs::read_dir(data.join("results")) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| {
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("bad result line {l:?}: {e}"))
                })
                .collect::<Vec<Value>>()
        })
        .collect()
}

/// Polls `check` until it holds or `timeout` passes; panics with `what` then.
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
