//! `ewma alpha=A`: replaces the metric by its exponentially weighted
//! moving average, `avg = A·x + (1−A)·avg`, seeded by the first value.
//! Unlike godot's (which always yields 1) it averages the actual values.
//! Events without a metric are dropped.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use weir_event::Event;

use crate::lang::{ParseError, StageSpec};
use crate::stage::{load_json, save_json, Stage, StateError};

/// Exponentially weighted moving average of the metric.
pub struct Ewma {
    alpha: f64,
    state: EwmaState,
}

#[derive(Default, Serialize, Deserialize)]
struct EwmaState {
    average: Option<f64>,
}

impl Ewma {
    /// Builds `ewma alpha=A` (or `ewma A`), 0 < A ≤ 1.
    pub fn from_spec(spec: &StageSpec) -> Result<Ewma, ParseError> {
        spec.only_named(&["alpha"])?;
        let alpha = spec
            .number("alpha", Some(0))?
            .ok_or_else(|| spec.error("needs alpha, e.g. ewma alpha=0.1"))?;
        if !(alpha > 0.0 && alpha <= 1.0) {
            return Err(spec.error(format!("alpha must be in (0, 1], found {alpha}")));
        }
        Ok(Ewma {
            alpha,
            state: EwmaState::default(),
        })
    }
}

impl Stage for Ewma {
    fn event(&mut self, mut event: Event, _now: f64, out: &mut Vec<Event>) {
        let Some(x) = event.metric else { return };
        let average = match self.state.average {
            Some(previous) => self.alpha * x + (1.0 - self.alpha) * previous,
            None => x,
        };
        self.state.average = Some(average);
        event.metric = Some(average);
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
