//! godot's nested `meta KEY (PIPELINE)` and `tag T (PIPELINE)`: each event
//! runs through the nested pipeline, and whatever it emits comes out with
//! the pipeline's metric stored as `meta.KEY` (or appended as the tag
//! `T:METRIC`) and the event's own metric restored.
//! `by host | meta avg (sma 10) | over-meta avg 90`

use std::collections::HashSet;

use serde_json::Value;
use weir_event::Event;

use crate::lang::{Literal, ParseError, StageSpec};
use crate::stage::{Chain, Stage, StateError};

/// Where an event's own metric waits while the nested pipeline runs.
const STASH: &str = "_weir_metric";

/// Runs a nested pipeline and keeps its metric beside the event's.
pub struct Annotate {
    name: String,
    as_tag: bool,
    chain: Chain,
}

impl Annotate {
    /// Builds `meta KEY (…)` (`as_tag = false`) or `tag T (…)`.
    pub fn from_spec(
        spec: &StageSpec,
        nested: &[StageSpec],
        as_tag: bool,
    ) -> Result<Annotate, ParseError> {
        let name = match spec.positional(0) {
            Some(literal @ (Literal::Word(_) | Literal::Str(_))) => {
                literal.as_text().unwrap_or_default().to_owned()
            }
            _ => {
                return Err(
                    spec.error("needs a name before the nested pipeline, e.g. meta avg (sma 10)")
                )
            }
        };
        if spec.positional(1).is_some()
            || spec
                .args
                .iter()
                .any(|a| matches!(a, crate::lang::Arg::Named(..)))
        {
            return Err(spec.error("takes a name and one nested pipeline"));
        }
        Ok(Annotate {
            name,
            as_tag,
            chain: Chain::build(nested)?,
        })
    }

    fn finish(&self, produced: Vec<Event>, out: &mut Vec<Event>) {
        for mut event in produced {
            let computed = event.metric;
            event.metric = event.extra.remove(STASH).and_then(|v| v.as_f64());
            match (self.as_tag, computed) {
                (true, Some(metric)) => event.tags.push(format!("{}:{metric}", self.name)),
                (true, None) => {}
                (false, metric) => {
                    event
                        .meta
                        .insert(self.name.clone(), metric.map_or(Value::Null, Value::from));
                }
            }
            out.push(event);
        }
    }
}

impl Stage for Annotate {
    fn event(&mut self, mut event: Event, now: f64, out: &mut Vec<Event>) {
        event
            .extra
            .insert(STASH.into(), event.metric.map_or(Value::Null, Value::from));
        let mut produced = Vec::new();
        self.chain.event(event, now, &mut produced);
        self.finish(produced, out);
    }

    fn deadline(&self) -> Option<f64> {
        self.chain.deadline()
    }

    fn tick(&mut self, now: f64, out: &mut Vec<Event>) {
        let mut produced = Vec::new();
        self.chain.tick(now, &mut produced);
        self.finish(produced, out);
    }

    fn save(&self) -> Value {
        self.chain.save()
    }

    fn load(&mut self, state: Value) -> Result<(), StateError> {
        self.chain.load(state)
    }

    fn take_hosts(&mut self, hosts: &HashSet<String>) -> Value {
        self.chain.take_hosts(hosts)
    }

    fn put_hosts(&mut self, state: Value) -> Result<(), StateError> {
        self.chain.put_hosts(state)
    }
}
