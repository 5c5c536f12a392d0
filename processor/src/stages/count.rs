//! `count INTERVAL`: counts events in consecutive windows of event time
//! (the first window starts at the first event) and, at the end of each
//! non-empty window, emits the window's last event with `metric` = the
//! count, `time` = the window end and the tag `per Ns`. godot counts only
//! events that have a metric; weir counts every event.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use weir_event::Event;

use crate::lang::{ParseError, StageSpec};
use crate::stage::{load_json, save_json, Stage, StateError};

/// Event count per interval.
pub struct Count {
    interval: f64,
    state: CountState,
}

#[derive(Default, Serialize, Deserialize)]
struct CountState {
    window_end: Option<f64>,
    count: u64,
    last: Option<Event>,
}

impl Count {
    /// Builds `count 10s`.
    pub fn from_spec(spec: &StageSpec) -> Result<Count, ParseError> {
        spec.only_named(&["interval"])?;
        let interval = spec
            .duration("interval", Some(0))?
            .ok_or_else(|| spec.error("needs an interval, e.g. count 10s"))?;
        Ok(Count {
            interval,
            state: CountState::default(),
        })
    }
}

impl Stage for Count {
    fn event(&mut self, event: Event, now: f64, _out: &mut Vec<Event>) {
        let end = match self.state.window_end {
            None => now + self.interval,
            // Skip the empty windows since the last one, keeping the grid.
            Some(end) if end <= now => {
                end + ((now - end) / self.interval).floor() * self.interval + self.interval
            }
            Some(end) => end,
        };
        self.state.window_end = Some(end);
        self.state.count += 1;
        self.state.last = Some(event);
    }

    fn deadline(&self) -> Option<f64> {
        self.state.window_end.filter(|_| self.state.count > 0)
    }

    fn tick(&mut self, now: f64, out: &mut Vec<Event>) {
        let Some(end) = self.state.window_end.filter(|e| *e <= now) else {
            return;
        };
        if let Some(mut last) = self.state.last.take() {
            last.metric = Some(self.state.count as f64);
            last.time = end;
            last.tags.push(format!("per {}s", self.interval));
            out.push(last);
        }
        self.state.count = 0;
        self.state.window_end = Some(end + self.interval);
    }

    fn save(&self) -> Value {
        save_json(&self.state)
    }

    fn load(&mut self, state: Value) -> Result<(), StateError> {
        self.state = load_json(state)?;
        Ok(())
    }
}
