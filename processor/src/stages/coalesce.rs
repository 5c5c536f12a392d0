//! `coalesce [combine=F]` (godot's `coalesce`): keeps the latest event of
//! every (host, service) and, on each event, emits that event with
//! `metric` = F over the latest metrics of all of them — e.g. the total
//! request rate over a fleet. Without `combine=` it emits a digest like
//! godot's array: `meta.events` = the latest events, `metric` = how many
//! (fold it later with `combine F`). An entry older than its own `ttl`
//! (when it has one) is dropped, so a departed host stops counting.
//! `where service = "requests/rate" | coalesce combine=sum | over 10000`

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use weir_event::Event;

use super::combine::Combine;
use crate::lang::{ParseError, StageSpec};
use crate::stage::{json_state, Stage};

/// The latest event per (host, service), combined or as a digest.
pub struct Coalesce {
    combine: Option<Combine>,
    state: CoalesceState,
}

#[derive(Default, Serialize, Deserialize)]
struct CoalesceState {
    /// `host \u{1f} service` → its latest event.
    latest: BTreeMap<String, Event>,
}

impl Coalesce {
    /// Builds `coalesce [combine=F]`.
    pub fn from_spec(spec: &StageSpec) -> Result<Coalesce, ParseError> {
        spec.only_named(&["combine"])?;
        Ok(Coalesce {
            combine: Combine::option(spec)?,
            state: CoalesceState::default(),
        })
    }
}

impl Stage for Coalesce {
    fn event(&mut self, mut event: Event, now: f64, out: &mut Vec<Event>) {
        let key = format!(
            "{}\u{1f}{}",
            event.host,
            event.service.as_deref().unwrap_or("")
        );
        self.state.latest.insert(key, event.clone());
        self.state
            .latest
            .retain(|_, e| e.ttl.is_none_or(|ttl| e.time + ttl >= now));
        let latest = self.state.latest.values();
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
