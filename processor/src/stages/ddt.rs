//! `ddt` (Riemann's `ddt` without an interval): the derivative of the
//! metric over event time. Each event with a metric after the first is
//! emitted with `metric` = (metric − previous metric) ÷ (time − previous
//! time); an event at the same time as the previous one emits nothing
//! (Riemann skips a zero Δt), events without a metric are dropped.
//! `where service = "bytes_out" | by host | ddt | over 1e8`

use serde::{Deserialize, Serialize};
use weir_event::Event;

use crate::lang::{ParseError, StageSpec};
use crate::stage::{json_state, Built, Options, Stage, StageDef};

/// The stages this file declares.
pub const STAGES: &[StageDef] = &[StageDef {
    name: "ddt",
    options: Options::Only(&[]),
    doc: "Rate of change of the metric per second between successive events (Riemann).",
    build: |spec, _| Built::one(Ddt::from_spec(spec)?),
}];

/// The derivative of the metric.
pub struct Ddt {
    state: DdtState,
}

#[derive(Default, Serialize, Deserialize)]
struct DdtState {
    /// `(time, metric)` of the previous event with a metric.
    previous: Option<(f64, f64)>,
}

impl Ddt {
    /// Builds `ddt`.
    pub fn from_spec(spec: &StageSpec) -> Result<Ddt, ParseError> {
        if !spec.args.is_empty() {
            return Err(spec.error("takes no arguments (Riemann's interval form is `rate`)"));
        }
        Ok(Ddt {
            state: DdtState::default(),
        })
    }
}

impl Stage for Ddt {
    fn event(&mut self, mut event: Event, _now: f64, out: &mut Vec<Event>) {
        let Some(metric) = event.metric else { return };
        let previous = self.state.previous.replace((event.time, metric));
        let Some((time, value)) = previous else { return };
        let dt = event.time - time;
        if dt == 0.0 {
            return;
        }
        event.metric = Some((metric - value) / dt);
        out.push(event);
    }

    json_state!();
}
