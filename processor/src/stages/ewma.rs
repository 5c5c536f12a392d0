//! `ewma alpha=A | ewma N | ewma D`: replaces the metric by its
//! exponentially weighted moving average, seeded by the first value.
//!
//! - `alpha=A` (0 < A ≤ 1): `avg = A·x + (1−A)·avg` per event;
//! - `N` events: the same with `A = 2 / (N + 1)` (the usual span rule);
//! - `D` of time: time-decayed, `avg += (1 − e^(−Δt/D))·(x − avg)` with Δt
//!   the event time since the previous value, so irregular events weigh by
//!   the time they cover.
//!
//! Unlike godot's (which always yields 1) it averages the actual values.
//! Events without a metric are dropped.

use serde::{Deserialize, Serialize};
use weir_event::Event;

use crate::lang::{Literal, ParseError, StageSpec};
use crate::stage::{Built, Options, StageDef, json_state, Stage};

/// The stages this file declares.
pub const STAGES: &[StageDef] = &[
    StageDef {
        name: "ewma",
        options: Options::Only(&["alpha"]),
        doc: "Exponentially weighted moving average of the metric.",
        build: |spec, _| Built::one(Ewma::from_spec(spec)?),
    },
];

/// How much a new value weighs.
#[derive(Debug, Clone, Copy)]
enum Weight {
    Alpha(f64),
    TimeConstant(f64),
}

/// Exponentially weighted moving average of the metric.
pub struct Ewma {
    weight: Weight,
    state: EwmaState,
}

#[derive(Default, Serialize, Deserialize)]
struct EwmaState {
    average: Option<f64>,
    time: f64,
}

impl Ewma {
    /// Builds `ewma alpha=A`, `ewma N` or `ewma D`.
    pub fn from_spec(spec: &StageSpec) -> Result<Ewma, ParseError> {
        let usage =
            "needs alpha=A (0 < A ≤ 1), a count of events (ewma 10) or a duration (ewma 5m)";
        let weight = match (spec.named("alpha"), spec.positional(0)) {
            (Some(Literal::Number(a)), None) if *a > 0.0 && *a <= 1.0 => Weight::Alpha(*a),
            (None, Some(Literal::Number(n))) if *n >= 1.0 && n.fract() == 0.0 => {
                Weight::Alpha(2.0 / (n + 1.0))
            }
            (None, Some(Literal::Duration(d))) if *d > 0.0 => Weight::TimeConstant(*d),
            _ => return Err(spec.error(usage)),
        };
        Ok(Ewma {
            weight,
            state: EwmaState::default(),
        })
    }
}

impl Stage for Ewma {
    fn event(&mut self, mut event: Event, _now: f64, out: &mut Vec<Event>) {
        let Some(x) = event.metric else { return };
        let average = match (self.state.average, self.weight) {
            (None, _) => x,
            (Some(previous), Weight::Alpha(alpha)) => alpha * x + (1.0 - alpha) * previous,
            (Some(previous), Weight::TimeConstant(tau)) => {
                let elapsed = (event.time - self.state.time).max(0.0);
                previous + (1.0 - (-elapsed / tau).exp()) * (x - previous)
            }
        };
        self.state.average = Some(average);
        self.state.time = self.state.time.max(event.time);
        event.metric = Some(average);
        out.push(event);
    }

    json_state!();
}
