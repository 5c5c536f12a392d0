//! The Graphite sink: carbon plaintext (`PATH VALUE TIMESTAMP\n`) to one
//! or more destinations, with polymur's guarantees.
//!
//! - **round-robin**: one consumer group; each line goes to the next
//!   destination in the pool with room in its queue (`queue_cap`), so a
//!   slow destination gets less and never stalls the rest. A destination
//!   that fails `max_failures` connects in a row leaves the pool and its
//!   queued and unconfirmed lines go to the others; it rejoins when it
//!   connects again.
//! - **broadcast**: every destination gets every line. Each destination
//!   is its own consumer group (`weir.sink.NAME.ADDRESS`) with its own
//!   position in the results log, so a dead destination only falls
//!   behind (its lag shows it) while the others go on, and it catches up
//!   from the log when it returns — nothing is dropped.
//!
//! A line counts as delivered (and the consumer may commit past it) once
//! it was written and the connection was still open 50 ms later: a write
//! into a socket whose peer has gone is seen at the next check and the
//! line is sent again. Carbon plaintext has no acknowledgements, and a
//! carbon that stops drops what it received but had not read yet, so the
//! lines of the last 2 seconds are also sent again after a break. Carbon
//! keeps one value per timestamp: a line sent twice is absorbed.
//!
//! Destinations are listed, added and removed at runtime
//! ([`Graphite::destinations`], [`Graphite::add`], [`Graphite::remove`]);
//! the set is persisted in `STATE_DIR/NAME.destinations.json` and wins
//! over the config at the next start.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufWriter, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus::IntGauge;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use weir_event::ResultRecord;

use crate::consumer::{spawn_consumers, start_at_end, Source, StorageError};
use crate::metrics::{
    DESTINATION_DROPPED, DESTINATION_QUEUED, DESTINATION_RECONNECTS, DESTINATION_SENT, SKIPPED,
};
use crate::sink::{DeadLetters, RecordSink, Route, Routed};

/// How lines are spread over the destinations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Distribution {
    /// Every destination gets every line.
    Broadcast,
    /// Each line goes to one destination, in turn.
    RoundRobin,
}

/// `type = "graphite"` options.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GraphiteConfig {
    /// Carbon plaintext listeners, `HOST:PORT`.
    pub destinations: Vec<String>,
    /// `broadcast` or `round-robin`.
    pub distribution: Distribution,
    /// Lines a destination holds before the pool passes it over (and, in
    /// broadcast, before its consumer waits).
    pub queue_cap: usize,
    /// The metric path: `{host}`, `{service}`, `{state}`, `{type}`,
    /// `{reactor}` and `{meta.KEY}` are replaced by the result's field,
    /// with every character but `[A-Za-z0-9_-]` turned into `_`.
    pub template: String,
    /// Failed connects in a row after which a round-robin destination
    /// leaves the pool.
    pub max_failures: u32,
    /// First reconnect delay; doubled per failure up to 10 s.
    pub backoff_ms: u64,
    /// Connect timeout.
    pub connect_timeout_ms: u64,
    /// Most destinations the admin API may give the sink (each runs
    /// its own writer, and in broadcast its own consumers).
    pub max_destinations: usize,
}

impl Default for GraphiteConfig {
    fn default() -> Self {
        GraphiteConfig {
            destinations: vec!["127.0.0.1:2003".into()],
            distribution: Distribution::Broadcast,
            queue_cap: 4096,
            template: "{host}.{service}".into(),
            max_failures: 3,
            backoff_ms: 500,
            connect_timeout_ms: 2000,
            max_destinations: 16,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Host,
    Service,
    State,
    Type,
    Reactor,
    Meta(String),
}

/// A parsed path template.
#[derive(Debug, Clone)]
pub struct Template(Vec<Part>);

impl Template {
    /// Parses `text`, refusing unknown `{fields}` and unclosed braces.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("template {text:?}: unclosed {{"))?;
            let field = &rest[open + 1..open + close];
            parts.push(match field {
                "host" => Part::Host,
                "service" => Part::Service,
                "state" => Part::State,
                "type" => Part::Type,
                "reactor" => Part::Reactor,
                _ => match field.strip_prefix("meta.") {
                    Some(key) if !key.is_empty() => Part::Meta(key.to_owned()),
                    _ => return Err(format!("template {text:?}: unknown field {{{field}}}")),
                },
            });
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template(parts))
    }

    /// The metric path of `record`, or which field it lacks.
    pub fn render(&self, record: &ResultRecord) -> Result<String, String> {
        let event = &record.event;
        let mut path = String::new();
        for part in &self.0 {
            let (name, value) = match part {
                Part::Text(text) => {
                    path.push_str(text);
                    continue;
                }
                Part::Host => ("host", Some(event.host.as_str())),
                Part::Service => ("service", event.service.as_deref()),
                Part::State => ("state", event.state.as_deref()),
                Part::Type => ("type", event.kind.as_deref()),
                Part::Reactor => ("reactor", Some(record.id.reactor.as_str())),
                Part::Meta(key) => {
                    let value = event.meta.get(key);
                    let text = match value {
                        Some(Value::String(s)) => Some(s.clone()),
                        Some(Value::Null) | None => None,
                        Some(other) => Some(other.to_string()),
                    };
                    match text {
                        Some(text) if !text.is_empty() => {
                            escape_into(&mut path, &text);
                            continue;
                        }
                        _ => return Err(format!("the path template needs meta.{key}")),
                    }
                }
            };
            match value {
                Some(value) if !value.is_empty() => escape_into(&mut path, value),
                _ => return Err(format!("the path template needs {name}")),
            }
        }
        Ok(path)
    }
}

fn escape_into(path: &mut String, value: &str) {
    path.extend(value.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
            c
        } else {
            '_'
        }
    }));
}

/// Counts a handler's lines not yet delivered, so its flush can wait.
#[derive(Default)]
struct Pending {
    count: Mutex<usize>,
    settled: Condvar,
}

impl Pending {
    fn add(&self) {
        *lock(&self.count) += 1;
    }

    fn settle(&self) {
        let mut count = lock(&self.count);
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.settled.notify_all();
        }
    }

    /// Waits until every line is settled; false if `stop` came first.
    fn wait(&self, stop: &AtomicBool) -> bool {
        let mut count = lock(&self.count);
        while *count > 0 {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            count = self
                .settled
                .wait_timeout(count, Duration::from_millis(100))
                .map(|(guard, _)| guard)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        true
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

struct Line {
    text: Box<[u8]>,
    pending: Arc<Pending>,
}

/// How long a written line waits for the peer to prove alive before it
/// counts as delivered (a reset from a vanished peer arrives well within).
const CONFIRM_AFTER: Duration = Duration::from_millis(50);

/// How long delivered lines are kept to be sent again after a break
/// (carbon keeps one value per timestamp, so a repeat is absorbed).
const RESEND_WINDOW: Duration = Duration::from_secs(2);

/// At most this many delivered lines are kept to be sent again.
const RESEND_MAX_LINES: usize = 1 << 16;

/// One carbon listener and the lines waiting for it.
struct Destination {
    address: String,
    queue: Mutex<VecDeque<Line>>,
    arrived: Condvar,
    in_pool: AtomicBool,
    connected: AtomicBool,
    removed: AtomicBool,
    sink: String,
    /// `weir_graphite_queued` of this destination, looked up once.
    queued_gauge: IntGauge,
}

impl Destination {
    fn labels(&self) -> [&str; 2] {
        [&self.sink, &self.address]
    }

    fn push(&self, line: Line) {
        let mut queue = lock(&self.queue);
        queue.push_back(line);
        self.queued_gauge.set(queue.len() as i64);
        self.arrived.notify_one();
    }

    /// Puts lines back at the head of the queue, in their order.
    fn push_front(&self, lines: Vec<Line>) {
        let mut queue = lock(&self.queue);
        for line in lines.into_iter().rev() {
            queue.push_front(line);
        }
        self.queued_gauge.set(queue.len() as i64);
    }

    /// Up to `max` lines, waiting up to `wait` for the first.
    fn take(&self, max: usize, wait: Duration) -> Vec<Line> {
        let mut queue = lock(&self.queue);
        if queue.is_empty() {
            queue = self
                .arrived
                .wait_timeout(queue, wait)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        let n = queue.len().min(max);
        let lines: Vec<Line> = queue.drain(..n).collect();
        self.queued_gauge.set(queue.len() as i64);
        lines
    }

    fn drain(&self) -> Vec<Line> {
        let lines = lock(&self.queue).drain(..).collect();
        self.queued_gauge.set(0);
        lines
    }

    fn queued(&self) -> usize {
        lock(&self.queue).len()
    }
}

/// Settings a pool's writers share.
#[derive(Clone)]
struct Writing {
    queue_cap: usize,
    max_failures: u32,
    backoff: Duration,
    connect_timeout: Duration,
}

/// Destinations fed by one consumer group.
struct Pool {
    sink: String,
    round_robin: bool,
    writing: Writing,
    destinations: Mutex<Vec<Arc<Destination>>>,
    next: AtomicUsize,
    /// Set when the pool's consumers and writers are to stop.
    stop: Arc<AtomicBool>,
    writers: Mutex<Vec<JoinHandle<()>>>,
}

impl Pool {
    fn new(sink: &str, round_robin: bool, writing: Writing) -> Arc<Pool> {
        Arc::new(Pool {
            sink: sink.to_owned(),
            round_robin,
            writing,
            destinations: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
            stop: Arc::new(AtomicBool::new(false)),
            writers: Mutex::new(Vec::new()),
        })
    }

    fn add(self: &Arc<Self>, address: &str) -> Result<(), StorageError> {
        let queued_gauge = DESTINATION_QUEUED.with_label_values(&[&self.sink, address]);
        let destination = Arc::new(Destination {
            queued_gauge,
            address: address.to_owned(),
            queue: Mutex::new(VecDeque::new()),
            arrived: Condvar::new(),
            in_pool: AtomicBool::new(true),
            connected: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            sink: self.sink.clone(),
        });
        lock(&self.destinations).push(destination.clone());
        let pool = self.clone();
        let writer = std::thread::Builder::new()
            .name(format!("weir-graphite-{address}"))
            .spawn(move || pool.write(&destination))
            .map_err(|source| StorageError::Io {
                what: "spawn graphite writer",
                path: Default::default(),
                source,
            })?;
        lock(&self.writers).push(writer);
        Ok(())
    }

    /// Takes `address` out; its lines go to the others (round-robin) or
    /// are dropped (broadcast, where the destination's group stops).
    fn remove(&self, address: &str) -> bool {
        let mut destinations = lock(&self.destinations);
        let Some(at) = destinations.iter().position(|d| d.address == address) else {
            return false;
        };
        let destination = destinations.remove(at);
        drop(destinations);
        destination.removed.store(true, Ordering::Relaxed);
        destination.in_pool.store(false, Ordering::Relaxed);
        destination.arrived.notify_all();
        true
    }

    /// Queues `line` on the next destination in the pool with room; waits
    /// while every one is full (or none is in the pool).
    fn enqueue(&self, line: Line) -> Result<(), StorageError> {
        loop {
            {
                let destinations = lock(&self.destinations);
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                let n = destinations.len();
                let with_room = (0..n).map(|i| &destinations[(start + i) % n]).find(|d| {
                    d.in_pool.load(Ordering::Relaxed) && d.queued() < self.writing.queue_cap
                });
                if let Some(destination) = with_room {
                    destination.push(line);
                    return Ok(());
                }
            }
            if self.stop.load(Ordering::Relaxed) {
                return Err(self.stopping());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn stopping(&self) -> StorageError {
        StorageError::Sink {
            sink: self.sink.clone(),
            detail: "stopping".into(),
        }
    }

    /// Lines a destination gives up: to the rest of the pool, or dropped.
    fn hand_back(&self, from: &Destination, lines: Vec<Line>) {
        if lines.is_empty() {
            return;
        }
        if self.round_robin && !self.stop.load(Ordering::Relaxed) {
            tracing::info!(sink = %self.sink, destination = %from.address, lines = lines.len(), "handing lines to the rest of the pool");
            for line in lines {
                if self.enqueue(line).is_err() {
                    return;
                }
            }
        } else {
            DESTINATION_DROPPED
                .with_label_values(&from.labels())
                .inc_by(lines.len() as u64);
            for line in lines {
                line.pending.settle();
            }
        }
    }

    /// Whether another destination than `this` is in the pool.
    fn others_in_pool(&self, this: &Destination) -> bool {
        lock(&self.destinations)
            .iter()
            .any(|d| d.address != this.address && d.in_pool.load(Ordering::Relaxed))
    }

    /// The writer of one destination, until it is removed or the pool stops.
    fn write(&self, destination: &Destination) {
        let labels = destination.labels();
        let sent = DESTINATION_SENT.with_label_values(&labels);
        let reconnects = DESTINATION_RECONNECTS.with_label_values(&labels);
        let mut stream: Option<BufWriter<TcpStream>> = None;
        // Batches written, with when: delivered once the peer outlived them.
        let mut unconfirmed: VecDeque<(Instant, Vec<Line>)> = VecDeque::new();
        // Batches delivered lately, sent again if the connection breaks:
        // a peer that closes drops what it had received but not yet read.
        let mut recent: VecDeque<(Instant, Vec<Line>)> = VecDeque::new();
        let mut recent_lines = 0usize;
        let nobody_waits = Arc::new(Pending::default());
        let take_unconfirmed = |unconfirmed: &mut VecDeque<(Instant, Vec<Line>)>| {
            unconfirmed
                .drain(..)
                .flat_map(|(_, lines)| lines)
                .collect::<Vec<Line>>()
        };
        let mut failures = 0u32;
        loop {
            if destination.removed.load(Ordering::Relaxed) {
                let mut lines = take_unconfirmed(&mut unconfirmed);
                lines.extend(destination.drain());
                self.hand_back(destination, lines);
                return;
            }
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            let batch = destination.take(1024, CONFIRM_AFTER);
            if stream.is_none() {
                match connect(&destination.address, self.writing.connect_timeout) {
                    Ok(connected) => {
                        if failures > 0 {
                            tracing::info!(sink = %self.sink, destination = %destination.address, "connected again");
                        }
                        stream = Some(BufWriter::with_capacity(64 << 10, connected));
                        failures = 0;
                        destination.connected.store(true, Ordering::Relaxed);
                        destination.in_pool.store(true, Ordering::Relaxed);
                    }
                    Err(error) => {
                        failures += 1;
                        reconnects.inc();
                        destination.connected.store(false, Ordering::Relaxed);
                        let mut lines = take_unconfirmed(&mut unconfirmed);
                        lines.extend(batch);
                        let leave = self.round_robin
                            && failures >= self.writing.max_failures
                            && self.others_in_pool(destination);
                        if leave {
                            if destination.in_pool.swap(false, Ordering::Relaxed) {
                                tracing::warn!(sink = %self.sink, destination = %destination.address, failures, "destination leaves the pool");
                            }
                            lines.extend(destination.drain());
                            self.hand_back(destination, lines);
                        } else {
                            destination.push_front(lines);
                        }
                        let backoff = (self.writing.backoff * 2u32.pow(failures.min(6) - 1))
                            .min(Duration::from_secs(10));
                        tracing::warn!(sink = %self.sink, destination = %destination.address, %error, retry_in = ?backoff, "cannot connect");
                        self.sleep(backoff, destination);
                        continue;
                    }
                }
            }
            let Some(writer) = stream.as_mut() else {
                continue;
            };
            let mut healthy = peer_open(writer.get_ref());
            if healthy {
                while unconfirmed
                    .front()
                    .is_some_and(|(at, _)| at.elapsed() >= CONFIRM_AFTER)
                {
                    let Some((_, lines)) = unconfirmed.pop_front() else {
                        break;
                    };
                    sent.inc_by(lines.len() as u64);
                    recent_lines += lines.len();
                    let kept = lines
                        .into_iter()
                        .map(|line| {
                            line.pending.settle();
                            Line {
                                text: line.text,
                                pending: nobody_waits.clone(),
                            }
                        })
                        .collect();
                    recent.push_back((Instant::now(), kept));
                }
                while recent.front().is_some_and(|(at, lines)| {
                    at.elapsed() > RESEND_WINDOW || recent_lines - lines.len() >= RESEND_MAX_LINES
                }) {
                    if let Some((_, lines)) = recent.pop_front() {
                        recent_lines -= lines.len();
                    }
                }
                if !batch.is_empty() {
                    healthy = batch
                        .iter()
                        .try_for_each(|line| writer.write_all(&line.text))
                        .and_then(|()| writer.flush())
                        .is_ok();
                    unconfirmed.push_back((Instant::now(), batch));
                }
            } else {
                unconfirmed.push_back((Instant::now(), batch));
            }
            if !healthy {
                // The recent and the unconfirmed lines are sent again on a new connection.
                reconnects.inc();
                stream = None;
                destination.connected.store(false, Ordering::Relaxed);
                let mut lines = take_unconfirmed(&mut recent);
                recent_lines = 0;
                lines.extend(take_unconfirmed(&mut unconfirmed));
                destination.push_front(lines);
            }
        }
    }

    /// Sleeps `time`, or less if the destination is removed or the pool stops.
    fn sleep(&self, time: Duration, destination: &Destination) {
        let step = Duration::from_millis(50);
        let mut left = time;
        while !left.is_zero()
            && !self.stop.load(Ordering::Relaxed)
            && !destination.removed.load(Ordering::Relaxed)
        {
            std::thread::sleep(step.min(left));
            left = left.saturating_sub(step);
        }
    }

    fn shut_down(&self) {
        self.stop.store(true, Ordering::Relaxed);
        for destination in lock(&self.destinations).iter() {
            destination.arrived.notify_all();
        }
        for writer in lock(&self.writers).drain(..) {
            let _ = writer.join();
        }
    }
}

fn connect(address: &str, timeout: Duration) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in address.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                stream.set_write_timeout(Some(Duration::from_secs(10)))?;
                return Ok(stream);
            }
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other(format!("{address} resolves to nothing"))))
}

/// Carbon never writes back: a readable socket means the peer closed or reset it.
fn peer_open(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let open = matches!(stream.peek(&mut [0u8; 1]),
        Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock);
    open && stream.set_nonblocking(false).is_ok()
}

/// One results partition's writer into a pool.
struct PartitionWriter {
    sink: String,
    pool: Arc<Pool>,
    template: Template,
    pending: Arc<Pending>,
}

impl RecordSink for PartitionWriter {
    fn handle(&mut self, _raw: &[u8], record: ResultRecord) -> Result<(), StorageError> {
        let Some(metric) = record.event.metric else {
            SKIPPED.with_label_values(&[&self.sink]).inc();
            return Ok(());
        };
        let path = self
            .template
            .render(&record)
            .map_err(StorageError::Rejected)?;
        let time = record.event.time.floor() as i64;
        let text = format!("{path} {metric} {time}\n").into_bytes().into();
        self.pending.add();
        let line = Line {
            text,
            pending: self.pending.clone(),
        };
        self.pool
            .enqueue(line)
            .inspect_err(|_| self.pending.settle())
    }

    fn flush(&mut self, _dead: &mut DeadLetters) -> Result<Value, StorageError> {
        if self.pending.wait(&self.pool.stop) {
            Ok(Value::Null)
        } else {
            Err(self.pool.stopping())
        }
    }
}

/// A destination as the admin API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DestinationStatus {
    /// `HOST:PORT`.
    pub address: String,
    /// Whether a connection is open.
    pub connected: bool,
    /// Whether the pool gives it lines (round-robin).
    pub in_pool: bool,
    /// Lines waiting.
    pub queued: usize,
}

/// A consumer group feeding a pool.
struct Running {
    pool: Arc<Pool>,
    consumers: JoinHandle<()>,
}

impl Running {
    fn stop(self) {
        self.pool.shut_down();
        let _ = self.consumers.join();
    }
}

/// A running Graphite sink.
pub struct Graphite {
    name: String,
    config: GraphiteConfig,
    template: Template,
    route: Route,
    source: Source,
    dead_letter_dir: PathBuf,
    state_file: PathBuf,
    /// Broadcast: one per destination address; round-robin: one, keyed "".
    running: Mutex<BTreeMap<String, Running>>,
}

#[derive(Serialize, Deserialize)]
struct Persisted {
    destinations: Vec<String>,
}

impl Graphite {
    /// Starts the sink `name` reading `source` (its group is the sink's).
    pub fn start(
        name: &str,
        config: &GraphiteConfig,
        route: Route,
        source: Source,
        dead_letter_dir: &Path,
        state_dir: &Path,
    ) -> Result<Arc<Graphite>, StorageError> {
        let template = Template::parse(&config.template).map_err(|detail| StorageError::Sink {
            sink: name.to_owned(),
            detail,
        })?;
        let state_file = state_dir.join(format!("{name}.destinations.json"));
        let mut config = config.clone();
        if let Ok(bytes) = std::fs::read(&state_file) {
            let persisted: Persisted =
                serde_json::from_slice(&bytes).map_err(|e| StorageError::Metadata {
                    group: state_file.display().to_string(),
                    detail: e.to_string(),
                })?;
            tracing::info!(sink = name, destinations = ?persisted.destinations, "destinations as last changed through the admin API");
            config.destinations = persisted.destinations;
        }
        let graphite = Arc::new(Graphite {
            name: name.to_owned(),
            template,
            route,
            source,
            dead_letter_dir: dead_letter_dir.to_path_buf(),
            state_file,
            running: Mutex::new(BTreeMap::new()),
            config: config.clone(),
        });
        let mut running = lock(&graphite.running);
        match config.distribution {
            Distribution::RoundRobin => {
                let run = graphite.run_pool(graphite.source.clone(), &config.destinations)?;
                running.insert(String::new(), run);
            }
            Distribution::Broadcast => {
                for address in &config.destinations {
                    let run = graphite.run_pool(
                        graphite.broadcast_source(address),
                        std::slice::from_ref(address),
                    )?;
                    running.insert(address.clone(), run);
                }
            }
        }
        drop(running);
        Ok(graphite)
    }

    fn broadcast_source(&self, address: &str) -> Source {
        let mut source = self.source.clone();
        let safe: String = address
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        source.group = format!("{}.{safe}", self.source.group);
        source
    }

    fn run_pool(&self, source: Source, addresses: &[String]) -> Result<Running, StorageError> {
        let writing = Writing {
            queue_cap: self.config.queue_cap.max(1),
            max_failures: self.config.max_failures.max(1),
            backoff: Duration::from_millis(self.config.backoff_ms.max(1)),
            connect_timeout: Duration::from_millis(self.config.connect_timeout_ms.max(1)),
        };
        let round_robin = self.config.distribution == Distribution::RoundRobin;
        let pool = Pool::new(&self.name, round_robin, writing);
        for address in addresses {
            pool.add(address)?;
        }
        let (name, route, template, letters, writers) = (
            self.name.clone(),
            self.route.clone(),
            self.template.clone(),
            self.dead_letter_dir.clone(),
            pool.clone(),
        );
        let consumers = spawn_consumers(
            &source,
            move |partition| {
                Routed::new(
                    &name,
                    route.clone(),
                    DeadLetters::new(&letters, &name, partition),
                    Box::new(PartitionWriter {
                        sink: name.clone(),
                        pool: writers.clone(),
                        template: template.clone(),
                        pending: Arc::default(),
                    }),
                )
            },
            pool.stop.clone(),
        )?;
        Ok(Running { pool, consumers })
    }

    /// The sink's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The destinations and how they are doing, by address.
    pub fn destinations(&self) -> Vec<DestinationStatus> {
        let mut destinations = lock(&self.running)
            .values()
            .flat_map(|run| {
                lock(&run.pool.destinations)
                    .iter()
                    .map(|d| DestinationStatus {
                        address: d.address.clone(),
                        connected: d.connected.load(Ordering::Relaxed),
                        in_pool: d.in_pool.load(Ordering::Relaxed),
                        queued: d.queued(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>();
        destinations.sort_by(|a, b| a.address.cmp(&b.address));
        destinations
    }

    fn addresses(running: &BTreeMap<String, Running>) -> Vec<String> {
        running
            .values()
            .flat_map(|run| {
                lock(&run.pool.destinations)
                    .iter()
                    .map(|d| d.address.clone())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Adds a destination (false if it is there already). In broadcast it
    /// starts at the end of the results log: it gets what comes from now on.
    pub fn add(&self, address: &str) -> Result<bool, StorageError> {
        if address.to_socket_addrs().is_err() {
            return Err(StorageError::Rejected(format!(
                "{address:?} is not a HOST:PORT address"
            )));
        }
        let mut running = lock(&self.running);
        let addresses = Self::addresses(&running);
        if addresses.iter().any(|a| a == address) {
            return Ok(false);
        }
        if addresses.len() >= self.config.max_destinations {
            return Err(StorageError::Rejected(format!(
                "sink {} has {} destinations, the most max_destinations allows",
                self.name,
                addresses.len()
            )));
        }
        match self.config.distribution {
            Distribution::RoundRobin => {
                if let Some(run) = running.get(&String::new()) {
                    run.pool.add(address)?;
                }
            }
            Distribution::Broadcast => {
                let source = self.broadcast_source(address);
                start_at_end(&source)?;
                let run = self.run_pool(source, &[address.to_owned()])?;
                running.insert(address.to_owned(), run);
            }
        }
        tracing::info!(sink = %self.name, destination = address, "destination added");
        self.persist(&running)?;
        Ok(true)
    }

    /// Removes a destination (false if it is not there).
    pub fn remove(&self, address: &str) -> Result<bool, StorageError> {
        let mut running = lock(&self.running);
        let removed = match self.config.distribution {
            Distribution::RoundRobin => running
                .get(&String::new())
                .is_some_and(|run| run.pool.remove(address)),
            Distribution::Broadcast => match running.remove(address) {
                Some(run) => {
                    run.pool.remove(address);
                    run.stop();
                    true
                }
                None => false,
            },
        };
        if removed {
            tracing::info!(sink = %self.name, destination = address, "destination removed");
            self.persist(&running)?;
        }
        Ok(removed)
    }

    fn persist(&self, running: &BTreeMap<String, Running>) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec_pretty(&Persisted {
            destinations: Self::addresses(running),
        })
        .unwrap_or_default();
        let io = |what| {
            let path = self.state_file.clone();
            move |source| StorageError::Io { what, path, source }
        };
        if let Some(dir) = self.state_file.parent() {
            std::fs::create_dir_all(dir).map_err(io("create"))?;
        }
        let temporary = self.state_file.with_extension("json.tmp");
        std::fs::write(&temporary, bytes).map_err(io("write"))?;
        std::fs::rename(&temporary, &self.state_file).map_err(io("rename"))
    }

    /// Stops every consumer and writer.
    pub fn stop(&self) {
        let running = std::mem::take(&mut *lock(&self.running));
        for run in running.into_values() {
            run.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_event::Event;

    fn record(host: &str, service: Option<&str>) -> ResultRecord {
        let mut event = Event::new(host, 1.0);
        event.service = service.map(Into::into);
        event.meta.insert("dc".into(), Value::from("eu west"));
        ResultRecord {
            id: "cpu@00:0:1:0".parse().unwrap(),
            notify: None,
            forward: None,
            event,
        }
    }

    #[test]
    fn templates_fill_fields_and_escape_unsafe_characters() {
        let template = Template::parse("weir.{meta.dc}.{host}.{service}").unwrap();
        assert_eq!(
            template
                .render(&record("web-1.example.com", Some("api/reqs p99")))
                .unwrap(),
            "weir.eu_west.web-1_example_com.api_reqs_p99"
        );
        let error = template.render(&record("h", None)).unwrap_err();
        assert!(error.contains("service"), "{error}");
        assert!(Template::parse("{host}.{nope}").is_err());
        assert!(Template::parse("{host").is_err());
        assert_eq!(
            Template::parse("{reactor}.x")
                .unwrap()
                .render(&record("h", None))
                .unwrap(),
            "cpu.x"
        );
    }
}
