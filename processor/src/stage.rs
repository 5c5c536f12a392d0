//! The stage interface and the pipeline that chains stages.
//!
//! A stage receives events in log order together with the partition's
//! event-time clock, and pushes what it emits into `out`. Timers never read
//! the wall clock: a stage reports its next deadline and is ticked once the
//! clock reaches it. State is saved and loaded as JSON for checkpoints.
//!
//! Adding a stage is one file in `stages/` that declares it (a
//! [`StageDef`] in its `STAGES`) plus one line in `stages/mod.rs`.

use std::collections::HashSet;

use serde_json::Value;
use weir_event::Event;

use crate::lang::{suggest, ParseError, StageSpec};
use crate::stages;
use crate::stages::output::Output;

/// One step of a reactor pipeline.
pub trait Stage: Send {
    /// Handles one event at clock `now` (≥ every earlier `now`).
    fn event(&mut self, event: Event, now: f64, out: &mut Vec<Event>);

    /// The earliest event time at which [`Stage::tick`] has work, if any.
    fn deadline(&self) -> Option<f64> {
        None
    }

    /// The clock reached `now`: fire every timer due at or before it.
    fn tick(&mut self, _now: f64, _out: &mut Vec<Event>) {}

    /// The stage's state, for a checkpoint.
    fn save(&self) -> Value {
        Value::Null
    }

    /// Restores state written by [`Stage::save`].
    fn load(&mut self, _state: Value) -> Result<(), StateError> {
        Ok(())
    }

    /// Removes and returns the state kept under keys of `hosts` (an
    /// application moving to another partition); `Null` when none.
    /// Only state keyed by host moves: a stage's partition-wide state
    /// stays where it is.
    fn take_hosts(&mut self, _hosts: &HashSet<String>) -> Value {
        Value::Null
    }

    /// Adds state that [`Stage::take_hosts`] gave up on another partition.
    fn put_hosts(&mut self, _state: Value) -> Result<(), StateError> {
        Ok(())
    }

    /// Whether it has side branches: nested pipelines whose results go
    /// to an output of their own rather than on down the pipeline.
    fn has_side(&self) -> bool {
        false
    }

    /// Moves what its side branches produced since the last call to
    /// `side`, in order.
    fn take_side(&mut self, _side: &mut Vec<SideResult>) {}
}

/// A result of a side branch, with where it goes.
#[derive(Debug)]
pub struct SideResult {
    /// The branch's output.
    pub output: Output,
    /// The result.
    pub event: Event,
}

/// Moves `events` to `side`, each bound for `output`.
pub fn to_side(output: &Output, events: &mut Vec<Event>, side: &mut Vec<SideResult>) {
    side.extend(events.drain(..).map(|event| SideResult {
        output: output.clone(),
        event,
    }));
}

/// A checkpointed state that does not fit the stage.
#[derive(Debug, thiserror::Error)]
#[error("stage state does not match: {0}")]
pub struct StateError(pub String);

impl From<serde_json::Error> for StateError {
    fn from(e: serde_json::Error) -> Self {
        StateError(e.to_string())
    }
}

/// The `key=value` options a stage takes.
pub enum Options {
    /// Only these; any other is refused with a list of these.
    Only(&'static [&'static str]),
    /// Any key: the options are the stage's own `FIELD=VALUE` pairs
    /// (`set`, `default`, `meta`) or free options (`notify`).
    Any,
}

/// A stage's declaration, one per name: each file in `stages/` lists its
/// stages in a `STAGES` constant and `stages/mod.rs` registers the file
/// with one line. Suggestions for unknown names, option errors and the
/// documentation check all come from these.
pub struct StageDef {
    /// The name it is written with in a pipeline.
    pub name: &'static str,
    /// The options it takes.
    pub options: Options,
    /// What it does, in one line.
    pub doc: &'static str,
    /// Builds it from its spec (options already checked) and the rest of
    /// the pipeline after it.
    pub build: fn(&StageSpec, &[StageSpec]) -> Result<Built, ParseError>,
}

/// A built stage, and how many stages of the rest of the pipeline it took
/// over (`by` without a nested pipeline takes them all).
pub struct Built {
    /// The stage.
    pub stage: Box<dyn Stage>,
    /// Stages of the rest it consumed.
    pub consumed: usize,
}

impl Built {
    /// A stage that consumes nothing after it.
    pub fn one(stage: impl Stage + 'static) -> Result<Built, ParseError> {
        Ok(Built {
            stage: Box::new(stage),
            consumed: 0,
        })
    }
}

/// Every registered stage.
pub fn registered() -> impl Iterator<Item = &'static StageDef> {
    stages::ALL.iter().flat_map(|defs| defs.iter())
}

/// The declaration of stage `name`, if there is one.
pub fn find(name: &str) -> Option<&'static StageDef> {
    registered().find(|def| def.name == name)
}

/// Builds one stage from its spec. `rest` is the remainder of the
/// pipeline, which `by` takes as its per-key pipeline when it has no
/// nested one.
pub fn build(spec: &StageSpec, rest: &[StageSpec]) -> Result<Built, ParseError> {
    let Some(def) = find(&spec.name) else {
        let names: Vec<&str> = registered().map(|def| def.name).collect();
        let hint = suggest(&spec.name, &names)
            .map(|s| format!(", did you mean \"{s}\"?"))
            .unwrap_or_default();
        return Err(ParseError::new(
            spec.column,
            format!("unknown stage \"{}\"{hint}", spec.name),
        ));
    };
    if let Options::Only(allowed) = def.options {
        spec.only_named(allowed)?;
    }
    (def.build)(spec, rest)
}

/// Stages run in sequence: each one's output is the next one's input.
pub struct Chain {
    stages: Vec<Box<dyn Stage>>,
    /// One reusable output buffer per stage, so passing an event along
    /// the chain allocates nothing once the buffers have grown.
    buffers: Vec<Vec<Event>>,
    /// The stages with side branches.
    with_side: Vec<usize>,
}

impl Chain {
    /// Builds the stages of `specs` in order.
    pub fn build(specs: &[StageSpec]) -> Result<Chain, ParseError> {
        let mut stages = Vec::new();
        let mut i = 0;
        while i < specs.len() {
            let built = build(&specs[i], &specs[i + 1..])?;
            stages.push(built.stage);
            i += 1 + built.consumed;
        }
        let buffers = stages.iter().map(|_| Vec::new()).collect();
        let with_side = (0..stages.len())
            .filter(|&i| stages[i].has_side())
            .collect();
        Ok(Chain {
            stages,
            buffers,
            with_side,
        })
    }

    /// Feeds `event` into stage `at` and what it emits on down the chain;
    /// what leaves the last stage goes to `out`.
    fn feed(&mut self, at: usize, event: Event, now: f64, out: &mut Vec<Event>) {
        if at == self.stages.len() {
            return out.push(event);
        }
        let mut emitted = std::mem::take(&mut self.buffers[at]);
        self.stages[at].event(event, now, &mut emitted);
        self.pass_on(at + 1, &mut emitted, now, out);
        self.buffers[at] = emitted;
    }

    /// Feeds every event of `events` into stage `at`, leaving `events` empty.
    fn pass_on(&mut self, at: usize, events: &mut Vec<Event>, now: f64, out: &mut Vec<Event>) {
        for event in events.drain(..) {
            self.feed(at, event, now, out);
        }
    }
}

impl Stage for Chain {
    fn event(&mut self, event: Event, now: f64, out: &mut Vec<Event>) {
        self.feed(0, event, now, out);
    }

    fn deadline(&self) -> Option<f64> {
        self.stages
            .iter()
            .filter_map(|s| s.deadline())
            .reduce(f64::min)
    }

    fn tick(&mut self, now: f64, out: &mut Vec<Event>) {
        for i in 0..self.stages.len() {
            if self.stages[i].deadline().is_some_and(|d| d <= now) {
                let mut fired = std::mem::take(&mut self.buffers[i]);
                self.stages[i].tick(now, &mut fired);
                self.pass_on(i + 1, &mut fired, now, out);
                self.buffers[i] = fired;
            }
        }
    }

    fn save(&self) -> Value {
        Value::Array(self.stages.iter().map(|s| s.save()).collect())
    }

    fn load(&mut self, state: Value) -> Result<(), StateError> {
        let Value::Array(states) = state else {
            return Err(StateError("expected a list of stage states".into()));
        };
        if states.len() != self.stages.len() {
            return Err(StateError(format!(
                "{} stage states for {} stages",
                states.len(),
                self.stages.len()
            )));
        }
        for (stage, state) in self.stages.iter_mut().zip(states) {
            stage.load(state)?;
        }
        Ok(())
    }

    fn take_hosts(&mut self, hosts: &HashSet<String>) -> Value {
        let taken: Vec<Value> = self
            .stages
            .iter_mut()
            .map(|s| s.take_hosts(hosts))
            .collect();
        if taken.iter().all(Value::is_null) {
            return Value::Null;
        }
        Value::Array(taken)
    }

    fn put_hosts(&mut self, state: Value) -> Result<(), StateError> {
        match state {
            Value::Null => Ok(()),
            Value::Array(states) if states.len() == self.stages.len() => {
                for (stage, state) in self.stages.iter_mut().zip(states) {
                    stage.put_hosts(state)?;
                }
                Ok(())
            }
            _ => Err(StateError(format!(
                "moved state does not fit a pipeline of {} stages",
                self.stages.len()
            ))),
        }
    }

    fn has_side(&self) -> bool {
        !self.with_side.is_empty()
    }

    fn take_side(&mut self, side: &mut Vec<SideResult>) {
        for &i in &self.with_side {
            self.stages[i].take_side(side);
        }
    }
}

/// Implements [`Stage::save`] and [`Stage::load`] for a stage whose whole
/// state is a serializable `self.state` with a `Default`.
macro_rules! json_state {
    () => {
        fn save(&self) -> serde_json::Value {
            $crate::stage::save_json(&self.state)
        }

        fn load(&mut self, state: serde_json::Value) -> Result<(), $crate::stage::StateError> {
            self.state = $crate::stage::load_json(state)?;
            Ok(())
        }
    };
}
pub(crate) use json_state;

/// Saves a serializable state struct.
pub fn save_json<T: serde::Serialize>(state: &T) -> Value {
    serde_json::to_value(state).unwrap_or(Value::Null)
}

/// Loads a state struct saved by [`save_json`]; `null` keeps the default.
pub fn load_json<T: serde::de::DeserializeOwned + Default>(state: Value) -> Result<T, StateError> {
    if state.is_null() {
        return Ok(T::default());
    }
    Ok(serde_json::from_value(state)?)
}

/// An event time with a total order, for timer indexes keyed by deadline.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Time(pub f64);

impl Eq for Time {}

impl PartialOrd for Time {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Time {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_reactors_has_a_heading_for_every_stage() {
        let docs = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/REACTORS.md"),
        )
        .unwrap();
        let headings: Vec<&str> = docs.lines().filter(|l| l.starts_with("###")).collect();
        for name in registered().map(|def| def.name) {
            let named = headings.iter().any(|heading| {
                heading
                    .split(|c: char| c.is_whitespace() || matches!(c, ',' | '(' | ')' | '`'))
                    .any(|word| word == name)
            });
            assert!(named, "docs/REACTORS.md has no heading for stage {name}");
        }
    }

    #[test]
    fn stage_names_are_unique_and_documented_in_one_line() {
        let mut names = HashSet::new();
        for def in registered() {
            assert!(
                names.insert(def.name),
                "stage {} registered twice",
                def.name
            );
            assert!(
                !def.doc.is_empty() && !def.doc.contains('\n'),
                "{}: one line of doc",
                def.name
            );
        }
    }

    #[test]
    fn unknown_stages_and_options_are_named_from_the_declarations() {
        let error = crate::lang::parse("thrtle 1 per 5m")
            .map(|specs| Chain::build(&specs).err().unwrap())
            .unwrap();
        assert!(
            error.message.contains("did you mean \"throttle\""),
            "{error}"
        );
        let error = Chain::build(&crate::lang::parse("ewma alpa=0.5").unwrap())
            .err()
            .unwrap();
        assert!(
            error
                .message
                .contains("unknown option \"alpa\" (options: alpha)"),
            "{error}"
        );
    }
}
