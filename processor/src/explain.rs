//! Explaining a result: every result id names the reactor version,
//! partition and input offset that produced it, so the decision can be
//! replayed. [`explain`] runs the reactor alone over the partition's
//! history up to that offset, and reports the entry that triggered the
//! result, the state the reactor kept for the result's host just before,
//! the recent inputs of that host, and whether replaying the entry gives
//! the same result again.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};

use weir_event::{Entry, ResultId, ResultRecord};
use weir_log::{Log, Topics};

use crate::reactor::{Engine, Reactor, ReactorConfig};
use crate::runtime::{ProcessorConfig, ProcessorError};
use crate::stage::StateError;

/// Inputs of the result's host listed before it.
const RECENT_INPUTS: usize = 20;

/// One input entry of the partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Input {
    /// Its offset.
    pub offset: u64,
    /// Its append time (ms since the epoch).
    pub appended_ms: u64,
    /// The event, or `{"tick": time}` for a clock record.
    pub entry: Value,
}

/// Why a result was emitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// The result id.
    pub id: String,
    /// The reactor's pipeline (its configured version).
    pub pipeline: String,
    /// The entry whose processing emitted it (an event, or a clock tick
    /// that fired a timer).
    pub trigger: Input,
    /// The result, as replaying the entry gives it again.
    pub result: Option<Value>,
    /// The reactor's state for the result's host just before the
    /// trigger: every `by` child keyed by that host (the whole state when
    /// no stage is keyed by it).
    pub state_before: Value,
    /// The host's latest inputs before the trigger, oldest first (a
    /// window's members are among them).
    pub recent_inputs: Vec<Input>,
    /// Entries replayed to rebuild the state.
    pub replayed: u64,
}

fn input(record: &weir_log::Record) -> Input {
    let entry = match Entry::decode(&record.value) {
        Ok(Entry::Event(event)) => serde_json::to_value(&event).unwrap_or_default(),
        Ok(Entry::Tick(time)) => serde_json::json!({ "tick": time }),
        Ok(_) | Err(_) => serde_json::from_slice(&record.value).unwrap_or(Value::Null),
    };
    Input {
        offset: record.offset,
        appended_ms: record.timestamp_ms,
        entry,
    }
}

/// The parts of `state` kept under keys of `host` (`by` children whose
/// key is the host, or starts with it and the field separator).
fn keyed_by(state: &Value, host: &str, found: &mut Vec<Value>) {
    match state {
        Value::Object(object) => {
            if let Some(Value::Object(children)) = object.get("children") {
                for (key, child) in children {
                    if key == host || key.starts_with(&format!("{host}\u{1f}")) {
                        found.push(serde_json::json!({ "key": key, "state": child }));
                    } else {
                        keyed_by(child, host, found);
                    }
                }
                return;
            }
            for value in object.values() {
                keyed_by(value, host, found);
            }
        }
        Value::Array(items) => {
            for item in items {
                keyed_by(item, host, found);
            }
        }
        _ => {}
    }
}

/// Explains result `id` with the configured `reactors`.
pub fn explain(
    log: &dyn Log,
    topics: &Topics,
    reactors: &[ReactorConfig],
    config: &ProcessorConfig,
    id: &ResultId,
) -> Result<Explanation, ProcessorError> {
    let missing = |why: String| ProcessorError::State(StateError(why));
    let reactor_config = reactors
        .iter()
        .find(|r| *r.name == *id.reactor)
        .ok_or_else(|| missing(format!("no reactor {:?} in the config", id.reactor)))?;
    let reactor = Reactor::build(reactor_config)?;
    if reactor.identity() != format!("{}@{}", id.reactor, id.version) {
        return Err(missing(format!(
            "the result was made by version {} of {:?}; the config has {}",
            id.version,
            id.reactor,
            reactor.identity()
        )));
    }
    let mut engine = Engine::new(id.partition, vec![reactor], config.lateness_secs).uncounted();
    let (earliest, end) = log.offsets(&topics.events, id.partition)?;
    if id.offset < earliest || id.offset >= end {
        return Err(missing(format!(
            "offset {} of partition {} is no longer in the log ({earliest}..{end})",
            id.offset, id.partition
        )));
    }
    let mut results: Vec<ResultRecord> = Vec::new();
    let mut next = earliest;
    // The latest inputs of every host (which host matters is known only
    // at the trigger).
    let mut host_inputs: HashMap<String, VecDeque<Input>> = HashMap::new();
    let mut trigger = None;
    let mut state_before = Value::Null;
    let mut replayed = 0;
    'read: while next <= id.offset {
        let batch = log.read(
            &topics.events,
            id.partition,
            next,
            config.read_max_bytes,
            Duration::from_millis(500),
        )?;
        let Some(last) = batch.last() else { break };
        next = last.offset + 1;
        for record in &batch {
            let Ok(entry) = engine.entry_of(record, config.max_future_secs) else {
                continue;
            };
            if record.offset == id.offset {
                state_before = engine.save();
                trigger = Some(input(record));
                results.clear();
                engine.process(record.offset, entry, &mut results);
                drop(engine.take_handovers());
                break 'read;
            }
            if let Entry::Event(event) = &entry {
                let inputs = host_inputs.entry(event.host.clone()).or_default();
                if inputs.len() == RECENT_INPUTS {
                    inputs.pop_front();
                }
                inputs.push_back(input(record));
            }
            engine.process(record.offset, entry, &mut results);
            drop(engine.take_handovers());
            results.clear();
            replayed += 1;
        }
    }
    let trigger = trigger.ok_or_else(|| missing(format!("offset {} was not read", id.offset)))?;
    let result = results
        .iter()
        .find(|r| r.id == *id)
        .map(|r| serde_json::to_value(r).unwrap_or_default());
    let host = result
        .as_ref()
        .and_then(|r| r["host"].as_str().map(str::to_owned))
        .or_else(|| trigger.entry["host"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let reactor_state = state_before["reactors"]
        .as_object()
        .and_then(|r| r.values().next().cloned())
        .unwrap_or(Value::Null);
    let mut keyed = Vec::new();
    keyed_by(&reactor_state, &host, &mut keyed);
    let recent_inputs: Vec<Input> = host_inputs.remove(&host).unwrap_or_default().into();
    Ok(Explanation {
        id: id.to_string(),
        pipeline: reactor_config.pipeline.clone(),
        trigger,
        result,
        state_before: if keyed.is_empty() {
            reactor_state
        } else {
            Value::Array(keyed)
        },
        recent_inputs,
        replayed,
    })
}
