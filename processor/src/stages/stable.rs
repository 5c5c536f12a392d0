//! `stable D [FIELD]` (Riemann's `stable`): passes events only once FIELD
//! (default `state`) has kept the same value for D of event time. Events of
//! a new value are held; when the value has lasted D they are released in
//! order, and later events with the same value pass straight through. A
//! change before D drops the held events (a flap).

use serde::{Deserialize, Serialize};
use weir_event::Event;

use crate::lang::{ParseError, StageSpec};
use crate::predicate::Field;
use crate::stage::{Built, Options, StageDef, json_state, Stage};

/// The stages this file declares.
pub const STAGES: &[StageDef] = &[
    StageDef {
        name: "stable",
        options: Options::Only(&[]),
        doc: "Events only once FIELD has kept its value for D (Riemann).",
        build: |spec, _| Built::one(Stable::from_spec(spec)?),
    },
];

/// Holds events until their value is stable.
pub struct Stable {
    duration: f64,
    field: Field,
    state: StableState,
}

#[derive(Default, Serialize, Deserialize)]
struct StableState {
    value: Option<String>,
    since: f64,
    held: Vec<Event>,
    stable: bool,
}

impl Stable {
    /// Builds `stable 30s [FIELD]`.
    pub fn from_spec(spec: &StageSpec) -> Result<Stable, ParseError> {
        let duration = spec
            .duration("duration", Some(0))?
            .ok_or_else(|| spec.error("needs a duration, e.g. stable 30s"))?;
        let field = match spec.positional(1) {
            None => Field::State,
            Some(literal) => Field::parse(
                literal
                    .as_text()
                    .ok_or_else(|| spec.error(format!("expected a field name, found {literal}")))?,
                spec.column,
            )?,
        };
        Ok(Stable {
            duration,
            field,
            state: StableState::default(),
        })
    }
}

impl Stage for Stable {
    fn event(&mut self, event: Event, now: f64, out: &mut Vec<Event>) {
        let value = self.field.key(&event).into_owned();
        if self.state.value.as_ref() != Some(&value) {
            self.state = StableState {
                value: Some(value),
                since: now,
                held: Vec::new(),
                stable: false,
            };
        }
        if self.state.stable {
            out.push(event);
        } else {
            self.state.held.push(event);
        }
    }

    fn deadline(&self) -> Option<f64> {
        (!self.state.stable && !self.state.held.is_empty())
            .then_some(self.state.since + self.duration)
    }

    fn tick(&mut self, now: f64, out: &mut Vec<Event>) {
        if !self.state.stable && now >= self.state.since + self.duration {
            self.state.stable = true;
            out.append(&mut self.state.held);
        }
    }

    json_state!();
}
