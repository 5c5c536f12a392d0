//! `index` (Riemann's index): keeps the latest event of every (host,
//! service) and passes every event on. An entry whose event has a `ttl`
//! expires when the clock passes `time + ttl` without a newer event for it;
//! it is then removed and emitted with `state = "expired"` and `time` = the
//! expiry time. `index | where state = "expired" | notify log`

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use weir_event::Event;

use crate::lang::{ParseError, StageSpec};
use crate::stage::{Built, Options, StageDef, json_state, load_json, save_json, Stage, StateError, Time};

/// The stages this file declares.
pub const STAGES: &[StageDef] = &[
    StageDef {
        name: "index",
        options: Options::Only(&[]),
        doc: "The latest event of every (host, service); expired entries emitted (Riemann).",
        build: |spec, _| Built::one(Index::from_spec(spec)?),
    },
];

/// The latest event per (host, service), expiring by ttl.
pub struct Index {
    state: IndexState,
}

#[derive(Default, Serialize, Deserialize)]
struct IndexState {
    entries: BTreeMap<String, Event>,
    /// `(expiry, key)` of every entry with a ttl.
    expiries: BTreeSet<(Time, String)>,
}

fn expiry(event: &Event) -> Option<Time> {
    event.ttl.map(|ttl| Time(event.time + ttl))
}

impl Index {
    /// Builds `index`.
    pub fn from_spec(spec: &StageSpec) -> Result<Index, ParseError> {
        if !spec.args.is_empty() {
            return Err(spec.error("takes no arguments"));
        }
        Ok(Index {
            state: IndexState::default(),
        })
    }
}

impl Stage for Index {
    fn event(&mut self, event: Event, _now: f64, out: &mut Vec<Event>) {
        let key = format!(
            "{}\u{1f}{}",
            event.host,
            event.service.as_deref().unwrap_or("")
        );
        if let Some(at) = expiry(&event) {
            self.state.expiries.insert((at, key.clone()));
        }
        if let Some(old) = self.state.entries.insert(key.clone(), event.clone()) {
            if let Some(at) = expiry(&old).filter(|at| Some(*at) != expiry(&event)) {
                self.state.expiries.remove(&(at, key));
            }
        }
        out.push(event);
    }

    fn deadline(&self) -> Option<f64> {
        self.state.expiries.first().map(|(t, _)| t.0)
    }

    fn tick(&mut self, now: f64, out: &mut Vec<Event>) {
        while self.state.expiries.first().is_some_and(|(t, _)| t.0 <= now) {
            let Some((at, key)) = self.state.expiries.pop_first() else {
                break;
            };
            if let Some(mut expired) = self.state.entries.remove(&key) {
                expired.state = Some("expired".into());
                expired.time = at.0;
                out.push(expired);
            }
        }
    }

    json_state!();

    fn take_hosts(&mut self, hosts: &HashSet<String>) -> Value {
        let keys: Vec<String> = self
            .state
            .entries
            .keys()
            .filter(|key| {
                key.split('\u{1f}')
                    .next()
                    .is_some_and(|h| hosts.contains(h))
            })
            .cloned()
            .collect();
        if keys.is_empty() {
            return Value::Null;
        }
        let mut taken = IndexState::default();
        for key in keys {
            if let Some(event) = self.state.entries.remove(&key) {
                if let Some(at) = expiry(&event) {
                    self.state.expiries.remove(&(at, key.clone()));
                    taken.expiries.insert((at, key.clone()));
                }
                taken.entries.insert(key, event);
            }
        }
        save_json(&taken)
    }

    fn put_hosts(&mut self, state: Value) -> Result<(), StateError> {
        let moved: IndexState = load_json(state)?;
        for (key, event) in moved.entries {
            if let Some(old) = self.state.entries.insert(key.clone(), event) {
                if let Some(at) = expiry(&old) {
                    self.state.expiries.remove(&(at, key));
                }
            }
        }
        self.state.expiries.extend(moved.expiries);
        Ok(())
    }
}
