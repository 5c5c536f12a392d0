//! `rollup INTERVAL [limit=N]` (godot): collects events and, at the end of
//! each window of INTERVAL, emits one digest: the window's last event with
//! `metric` = the number of events in the digest, `time` = the window end,
//! the tag `rollup`, and `meta.events` = the events themselves (at most N,
//! default 100). Events beyond N wait for the next window, as in godot, so
//! a burst becomes a few digests instead of a page per event.
//! `where state = "critical" | rollup 5m | notify email to="ops@example.com"`

use serde::{Deserialize, Serialize};
use serde_json::Value;
use weir_event::Event;

use crate::lang::{ParseError, StageSpec};
use crate::stage::{Built, Options, StageDef, json_state, Stage};

/// The stages this file declares.
pub const STAGES: &[StageDef] = &[
    StageDef {
        name: "rollup",
        options: Options::Only(&["interval", "limit"]),
        doc: "One digest of the events of each window (godot).",
        build: |spec, _| Built::one(Rollup::from_spec(spec)?),
    },
];

const DEFAULT_LIMIT: usize = 100;

/// Digests of events per interval.
pub struct Rollup {
    interval: f64,
    limit: usize,
    state: RollupState,
}

#[derive(Default, Serialize, Deserialize)]
struct RollupState {
    window_end: Option<f64>,
    events: Vec<Event>,
    overflow: Vec<Event>,
}

impl Rollup {
    /// Builds `rollup 5m [limit=N]`.
    pub fn from_spec(spec: &StageSpec) -> Result<Rollup, ParseError> {
        let interval = spec
            .duration("interval", Some(0))?
            .ok_or_else(|| spec.error("needs an interval, e.g. rollup 5m"))?;
        let limit = spec.count("limit", None)?.unwrap_or(DEFAULT_LIMIT);
        Ok(Rollup {
            interval,
            limit,
            state: RollupState::default(),
        })
    }
}

impl Stage for Rollup {
    fn event(&mut self, event: Event, now: f64, _out: &mut Vec<Event>) {
        self.state.window_end.get_or_insert(now + self.interval);
        if self.state.events.len() < self.limit {
            self.state.events.push(event);
        } else {
            self.state.overflow.push(event);
        }
    }

    fn deadline(&self) -> Option<f64> {
        self.state
            .window_end
            .filter(|_| !self.state.events.is_empty())
    }

    fn tick(&mut self, now: f64, out: &mut Vec<Event>) {
        let Some(end) = self.state.window_end.filter(|e| *e <= now) else {
            return;
        };
        let events = std::mem::take(&mut self.state.events);
        if let Some(last) = events.last() {
            let mut digest = last.clone();
            digest.metric = Some(events.len() as f64);
            digest.time = end;
            digest.tags.push("rollup".into());
            let listed = events
                .iter()
                .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
                .collect();
            digest.meta.insert("events".into(), Value::Array(listed));
            out.push(digest);
        }
        let take = self.state.overflow.len().min(self.limit);
        self.state.events = self.state.overflow.drain(..take).collect();
        self.state.window_end = (!self.state.events.is_empty()).then_some(end + self.interval);
    }

    json_state!();
}
