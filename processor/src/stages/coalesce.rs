//! `coalesce combine=F` (godot's `coalesce` followed by `combine`): keeps
//! the latest event of every (host, service) and, on each event, emits that
//! event with `metric` = F over the latest metrics of all of them — e.g.
//! the total request rate over a fleet. An entry older than its own `ttl`
//! (when it has one) is dropped, so a departed host stops counting.
//! `where service = "requests/rate" | coalesce combine=sum | over 10000`

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weir_event::Event;

use super::combine::Combine;
use crate::lang::{ParseError, StageSpec};
use crate::stage::{json_state, Stage};

/// The latest event per (host, service), combined.
pub struct Coalesce {
    combine: Combine,
    state: CoalesceState,
}

#[derive(Default, Serialize, Deserialize)]
struct CoalesceState {
    /// `host \u{1f} service` → `(time, ttl, metric)` of its latest event.
    latest: BTreeMap<String, (f64, Option<f64>, Option<f64>)>,
}

impl Coalesce {
    /// Builds `coalesce combine=F`.
    pub fn from_spec(spec: &StageSpec) -> Result<Coalesce, ParseError> {
        spec.only_named(&["combine"])?;
        Ok(Coalesce {
            combine: Combine::from_spec(spec)?,
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
        self.state
            .latest
            .insert(key, (event.time, event.ttl, event.metric));
        self.state
            .latest
            .retain(|_, (time, ttl, _)| ttl.is_none_or(|ttl| *time + ttl >= now));
        let metrics: Vec<f64> = self
            .state
            .latest
            .values()
            .filter_map(|(_, _, m)| *m)
            .collect();
        event.metric = self.combine.apply(&metrics, self.state.latest.len());
        event.time = now;
        out.push(event);
    }

    json_state!();
}
