//! Stages over consecutive windows of event time ("tumbling" windows; the
//! first opens at the first event, empty windows emit nothing). At the end
//! of a window each emits from the window's last event, with `time` = the
//! window end:
//!
//! - `count INTERVAL`: `metric` = events in the window, tag `per Ns`.
//!   godot counts only events that have a metric; weir counts every event.
//! - `rate INTERVAL`: `metric` = sum of the metrics ÷ interval seconds, the
//!   per-second rate (Riemann's meaning; godot's `rate` is really a mean).
//! - `percentiles INTERVAL [Q, …]`: one event per quantile (0 ≤ Q ≤ 1,
//!   nearest rank) with `service` = "SERVICE Q" and `metric` = the value:
//!   exact up to [`EXACT_VALUES`] metrics in the window; beyond, from a
//!   DDSketch (relative error ≤ 1 %, at most 2 × 2048 bins), so a window
//!   holds bounded memory whatever the rate.
//! - `fixed-time-window INTERVAL combine=F` (Riemann), or `fold-interval
//!   INTERVAL F` (Riemann's `fold-interval-metric`): `metric` = the
//!   window's metrics combined by F (see [`Combine`]).
//! - `apdex INTERVAL satisfied=T [tolerated=U]` (Riemann's `apdex`):
//!   `metric` = (satisfied + tolerated ÷ 2) ÷ events, the Apdex score.
//!   T and U are predicates in quotes (`satisfied='state = "ok"'`) or a
//!   response time: a number T means `metric <= T`, and U defaults to 4T
//!   (the Apdex standard). Expired events do not count (as in Riemann).
//!
//! Events without a metric are ignored, except by `count`, `combine=count`
//! and `apdex`.

use serde::{Deserialize, Serialize};
use sketches_ddsketch::{Config, DDSketch};
use weir_event::Event;

use super::combine::Combine;
use crate::lang::{Literal, Op, ParseError, StageSpec};
use crate::predicate::{Field, Predicate};
use crate::stage::{Built, Options, StageDef, json_state, Stage};

/// The stages this file declares.
pub const STAGES: &[StageDef] = &[
    StageDef {
        name: "count",
        options: Options::Only(&["interval", "combine"]),
        doc: "Number of events per tumbling window of event time.",
        build: |spec, _| Built::one(Tumbling::count(spec)?),
    },
    StageDef {
        name: "rate",
        options: Options::Only(&["interval", "combine"]),
        doc: "Sum of the metrics per second, per tumbling window.",
        build: |spec, _| Built::one(Tumbling::rate(spec)?),
    },
    StageDef {
        name: "percentiles",
        options: Options::Only(&["interval", "combine"]),
        doc: "One event per quantile of the metrics, per tumbling window.",
        build: |spec, _| Built::one(Tumbling::percentiles(spec)?),
    },
    StageDef {
        name: "fixed-time-window",
        options: Options::Only(&["interval", "combine"]),
        doc: "One event per tumbling window, its metrics folded by combine=F (Riemann).",
        build: |spec, _| Built::one(Tumbling::combined(spec)?),
    },
    StageDef {
        name: "fold-interval",
        options: Options::Only(&["interval"]),
        doc: "One event per tumbling window, its metrics folded by F (Riemann).",
        build: |spec, _| Built::one(Tumbling::fold_interval(spec)?),
    },
    StageDef {
        name: "apdex",
        options: Options::Only(&["interval", "satisfied", "tolerated"]),
        doc: "The Apdex score of each tumbling window (Riemann).",
        build: |spec, _| Built::one(Tumbling::apdex(spec)?),
    },
];

/// What a window folds its events into.
#[derive(Debug, Clone)]
enum Fold {
    Count,
    Rate,
    Percentiles(Vec<f64>),
    Combine(Combine),
    /// `sum` counts 1 per satisfied event and ½ per tolerated one.
    Apdex {
        satisfied: Predicate,
        tolerated: Predicate,
    },
}

/// A windowed fold of events.
pub struct Tumbling {
    interval: f64,
    fold: Fold,
    state: WindowState,
}

#[derive(Default, Serialize, Deserialize)]
struct WindowState {
    window_end: Option<f64>,
    count: u64,
    sum: f64,
    /// Metrics of the window (percentiles and combine); for percentiles
    /// only until there are [`EXACT_VALUES`], then they go to `sketch`.
    values: Vec<f64>,
    /// The window's metrics past [`EXACT_VALUES`] (percentiles only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sketch: Option<DDSketch>,
    last: Option<Event>,
}

/// Metrics a `percentiles` window keeps exactly before it sketches them.
pub const EXACT_VALUES: usize = 1000;

impl WindowState {
    /// Adds a metric to the percentiles' distribution.
    fn add_to_distribution(&mut self, metric: f64) {
        if let Some(sketch) = &mut self.sketch {
            return sketch.add(metric);
        }
        self.values.push(metric);
        if self.values.len() > EXACT_VALUES {
            let mut sketch = DDSketch::new(Config::defaults());
            for value in self.values.drain(..) {
                sketch.add(value);
            }
            self.sketch = Some(sketch);
        }
    }

    /// The nearest-rank `q` quantile of the distribution.
    fn quantile(&self, q: f64) -> Option<f64> {
        let Some(sketch) = &self.sketch else {
            let mut sorted = self.values.clone();
            sorted.sort_by(f64::total_cmp);
            let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            return sorted.get(rank - 1).copied();
        };
        // The sketch ranks by floor(q' × (n − 1)); this q' lands on the
        // nearest rank's index (the + 0.5 keeps float error off the edge).
        let n = sketch.count().max(2);
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        let at = ((rank - 1) as f64 + 0.5) / (n - 1) as f64;
        sketch.quantile(at.min(1.0)).ok().flatten()
    }
}

impl Tumbling {
    /// Builds `count INTERVAL`.
    pub fn count(spec: &StageSpec) -> Result<Tumbling, ParseError> {
        Self::build(spec, Fold::Count)
    }

    /// Builds `rate INTERVAL`.
    pub fn rate(spec: &StageSpec) -> Result<Tumbling, ParseError> {
        Self::build(spec, Fold::Rate)
    }

    /// Builds `fixed-time-window INTERVAL combine=F`.
    pub fn combined(spec: &StageSpec) -> Result<Tumbling, ParseError> {
        let combine = Combine::from_spec(spec)?;
        Self::build(spec, Fold::Combine(combine))
    }

    /// Builds `fold-interval INTERVAL F`.
    pub fn fold_interval(spec: &StageSpec) -> Result<Tumbling, ParseError> {
        let fold = spec
            .positional(1)
            .ok_or_else(|| spec.error("needs an interval and a fold, e.g. fold-interval 1m max"))?;
        let combine = Combine::parse(spec, fold)?;
        Self::build(spec, Fold::Combine(combine))
    }

    /// Builds `apdex INTERVAL satisfied=T [tolerated=U]`.
    pub fn apdex(spec: &StageSpec) -> Result<Tumbling, ParseError> {
        let criterion = |key: &str, literal: &Literal| match literal {
            Literal::Number(t) | Literal::Duration(t) => {
                Ok(Predicate::Numeric(Field::Metric, Op::Le, *t))
            }
            Literal::Str(text) => Predicate::parse(text).map_err(|e| {
                spec.error(format!("{key}: {}", e.message))
            }),
            other => Err(spec.error(format!(
                "{key} is a response time or a predicate in quotes, found {other}"
            ))),
        };
        let satisfied = spec.named("satisfied").ok_or_else(|| {
            spec.error("needs satisfied=T (a response time) or satisfied='PREDICATE'")
        })?;
        let tolerated = match (spec.named("tolerated"), satisfied) {
            (Some(tolerated), _) => criterion("tolerated", tolerated)?,
            (None, Literal::Number(t) | Literal::Duration(t)) => {
                Predicate::Numeric(Field::Metric, Op::Le, 4.0 * t)
            }
            (None, _) => return Err(spec.error("needs tolerated=… with a predicate satisfied")),
        };
        let satisfied = criterion("satisfied", satisfied)?;
        Self::build(
            spec,
            Fold::Apdex {
                satisfied,
                tolerated,
            },
        )
    }

    /// Builds `percentiles INTERVAL [Q, …]` (default `[0.5, 0.95, 0.99]`).
    pub fn percentiles(spec: &StageSpec) -> Result<Tumbling, ParseError> {
        let quantiles = match spec.positional(1) {
            None => vec![0.5, 0.95, 0.99],
            Some(Literal::List(items)) => items
                .iter()
                .map(|q| match q {
                    Literal::Number(q) if (0.0..=1.0).contains(q) => Ok(*q),
                    other => {
                        Err(spec.error(format!("quantiles are numbers in [0, 1], found {other}")))
                    }
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(spec.error(format!("expected a list of quantiles, found {other}")))
            }
        };
        Self::build(spec, Fold::Percentiles(quantiles))
    }

    fn build(spec: &StageSpec, fold: Fold) -> Result<Tumbling, ParseError> {
        let interval = spec
            .duration("interval", Some(0))?
            .ok_or_else(|| spec.error("needs an interval, e.g. 10s"))?;
        Ok(Tumbling {
            interval,
            fold,
            state: WindowState::default(),
        })
    }

    fn emit(&self, end: f64, out: &mut Vec<Event>) {
        let Some(last) = &self.state.last else { return };
        let at = |metric: f64| {
            let mut event = last.clone();
            event.metric = Some(metric);
            event.time = end;
            event
        };
        match &self.fold {
            Fold::Count => {
                let mut event = at(self.state.count as f64);
                event.tags.push(format!("per {}s", self.interval));
                out.push(event);
            }
            Fold::Rate => out.push(at(self.state.sum / self.interval)),
            Fold::Apdex { .. } => out.push(at(self.state.sum / self.state.count as f64)),
            Fold::Combine(combine) => {
                if let Some(value) = combine.apply(&self.state.values, self.state.count as usize) {
                    out.push(at(value));
                }
            }
            Fold::Percentiles(quantiles) => {
                for q in quantiles {
                    let Some(value) = self.state.quantile(*q) else {
                        return;
                    };
                    let mut event = at(value);
                    let service = last.service.as_deref().unwrap_or("");
                    event.service = Some(format!("{service} {q}"));
                    out.push(event);
                }
            }
        }
    }
}

impl Stage for Tumbling {
    fn event(&mut self, event: Event, now: f64, _out: &mut Vec<Event>) {
        let score = match &self.fold {
            Fold::Apdex { .. } if event.state.as_deref() == Some("expired") => return,
            Fold::Apdex {
                satisfied,
                tolerated,
            } => {
                if satisfied.matches(&event) {
                    1.0
                } else if tolerated.matches(&event) {
                    0.5
                } else {
                    0.0
                }
            }
            Fold::Count | Fold::Combine(Combine::Count) => 0.0,
            _ if event.metric.is_none() => return,
            _ => 0.0,
        };
        self.state.sum += score;
        let end = match self.state.window_end {
            None => now + self.interval,
            // Skip the empty windows since the last one, keeping the grid.
            Some(end) if end <= now => {
                end + ((now - end) / self.interval).floor() * self.interval + self.interval
            }
            Some(end) => end,
        };
        self.state.window_end = Some(end);
        self.state.count += 1;
        if let Some(metric) = event.metric.filter(|_| !matches!(self.fold, Fold::Apdex { .. })) {
            self.state.sum += metric;
            match self.fold {
                Fold::Percentiles(_) if metric.is_finite() => {
                    self.state.add_to_distribution(metric)
                }
                Fold::Combine(_) => self.state.values.push(metric),
                _ => {}
            }
        }
        self.state.last = Some(event);
    }

    fn deadline(&self) -> Option<f64> {
        self.state.window_end.filter(|_| self.state.count > 0)
    }

    fn tick(&mut self, now: f64, out: &mut Vec<Event>) {
        let Some(end) = self.state.window_end.filter(|e| *e <= now) else {
            return;
        };
        self.emit(end, out);
        self.state = WindowState {
            window_end: Some(end + self.interval),
            ..WindowState::default()
        };
    }

    json_state!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact nearest rank over `values`.
    fn nearest_rank(values: &[f64], q: f64) -> f64 {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
    }

    #[test]
    fn a_large_window_is_sketched_within_one_percent_in_bounded_memory() {
        // Latency-like values over six decades, some zero and negative.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let values: Vec<f64> = (0..200_000)
            .map(|i| match i % 50 {
                0 => 0.0,
                1 => -10f64.powf(next() * 3.0),
                _ => 10f64.powf(next() * 6.0 - 2.0),
            })
            .collect();
        let mut state = WindowState::default();
        for (i, value) in values.iter().enumerate() {
            state.add_to_distribution(*value);
            if i == EXACT_VALUES - 1 {
                assert!(state.sketch.is_none());
                assert_eq!(
                    state.quantile(0.5),
                    Some(nearest_rank(&values[..EXACT_VALUES], 0.5))
                );
            }
        }
        assert!(state.values.is_empty() && state.sketch.is_some());
        for q in [
            0.0, 0.01, 0.02, 0.03, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0,
        ] {
            let exact = nearest_rank(&values, q);
            let sketched = state.quantile(q).unwrap();
            assert!(
                (sketched - exact).abs() <= 0.01 * exact.abs() + 1e-9,
                "q {q}: sketch {sketched}, exact {exact}"
            );
        }
        let saved = serde_json::to_vec(&state).unwrap();
        assert!(saved.len() < 64 << 10, "{} bytes of state", saved.len());
        let restored: WindowState = serde_json::from_slice(&saved).unwrap();
        assert_eq!(restored.quantile(0.99), state.quantile(0.99));
    }
}
