//! The stage interface and the pipeline that chains stages.
//!
//! A stage receives events in log order together with the partition's
//! event-time clock, and pushes what it emits into `out`. Timers never read
//! the wall clock: a stage reports its next deadline and is ticked once the
//! clock reaches it. State is saved and loaded as JSON for checkpoints.
//!
//! Adding a stage is one file in `stages/` plus one line in [`build`].

use std::collections::HashSet;

use serde_json::Value;
use weir_event::Event;

use crate::lang::{suggest, ParseError, StageSpec};
use crate::stages;

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

/// Stage names, for suggestions in errors.
pub const STAGE_NAMES: &[&str] = &[
    "where",
    "over",
    "under",
    "within",
    "expire",
    "index",
    "count",
    "rate",
    "percentiles",
    "ewma",
    "sma",
    "wma",
    "window-sum",
    "window-max",
    "window-min",
    "moving-event-window",
    "moving-time-window",
    "fixed-event-window",
    "fixed-time-window",
    "rollup",
    "coalesce",
    "combine",
    "sum",
    "mean",
    "change",
    "changed",
    "stable",
    "by",
    "around",
    "split",
    "throttle",
    "set",
    "map",
    "default",
    "scale",
    "tag",
    "meta",
    "tagged",
    "has-meta",
    "any-meta",
    "all-meta",
    "over-meta",
    "under-meta",
    "emit",
    "notify",
    "forward",
];

/// Builds one stage from its spec. `rest` is the remainder of the
/// pipeline, which `by` takes as its per-key pipeline when it has no
/// nested one; the returned count says how many of `rest` it consumed.
pub fn build(spec: &StageSpec, rest: &[StageSpec]) -> Result<(Box<dyn Stage>, usize), ParseError> {
    use stages::combine::Combine;
    use stages::moving::Moving;
    let stage: Box<dyn Stage> = match spec.name.as_str() {
        "where" => Box::new(stages::filter::Where::from_spec(spec)?),
        "tagged" | "has-meta" | "any-meta" | "all-meta" | "over-meta" | "under-meta" => {
            Box::new(stages::filter::Where::named(spec)?)
        }
        "over" => Box::new(stages::threshold::Threshold::over(spec)?),
        "under" => Box::new(stages::threshold::Threshold::under(spec)?),
        "within" => Box::new(stages::threshold::Threshold::within(spec)?),
        "expire" => Box::new(stages::expire::Expire::from_spec(spec)?),
        "count" => Box::new(stages::tumbling::Tumbling::count(spec)?),
        "rate" => Box::new(stages::tumbling::Tumbling::rate(spec)?),
        "percentiles" => Box::new(stages::tumbling::Tumbling::percentiles(spec)?),
        "ewma" => Box::new(stages::ewma::Ewma::from_spec(spec)?),
        "sma" => Box::new(Moving::from_spec(spec, Combine::Mean)?),
        "wma" => Box::new(Moving::from_spec(spec, Combine::Weighted)?),
        "window-sum" => Box::new(Moving::from_spec(spec, Combine::Sum)?),
        "window-max" => Box::new(Moving::from_spec(spec, Combine::Max)?),
        "window-min" => Box::new(Moving::from_spec(spec, Combine::Min)?),
        "moving-event-window" | "moving-time-window" | "fixed-event-window" => {
            Box::new(Moving::riemann(spec)?)
        }
        "fixed-time-window" => Box::new(stages::tumbling::Tumbling::combined(spec)?),
        "combine" => Box::new(stages::combine::CombineStage::from_spec(spec)?),
        "rollup" => Box::new(stages::rollup::Rollup::from_spec(spec)?),
        "coalesce" => Box::new(stages::coalesce::Coalesce::from_spec(spec)?),
        "index" => Box::new(stages::index::Index::from_spec(spec)?),
        "sum" => Box::new(stages::running::Running::from_spec(spec, false)?),
        "mean" => Box::new(stages::running::Running::from_spec(spec, true)?),
        "change" => Box::new(stages::change::Change::any_change(spec)?),
        "changed" => Box::new(stages::change::Change::changed(spec)?),
        "stable" => Box::new(stages::stable::Stable::from_spec(spec)?),
        "around" => Box::new(stages::fanout::Fanout::around(spec)?),
        "split" => Box::new(stages::fanout::Fanout::split(spec)?),
        "throttle" => Box::new(stages::throttle::Throttle::from_spec(spec)?),
        "set" | "map" => Box::new(stages::modify::Modify::set(spec)?),
        "default" => Box::new(stages::modify::Modify::default(spec)?),
        "scale" => Box::new(stages::modify::Modify::scale(spec)?),
        "tag" | "meta" if spec.nested().is_some() => {
            let nested = spec.nested().unwrap_or_default();
            Box::new(stages::annotate::Annotate::from_spec(
                spec,
                nested,
                spec.name == "tag",
            )?)
        }
        "tag" => Box::new(stages::modify::Modify::tag(spec)?),
        "meta" => Box::new(stages::modify::Modify::meta(spec)?),
        "by" => {
            let (by, consumed) = stages::by::By::from_spec(spec, rest)?;
            return Ok((Box::new(by), consumed));
        }
        "emit" | "notify" | "forward" => {
            return Err(spec.error("must be the last stage of the pipeline"));
        }
        other => {
            let hint = suggest(other, STAGE_NAMES)
                .map(|s| format!(", did you mean \"{s}\"?"))
                .unwrap_or_default();
            return Err(ParseError::new(
                spec.column,
                format!("unknown stage \"{other}\"{hint}"),
            ));
        }
    };
    Ok((stage, 0))
}

/// Stages run in sequence: each one's output is the next one's input.
pub struct Chain {
    stages: Vec<Box<dyn Stage>>,
    /// One reusable output buffer per stage, so passing an event along
    /// the chain allocates nothing once the buffers have grown.
    buffers: Vec<Vec<Event>>,
}

impl Chain {
    /// Builds the stages of `specs` in order.
    pub fn build(specs: &[StageSpec]) -> Result<Chain, ParseError> {
        let mut stages = Vec::new();
        let mut i = 0;
        while i < specs.len() {
            let (stage, consumed) = build(&specs[i], &specs[i + 1..])?;
            stages.push(stage);
            i += 1 + consumed;
        }
        let buffers = stages.iter().map(|_| Vec::new()).collect();
        Ok(Chain { stages, buffers })
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
        for name in STAGE_NAMES {
            let named = headings.iter().any(|heading| {
                heading
                    .split(|c: char| c.is_whitespace() || matches!(c, ',' | '(' | ')' | '`'))
                    .any(|word| word == *name)
            });
            assert!(named, "docs/REACTORS.md has no heading for stage {name}");
        }
    }

    #[test]
    fn every_listed_stage_name_is_built() {
        for name in STAGE_NAMES {
            let spec = StageSpec {
                name: (*name).to_owned(),
                column: 1,
                args: Vec::new(),
                predicate: None,
            };
            if let Err(error) = build(&spec, &[]) {
                assert!(!error.message.contains("unknown stage"), "{name}: {error}");
            }
        }
    }
}
