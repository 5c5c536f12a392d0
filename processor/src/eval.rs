//! Running one pipeline over recorded events, the engine of `weir eval`:
//! the clock is driven by the events' own times, exactly as in a partition.

use weir_event::{Entry, Event, ResultRecord};

use crate::reactor::{Engine, Reactor, ReactorConfig, ReactorError};

/// Runs `pipeline` over `events` in order (input offsets 0, 1, …) and
/// returns every result; `until` then moves the clock on to flush timers.
pub fn eval(
    pipeline: &str,
    events: impl IntoIterator<Item = Event>,
    until: Option<f64>,
) -> Result<Vec<ResultRecord>, ReactorError> {
    let reactor = Reactor::build(&ReactorConfig {
        name: "eval".into(),
        pipeline: pipeline.into(),
    })?;
    let mut engine = Engine::new(0, vec![reactor], f64::INFINITY);
    let mut out = Vec::new();
    let mut offset = 0;
    for event in events {
        engine.process(offset, Entry::Event(event), &mut out);
        offset += 1;
    }
    if let Some(until) = until {
        engine.advance(until, offset, &mut out);
    }
    Ok(out)
}
