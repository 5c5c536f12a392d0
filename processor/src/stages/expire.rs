//! `expire [TTL]`: heartbeat expiry. Each event re-arms a timer for
//! `event.time + TTL` (without TTL: the event's own `ttl`, or 300s); when
//! the clock passes it with no newer event, the last event is emitted once
//! with `state = "expired"` and `time` = the expiry time. The next event
//! re-arms it. godot's expire fires once ever and runs on the wall clock.

use serde::{Deserialize, Serialize};
use weir_event::Event;

use crate::lang::{ParseError, StageSpec};
use crate::stage::{Built, Options, StageDef, json_state, Stage};

/// The stages this file declares.
pub const STAGES: &[StageDef] = &[
    StageDef {
        name: "expire",
        options: Options::Only(&["ttl"]),
        doc: "Emits the last event with state \"expired\" once its TTL passes without a newer one.",
        build: |spec, _| Built::one(Expire::from_spec(spec)?),
    },
];

/// Default validity of an event that has no `ttl` (seconds).
const DEFAULT_TTL_SECS: f64 = 300.0;

/// Emits the last event as expired after a silence.
pub struct Expire {
    ttl: Option<f64>,
    state: ExpireState,
}

#[derive(Default, Serialize, Deserialize)]
struct ExpireState {
    last: Option<Event>,
    deadline: Option<f64>,
}

impl Expire {
    /// Builds `expire 60s` or `expire` (per-event ttl).
    pub fn from_spec(spec: &StageSpec) -> Result<Expire, ParseError> {
        Ok(Expire {
            ttl: spec.duration("ttl", Some(0))?,
            state: ExpireState::default(),
        })
    }
}

impl Stage for Expire {
    fn event(&mut self, event: Event, _now: f64, _out: &mut Vec<Event>) {
        let ttl = self.ttl.or(event.ttl).unwrap_or(DEFAULT_TTL_SECS);
        self.state.deadline = Some(event.time + ttl);
        self.state.last = Some(event);
    }

    fn deadline(&self) -> Option<f64> {
        self.state.deadline
    }

    fn tick(&mut self, now: f64, out: &mut Vec<Event>) {
        let Some(deadline) = self.state.deadline.filter(|d| *d <= now) else {
            return;
        };
        self.state.deadline = None;
        if let Some(mut last) = self.state.last.take() {
            last.state = Some("expired".into());
            last.time = deadline;
            out.push(last);
        }
    }

    json_state!();
}
