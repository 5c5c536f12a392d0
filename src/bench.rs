//! `weir bench`: a load generator in the spirit of godot's `pummel.js`.
//! It opens `--connections` TCP connections to a running weir, sends
//! generated events for `--duration` (optionally at `--rate` events/s in
//! total) in one `--protocol` (NDJSON, Graphite plaintext, StatsD lines —
//! to a listener with `aggregate = false`, one event per line —, Riemann
//! protobuf, whose answers it reads and drops, over HTTP InfluxDB lines,
//! Prometheus remote_write or OTLP protobuf, OTLP over gRPC, or
//! WebSocket messages), and reports the
//! send rate. Then it watches the target's `/metrics` until every event is
//! in the log (the protocol's `weir_ingest_accepted_total`) and until the
//! processor has taken every one, and reports both rates: events per
//! second from the first send to the last event appended, and to the last
//! processed (end to end).
//!
//! With `--kafka-ceiling BROKERS` it first measures the ceiling of a Kafka
//! deployment: a plain rdkafka producer (same batching and compression as
//! weir's) sends the same events to a scratch topic of the same broker for
//! the same duration, so the pipeline's rate can be read against it.
//! `--rounds N` repeats ceiling and pipeline N times, each pair measured
//! back to back, and reports every round's ratio and their median: on a
//! shared host whose speed drifts, a pair close in time is the fair
//! comparison. `--godot` does the same against godot 0.7.10's own server
//! with a counting reactor, started from npm and fed by the same
//! generator, so the side-by-side figure is one command.

use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::send::parse_duration;

/// Arguments of `weir bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// TCP address of the weir under test's `--protocol` listener.
    #[arg(long, default_value = "127.0.0.1:9876")]
    target: String,
    /// The wire protocol to send.
    #[arg(long, value_enum, default_value_t = WireProtocol::Ndjson)]
    protocol: WireProtocol,
    /// HTTP address of its /metrics.
    #[arg(long, default_value = "127.0.0.1:9877")]
    metrics: String,
    /// Parallel producer connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// How long to send.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Total events per second across connections (default: as fast as possible).
    #[arg(long)]
    rate: Option<u64>,
    /// Distinct hosts in the generated events.
    #[arg(long, default_value_t = 1000)]
    hosts: usize,
    /// First measure a plain rdkafka producer against these brokers.
    #[arg(long, value_name = "BROKERS")]
    kafka_ceiling: Option<String>,
    /// Then wait for this sink to store one result per event sent and
    /// report its rate (use a config whose reactors emit one result per event).
    #[arg(long, value_name = "NAME")]
    sink: Option<String>,
    /// First measure godot 0.7.10's own server (from npm) with a counting
    /// reactor, fed by the same generator, and report weir ÷ godot.
    #[arg(long)]
    godot: bool,
    /// The node_modules holding godot, for `--godot`.
    #[arg(long, default_value = "tests/godot/node_modules")]
    godot_modules: PathBuf,
    /// How long godot's server may take to start listening, for `--godot`.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    godot_start_timeout: Duration,
    /// Measure this many times (with `--kafka-ceiling` or `--godot`: the
    /// comparison, then weir, each round).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
}

/// The protocols `weir bench` speaks.
#[derive(Debug, Clone, Copy, PartialEq, clap::ValueEnum)]
pub enum WireProtocol {
    /// godot's NDJSON (`[ingest.tcp]`).
    Ndjson,
    /// Graphite plaintext (`[ingest.graphite]`).
    Graphite,
    /// StatsD gauges (`[ingest.statsd]` with `aggregate = false`).
    Statsd,
    /// Riemann protobuf, 512 events per message (`[ingest.riemann]`).
    Riemann,
    /// InfluxDB line protocol, 512 lines per `POST /write` (the HTTP
    /// listener's address as `--target`).
    Influx,
    /// Prometheus remote_write, 512 samples per `POST /api/v1/write`.
    RemoteWrite,
    /// OTLP/HTTP protobuf, 512 gauge points per `POST /v1/metrics`.
    Otlp,
    /// OTLP over gRPC, 512 gauge points per `MetricsService/Export` (the
    /// `[ingest.otlp_grpc]` address as `--target`).
    OtlpGrpc,
    /// WebSocket, 512 events per JSON message on `GET /ws`, each answered
    /// before the next is sent.
    Websocket,
}

/// Where a producer writes: a TCP stream, HTTP requests, or WebSocket
/// messages.
enum Sender {
    Stream(TcpStream),
    Http(reqwest::blocking::Client, String),
    Socket(Box<tungstenite::WebSocket<TcpStream>>),
}

impl Sender {
    fn connect(target: &str, protocol: WireProtocol) -> anyhow::Result<Sender> {
        let path = match protocol {
            WireProtocol::Influx => Some("/write"),
            WireProtocol::RemoteWrite => Some("/api/v1/write"),
            WireProtocol::Otlp => Some("/v1/metrics"),
            WireProtocol::OtlpGrpc => {
                Some("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export")
            }
            _ => None,
        };
        if let Some(path) = path {
            let mut client = reqwest::blocking::Client::builder();
            if protocol == WireProtocol::OtlpGrpc {
                client = client.http2_prior_knowledge();
            }
            let client = client.build()?;
            return Ok(Sender::Http(client, format!("http://{target}{path}")));
        }
        let stream =
            TcpStream::connect(target).with_context(|| format!("connecting to {target}"))?;
        if protocol == WireProtocol::Websocket {
            let url = format!("ws://{target}/ws");
            let (socket, _) = tungstenite::client(url.as_str(), stream)
                .map_err(|e| anyhow::anyhow!("WebSocket handshake with {url}: {e}"))?;
            return Ok(Sender::Socket(Box::new(socket)));
        }
        if protocol == WireProtocol::Riemann {
            // Every message is answered: read the answers so the server
            // never waits on a full socket.
            let mut answers = stream.try_clone()?;
            std::thread::spawn(move || std::io::copy(&mut answers, &mut std::io::sink()));
        }
        Ok(Sender::Stream(stream))
    }

    fn send(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        match self {
            Sender::Stream(stream) => stream.write_all(chunk),
            Sender::Http(client, url) => {
                let response = client.post(url.as_str()).body(chunk.to_vec()).send();
                match response.map(|r| r.status()) {
                    Ok(status) if status.is_success() => Ok(()),
                    Ok(status) => Err(std::io::Error::other(format!("{url} answered {status}"))),
                    Err(error) => Err(std::io::Error::other(error)),
                }
            }
            Sender::Socket(socket) => {
                let text = String::from_utf8_lossy(chunk).into_owned();
                socket
                    .send(tungstenite::Message::text(text))
                    .map_err(std::io::Error::other)?;
                // The answer comes once the events are in the log.
                socket.read().map(drop).map_err(std::io::Error::other)
            }
        }
    }
}

impl WireProtocol {
    /// Its `protocol` label in `weir_ingest_accepted_total` over TCP.
    fn label(self) -> &'static str {
        match self {
            WireProtocol::Ndjson => "tcp",
            WireProtocol::Graphite => "graphite",
            WireProtocol::Statsd => "statsd-tcp",
            WireProtocol::Riemann => "riemann",
            WireProtocol::Influx => "influx",
            WireProtocol::RemoteWrite => "remote_write",
            WireProtocol::Otlp => "otlp",
            WireProtocol::OtlpGrpc => "otlp-grpc",
            WireProtocol::Websocket => "websocket",
        }
    }
}

/// Events written per socket write.
const EVENTS_PER_WRITE: usize = 512;

/// Runs the benchmark and prints its report.
pub fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let (mut of_ceiling, mut over_godot) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        if args.rounds > 1 {
            println!("round     {round}/{}", args.rounds);
        }
        let ceiling = match &args.kafka_ceiling {
            Some(brokers) => {
                let ceiling = kafka_ceiling(brokers, &args)?;
                println!("ceiling   plain rdkafka producer: {ceiling:.0} events/s");
                Some(ceiling)
            }
            None => None,
        };
        let godot = if args.godot {
            let godot = godot(&args)?;
            println!("godot     0.7.10 server, counting reactor: {godot:.0} events/s");
            Some(godot)
        } else {
            None
        };
        let end_to_end = pipeline(&args)?;
        if let Some(ceiling) = ceiling {
            let ratio = end_to_end / ceiling;
            println!("ratio     {:.0} % of the ceiling", ratio * 100.0);
            of_ceiling.push(ratio);
        }
        if let Some(godot) = godot {
            let ratio = end_to_end / godot;
            println!("ratio     weir {ratio:.2}× godot");
            over_godot.push(ratio);
        }
    }
    if let Some((median, low, high)) = median(&mut of_ceiling) {
        let rounds = of_ceiling.len();
        println!(
            "median    {:.0} % of the ceiling over {rounds} rounds ({:.0}–{:.0} %)",
            median * 100.0,
            low * 100.0,
            high * 100.0
        );
    }
    if let Some((median, low, high)) = median(&mut over_godot) {
        let rounds = over_godot.len();
        println!("median    weir {median:.2}× godot over {rounds} rounds ({low:.2}–{high:.2}×)");
    }
    Ok(())
}

/// godot's server (`src/bench_godot.js`), killed when dropped.
struct GodotServer(std::process::Child);

impl Drop for GodotServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port free on loopback now.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts godot 0.7.10's server with a counting reactor, sends it the
/// generator's events for `args.duration` over NDJSON, and waits until
/// its reactor counted every one; its rate in events per second.
fn godot(args: &BenchArgs) -> anyhow::Result<f64> {
    if args.protocol != WireProtocol::Ndjson {
        bail!("--godot compares over NDJSON, godot's protocol");
    }
    let modules = std::fs::canonicalize(&args.godot_modules).with_context(|| {
        format!(
            "godot's node_modules at {} (npm install --prefix tests/godot)",
            args.godot_modules.display()
        )
    })?;
    let (tcp, http) = (free_port()?, free_port()?);
    let mut child = std::process::Command::new("node")
        .args(["-e", include_str!("bench_godot.js")])
        .env("NODE_PATH", &modules)
        .env("GODOT_TCP_PORT", tcp.to_string())
        .env("GODOT_HTTP_PORT", http.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting node (godot's server)")?;
    let stdout = child.stdout.take();
    let _server = GodotServer(child);
    // Read on a thread, so a node that hangs before listening fails the
    // bench instead of holding it (dropping the server kills node, which
    // ends the read).
    let (said, first_line) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        if let Some(stdout) = stdout {
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
        }
        let _ = said.send(line);
    });
    match first_line.recv_timeout(args.godot_start_timeout) {
        Ok(line) if line.trim() == "listening" => {}
        Ok(_) => bail!("godot's server did not start (see its output above)"),
        Err(_) => bail!(
            "godot's server did not say it was listening within {:?} (--godot-start-timeout)",
            args.godot_start_timeout
        ),
    }
    let count_url = format!("http://127.0.0.1:{http}/");
    let counted = || -> anyhow::Result<u64> {
        let text = reqwest::blocking::get(&count_url)
            .and_then(|r| r.text())
            .with_context(|| format!("asking godot's count at {count_url}"))?;
        Ok(text.trim().parse()?)
    };
    let (total, started) = send(args, &format!("127.0.0.1:{tcp}"), "godot")?;
    wait_for_count(&format!("godot counting {total} events"), total, counted)?;
    let secs = started.elapsed().as_secs_f64();
    println!("counted   {total} events in {secs:.2}s by godot's reactor");
    Ok(total as f64 / secs)
}

/// The median of several rounds' ratios with the lowest and highest;
/// `None` for fewer than two.
fn median(ratios: &mut [f64]) -> Option<(f64, f64, f64)> {
    if ratios.len() < 2 {
        return None;
    }
    ratios.sort_by(f64::total_cmp);
    let middle = ratios.len() / 2;
    let median = match ratios.len() % 2 {
        1 => ratios[middle],
        _ => (ratios[middle - 1] + ratios[middle]) / 2.0,
    };
    Some((median, ratios[0], ratios[ratios.len() - 1]))
}

/// Sends for `args.duration`, waits until the target processed every
/// event (and its sink stored them, with `--sink`), prints the rates;
/// the end-to-end rate in events per second.
fn pipeline(args: &BenchArgs) -> anyhow::Result<f64> {
    let processed = |metrics: &str| counter(metrics, "weir_processor_events_total");
    let stored_series = args
        .sink
        .as_ref()
        .map(|name| format!("weir_storage_written_total{{sink=\"{name}\"}}"));
    let accepted_series = format!(
        "weir_ingest_accepted_total{{protocol=\"{}\"}}",
        args.protocol.label()
    );
    let appended = |metrics: &str| counter(metrics, &accepted_series);
    let appended_before = appended(&args.metrics)?;
    let before = processed(&args.metrics)?;
    let stored_before = match &stored_series {
        Some(series) => counter(&args.metrics, series)?,
        None => 0,
    };
    let (total, started) = send(args, &args.target, "weir")?;
    let what = format!("appending {total} events");
    wait_for_count(&what, total, || {
        Ok(appended(&args.metrics)?.saturating_sub(appended_before))
    })?;
    let appending_secs = started.elapsed().as_secs_f64();
    println!(
        "appended  {total} events in {appending_secs:.2}s: {:.0} events/s into the log ({:?})",
        total as f64 / appending_secs,
        args.protocol
    );
    let what = format!("processing {total} events");
    wait_for_count(&what, total, || {
        Ok(processed(&args.metrics)?.saturating_sub(before))
    })?;
    let processing_secs = started.elapsed().as_secs_f64();
    let end_to_end = total as f64 / processing_secs;
    println!(
        "processed {total} events in {processing_secs:.2}s: {end_to_end:.0} events/s end to end"
    );
    if let (Some(name), Some(series)) = (&args.sink, &stored_series) {
        let what = format!("storing {total} results into sink {name}");
        wait_for_count(&what, total, || {
            Ok(counter(&args.metrics, series)?.saturating_sub(stored_before))
        })?;
        let stored = started.elapsed().as_secs_f64();
        println!(
            "stored    {total} results in {stored:.2}s: {:.0} results/s into sink {name}",
            total as f64 / stored
        );
    }
    Ok(end_to_end)
}

/// Sends the generator's events to `target` (`name` in the report) over
/// `args.connections` for `args.duration`; how many, and when it began.
fn send(args: &BenchArgs, target: &str, name: &str) -> anyhow::Result<(u64, Instant)> {
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut producers = Vec::new();
    for connection in 0..args.connections {
        let mut sender = Sender::connect(target, args.protocol)?;
        let (sent, stop) = (sent.clone(), stop.clone());
        let (hosts, protocol) = (args.hosts, args.protocol);
        let per_connection = args.rate.map(|r| r as f64 / args.connections as f64);
        producers.push(std::thread::spawn(move || -> std::io::Result<()> {
            let mut chunk = Vec::with_capacity(EVENTS_PER_WRITE * 160);
            let mut n = 0u64;
            let mut chunk_second = 0;
            let begun = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if let Some(rate) = per_connection {
                    let due = begun.elapsed().as_secs_f64() * rate;
                    if (n as f64) >= due {
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                }
                // Regenerate the payload once a second (fresh event times);
                // formatting every event would make the client the bottleneck.
                let second = begun.elapsed().as_secs();
                if chunk.is_empty() || second != chunk_second {
                    chunk_second = second;
                    chunk = payload(connection, hosts, protocol);
                }
                sender.send(&chunk)?;
                n += EVENTS_PER_WRITE as u64;
                sent.fetch_add(EVENTS_PER_WRITE as u64, Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    let bar = ProgressBar::new(args.duration.as_secs());
    bar.set_style(
        ProgressStyle::with_template("sending {bar:30} {pos}/{len}s {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    while started.elapsed() < args.duration {
        std::thread::sleep(Duration::from_millis(250));
        bar.set_position(started.elapsed().as_secs());
        let rate = sent.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
        bar.set_message(format!("{rate:.0} events/s sent"));
    }
    stop.store(true, Ordering::Relaxed);
    for producer in producers {
        producer
            .join()
            .map_err(|_| anyhow::anyhow!("a producer panicked"))??;
    }
    let send_secs = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let total = sent.load(Ordering::Relaxed);
    println!(
        "sent      {total} events in {send_secs:.2}s: {:.0} events/s to {name}",
        total as f64 / send_secs
    );
    Ok((total, started))
}

/// Shows `count()` rising to `total` on a progress bar; an error if it
/// stops rising for 30 s.
fn wait_for_count(
    what: &str,
    total: u64,
    mut count: impl FnMut() -> anyhow::Result<u64>,
) -> anyhow::Result<()> {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg} {bar:30} {pos}/{len}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_owned());
    let (mut last, mut last_change) = (0, Instant::now());
    loop {
        let done = count()?;
        bar.set_position(done.min(total));
        if done >= total {
            break;
        }
        if done != last {
            (last, last_change) = (done, Instant::now());
        } else if last_change.elapsed() > Duration::from_secs(30) {
            bail!("{what}: stalled at {done}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bar.finish_and_clear();
    Ok(())
}

/// The sum of the target's metric lines starting with `series`.
fn counter(metrics: &str, series: &str) -> anyhow::Result<u64> {
    let url = format!("http://{metrics}/metrics");
    let text = reqwest::blocking::get(&url)
        .and_then(|r| r.text())
        .with_context(|| format!("reading {url}"))?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

/// `EVENTS_PER_WRITE` generated events for producer `connection`, stamped
/// now, written in `protocol`.
fn payload(connection: usize, hosts: usize, protocol: WireProtocol) -> Vec<u8> {
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let host = |i: usize| (connection * EVENTS_PER_WRITE + i) % hosts;
    let lines = |line: &dyn Fn(usize) -> String| -> Vec<u8> {
        (0..EVENTS_PER_WRITE)
            .flat_map(|i| (line(i) + "\n").into_bytes())
            .collect()
    };
    match protocol {
        WireProtocol::Ndjson => lines(&|i| {
            format!(
                r#"{{"host":"bench-{}","service":"bench/load","state":"ok","time":{time:.3},"metric":{},"ttl":60,"tags":["bench"]}}"#,
                host(i),
                i % 100
            )
        }),
        WireProtocol::Graphite => {
            lines(&|i| format!("bench-{}.bench.load {} {time:.0}", host(i), i % 100))
        }
        WireProtocol::Statsd => {
            lines(&|i| format!("bench.load:{}|g|#host:bench-{}", i % 100, host(i)))
        }
        WireProtocol::Influx => lines(&|i| {
            let millis = (time * 1000.0) as u64;
            format!("bench,host=bench-{} load={} {millis}", host(i), i % 100)
        }),
        WireProtocol::Websocket => {
            let events: Vec<String> = (0..EVENTS_PER_WRITE)
                .map(|i| {
                    format!(
                        r#"{{"host":"bench-{}","service":"bench/load","time":{time:.3},"metric":{}}}"#,
                        host(i),
                        i % 100
                    )
                })
                .collect();
            format!(r#"{{"type":"metric","events":[{}]}}"#, events.join(",")).into_bytes()
        }
        WireProtocol::Riemann
        | WireProtocol::RemoteWrite
        | WireProtocol::Otlp
        | WireProtocol::OtlpGrpc => {
            let events: Vec<weir_event::Event> = (0..EVENTS_PER_WRITE)
                .map(|i| weir_event::Event {
                    host: format!("bench-{}", host(i)),
                    service: Some("bench_load".into()),
                    state: Some("ok".into()),
                    time,
                    metric: Some((i % 100) as f64),
                    ttl: Some(60.0),
                    tags: vec!["bench".into()],
                    ..weir_event::Event::default()
                })
                .collect();
            match protocol {
                WireProtocol::RemoteWrite => weir_ingest::remote_write::encode(&events),
                WireProtocol::Otlp => weir_ingest::otlp::encode(&events),
                WireProtocol::OtlpGrpc => {
                    // One uncompressed, length-prefixed gRPC message.
                    let message = weir_ingest::otlp::encode(&events);
                    let mut framed = vec![0];
                    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
                    framed.extend_from_slice(&message);
                    framed
                }
                _ => weir_ingest::riemann::framed_message(&events),
            }
        }
    }
}

/// Events per second a plain rdkafka producer delivers to `brokers` for
/// `args.duration`, counted once the broker acknowledged them.
fn kafka_ceiling(brokers: &str, args: &BenchArgs) -> anyhow::Result<f64> {
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    use weir_log::{KafkaConfig, KafkaLog, Log};

    const TOPIC: &str = "weir.bench.ceiling";
    let settings = KafkaConfig::default();
    KafkaLog::connect(brokers, &settings)?.create_topic(TOPIC, 8, false)?;
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", settings.linger_ms.to_string())
        .set("compression.type", &settings.compression)
        .set("queue.buffering.max.messages", "1000000")
        .set("batch.num.messages", "100000")
        .create()
        .context("creating the ceiling producer")?;
    let payload = payload(0, args.hosts, WireProtocol::Ndjson);
    let lines: Vec<&[u8]> = payload
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .collect();
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < args.duration {
        for (i, line) in lines.iter().enumerate() {
            let key = format!("bench-{}", i % args.hosts);
            let mut record = BaseRecord::to(TOPIC).key(&key).payload(*line);
            while let Err((error, back)) = producer.send(record) {
                if error.rdkafka_error_code() != Some(rdkafka::types::RDKafkaErrorCode::QueueFull) {
                    bail!("ceiling producer: {error}");
                }
                record = back;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        sent += lines.len() as u64;
    }
    producer
        .flush(Duration::from_secs(120))
        .context("flushing the ceiling producer")?;
    Ok(sent as f64 / started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_round_is_reported_with_the_range() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [0.5]), None);
        assert_eq!(median(&mut [0.71, 0.52, 0.6]), Some((0.6, 0.52, 0.71)));
        // An even count: the mean of the two middle rounds.
        let (median, low, high) = median(&mut [0.4, 0.8, 0.5, 0.7]).unwrap();
        assert!((median - 0.6).abs() < 1e-12 && low == 0.4 && high == 0.8);
    }
}
