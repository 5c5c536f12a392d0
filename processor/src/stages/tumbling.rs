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
//!   nearest rank) with `service` = "SERVICE Q" and `metric` = the value.
//! - `fixed-time-window INTERVAL combine=F` (Riemann): `metric` = the
//!   window's metrics combined by F (see [`Combine`]).
//!
//! Events without a metric are ignored, except by `count` and `combine=count`.

use serde::{Deserialize, Serialize};
use weir_event::Event;

use super::combine::Combine;
use crate::lang::{Literal, ParseError, StageSpec};
use crate::stage::{json_state, Stage};

/// What a window folds its events into.
#[derive(Debug, Clone, PartialEq)]
enum Fold {
    Count,
    Rate,
    Percentiles(Vec<f64>),
    Combine(Combine),
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
    /// Metrics of the window (percentiles only).
    values: Vec<f64>,
    last: Option<Event>,
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
        spec.only_named(&["interval", "combine"])?;
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
            Fold::Combine(combine) => {
                if let Some(value) = combine.apply(&self.state.values, self.state.count as usize) {
                    out.push(at(value));
                }
            }
            Fold::Percentiles(quantiles) => {
                let mut sorted = self.state.values.clone();
                sorted.sort_by(f64::total_cmp);
                if sorted.is_empty() {
                    return;
                }
                for q in quantiles {
                    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
                    let mut event = at(sorted[rank - 1]);
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
        let counts_all = matches!(self.fold, Fold::Count | Fold::Combine(Combine::Count));
        if !counts_all && event.metric.is_none() {
            return;
        }
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
        if let Some(metric) = event.metric {
            self.state.sum += metric;
            if matches!(self.fold, Fold::Percentiles(_) | Fold::Combine(_)) {
                self.state.values.push(metric);
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
