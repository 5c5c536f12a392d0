//! `runs N [FIELD]` (Riemann's `runs`): flap detection. Looks at the last
//! N events and passes the newest on when FIELD (default `state`) has the
//! same value in all N (a missing field is a value of its own).
//! `by host | runs 3 state | changed | notify log`

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use weir_event::Event;

use crate::lang::{ParseError, StageSpec};
use crate::predicate::{Field, FieldValue};
use crate::stage::{json_state, Built, Options, Stage, StageDef};

/// The stages this file declares.
pub const STAGES: &[StageDef] = &[StageDef {
    name: "runs",
    options: Options::Only(&[]),
    doc: "Passes an event on when the last N events agree on FIELD (Riemann).",
    build: |spec, _| Built::one(Runs::from_spec(spec)?),
}];

/// Passes events that end a run of N equal values.
pub struct Runs {
    length: usize,
    field: Field,
    state: RunsState,
}

#[derive(Default, Serialize, Deserialize)]
struct RunsState {
    /// The field's value in the last events, oldest first; `None` where
    /// an event did not have it.
    values: VecDeque<Option<String>>,
}

impl Runs {
    /// Builds `runs N [FIELD]`.
    pub fn from_spec(spec: &StageSpec) -> Result<Runs, ParseError> {
        let length = spec
            .count("length", Some(0))?
            .ok_or_else(|| spec.error("needs a run length, e.g. runs 3 state"))?;
        let field = match spec.positional(1) {
            None => Field::State,
            Some(name) => {
                let name = name
                    .as_text()
                    .ok_or_else(|| spec.error(format!("expected a field name, found {name}")))?;
                Field::parse(name, spec.column)?
            }
        };
        Ok(Runs {
            length,
            field,
            state: RunsState::default(),
        })
    }
}

impl Stage for Runs {
    fn event(&mut self, event: Event, _now: f64, out: &mut Vec<Event>) {
        let values = &mut self.state.values;
        let value = match self.field.get(&event) {
            FieldValue::Missing => None,
            _ => Some(self.field.key(&event).into_owned()),
        };
        values.push_back(value);
        if values.len() > self.length {
            values.pop_front();
        }
        if values.len() == self.length && values.iter().all(|v| *v == values[0]) {
            out.push(event);
        }
    }

    json_state!();
}
