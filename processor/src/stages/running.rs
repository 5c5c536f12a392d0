//! Running totals since the stream began (godot's `sum` and `mean`): each
//! event with a metric is emitted with `metric` = the total (or the mean)
//! of every metric so far. Events without a metric are dropped.
//!
//! `counter [START]` (Riemann's `counter`): the total from START (default
//! 0); an event tagged `reset` sets it to its own metric; events without
//! a metric pass on unchanged.

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
    StageDef {
        name: "counter",
        options: Options::Only(&[]),
        doc: "Running total from START; an event tagged reset sets it (Riemann).",
        build: |spec, _| Built::one(Running::counter(spec)?),
    },
];

/// What a running total emits.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Sum,
    Mean,
    Counter,
}

/// A running sum, mean or counter.
pub struct Running {
    kind: Kind,
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
            kind: if mean { Kind::Mean } else { Kind::Sum },
            state: RunningState::default(),
        })
    }

    /// Builds `counter [START]`.
    pub fn counter(spec: &StageSpec) -> Result<Running, ParseError> {
        if spec.positional(1).is_some() || spec.nested().is_some() {
            return Err(spec.error("takes one start value"));
        }
        let start = spec.number("start", Some(0))?.unwrap_or(0.0);
        Ok(Running {
            kind: Kind::Counter,
            state: RunningState {
                total: start,
                count: 0,
            },
        })
    }
}

impl Stage for Running {
    fn event(&mut self, mut event: Event, _now: f64, out: &mut Vec<Event>) {
        let Some(metric) = event.metric else {
            if self.kind == Kind::Counter {
                out.push(event);
            }
            return;
        };
        if self.kind == Kind::Counter && event.tags.iter().any(|t| t == "reset") {
            self.state.total = metric;
        } else {
            self.state.total += metric;
        }
        self.state.count += 1;
        let value = match self.kind {
            Kind::Mean => self.state.total / self.state.count as f64,
            Kind::Sum | Kind::Counter => self.state.total,
        };
        event.metric = Some(value);
        out.push(event);
    }

    json_state!();
}
