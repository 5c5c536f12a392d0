//! StatsD (`[ingest.statsd] listen`, 8125, UDP and TCP lines), so every
//! StatsD client sends to weir unchanged: `name:value|type[|@rate][|#tags]`
//! with counters (`c`, scaled by the sample rate), gauges (`g`, `+N`/`-N`
//! deltas), timers and histograms (`ms`, `h`) and sets (`s`). DogStatsD
//! tags become `meta`; a `host:` tag sets the host, else the listener's
//! `host`.
//!
//! Aggregated like Etsy's statsd, once per `flush_secs`, into one event
//! per metric name and host with `service` = the name, `time` = the
//! flush: a counter's `metric` is its count (`meta.rate` per second); a
//! gauge's its value (kept between flushes, sent when it changed); a
//! timer's its mean, with `meta` `count`, `lower`, `upper`, `sum`,
//! `median` and `pN` for each of `percentiles`; a set's the number of
//! distinct values. With `aggregate = false` every line is an event of its
//! own (`meta.statsd_type` says which kind). At most 100,000 names and
//! hosts wait for a flush (more are rejected, counted); a gauge unchanged
//! for 360 flushes is forgotten.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use weir_event::{decode_value, Reason, Rejection};
use weir_router::{Encoded, RouterHandle};

use crate::metrics::ACCEPTED;
use crate::protocol::LineProtocol;
use crate::{now_secs, Listener};

/// `[ingest.statsd]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StatsdConfig {
    /// Where it listens (UDP, and TCP on the same port).
    #[serde(flatten)]
    pub listener: Listener,
    /// Seconds between flushes of the aggregates.
    #[serde(default = "default_flush")]
    pub flush_secs: f64,
    /// Timer percentiles sent in `meta` as `pN`.
    #[serde(default = "default_percentiles")]
    pub percentiles: Vec<f64>,
    /// Aggregate per flush (Etsy's statsd); false: one event per line.
    #[serde(default = "default_true")]
    pub aggregate: bool,
    /// The host of metrics without a `host:` tag.
    #[serde(default = "default_host")]
    pub host: String,
}

fn default_flush() -> f64 {
    10.0
}
fn default_percentiles() -> Vec<f64> {
    vec![90.0]
}
fn default_true() -> bool {
    true
}
fn default_host() -> String {
    "statsd".into()
}

/// One parsed line.
struct Sample {
    name: String,
    value: f64,
    delta: bool,
    kind: Kind,
    rate: f64,
    set_member: String,
    host: Option<String>,
    tags: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Counter,
    Gauge,
    Timer,
    Set,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Timer => "timer",
            Kind::Set => "set",
        }
    }
}

fn parse(line: &str) -> Result<Sample, String> {
    let (name, rest) = line
        .split_once(':')
        .ok_or_else(|| format!("{line:?} is not name:value|type"))?;
    if name.is_empty() {
        return Err(format!("{line:?} has no name"));
    }
    let mut fields = rest.split('|');
    let value = fields.next().unwrap_or_default();
    let kind = match fields.next() {
        Some("c") => Kind::Counter,
        Some("g") => Kind::Gauge,
        Some("ms" | "h" | "d") => Kind::Timer,
        Some("s") => Kind::Set,
        Some(other) => return Err(format!("unknown type {other:?} in {line:?}")),
        None => return Err(format!("{line:?} has no type")),
    };
    let (mut rate, mut host, mut tags) = (1.0, None, Map::new());
    for field in fields {
        if let Some(sample) = field.strip_prefix('@') {
            rate = sample
                .parse::<f64>()
                .ok()
                .filter(|r| *r > 0.0 && *r <= 1.0)
                .ok_or_else(|| format!("sample rate {sample:?} is not in (0, 1]"))?;
        } else if let Some(list) = field.strip_prefix('#') {
            for tag in list.split(',').filter(|t| !t.is_empty()) {
                let (key, value) = tag.split_once(':').unwrap_or((tag, ""));
                if key == "host" {
                    host = Some(value.to_owned());
                } else {
                    tags.insert(key.to_owned(), value.into());
                }
            }
        }
    }
    let delta = kind == Kind::Gauge && (value.starts_with('+') || value.starts_with('-'));
    let number = if kind == Kind::Set {
        0.0
    } else {
        value
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("value {value:?} is not a finite number"))?
    };
    Ok(Sample {
        name: name.to_owned(),
        value: number,
        delta,
        kind,
        rate,
        set_member: value.to_owned(),
        host,
        tags,
    })
}

/// Most names and hosts aggregated between two flushes.
const MAX_NAMES: usize = 100_000;

/// Flushes a gauge that does not change is kept for (its value is the
/// base of `+N`/`-N` deltas); then it is forgotten.
const GAUGE_IDLE_FLUSHES: u32 = 360;

/// What a flush interval gathered for one name and host.
#[derive(Default)]
struct Aggregate {
    kind: Option<Kind>,
    count: f64,
    gauge: Option<f64>,
    changed: bool,
    /// Flushes since a gauge last changed.
    idle_flushes: u32,
    timings: Vec<f64>,
    members: BTreeSet<String>,
    tags: Map<String, Value>,
}

/// The aggregates of every listener of one `[ingest.statsd]`.
#[derive(Default)]
struct Aggregates(Mutex<HashMap<(String, String), Aggregate>>);

impl Aggregates {
    fn lock(&self) -> MutexGuard<'_, HashMap<(String, String), Aggregate>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// StatsD lines on one transport.
pub struct Statsd {
    name: &'static str,
    config: Arc<StatsdConfig>,
    aggregates: Arc<Aggregates>,
}

impl Statsd {
    /// The UDP and TCP sides of `config`, sharing their aggregates, and
    /// the task that flushes them to `router` (none without aggregation).
    pub fn start(config: &StatsdConfig, router: RouterHandle) -> (Statsd, Statsd) {
        let config = Arc::new(config.clone());
        let aggregates = Arc::new(Aggregates::default());
        if config.aggregate {
            let (config, aggregates) = (config.clone(), aggregates.clone());
            tokio::spawn(async move {
                let period = Duration::from_secs_f64(config.flush_secs.max(0.1));
                let accepted = ACCEPTED.with_label_values(&["statsd"]);
                let mut tick = tokio::time::interval(period);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let events = flush(&config, &aggregates, now_secs());
                    if !events.is_empty() && router.send(events, accepted.clone()).await.is_err() {
                        return;
                    }
                }
            });
        }
        let side = |name| Statsd {
            name,
            config: config.clone(),
            aggregates: aggregates.clone(),
        };
        (side("statsd"), side("statsd-tcp"))
    }

    /// A raw (unaggregated) StatsD decoder without a listener, for the fuzzers.
    #[cfg(feature = "fuzzing")]
    pub fn raw_for_fuzzing() -> Statsd {
        let config = StatsdConfig {
            listener: Listener::at("127.0.0.1:0"),
            flush_secs: 1.0,
            percentiles: vec![90.0],
            aggregate: false,
            host: "statsd".into(),
        };
        Statsd {
            name: "statsd",
            config: Arc::new(config),
            aggregates: Arc::default(),
        }
    }

    fn event(&self, fields: Map<String, Value>, now: f64) -> Result<weir_event::Event, Rejection> {
        decode_value(Value::Object(fields), &Default::default(), now)
    }

    fn raw(&self, sample: Sample, now: f64) -> Result<weir_event::Event, Rejection> {
        let mut meta = sample.tags;
        meta.insert("statsd_type".into(), sample.kind.as_str().into());
        if sample.kind == Kind::Set {
            meta.insert("member".into(), sample.set_member.into());
        }
        let metric = match sample.kind {
            Kind::Counter => sample.value / sample.rate,
            Kind::Set => 1.0,
            _ => sample.value,
        };
        let mut fields = Map::new();
        fields.insert(
            "host".into(),
            sample
                .host
                .unwrap_or_else(|| self.config.host.clone())
                .into(),
        );
        fields.insert("service".into(), sample.name.into());
        fields.insert("metric".into(), metric.into());
        fields.insert("meta".into(), Value::Object(meta));
        self.event(fields, now)
    }

    /// Adds `sample` to its aggregate; refused when [`MAX_NAMES`] names
    /// already wait, so input cannot grow memory without bound.
    fn gather(&self, sample: Sample) -> Result<(), Rejection> {
        let host = sample
            .host
            .clone()
            .unwrap_or_else(|| self.config.host.clone());
        let mut aggregates = self.aggregates.lock();
        let key = (sample.name, host);
        if aggregates.len() >= MAX_NAMES && !aggregates.contains_key(&key) {
            let detail = format!("more than {MAX_NAMES} names and hosts wait for the flush");
            return Err(Rejection::new(Reason::BatchTooLarge, detail));
        }
        let aggregate = aggregates.entry(key).or_default();
        aggregate.kind = Some(sample.kind);
        aggregate.tags = sample.tags;
        match sample.kind {
            Kind::Counter => aggregate.count += sample.value / sample.rate,
            Kind::Gauge => {
                let base = if sample.delta {
                    aggregate.gauge.unwrap_or(0.0)
                } else {
                    0.0
                };
                aggregate.gauge = Some(base + sample.value);
                aggregate.changed = true;
                aggregate.idle_flushes = 0;
            }
            Kind::Timer => aggregate.timings.push(sample.value),
            Kind::Set => drop(aggregate.members.insert(sample.set_member)),
        }
        Ok(())
    }
}

/// The events of one flush; counters, timers and sets start over, gauges
/// keep their value.
fn flush(config: &StatsdConfig, aggregates: &Aggregates, now: f64) -> Encoded {
    let mut events = Encoded::default();
    let mut aggregates = aggregates.lock();
    for ((name, host), aggregate) in aggregates.iter_mut() {
        if aggregate.kind == Some(Kind::Gauge) && !aggregate.changed {
            aggregate.idle_flushes += 1;
        }
        let mut meta = aggregate.tags.clone();
        let metric = match aggregate.kind {
            Some(Kind::Counter) if aggregate.count != 0.0 => {
                meta.insert("rate".into(), (aggregate.count / config.flush_secs).into());
                aggregate.count
            }
            Some(Kind::Gauge) if aggregate.changed => aggregate.gauge.unwrap_or(0.0),
            Some(Kind::Timer) if !aggregate.timings.is_empty() => {
                let timings = &mut aggregate.timings;
                timings.sort_by(f64::total_cmp);
                let n = timings.len();
                let sum: f64 = timings.iter().sum();
                let rank =
                    |p: f64| timings[((p / 100.0 * n as f64).ceil() as usize).clamp(1, n) - 1];
                meta.insert("count".into(), n.into());
                meta.insert("lower".into(), timings[0].into());
                meta.insert("upper".into(), timings[n - 1].into());
                meta.insert("sum".into(), sum.into());
                meta.insert("median".into(), rank(50.0).into());
                for p in &config.percentiles {
                    meta.insert(format!("p{p}"), rank(*p).into());
                }
                sum / n as f64
            }
            Some(Kind::Set) if !aggregate.members.is_empty() => aggregate.members.len() as f64,
            _ => continue,
        };
        let mut fields = Map::new();
        fields.insert("host".into(), host.clone().into());
        fields.insert("service".into(), name.clone().into());
        fields.insert("metric".into(), metric.into());
        fields.insert("time".into(), now.into());
        if !meta.is_empty() {
            fields.insert("meta".into(), Value::Object(meta));
        }
        match decode_value(Value::Object(fields), &Default::default(), now) {
            Ok(event) => events.push(&event.host, &event.to_json()),
            Err(rejection) => crate::metrics::reject("statsd", &rejection),
        }
        aggregate.count = 0.0;
        aggregate.changed = false;
        aggregate.timings.clear();
        aggregate.members.clear();
    }
    // Names with nothing left to send are dropped; gauges keep their
    // value (for deltas) until they have not changed for a while.
    aggregates.retain(|_, a| a.kind == Some(Kind::Gauge) && a.idle_flushes < GAUGE_IDLE_FLUSHES);
    events
}

impl LineProtocol for Statsd {
    fn name(&self) -> &'static str {
        self.name
    }

    fn decode_line(
        &self,
        line: &str,
        now: f64,
        events: &mut Encoded,
        rejected: &mut Vec<Rejection>,
    ) {
        let sample = match parse(line) {
            Ok(sample) => sample,
            Err(detail) => return rejected.push(Rejection::new(Reason::Malformed, detail)),
        };
        if self.config.aggregate {
            if let Err(rejection) = self.gather(sample) {
                rejected.push(rejection);
            }
            return;
        }
        match self.raw(sample, now) {
            Ok(event) => events.push(&event.host, &event.to_json()),
            Err(rejection) => rejected.push(rejection),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The events of a flush at time 100, by service.
    fn flushed(config: &StatsdConfig, aggregates: &Aggregates) -> BTreeMap<String, Value> {
        flush(config, aggregates, 100.0)
            .iter()
            .map(|(_, v)| {
                let event: Value = serde_json::from_slice(v).unwrap();
                (event["service"].as_str().unwrap().to_owned(), event)
            })
            .collect()
    }

    fn statsd(aggregate: bool) -> Statsd {
        let config = StatsdConfig {
            listener: Listener::at("127.0.0.1:0"),
            flush_secs: 10.0,
            percentiles: vec![90.0],
            aggregate,
            host: "statsd".into(),
        };
        Statsd {
            name: "statsd",
            config: Arc::new(config),
            aggregates: Arc::default(),
        }
    }

    fn feed(statsd: &Statsd, lines: &str) -> (Encoded, Vec<Rejection>) {
        let (mut events, mut rejected) = (Encoded::default(), Vec::new());
        crate::protocol::Protocol::decode_datagram(
            statsd,
            lines.as_bytes(),
            50.0,
            &mut events,
            &mut rejected,
        );
        (events, rejected)
    }

    #[test]
    fn a_flush_aggregates_like_etsy_statsd() {
        let statsd = statsd(true);
        let (events, rejected) = feed(
            &statsd,
            "hits:1|c\nhits:2|c|@0.5\nload:5|g\nload:+2|g\nt:10|ms\nt:30|ms\nt:20|ms\nusers:a|s\nusers:b|s\nusers:a|s\nweb.hits:1|c|#host:web-1,dc:eu\nbad\nx:1|q",
        );
        assert!(events.is_empty(), "nothing before the flush");
        assert_eq!(rejected.len(), 2);
        let first = flushed(&statsd.config, &statsd.aggregates);
        assert_eq!(first["hits"]["metric"], 5.0, "1 + 2 / 0.5");
        assert_eq!(first["hits"]["meta"]["rate"], 0.5);
        assert_eq!(first["load"]["metric"], 7.0, "5 then +2");
        let timer = &first["t"];
        assert_eq!(
            (
                &timer["metric"],
                &timer["meta"]["count"],
                &timer["meta"]["upper"]
            ),
            (&20.0.into(), &3.into(), &30.0.into())
        );
        assert_eq!(
            (&timer["meta"]["median"], &timer["meta"]["p90"]),
            (&20.0.into(), &30.0.into())
        );
        assert_eq!(first["users"]["metric"], 2.0);
        assert_eq!(
            (&first["web.hits"]["host"], &first["web.hits"]["meta"]["dc"]),
            (&"web-1".into(), &"eu".into())
        );
        assert_eq!(first["t"]["time"], 100.0);
        // Next flush: the gauge only when it changes; counters start over.
        assert!(flushed(&statsd.config, &statsd.aggregates).is_empty());
        feed(&statsd, "load:-1|g");
        assert_eq!(
            flushed(&statsd.config, &statsd.aggregates)["load"]["metric"],
            6.0
        );
    }

    #[test]
    fn names_are_bounded_and_idle_gauges_forgotten() {
        let statsd = statsd(true);
        let lines: String = (0..MAX_NAMES).map(|i| format!("n{i}:1|c\n")).collect();
        let (_, rejected) = feed(&statsd, &lines);
        assert!(rejected.is_empty());
        let (_, rejected) = feed(&statsd, "one.more:1|c\nn7:1|c");
        assert_eq!(rejected.len(), 1, "only the new name is refused");
        assert_eq!(rejected[0].reason, Reason::BatchTooLarge);
        assert_eq!(flushed(&statsd.config, &statsd.aggregates).len(), MAX_NAMES);
        feed(&statsd, "load:5|g");
        // The first flush sends it; then it stays idle.
        for _ in 0..=GAUGE_IDLE_FLUSHES {
            flushed(&statsd.config, &statsd.aggregates);
        }
        assert!(
            statsd.aggregates.lock().is_empty(),
            "the idle gauge forgotten"
        );
        feed(&statsd, "load:+2|g");
        assert_eq!(
            flushed(&statsd.config, &statsd.aggregates)["load"]["metric"],
            2.0
        );
    }

    #[test]
    fn raw_mode_sends_each_line() {
        let statsd = statsd(false);
        let (events, rejected) = feed(&statsd, "hits:2|c|@0.5\nusers:a|s");
        assert!(rejected.is_empty());
        let decoded: Vec<Value> = events
            .iter()
            .map(|(_, v)| serde_json::from_slice(v).unwrap())
            .collect();
        assert_eq!(
            (&decoded[0]["metric"], &decoded[0]["meta"]["statsd_type"]),
            (&4.0.into(), &"counter".into())
        );
        assert_eq!(
            (&decoded[1]["meta"]["member"], &decoded[1]["host"]),
            (&"a".into(), &"statsd".into())
        );
    }
}
