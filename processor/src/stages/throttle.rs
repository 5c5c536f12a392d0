//! `throttle N per D` (or `throttle N D`): passes at most N events per
//! window of D seconds of event time; a window opens at the first event
//! after the previous one closed. Extra events are dropped.

use serde::{Deserialize, Serialize};
use weir_event::Event;

use crate::lang::{Literal, ParseError, StageSpec};
use crate::stage::{Built, Options, StageDef, json_state, Stage};

/// The stages this file declares.
pub const STAGES: &[StageDef] = &[
    StageDef {
        name: "throttle",
        options: Options::Only(&["max", "interval"]),
        doc: "At most N events per window of D.",
        build: |spec, _| Built::one(Throttle::from_spec(spec)?),
    },
];

/// Rate limit on events passing through.
pub struct Throttle {
    max: u64,
    interval: f64,
    state: ThrottleState,
}

#[derive(Default, Serialize, Deserialize)]
struct ThrottleState {
    window_end: f64,
    passed: u64,
}

impl Throttle {
    /// Builds `throttle 1 per 5m`.
    pub fn from_spec(spec: &StageSpec) -> Result<Throttle, ParseError> {
        let max = spec
            .number("max", Some(0))?
            .filter(|m| *m >= 1.0 && m.fract() == 0.0)
            .ok_or_else(|| spec.error("needs a whole count ≥ 1, e.g. throttle 1 per 5m"))?;
        let interval_at = match spec.positional(1) {
            Some(Literal::Word(w)) if w == "per" => 2,
            _ => 1,
        };
        let interval = spec
            .duration("interval", Some(interval_at))?
            .ok_or_else(|| spec.error("needs an interval, e.g. throttle 1 per 5m"))?;
        Ok(Throttle {
            max: max as u64,
            interval,
            state: ThrottleState::default(),
        })
    }
}

impl Stage for Throttle {
    fn event(&mut self, event: Event, now: f64, out: &mut Vec<Event>) {
        if now >= self.state.window_end {
            self.state.window_end = now + self.interval;
            self.state.passed = 0;
        }
        if self.state.passed < self.max {
            self.state.passed += 1;
            out.push(event);
        }
    }

    json_state!();
}
