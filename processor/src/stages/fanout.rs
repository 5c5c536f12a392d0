//! Stages with several nested pipelines.
//!
//! - `around (P1) (P2) …` (godot's `around`, Riemann's `streams`): every
//!   event goes into every pipeline; their outputs are merged in order.
//! - `split (P1) (P2) …` (Riemann's `split`): each event goes to the first
//!   pipeline whose leading `where` matches; a pipeline without a leading
//!   `where` takes everything (put it last, as the default branch).

use std::collections::HashSet;

use serde_json::Value;
use weir_event::Event;

use crate::lang::{Arg, ParseError, StageSpec};
use crate::predicate::Predicate;
use crate::stage::{Chain, Stage, StateError};

/// One nested pipeline and, for `split`, its guard.
struct Branch {
    guard: Option<Predicate>,
    chain: Chain,
}

/// Several nested pipelines fed from one stream.
pub struct Fanout {
    first_match: bool,
    branches: Vec<Branch>,
}

impl Fanout {
    /// Builds `around (…) (…)`.
    pub fn around(spec: &StageSpec) -> Result<Fanout, ParseError> {
        Self::build(spec, false)
    }

    /// Builds `split (…) (…)`.
    pub fn split(spec: &StageSpec) -> Result<Fanout, ParseError> {
        Self::build(spec, true)
    }

    fn build(spec: &StageSpec, first_match: bool) -> Result<Fanout, ParseError> {
        let mut branches = Vec::new();
        for arg in &spec.args {
            let Arg::Nested(stages) = arg else {
                return Err(spec.error("takes only nested pipelines: (…) (…)"));
            };
            let (guard, rest) = match stages.split_first() {
                Some((first, rest)) if first_match && first.name == "where" => {
                    let predicate = first
                        .predicate
                        .as_ref()
                        .ok_or_else(|| first.error("needs a predicate"))?;
                    (Some(Predicate::compile(predicate)?), rest)
                }
                _ => (None, stages.as_slice()),
            };
            branches.push(Branch {
                guard,
                chain: Chain::build(rest)?,
            });
        }
        if branches.len() < 2 {
            return Err(spec.error("needs at least two nested pipelines"));
        }
        Ok(Fanout {
            first_match,
            branches,
        })
    }
}

impl Stage for Fanout {
    fn event(&mut self, event: Event, now: f64, out: &mut Vec<Event>) {
        if self.first_match {
            let matching = self
                .branches
                .iter_mut()
                .find(|b| b.guard.as_ref().is_none_or(|g| g.matches(&event)));
            if let Some(branch) = matching {
                branch.chain.event(event, now, out);
            }
            return;
        }
        for branch in &mut self.branches {
            branch.chain.event(event.clone(), now, out);
        }
    }

    fn deadline(&self) -> Option<f64> {
        self.branches
            .iter()
            .filter_map(|b| b.chain.deadline())
            .reduce(f64::min)
    }

    fn tick(&mut self, now: f64, out: &mut Vec<Event>) {
        for branch in &mut self.branches {
            if branch.chain.deadline().is_some_and(|d| d <= now) {
                branch.chain.tick(now, out);
            }
        }
    }

    fn save(&self) -> Value {
        Value::Array(self.branches.iter().map(|b| b.chain.save()).collect())
    }

    fn load(&mut self, state: Value) -> Result<(), StateError> {
        let Value::Array(states) = state else {
            return Err(StateError("expected one state per nested pipeline".into()));
        };
        if states.len() != self.branches.len() {
            return Err(StateError(format!(
                "{} states for {} pipelines",
                states.len(),
                self.branches.len()
            )));
        }
        for (branch, state) in self.branches.iter_mut().zip(states) {
            branch.chain.load(state)?;
        }
        Ok(())
    }

    fn take_hosts(&mut self, hosts: &HashSet<String>) -> Value {
        let taken: Vec<Value> = self
            .branches
            .iter_mut()
            .map(|b| b.chain.take_hosts(hosts))
            .collect();
        if taken.iter().all(Value::is_null) {
            return Value::Null;
        }
        Value::Array(taken)
    }

    fn put_hosts(&mut self, state: Value) -> Result<(), StateError> {
        match state {
            Value::Null => Ok(()),
            Value::Array(states) if states.len() == self.branches.len() => {
                for (branch, state) in self.branches.iter_mut().zip(states) {
                    branch.chain.put_hosts(state)?;
                }
                Ok(())
            }
            _ => Err(StateError(
                "moved state does not fit the nested pipelines".into(),
            )),
        }
    }
}
