//! `fill-in D [FIELD=VALUE …] [max=N]` (Riemann's `fill-in-last`): passes every
//! event on; when D of event time passes without an event, emits a copy
//! of the last event with the given fields set (e.g. `metric=0`) and
//! `time` = the gap's end, and again every D until an event comes (a
//! fill due at the time of an event comes before it, as an expiry does). An
//! event whose state is `expired` stops the filling (as in Riemann); so
//! does the last event's own `ttl` running out, where it has one, so a
//! departed source is not filled in for ever; and at most `max` fills
//! (default 1000) follow one event, so a clock that jumps a day ahead
//! (a processor started after a long stop) does not flood the pipeline.
//! `where service = "requests" | by host | fill-in 10s metric=0 | sma 6`

use serde::{Deserialize, Serialize};
use weir_event::Event;

use super::modify::Modify;
use crate::lang::{Arg, ParseError, StageSpec};
use crate::stage::{json_state, Built, Options, Stage, StageDef};

/// The stages this file declares.
pub const STAGES: &[StageDef] = &[StageDef {
    name: "fill-in",
    options: Options::Any,
    doc: "Fills gaps of D with copies of the last event, FIELD=VALUE set (Riemann's fill-in-last).",
    build: |spec, _| Built::one(FillIn::from_spec(spec)?),
}];

/// Fills after one event, at most (`max=`).
const DEFAULT_MAX_FILLS: usize = 1000;

/// Fills silences with copies of the last event.
pub struct FillIn {
    interval: f64,
    max: usize,
    /// What a fill changes in the copy (`None`: a plain copy).
    change: Option<Modify>,
    state: FillState,
}

#[derive(Default, Serialize, Deserialize)]
struct FillState {
    last: Option<Event>,
    /// When the next fill is due.
    next: Option<f64>,
    /// No fill at or after this (the last event's ttl).
    until: Option<f64>,
    /// Fills since the last event.
    #[serde(default)]
    filled: usize,
}

impl FillIn {
    /// Builds `fill-in D [FIELD=VALUE …]`.
    pub fn from_spec(spec: &StageSpec) -> Result<FillIn, ParseError> {
        let interval = spec
            .duration("interval", Some(0))?
            .ok_or_else(|| spec.error("needs an interval, e.g. fill-in 10s metric=0"))?;
        if spec.positional(1).is_some() || spec.nested().is_some() {
            return Err(spec.error("takes an interval and FIELD=VALUE pairs"));
        }
        let max = spec.count("max", None)?.unwrap_or(DEFAULT_MAX_FILLS);
        let assignments = StageSpec {
            args: spec
                .args
                .iter()
                .filter(|a| matches!(a, Arg::Named(key, _) if key != "max"))
                .cloned()
                .collect(),
            ..spec.clone()
        };
        let change = if assignments.args.is_empty() {
            None
        } else {
            Some(Modify::set(&assignments)?)
        };
        Ok(FillIn {
            interval,
            max,
            change,
            state: FillState::default(),
        })
    }
}

impl Stage for FillIn {
    fn event(&mut self, event: Event, now: f64, out: &mut Vec<Event>) {
        let expired = event.state.as_deref() == Some("expired");
        self.state.next = (!expired).then_some(now + self.interval);
        self.state.until = event.ttl.map(|ttl| event.time + ttl);
        self.state.filled = 0;
        self.state.last = Some(event.clone());
        out.push(event);
    }

    fn deadline(&self) -> Option<f64> {
        self.state.next
    }

    fn tick(&mut self, now: f64, out: &mut Vec<Event>) {
        let (Some(due), Some(last)) = (self.state.next.filter(|d| *d <= now), &self.state.last)
        else {
            return;
        };
        if self.state.until.is_some_and(|until| due > until) || self.state.filled >= self.max {
            self.state.next = None;
            return;
        }
        self.state.filled += 1;
        let mut fill = last.clone();
        fill.time = due;
        match &mut self.change {
            Some(change) => change.event(fill, due, out),
            None => out.push(fill),
        }
        self.state.next = Some(due + self.interval);
    }

    json_state!();
}
