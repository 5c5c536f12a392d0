//! Backtesting: runs reactors over the history of every partition, the
//! partitions in parallel, and reports what they would have emitted —
//! results and would-be notifications per reactor, per (host, service),
//! and per hour — while writing nothing to any topic and sending nothing.
//! Each partition starts with fresh state at the window's start (state
//! from before it is not rebuilt).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use weir_event::ResultRecord;
use weir_log::{Log, Topics};

use crate::reactor::{Engine, Reactor, ReactorConfig};
use crate::runtime::{ProcessorConfig, ProcessorError, ReplayWindow};

/// Keys (host, service) listed per reactor, the busiest first.
const TOP_KEYS: usize = 20;

/// A backtest's progress, read by whoever shows it.
#[derive(Debug, Default)]
pub struct BacktestProgress {
    /// Entries read so far, over every partition.
    pub done: AtomicU64,
    /// Entries to read (the partitions' sizes when the backtest started).
    pub total: AtomicU64,
}

/// What one (host, service) of a reactor would have had.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyTally {
    /// `host` and `service` of the results.
    pub host: String,
    /// The service, if any.
    pub service: Option<String>,
    /// Results.
    pub count: u64,
    /// Event time of the first and the last.
    pub first: f64,
    /// Event time of the last.
    pub last: f64,
}

/// What one reactor would have emitted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReactorTally {
    /// Results.
    pub results: u64,
    /// Of which notifications (which were not sent).
    pub notifications: u64,
    /// Distinct (host, service) among the results.
    pub keys: u64,
    /// The busiest (host, service), at most 20.
    pub top: Vec<KeyTally>,
    /// Results per hour of event time (hour start, Unix seconds).
    pub per_hour: BTreeMap<i64, u64>,
}

/// A backtest's report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BacktestReport {
    /// Entries read.
    pub entries: u64,
    /// Wall-clock seconds it took.
    pub seconds: f64,
    /// Per reactor.
    pub reactors: BTreeMap<String, ReactorTally>,
}

/// One reactor's counts while the backtest runs.
#[derive(Default)]
struct Counts {
    results: u64,
    notifications: u64,
    keys: BTreeMap<(String, Option<String>), KeyTally>,
    per_hour: BTreeMap<i64, u64>,
}

/// Counts per reactor (one partition's, or merged).
#[derive(Default)]
struct Tally {
    reactors: BTreeMap<String, Counts>,
}

impl Tally {
    fn add(&mut self, results: &mut Vec<ResultRecord>) {
        for result in results.drain(..) {
            let counts = self
                .reactors
                .entry(result.id.reactor.to_string())
                .or_default();
            counts.results += 1;
            counts.notifications += u64::from(result.notify.is_some());
            let event = result.event;
            let time = event.time;
            *counts
                .per_hour
                .entry((time / 3600.0).floor() as i64 * 3600)
                .or_default() += 1;
            let key = counts
                .keys
                .entry((event.host, event.service))
                .or_insert_with_key(|(host, service)| KeyTally {
                    host: host.clone(),
                    service: service.clone(),
                    count: 0,
                    first: time,
                    last: time,
                });
            key.count += 1;
            key.first = key.first.min(time);
            key.last = key.last.max(time);
        }
    }

    fn merge(mut self, other: Tally) -> Tally {
        for (name, theirs) in other.reactors {
            let mine = self.reactors.entry(name).or_default();
            mine.results += theirs.results;
            mine.notifications += theirs.notifications;
            for (key, tally) in theirs.keys {
                match mine.keys.entry(key) {
                    std::collections::btree_map::Entry::Vacant(vacant) => {
                        vacant.insert(tally);
                    }
                    std::collections::btree_map::Entry::Occupied(mut kept) => {
                        let kept = kept.get_mut();
                        kept.count += tally.count;
                        kept.first = kept.first.min(tally.first);
                        kept.last = kept.last.max(tally.last);
                    }
                }
            }
            for (hour, n) in theirs.per_hour {
                *mine.per_hour.entry(hour).or_default() += n;
            }
        }
        self
    }
}

/// Runs `reactors` over the history of every partition of the events
/// topic within `window` (by append time) and reports what they would
/// have emitted. Nothing is written anywhere.
pub fn backtest(
    log: &dyn Log,
    topics: &Topics,
    reactors: &[ReactorConfig],
    config: &ProcessorConfig,
    window: &ReplayWindow,
    progress: &BacktestProgress,
) -> Result<BacktestReport, ProcessorError> {
    let started = Instant::now();
    for reactor in reactors {
        Reactor::build(reactor)?;
    }
    let partitions = log.partitions(&topics.events)?;
    let mut total = 0;
    for partition in 0..partitions {
        let (earliest, end) = log.offsets(&topics.events, partition)?;
        total += end.saturating_sub(earliest);
    }
    progress.total.store(total, Ordering::Relaxed);
    let tallies: Vec<Tally> = (0..partitions)
        .into_par_iter()
        .map(|partition| run_partition(log, topics, reactors, config, window, partition, progress))
        .collect::<Result<_, _>>()?;
    let merged = tallies
        .into_iter()
        .fold(Tally::default(), |a, b| a.merge(b));
    let reactors = merged
        .reactors
        .into_iter()
        .map(|(name, counts)| {
            let distinct = counts.keys.len() as u64;
            let mut top: Vec<KeyTally> = counts.keys.into_values().collect();
            top.sort_by(|a, b| b.count.cmp(&a.count).then(a.host.cmp(&b.host)));
            top.truncate(TOP_KEYS);
            let tally = ReactorTally {
                results: counts.results,
                notifications: counts.notifications,
                keys: distinct,
                top,
                per_hour: counts.per_hour,
            };
            (name, tally)
        })
        .collect();
    Ok(BacktestReport {
        entries: progress.done.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
        reactors,
    })
}

/// One partition's history, from its earliest entry to its end as it
/// was at the start (or `window.to_ms`).
fn run_partition(
    log: &dyn Log,
    topics: &Topics,
    reactors: &[ReactorConfig],
    config: &ProcessorConfig,
    window: &ReplayWindow,
    partition: u32,
    progress: &BacktestProgress,
) -> Result<Tally, ProcessorError> {
    let built = reactors
        .iter()
        .map(Reactor::build)
        .collect::<Result<Vec<_>, _>>()?;
    let mut engine = Engine::new(partition, built, config.lateness_secs).uncounted();
    let (earliest, end) = log.offsets(&topics.events, partition)?;
    let mut next = earliest;
    let mut tally = Tally::default();
    let mut results = Vec::new();
    while next < end {
        let batch = log.read(
            &topics.events,
            partition,
            next,
            config.read_max_bytes,
            Duration::from_millis(100),
        )?;
        let Some(last) = batch.last() else { break };
        next = last.offset + 1;
        for record in batch.iter().filter(|r| r.offset < end) {
            progress.done.fetch_add(1, Ordering::Relaxed);
            if window.to_ms.is_some_and(|to| record.timestamp_ms > to) {
                return Ok(tally);
            }
            if window
                .from_ms
                .is_some_and(|from| record.timestamp_ms < from)
            {
                continue;
            }
            if let Ok(entry) = engine.entry_of(record, config.max_future_secs) {
                engine.process(record.offset, entry, &mut results);
            }
            // A hand-off in the history moves nothing here.
            drop(engine.take_handovers());
            tally.add(&mut results);
        }
    }
    Ok(tally)
}
