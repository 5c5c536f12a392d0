//! `where PREDICATE`: passes the events that satisfy the predicate.

use weir_event::Event;

use crate::lang::{ParseError, StageSpec};
use crate::predicate::Predicate;
use crate::stage::Stage;

/// Passes events matching a predicate.
pub struct Where {
    predicate: Predicate,
}

impl Where {
    /// Builds from `where …`.
    pub fn from_spec(spec: &StageSpec) -> Result<Where, ParseError> {
        let predicate = spec
            .predicate
            .as_ref()
            .ok_or_else(|| spec.error("needs a predicate"))?;
        Ok(Where {
            predicate: Predicate::compile(predicate)?,
        })
    }
}

impl Stage for Where {
    fn event(&mut self, event: Event, _now: f64, out: &mut Vec<Event>) {
        if self.predicate.matches(&event) {
            out.push(event);
        }
    }
}
