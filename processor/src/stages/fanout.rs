//! Stages with several nested pipelines.
//!
//! - `around (P1) (P2) …` (godot's `around`, Riemann's `sdo`): every event
//!   passes on unchanged and goes into every pipeline; the pipelines are
//!   side branches, their results go to their own output (`notify …`,
//!   `forward …`, or `emit` when they name none) — a tee.
//! - `split (P1) (P2) …` (Riemann's `split`): each event goes to the first
//!   pipeline whose leading `where` matches; a pipeline without a leading
//!   `where` takes everything (put it last, as the default branch). A
//!   pipeline's results pass on, unless it ends in an output of its own.

use std::collections::HashSet;

use serde_json::Value;
use weir_event::Event;

use crate::lang::{Arg, ParseError, StageSpec};
use crate::predicate::Predicate;
use crate::stage::{to_side, Built, Chain, Options, SideResult, Stage, StageDef, StateError};
use crate::stages::output::Output;

/// The stages this file declares.
pub const STAGES: &[StageDef] = &[
    StageDef {
        name: "around",
        options: Options::Only(&[]),
        doc: "Passes every event on and into every nested pipeline, whose results go to their own outputs (godot).",
        build: |spec, _| Built::one(Fanout::around(spec)?),
    },
    StageDef {
        name: "split",
        options: Options::Only(&[]),
        doc: "Sends each event to the first nested pipeline whose leading where matches (Riemann).",
        build: |spec, _| Built::one(Fanout::split(spec)?),
    },
];

/// One nested pipeline, for `split` its guard, and for a side branch its
/// output.
struct Branch {
    guard: Option<Predicate>,
    chain: Chain,
    side: Option<Output>,
}

/// Several nested pipelines fed from one stream.
pub struct Fanout {
    /// `split`: the first matching branch takes the event; `around`:
    /// every branch does, and the event passes on.
    first_match: bool,
    branches: Vec<Branch>,
    /// What a branch emitted, before it goes to `out` or `side`.
    emitted: Vec<Event>,
    side: Vec<SideResult>,
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
            let (rest, side) = Output::split_named(rest)?;
            branches.push(Branch {
                guard,
                chain: Chain::build(rest)?,
                side: if first_match {
                    side
                } else {
                    side.or(Some(Output::Emit))
                },
            });
        }
        let least = if first_match { 2 } else { 1 };
        if branches.len() < least {
            return Err(spec.error(format!(
                "needs at least {least} nested pipeline{}",
                if least > 1 { "s" } else { "" }
            )));
        }
        Ok(Fanout {
            first_match,
            branches,
            emitted: Vec::new(),
            side: Vec::new(),
        })
    }

    /// Sends what `branch` emitted on (to `out`) or to its own output.
    fn route(
        branch: &mut Branch,
        emitted: &mut Vec<Event>,
        side: &mut Vec<SideResult>,
        out: &mut Vec<Event>,
    ) {
        match &branch.side {
            Some(output) => to_side(output, emitted, side),
            None => out.append(emitted),
        }
        branch.chain.take_side(side);
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
                branch.chain.event(event, now, &mut self.emitted);
                Self::route(branch, &mut self.emitted, &mut self.side, out);
            }
            return;
        }
        for branch in &mut self.branches {
            branch.chain.event(event.clone(), now, &mut self.emitted);
            Self::route(branch, &mut self.emitted, &mut self.side, out);
        }
        out.push(event);
    }

    fn has_side(&self) -> bool {
        self.branches
            .iter()
            .any(|b| b.side.is_some() || b.chain.has_side())
    }

    fn take_side(&mut self, side: &mut Vec<SideResult>) {
        side.append(&mut self.side);
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
                branch.chain.tick(now, &mut self.emitted);
                Self::route(branch, &mut self.emitted, &mut self.side, out);
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
