//! Destinations fed by one consumer group: a queue and a writer thread
//! per destination, confirmation of delivered lines, resending after a
//! break, and (round-robin, consistent hash) leaving and rejoining the
//! pool.

use std::collections::{HashSet, VecDeque};
use std::io::{BufWriter, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus::IntGauge;
use weir_log::backoff::Backoff;

use super::delivery::Pending;
use super::lock;
use super::ring::{self, HashType, Ring};
use crate::consumer::StorageError;
use crate::metrics::{
    DESTINATION_DROPPED, DESTINATION_QUEUED, DESTINATION_RECONNECTS, DESTINATION_SENT, NOT_RESENT,
    RING_NODES,
};

pub(super) struct Line {
    pub(super) text: Box<[u8]>,
    pub(super) pending: Arc<Pending>,
    /// Delivered already (kept to be sent again to the same destination
    /// after a break): never handed to another destination.
    pub(super) delivered: bool,
}

impl Line {
    /// A line to deliver, waited for by `pending`.
    pub(super) fn new(text: Box<[u8]>, pending: Arc<Pending>) -> Line {
        Line {
            text,
            pending,
            delivered: false,
        }
    }

    /// Its metric path (the text before the first space).
    fn path(&self) -> &str {
        let end = self.text.iter().position(|b| *b == b' ').unwrap_or(0);
        std::str::from_utf8(&self.text[..end]).unwrap_or("")
    }
}

/// How a pool spreads lines over its destinations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Spread {
    /// Every line to the pool's only destination (broadcast runs one
    /// pool per destination).
    Single,
    /// Each line to the next destination with room.
    RoundRobin,
    /// Each line to where carbon's ring puts its path.
    Hash {
        /// The ring's hash.
        hash: HashType,
        /// Destinations per path.
        replication: usize,
        /// Replicas on distinct servers.
        diverse: bool,
    },
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
pub(super) struct Destination {
    /// As configured: `HOST:PORT[:INSTANCE]`.
    pub(super) address: String,
    /// Parsed: where to connect, and its ring key.
    spec: ring::Destination,
    pub(super) queue: Mutex<VecDeque<Line>>,
    arrived: Condvar,
    pub(super) in_pool: AtomicBool,
    pub(super) connected: AtomicBool,
    pub(super) removed: AtomicBool,
    pub(super) sink: String,
    /// `weir_graphite_queued` of this destination, looked up once.
    queued_gauge: IntGauge,
}

impl Destination {
    fn labels(&self) -> [&str; 2] {
        [&self.sink, &self.address]
    }

    pub(super) fn push(&self, line: Line) {
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
    pub(super) fn take(&self, max: usize, wait: Duration) -> Vec<Line> {
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

    pub(super) fn queued(&self) -> usize {
        lock(&self.queue).len()
    }
}

/// Settings a pool's writers share.
#[derive(Clone)]
pub(super) struct Writing {
    pub(super) queue_cap: usize,
    pub(super) max_failures: u32,
    pub(super) backoff: Backoff,
    pub(super) connect_timeout: Duration,
}

/// Destinations fed by one consumer group.
pub(super) struct Pool {
    pub(super) sink: String,
    spread: Spread,
    pub(super) writing: Writing,
    pub(super) destinations: Mutex<Vec<Arc<Destination>>>,
    /// The ring over `destinations` (consistent hash), rebuilt with them
    /// (locked after them).
    ring: Mutex<Option<Ring>>,
    pub(super) next: AtomicUsize,
    /// Set when the pool's consumers and writers are to stop.
    pub(super) stop: Arc<AtomicBool>,
    pub(super) writers: Mutex<Vec<JoinHandle<()>>>,
}

impl Pool {
    pub(super) fn new(sink: &str, spread: Spread, writing: Writing) -> Arc<Pool> {
        Arc::new(Pool {
            sink: sink.to_owned(),
            spread,
            writing,
            destinations: Mutex::new(Vec::new()),
            ring: Mutex::new(None),
            next: AtomicUsize::new(0),
            stop: Arc::new(AtomicBool::new(false)),
            writers: Mutex::new(Vec::new()),
        })
    }

    /// Whether lines move between destinations (round-robin, hash).
    fn shares(&self) -> bool {
        self.spread != Spread::Single
    }

    /// Rebuilds the ring over `destinations` (consistent hash).
    fn rebuild_ring(&self, destinations: &[Arc<Destination>]) {
        if let Spread::Hash { hash, .. } = self.spread {
            let specs: Vec<ring::Destination> =
                destinations.iter().map(|d| d.spec.clone()).collect();
            *lock(&self.ring) = Some(Ring::new(&specs, hash));
        }
        self.count_ring_nodes(destinations);
    }

    /// `weir_graphite_ring_nodes`: the destinations in the pool.
    fn count_ring_nodes(&self, destinations: &[Arc<Destination>]) {
        let in_pool = destinations
            .iter()
            .filter(|d| d.in_pool.load(Ordering::Relaxed))
            .count();
        RING_NODES
            .with_label_values(&[&self.sink])
            .set(in_pool as i64);
    }

    pub(super) fn add(self: &Arc<Self>, address: &str) -> Result<(), StorageError> {
        let spec = ring::Destination::parse(address).map_err(StorageError::Rejected)?;
        let queued_gauge = DESTINATION_QUEUED.with_label_values(&[&self.sink, address]);
        let destination = Arc::new(Destination {
            queued_gauge,
            spec,
            address: address.to_owned(),
            queue: Mutex::new(VecDeque::new()),
            arrived: Condvar::new(),
            in_pool: AtomicBool::new(true),
            connected: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            sink: self.sink.clone(),
        });
        {
            let mut destinations = lock(&self.destinations);
            destinations.push(destination.clone());
            self.rebuild_ring(&destinations);
        }
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
    pub(super) fn remove(&self, address: &str) -> bool {
        let mut destinations = lock(&self.destinations);
        let Some(at) = destinations.iter().position(|d| d.address == address) else {
            return false;
        };
        let destination = destinations.remove(at);
        self.rebuild_ring(&destinations);
        drop(destinations);
        destination.removed.store(true, Ordering::Relaxed);
        destination.in_pool.store(false, Ordering::Relaxed);
        destination.arrived.notify_all();
        true
    }

    /// Queues `line`: on the destinations the ring gives its path
    /// (consistent hash), else on the next destination in the pool with
    /// room; waits while the ones it needs are full (or none is in the pool).
    pub(super) fn enqueue(&self, line: Line) -> Result<(), StorageError> {
        if let Spread::Hash { .. } = self.spread {
            return self.enqueue_hashed(line, None);
        }
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

    /// The destinations (indexes) that hold `path`: the first
    /// `replication` in the pool on its ring walk (distinct servers with
    /// diverse replicas). `counting` is taken as in the pool even if it
    /// left (the set before it left).
    fn replicas(
        &self,
        destinations: &[Arc<Destination>],
        path: &str,
        counting: Option<&str>,
    ) -> Vec<usize> {
        let Spread::Hash {
            replication,
            diverse,
            ..
        } = self.spread
        else {
            return Vec::new();
        };
        let ring = lock(&self.ring);
        let Some(ring) = ring.as_ref() else {
            return Vec::new();
        };
        let mut servers = HashSet::new();
        let mut chosen = Vec::with_capacity(replication);
        for node in ring.walk(path) {
            let Some(destination) = destinations.get(node) else {
                continue;
            };
            let up = destination.in_pool.load(Ordering::Relaxed)
                || counting == Some(destination.address.as_str());
            if !up || (diverse && !servers.insert(destination.spec.server.as_str())) {
                continue;
            }
            chosen.push(node);
            if chosen.len() == replication {
                break;
            }
        }
        chosen
    }

    /// Queues `line` on its path's replicas. For a line handed back by
    /// `from` (which left the pool), only on the replicas that take over
    /// from it: those that did not hold the path before.
    fn enqueue_hashed(&self, line: Line, from: Option<&str>) -> Result<(), StorageError> {
        loop {
            {
                let destinations = lock(&self.destinations);
                let path = line.path();
                let mut targets = self.replicas(&destinations, path, None);
                if let Some(from) = from {
                    let before = self.replicas(&destinations, path, Some(from));
                    targets.retain(|t| !before.contains(t));
                    if targets.is_empty()
                        && destinations
                            .iter()
                            .any(|d| d.in_pool.load(Ordering::Relaxed))
                    {
                        // Its other replicas have it already.
                        line.pending.settle();
                        return Ok(());
                    }
                }
                let room = !targets.is_empty()
                    && targets
                        .iter()
                        .all(|&t| destinations[t].queued() < self.writing.queue_cap);
                if room {
                    for _ in 1..targets.len() {
                        line.pending.add();
                    }
                    for &t in &targets[1..] {
                        destinations[t].push(Line {
                            text: line.text.clone(),
                            pending: line.pending.clone(),
                            delivered: false,
                        });
                    }
                    destinations[targets[0]].push(line);
                    return Ok(());
                }
            }
            if self.stop.load(Ordering::Relaxed) {
                return Err(self.stopping());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub(super) fn stopping(&self) -> StorageError {
        StorageError::Sink {
            sink: self.sink.clone(),
            detail: "stopping".into(),
        }
    }

    /// Lines a destination gives up: to the rest of the pool (those it
    /// had not delivered yet), or dropped.
    fn hand_back(&self, from: &Destination, lines: Vec<Line>) {
        if lines.is_empty() {
            return;
        }
        if self.shares() && !self.stop.load(Ordering::Relaxed) {
            let (delivered, lines): (Vec<Line>, Vec<Line>) =
                lines.into_iter().partition(|l| l.delivered);
            NOT_RESENT
                .with_label_values(&from.labels())
                .inc_by(delivered.len() as u64);
            tracing::info!(sink = %self.sink, destination = %from.address, lines = lines.len(),
                delivered = delivered.len(), "handing undelivered lines to the rest of the pool");
            for line in lines {
                let queued = match self.spread {
                    Spread::Hash { .. } => self.enqueue_hashed(line, Some(&from.address)),
                    _ => self.enqueue(line),
                };
                if queued.is_err() {
                    return;
                }
            }
        } else {
            DESTINATION_DROPPED
                .with_label_values(&from.labels())
                .inc_by(lines.len() as u64);
            let first = String::from_utf8_lossy(&lines[0].text).into_owned();
            weir_log::drops::dropped(
                &format!("sink:{}", self.sink),
                "destination_removed",
                lines.len() as u64,
                || format!("{}: {first}", from.address),
            );
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
    pub(super) fn write(&self, destination: &Destination) {
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
                match connect(&destination.spec.address(), self.writing.connect_timeout) {
                    Ok(connected) => {
                        if failures > 0 {
                            tracing::info!(sink = %self.sink, destination = %destination.address, "connected again");
                        }
                        stream = Some(BufWriter::with_capacity(64 << 10, connected));
                        failures = 0;
                        destination.connected.store(true, Ordering::Relaxed);
                        if !destination.in_pool.swap(true, Ordering::Relaxed) {
                            self.count_ring_nodes(&lock(&self.destinations));
                        }
                    }
                    Err(error) => {
                        failures += 1;
                        reconnects.inc();
                        destination.connected.store(false, Ordering::Relaxed);
                        let mut lines = take_unconfirmed(&mut unconfirmed);
                        lines.extend(batch);
                        let leave = self.shares()
                            && failures >= self.writing.max_failures
                            && self.others_in_pool(destination);
                        if leave {
                            if destination.in_pool.swap(false, Ordering::Relaxed) {
                                tracing::warn!(sink = %self.sink, destination = %destination.address, failures, "destination leaves the pool");
                                self.count_ring_nodes(&lock(&self.destinations));
                            }
                            lines.extend(destination.drain());
                            self.hand_back(destination, lines);
                        } else {
                            destination.push_front(lines);
                        }
                        let backoff = self.writing.backoff.wait(failures);
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
                                delivered: true,
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

    pub(super) fn shut_down(&self) {
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
