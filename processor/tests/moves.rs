//! Moving an application's state between partitions: a pipeline split
//! over two partitions at a hand-off emits what one partition would have.

use serde_json::json;
use weir_event::{Entry, Event, Handoff};
use weir_processor::{Engine, Reactor, ReactorConfig};

fn engine(partition: u32, pipeline: &str) -> Engine {
    let reactor = Reactor::build(&ReactorConfig {
        name: "r".into(),
        pipeline: pipeline.into(),
    })
    .unwrap();
    Engine::new(partition, vec![reactor], 60.0)
}

/// Heartbeats of hosts `a1`, `a2` (the moving application) and `b`, two
/// services each, once a second for `until` seconds; `a2` stops at 12.
fn heartbeats(until: u32) -> Vec<Event> {
    let mut events = Vec::new();
    for t in 0..until {
        for host in ["a1", "a2", "b"] {
            if host == "a2" && t >= 12 {
                continue;
            }
            for service in ["cpu", "disk"] {
                let value =
                    json!({"host": host, "service": service, "time": t, "metric": t % 7, "ttl": 4});
                events.push(weir_event::decode_value(value, &Default::default(), 0.0).unwrap());
            }
        }
    }
    events
}

/// The result events, as sorted JSON text (ids differ by partition).
fn sorted(results: &[weir_event::ResultRecord]) -> Vec<String> {
    let mut texts: Vec<String> = results
        .iter()
        .map(|r| serde_json::to_string(&r.event).unwrap())
        .collect();
    texts.sort();
    texts
}

/// Runs `pipeline` over the heartbeats on one partition, and again with
/// application `a` handed from partition 0 to 1 after `at` events (the
/// marker and the moved state delivered `repeats` times); both must emit
/// the same events.
fn assert_move_is_invisible(pipeline: &str, at: usize, repeats: usize) {
    let events = heartbeats(30);
    let mut whole = engine(0, pipeline);
    let mut expected = Vec::new();
    let (mut old, mut new) = (engine(0, pipeline), engine(1, pipeline));
    let mut split = Vec::new();
    let mut moved = false;
    for (i, event) in events.iter().enumerate() {
        let offset = i as u64;
        if i == at {
            for _ in 0..repeats {
                let handoff = Handoff {
                    id: "a#1".into(),
                    uid: "a".into(),
                    hosts: vec!["a1".into(), "a2".into()],
                    to: 1,
                };
                old.process(offset, Entry::Handoff(handoff), &mut split);
                for handover in old.take_handovers() {
                    if let Some(state) = handover.moved {
                        new.process(offset, Entry::Moved(state), &mut split);
                    }
                }
            }
            moved = true;
        }
        // Every partition's clock moves with the router's ticks.
        let tick = Entry::Tick(event.time);
        whole.process(offset, tick.clone(), &mut expected);
        old.process(offset, tick.clone(), &mut split);
        new.process(offset, tick, &mut split);
        whole.process(offset, Entry::Event(event.clone()), &mut expected);
        let target = if moved && event.host.starts_with('a') {
            &mut new
        } else {
            &mut old
        };
        target.process(offset, Entry::Event(event.clone()), &mut split);
    }
    whole.process(0, Entry::Tick(100.0), &mut expected);
    old.process(0, Entry::Tick(100.0), &mut split);
    new.process(0, Entry::Tick(100.0), &mut split);
    assert!(!expected.is_empty(), "{pipeline}: nothing emitted");
    assert_eq!(
        sorted(&split),
        sorted(&expected),
        "{pipeline}, moved at {at}"
    );
}

#[test]
fn state_keyed_by_host_moves_with_its_application() {
    for pipeline in [
        "by host | expire 3s",
        "by host service | expire",
        "by service | by host | count 5s",
        "by host | count 5s | over 3",
        "around (by host (expire 2s)) (by host service (count 10s))",
        "index | where state = \"expired\"",
        "tag n (by host | sum)",
    ] {
        for at in [0, 7, 40, 71, 150] {
            for repeats in [1, 2] {
                assert_move_is_invisible(pipeline, at, repeats);
            }
        }
    }
}

#[test]
fn partition_wide_state_stays_and_the_handover_names_the_move() {
    let mut old = engine(0, "count 10s");
    let mut out = Vec::new();
    for event in heartbeats(3) {
        old.process(0, Entry::Event(event), &mut out);
    }
    let handoff = Handoff {
        id: "a#9".into(),
        uid: "a".into(),
        hosts: vec!["a1".into()],
        to: 2,
    };
    old.process(1, Entry::Handoff(handoff.clone()), &mut out);
    let handovers = old.take_handovers();
    assert_eq!(handovers.len(), 1);
    let moved = handovers[0].moved.as_ref().unwrap();
    assert_eq!((moved.from, moved.id.as_str()), (0, "a#9"));
    assert!(moved.reactors.is_empty(), "{:?}", moved.reactors);
    // Seen again (a retried hand-off): only the completion is repeated.
    old.process(2, Entry::Handoff(handoff), &mut out);
    assert!(old.take_handovers()[0].moved.is_none());
    // A marker for this very partition is no move.
    let here = Handoff {
        id: "c#1".into(),
        uid: "c".into(),
        hosts: vec![],
        to: 0,
    };
    old.process(3, Entry::Handoff(here), &mut out);
    assert!(old.take_handovers().is_empty());
}
