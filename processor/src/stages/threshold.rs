//! `over N` and `under N`: pass events whose metric is strictly above
//! (below) a bound. Events without a metric never pass.

use weir_event::Event;

use crate::lang::{ParseError, StageSpec};
use crate::stage::Stage;

/// A strict metric bound.
pub struct Threshold {
    bound: f64,
    above: bool,
}

impl Threshold {
    /// Builds `over N`.
    pub fn over(spec: &StageSpec) -> Result<Threshold, ParseError> {
        Self::build(spec, true)
    }

    /// Builds `under N`.
    pub fn under(spec: &StageSpec) -> Result<Threshold, ParseError> {
        Self::build(spec, false)
    }

    fn build(spec: &StageSpec, above: bool) -> Result<Threshold, ParseError> {
        spec.only_named(&[])?;
        let bound = spec
            .number("bound", Some(0))?
            .ok_or_else(|| spec.error("needs a number, e.g. over 90"))?;
        Ok(Threshold { bound, above })
    }
}

impl Stage for Threshold {
    fn event(&mut self, event: Event, _now: f64, out: &mut Vec<Event>) {
        let pass = match event.metric {
            Some(metric) if self.above => metric > self.bound,
            Some(metric) => metric < self.bound,
            None => false,
        };
        if pass {
            out.push(event);
        }
    }
}
