//! Stages over a sliding window of the last N events or the last D of
//! event time (`sma 10`, `sma 5m`). On every event with a metric they emit
//! that event with `metric` replaced by a fold of the window, which
//! includes the event itself; events without a metric are dropped.
//!
//! - `sma WINDOW`: simple moving average; like godot's `movingAverage`
//!   it also sets `meta.variance` and `meta.stdDev` (population) of the
//!   window's metrics.
//! - `wma WINDOW`: weighted moving average, weights 1, 2, …, n from the
//!   oldest to the newest (with `meta.variance` and `meta.stdDev`).
//! - `window-sum WINDOW`, `window-max WINDOW`, `window-min WINDOW`.
//! - `moving-event-window N combine=F`, `moving-time-window D combine=F`:
//!   Riemann's moving windows with any [`Combine`].
//! - `fixed-event-window N combine=F`: every N events, one combined event;
//!   the window then starts empty.
//!
//! The event windows (`moving-event-window`, `fixed-event-window`) hold
//! every event, with a metric or not, as godot's `eventWindow` does: the
//! window's bounds count events, `combine=count` counts them, and the
//! other folds take the metrics there are (`sum` of none is 0).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use weir_event::Event;

use super::combine::Combine;
use crate::lang::{Literal, ParseError, StageSpec};
use crate::stage::{Built, Options, StageDef, json_state, Stage};

/// The stages this file declares.
pub const STAGES: &[StageDef] = &[
    StageDef {
        name: "sma",
        options: Options::Only(&["window"]),
        doc: "Simple moving average over the last N events or D of time, with meta.variance and meta.stdDev.",
        build: |spec, _| Built::one(Moving::from_spec(spec, Combine::Mean)?),
    },
    StageDef {
        name: "wma",
        options: Options::Only(&["window"]),
        doc: "Linearly weighted moving average over the last N events or D of time.",
        build: |spec, _| Built::one(Moving::from_spec(spec, Combine::Weighted)?),
    },
    StageDef {
        name: "window-sum",
        options: Options::Only(&["window"]),
        doc: "Sum of the metrics over the last N events or D of time.",
        build: |spec, _| Built::one(Moving::from_spec(spec, Combine::Sum)?),
    },
    StageDef {
        name: "window-max",
        options: Options::Only(&["window"]),
        doc: "Largest metric over the last N events or D of time.",
        build: |spec, _| Built::one(Moving::from_spec(spec, Combine::Max)?),
    },
    StageDef {
        name: "window-min",
        options: Options::Only(&["window"]),
        doc: "Smallest metric over the last N events or D of time.",
        build: |spec, _| Built::one(Moving::from_spec(spec, Combine::Min)?),
    },
    StageDef {
        name: "moving-event-window",
        options: Options::Only(&["window", "combine"]),
        doc: "On every event, the last N events folded by combine=F (Riemann).",
        build: |spec, _| Built::one(Moving::riemann(spec)?),
    },
    StageDef {
        name: "moving-time-window",
        options: Options::Only(&["window", "combine"]),
        doc: "On every event, the last D of events folded by combine=F (Riemann).",
        build: |spec, _| Built::one(Moving::riemann(spec)?),
    },
    StageDef {
        name: "fixed-event-window",
        options: Options::Only(&["window", "combine"]),
        doc: "Every N events, the N folded by combine=F (Riemann).",
        build: |spec, _| Built::one(Moving::riemann(spec)?),
    },
];

/// The extent of a sliding window.
#[derive(Debug, Clone, Copy)]
enum Window {
    Events(usize),
    Seconds(f64),
}

/// A sliding-window fold of the metric.
pub struct Moving {
    window: Window,
    fold: Combine,
    /// Emit once per full window, then empty it (`fixed-event-window`).
    fixed: bool,
    /// Events without a metric take a place in the window (the event
    /// windows).
    holds_all: bool,
    /// Set `meta.variance` and `meta.stdDev` (the moving averages).
    spread: bool,
    state: MovingState,
}

#[derive(Default, Serialize, Deserialize)]
struct MovingState {
    /// `(time, metric)` of the events in the window, oldest first.
    points: VecDeque<(f64, Option<f64>)>,
}

impl Moving {
    /// Builds `sma`, `wma` and the `window-*` folds from `NAME WINDOW`.
    pub fn from_spec(spec: &StageSpec, fold: Combine) -> Result<Moving, ParseError> {
        Self::build(spec, fold, None, false)
    }

    /// Builds Riemann's `moving-event-window`, `moving-time-window` and
    /// `fixed-event-window`, which take `combine=`.
    pub fn riemann(spec: &StageSpec) -> Result<Moving, ParseError> {
        let by_time = spec.name == "moving-time-window";
        let fixed = spec.name == "fixed-event-window";
        Self::build(spec, Combine::from_spec(spec)?, Some(by_time), fixed)
    }

    /// `by_time`: `Some(true)` requires a duration, `Some(false)` a count.
    fn build(
        spec: &StageSpec,
        fold: Combine,
        by_time: Option<bool>,
        fixed: bool,
    ) -> Result<Moving, ParseError> {
        let window = match (spec.named("window").or_else(|| spec.positional(0)), by_time) {
            (Some(Literal::Number(n)), None | Some(false)) if *n >= 1.0 && n.fract() == 0.0 => {
                Window::Events(*n as usize)
            }
            (Some(Literal::Duration(d)), None | Some(true)) if *d > 0.0 => Window::Seconds(*d),
            (other, by_time) => {
                let found = other.map_or("nothing".to_owned(), |o| o.to_string());
                let wanted = match by_time {
                    Some(true) => "a duration (5m)",
                    Some(false) => "a count of events (10)",
                    None => "a count of events (10) or a duration (5m)",
                };
                return Err(spec.error(format!("needs a window: {wanted}, found {found}")));
            }
        };
        Ok(Moving {
            window,
            fold,
            fixed,
            holds_all: matches!(window, Window::Events(_)) && by_time.is_some(),
            spread: by_time.is_none() && matches!(fold, Combine::Mean | Combine::Weighted),
            state: MovingState::default(),
        })
    }
}

impl Stage for Moving {
    fn event(&mut self, mut event: Event, now: f64, out: &mut Vec<Event>) {
        if event.metric.is_none() && !self.holds_all {
            return;
        }
        let points = &mut self.state.points;
        points.push_back((event.time, event.metric));
        match self.window {
            Window::Events(n) if self.fixed => {
                if points.len() < n {
                    return;
                }
            }
            Window::Events(n) => {
                while points.len() > n {
                    points.pop_front();
                }
            }
            Window::Seconds(d) => {
                while points.front().is_some_and(|(t, _)| *t <= now - d) && points.len() > 1 {
                    points.pop_front();
                }
            }
        }
        let metrics: Vec<f64> = points.iter().filter_map(|(_, m)| *m).collect();
        event.metric = self.fold.apply(&metrics, points.len());
        if self.spread {
            let (variance, std_dev) = spread(&metrics);
            event.meta.insert("variance".into(), variance.into());
            event.meta.insert("stdDev".into(), std_dev.into());
        }
        if self.fixed {
            points.clear();
        }
        out.push(event);
    }

    json_state!();
}

/// The population variance and standard deviation of `metrics` (godot's
/// `window.variance()` and `stdDev()`).
fn spread(metrics: &[f64]) -> (f64, f64) {
    let n = metrics.len() as f64;
    let mean = metrics.iter().sum::<f64>() / n;
    let variance = metrics.iter().map(|m| (m - mean).powi(2)).sum::<f64>() / n;
    (variance, variance.sqrt())
}
