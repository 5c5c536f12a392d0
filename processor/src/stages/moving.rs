//! Stages over a sliding window of the last N events or the last D of
//! event time (`sma 10`, `sma 5m`). On every event with a metric they emit
//! that event with `metric` replaced by a fold of the window, which
//! includes the event itself; events without a metric are dropped.
//!
//! - `sma WINDOW`: simple moving average.
//! - `wma WINDOW`: weighted moving average, weights 1, 2, …, n from the
//!   oldest to the newest.
//! - `window-sum WINDOW`, `window-max WINDOW`, `window-min WINDOW`.
//! - `moving-event-window N combine=F`, `moving-time-window D combine=F`:
//!   Riemann's moving windows with any [`Combine`].
//! - `fixed-event-window N combine=F`: every N events with a metric, one
//!   combined event; the window then starts empty.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use weir_event::Event;

use super::combine::Combine;
use crate::lang::{Literal, ParseError, StageSpec};
use crate::stage::{json_state, Stage};

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
    state: MovingState,
}

#[derive(Default, Serialize, Deserialize)]
struct MovingState {
    /// `(time, metric)` of the events in the window, oldest first.
    points: VecDeque<(f64, f64)>,
}

impl Moving {
    /// Builds `sma`, `wma` and the `window-*` folds from `NAME WINDOW`.
    pub fn from_spec(spec: &StageSpec, fold: Combine) -> Result<Moving, ParseError> {
        spec.only_named(&["window"])?;
        Self::build(spec, fold, None, false)
    }

    /// Builds Riemann's `moving-event-window`, `moving-time-window` and
    /// `fixed-event-window`, which take `combine=`.
    pub fn riemann(spec: &StageSpec) -> Result<Moving, ParseError> {
        spec.only_named(&["window", "combine"])?;
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
            state: MovingState::default(),
        })
    }
}

impl Stage for Moving {
    fn event(&mut self, mut event: Event, now: f64, out: &mut Vec<Event>) {
        let Some(metric) = event.metric else { return };
        let points = &mut self.state.points;
        points.push_back((event.time, metric));
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
        let metrics: Vec<f64> = points.iter().map(|(_, m)| *m).collect();
        event.metric = self.fold.apply(&metrics, metrics.len());
        if self.fixed {
            points.clear();
        }
        out.push(event);
    }

    json_state!();
}
