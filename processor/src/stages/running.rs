//! Running totals since the stream began (godot's `sum` and `mean`): each
//! event with a metric is emitted with `metric` = the total (or the mean)
//! of every metric so far. Events without a metric are dropped.

use serde::{Deserialize, Serialize};
use weir_event::Event;

use crate::lang::{ParseError, StageSpec};
use crate::stage::{Built, Options, StageDef, json_state, Stage};

/// The stages this file declares.
pub const STAGES: &[StageDef] = &[
    StageDef {
        name: "sum",
        options: Options::Only(&[]),
        doc: "Running total of the metrics (godot).",
        build: |spec, _| Built::one(Running::from_spec(spec, false)?),
    },
    StageDef {
        name: "mean",
        options: Options::Only(&[]),
        doc: "Running mean of the metrics (godot).",
        build: |spec, _| Built::one(Running::from_spec(spec, true)?),
    },
];

/// A running sum or mean.
pub struct Running {
    mean: bool,
    state: RunningState,
}

#[derive(Default, Serialize, Deserialize)]
struct RunningState {
    total: f64,
    count: u64,
}

impl Running {
    /// Builds `sum` (`mean = false`) or `mean`.
    pub fn from_spec(spec: &StageSpec, mean: bool) -> Result<Running, ParseError> {
        if !spec.args.is_empty() {
            return Err(spec.error("takes no arguments"));
        }
        Ok(Running {
            mean,
            state: RunningState::default(),
        })
    }
}

impl Stage for Running {
    fn event(&mut self, mut event: Event, _now: f64, out: &mut Vec<Event>) {
        let Some(metric) = event.metric else { return };
        self.state.total += metric;
        self.state.count += 1;
        let value = if self.mean {
            self.state.total / self.state.count as f64
        } else {
            self.state.total
        };
        event.metric = Some(value);
        out.push(event);
    }

    json_state!();
}
