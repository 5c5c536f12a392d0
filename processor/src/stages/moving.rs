//! Stages over a sliding window of the last N events or the last D of
//! event time (`sma 10`, `sma 5m`). On every event with a metric they emit
//! that event with `metric` replaced by a fold of the window, which
//! includes the event itself; events without a metric are dropped.
//!
//! - `sma WINDOW`: simple moving average.
//! - `wma WINDOW`: weighted moving average, weights 1, 2, …, n from the
//!   oldest to the newest.
//! - `window-sum WINDOW`: sum over the window.
//! - `window-max WINDOW`, `window-min WINDOW`: extremes over the window.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use weir_event::Event;

use crate::lang::{Literal, ParseError, StageSpec};
use crate::stage::{load_json, save_json, Stage, StateError};

/// The extent of a sliding window.
#[derive(Debug, Clone, Copy)]
enum Window {
    Events(usize),
    Seconds(f64),
}

/// The fold of a sliding window.
#[derive(Debug, Clone, Copy)]
pub enum Fold {
    /// Simple moving average.
    Mean,
    /// Linearly weighted moving average.
    Weighted,
    /// Sum.
    Sum,
    /// Largest value.
    Max,
    /// Smallest value.
    Min,
}

/// A sliding-window fold of the metric.
pub struct Moving {
    window: Window,
    fold: Fold,
    state: MovingState,
}

#[derive(Default, Serialize, Deserialize)]
struct MovingState {
    /// `(time, metric)` of the events in the window, oldest first.
    points: VecDeque<(f64, f64)>,
}

impl Moving {
    /// Builds a moving stage with `fold` from `NAME WINDOW`.
    pub fn from_spec(spec: &StageSpec, fold: Fold) -> Result<Moving, ParseError> {
        spec.only_named(&["window"])?;
        let window = match spec.named("window").or_else(|| spec.positional(0)) {
            Some(Literal::Number(n)) if *n >= 1.0 && n.fract() == 0.0 => {
                Window::Events(*n as usize)
            }
            Some(Literal::Duration(d)) if *d > 0.0 => Window::Seconds(*d),
            other => {
                let found = other.map_or("nothing".to_owned(), |o| o.to_string());
                return Err(spec.error(format!(
                    "needs a window: a count of events (10) or a duration (5m), found {found}"
                )));
            }
        };
        Ok(Moving {
            window,
            fold,
            state: MovingState::default(),
        })
    }

    fn value(&self) -> f64 {
        let points = &self.state.points;
        let metrics = points.iter().map(|(_, m)| *m);
        match self.fold {
            Fold::Mean => metrics.sum::<f64>() / points.len() as f64,
            Fold::Weighted => {
                let weighted: f64 = metrics.enumerate().map(|(i, m)| (i + 1) as f64 * m).sum();
                let n = points.len() as f64;
                weighted / (n * (n + 1.0) / 2.0)
            }
            Fold::Sum => metrics.sum(),
            Fold::Max => metrics.fold(f64::NEG_INFINITY, f64::max),
            Fold::Min => metrics.fold(f64::INFINITY, f64::min),
        }
    }
}

impl Stage for Moving {
    fn event(&mut self, mut event: Event, now: f64, out: &mut Vec<Event>) {
        let Some(metric) = event.metric else { return };
        let points = &mut self.state.points;
        points.push_back((event.time, metric));
        match self.window {
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
        event.metric = Some(self.value());
        out.push(event);
    }

    fn save(&self) -> Value {
        save_json(&self.state)
    }

    fn load(&mut self, state: Value) -> Result<(), StateError> {
        self.state = load_json(state)?;
        Ok(())
    }
}
