//! `weir send`: godot's producer. Sends one event, or the same event every
//! `--every` (a heartbeat), over TCP, UDP, a Unix socket or HTTP.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Map, Value};

/// Arguments of `weir send`.
#[derive(Args)]
pub struct SendArgs {
    /// Where to send: tcp://HOST:PORT, udp://HOST:PORT, unix:///PATH or http://HOST:PORT.
    #[arg(long, default_value = "tcp://127.0.0.1:9876")]
    to: String,
    /// The event's host (default: this machine's hostname).
    #[arg(long)]
    host: Option<String>,
    /// The event's service.
    #[arg(long)]
    service: Option<String>,
    /// The event's state.
    #[arg(long)]
    state: Option<String>,
    /// The event's metric.
    #[arg(long)]
    metric: Option<f64>,
    /// Seconds the event is valid for.
    #[arg(long)]
    ttl: Option<f64>,
    /// Free text.
    #[arg(long)]
    description: Option<String>,
    /// A tag (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// A meta entry KEY=VALUE (repeatable; VALUE is JSON if it parses, else a string).
    #[arg(long = "meta")]
    meta: Vec<String>,
    /// The event's data type.
    #[arg(long = "type")]
    kind: Option<String>,
    /// Repeat every DURATION (e.g. 15s) until interrupted.
    #[arg(long, value_parser = parse_duration)]
    every: Option<Duration>,
    /// Stop after this many events (with --every).
    #[arg(long)]
    count: Option<u64>,
}

/// Parses `500ms`, `15s`, `5m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 15s"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" | "" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?} (use ms, s, m or h)"
            ))
        }
    };
    Ok(Duration::from_secs_f64(seconds))
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl SendArgs {
    fn event(&self) -> anyhow::Result<Value> {
        let time = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
        let mut event = Map::new();
        event.insert(
            "host".into(),
            json!(self.host.clone().unwrap_or_else(hostname)),
        );
        event.insert("time".into(), json!(time));
        let optional = [
            ("service", self.service.as_ref().map(|s| json!(s))),
            ("state", self.state.as_ref().map(|s| json!(s))),
            ("metric", self.metric.map(|m| json!(m))),
            ("ttl", self.ttl.map(|t| json!(t))),
            ("description", self.description.as_ref().map(|s| json!(s))),
            ("type", self.kind.as_ref().map(|s| json!(s))),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                event.insert(key.into(), value);
            }
        }
        if !self.tags.is_empty() {
            event.insert("tags".into(), json!(self.tags));
        }
        if !self.meta.is_empty() {
            let mut meta = Map::new();
            for entry in &self.meta {
                let (key, value) = entry
                    .split_once('=')
                    .with_context(|| format!("--meta {entry:?} is not KEY=VALUE"))?;
                let value = serde_json::from_str(value).unwrap_or_else(|_| json!(value));
                meta.insert(key.into(), value);
            }
            event.insert("meta".into(), Value::Object(meta));
        }
        Ok(Value::Object(event))
    }
}

/// Sends the event once or repeatedly.
pub fn send(args: SendArgs) -> anyhow::Result<()> {
    let mut sent = 0u64;
    loop {
        let line = format!("{}\n", args.event()?);
        deliver(&args.to, &line)?;
        sent += 1;
        let Some(every) = args.every else { break };
        if args.count.is_some_and(|count| sent >= count) {
            break;
        }
        std::thread::sleep(every);
    }
    eprintln!("sent {sent} event(s) to {}", args.to);
    Ok(())
}

fn deliver(to: &str, line: &str) -> anyhow::Result<()> {
    if let Some(addr) = to.strip_prefix("tcp://") {
        let mut stream =
            std::net::TcpStream::connect(addr).with_context(|| format!("connecting to {to}"))?;
        stream.write_all(line.as_bytes())?;
    } else if let Some(addr) = to.strip_prefix("udp://") {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
        socket
            .send_to(line.as_bytes(), addr)
            .with_context(|| format!("sending to {to}"))?;
    } else if let Some(path) = to.strip_prefix("unix://") {
        let mut stream = std::os::unix::net::UnixStream::connect(path)
            .with_context(|| format!("connecting to {to}"))?;
        stream.write_all(line.as_bytes())?;
    } else if to.starts_with("http://") {
        let url = format!("{}/events", to.trim_end_matches('/'));
        let response = reqwest::blocking::Client::new()
            .post(&url)
            .body(line.to_owned())
            .send()
            .with_context(|| format!("posting to {url}"))?;
        if !response.status().is_success() {
            bail!(
                "{url} answered {}: {}",
                response.status(),
                response.text().unwrap_or_default()
            );
        }
    } else {
        bail!("--to {to:?} must start with tcp://, udp://, unix:// or http://");
    }
    Ok(())
}
