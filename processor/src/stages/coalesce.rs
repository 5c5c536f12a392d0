//! `coalesce [combine=F]` (godot's `coalesce`): keeps the latest event of
//! every (host, service), in the order the pairs were first seen, and on
//! each event emits the latest event of the pair seen last (godot's
//! `combine` copies its array's last event) with `metric` = F over the
//! latest metrics of all of them — e.g. the total request rate over a
//! fleet. Without `combine=` it emits a digest like godot's array:
//! `meta.events` = the latest events, `metric` = how many (fold it later
//! with `combine F`). An entry older than its own `ttl` (when it has one)
//! is dropped, so a departed host stops counting.
//! `where service = "requests/rate" | coalesce combine=sum | over 10000`

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use weir_event::Event;

use super::combine::Combine;
use crate::lang::{ParseError, StageSpec};
use crate::stage::{Built, Options, StageDef, json_state, Stage};

/// The stages this file declares.
pub const STAGES: &[StageDef] = &[
    StageDef {
        name: "coalesce",
        options: Options::Only(&["combine"]),
        doc: "The latest event of every (host, service), folded or as a digest (godot).",
        build: |spec, _| Built::one(Coalesce::from_spec(spec)?),
    },
];

/// The latest event per (host, service), combined or as a digest.
pub struct Coalesce {
    combine: Option<Combine>,
    state: CoalesceState,
}

#[derive(Default, Serialize, Deserialize)]
struct CoalesceState {
    /// The latest event of each (host, service), in the order the pairs
    /// were first seen (godot's order, which `first` and `last` see).
    #[serde(deserialize_with = "latest_in_order")]
    latest: Vec<Event>,
}

/// Reads `latest` as saved now (a list) or by checkpoints written before
/// the first-seen order (a map by key, taken in key order).
fn latest_in_order<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Event>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Saved {
        InOrder(Vec<Event>),
        ByKey(BTreeMap<String, Event>),
    }
    Ok(match Saved::deserialize(d)? {
        Saved::InOrder(events) => events,
        Saved::ByKey(by_key) => by_key.into_values().collect(),
    })
}

impl Coalesce {
    /// Builds `coalesce [combine=F]`.
    pub fn from_spec(spec: &StageSpec) -> Result<Coalesce, ParseError> {
        Ok(Coalesce {
            combine: Combine::option(spec)?,
            state: CoalesceState::default(),
        })
    }
}

impl Stage for Coalesce {
    fn event(&mut self, event: Event, now: f64, out: &mut Vec<Event>) {
        let latest = &mut self.state.latest;
        match latest
            .iter_mut()
            .find(|e| e.host == event.host && e.service == event.service)
        {
            Some(seen) => *seen = event.clone(),
            None => latest.push(event.clone()),
        }
        latest.retain(|e| e.ttl.is_none_or(|ttl| e.time + ttl >= now));
        // As godot's array, combined or not, ends in the last pair first
        // seen, that event carries the result (the one just in when every
        // other pair has expired).
        let mut event = latest.last().cloned().unwrap_or(event);
        let latest = self.state.latest.iter();
        match self.combine {
            Some(combine) => {
                let metrics: Vec<f64> = latest.filter_map(|e| e.metric).collect();
                event.metric = combine.apply(&metrics, self.state.latest.len());
            }
            None => {
                let events = latest
                    .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
                    .collect();
                event.metric = Some(self.state.latest.len() as f64);
                event.meta.insert("events".into(), Value::Array(events));
            }
        }
        event.time = now;
        out.push(event);
    }

    json_state!();
}
