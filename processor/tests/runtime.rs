//! The partition runtime over a real embedded log: results appear in
//! `weir.results`, and a failed append restarts the worker from its
//! checkpoint instead of leaving the partition unprocessed.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_event::{Entry, Event, ResultRecord};
use weir_log::hooked::HookedLog;
use weir_log::{EmbeddedLog, Log, LogConfig, LogError, Topics};
use weir_processor::checkpoint::CheckpointStore;
use weir_processor::{Processor, ProcessorConfig, ReactorConfig};

#[test]
fn a_failed_append_restarts_the_worker_and_no_result_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("");
    let inner = EmbeddedLog::open(&dir.path().join("log"), LogConfig::default()).unwrap();
    inner.create_topic(&topics.events, 1, false).unwrap();
    inner.create_topic(&topics.results, 1, false).unwrap();
    // The first two appends to the results topic fail.
    let failures = Arc::new(AtomicU32::new(2));
    let left = failures.clone();
    let hook = Box::new(move |topic: &str, partition: u32| {
        let fail = topic == "weir.results"
            && left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if fail {
            return Err(LogError::Poisoned(format!(
                "{topic}/{partition} (injected)"
            )));
        }
        Ok(())
    });
    let log = Arc::new(HookedLog::new(inner, hook));
    let events: Vec<_> = (0..10)
        .map(|i| {
            let mut event = Event::new("h", i as f64);
            event.metric = Some(i as f64);
            (b"h".to_vec(), Entry::Event(event).encode())
        })
        .collect();
    log.append(&topics.events, 0, &weir_log::borrowed(&events))
        .unwrap();

    let processor = Processor {
        log: log.clone(),
        topics: topics.clone(),
        reactors: vec![ReactorConfig {
            name: "high".into(),
            pipeline: "over 4".into(),
        }],
        config: ProcessorConfig::default(),
        store: CheckpointStore::open(&dir.path().join("checkpoints")).unwrap(),
        share_checkpoints: false,
    };
    let running = processor.start().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while log.offsets(&topics.results, 0).unwrap().1 < 5 {
        assert!(Instant::now() < deadline, "the worker did not recover");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(running.stop().is_empty());
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "both injected failures happened"
    );
    let results = log
        .read(&topics.results, 0, 0, 1 << 20, Duration::ZERO)
        .unwrap();
    let offsets: Vec<u64> = results
        .iter()
        .map(|r| ResultRecord::peek_id(&r.value).unwrap().offset)
        .collect();
    assert_eq!(offsets, vec![5, 6, 7, 8, 9]);
    assert_eq!(
        log.inner
            .committed("weir.reactors", &topics.events, 0)
            .unwrap()
            .unwrap()
            .offset,
        10
    );
}

#[test]
fn a_panicking_worker_restarts_from_its_checkpoint_and_no_result_is_lost_or_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("");
    let inner = EmbeddedLog::open(&dir.path().join("log"), LogConfig::default()).unwrap();
    topics.create(&inner, 1).unwrap();
    // The second append of results panics, once.
    let appends = Arc::new(AtomicU32::new(0));
    let counted = appends.clone();
    let hook = Box::new(move |topic: &str, _: u32| {
        if topic == "weir.results" && counted.fetch_add(1, Ordering::SeqCst) == 1 {
            panic!("injected panic in the results append");
        }
        Ok(())
    });
    let log = Arc::new(HookedLog::new(inner, hook));
    let processor = Processor {
        log: log.clone(),
        topics: topics.clone(),
        reactors: vec![ReactorConfig {
            name: "total".into(),
            pipeline: "sum".into(),
        }],
        config: ProcessorConfig {
            read_max_bytes: 300,
            ..ProcessorConfig::default()
        },
        store: CheckpointStore::open(&dir.path().join("checkpoints")).unwrap(),
        share_checkpoints: false,
    };
    log.append(&topics.events, 0, &weir_log::borrowed(&heartbeats(0..50)))
        .unwrap();
    let running = processor.start().unwrap();
    wait_for_results(&*log, &topics, 50);
    std::thread::sleep(Duration::from_millis(300));
    assert!(running.stop().is_empty());
    assert!(
        appends.load(Ordering::SeqCst) > 2,
        "the worker went on after the panic"
    );
    // Re-emitted results carry the ids they had: kept once each (as
    // every sink does), they are exactly the uninterrupted run's.
    let mut seen = std::collections::HashSet::new();
    let sums: Vec<f64> = log
        .read(&topics.results, 0, 0, 1 << 20, Duration::ZERO)
        .unwrap()
        .iter()
        .filter(|r| seen.insert(ResultRecord::peek_id(&r.value).unwrap().to_string()))
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.value).unwrap()["metric"]
                .as_f64()
                .unwrap()
        })
        .collect();
    let expected: Vec<f64> = (0..50).map(|n| (0..=n).sum::<u32>() as f64).collect();
    assert_eq!(sums, expected, "every running sum, in order");
}

fn heartbeats(range: std::ops::Range<u32>) -> Vec<weir_log::OwnedProduce> {
    range
        .map(|i| {
            let mut event = Event::new("h", i as f64);
            event.metric = Some(i as f64);
            (b"h".to_vec(), Entry::Event(event).encode())
        })
        .collect()
}

/// Waits until the results topic holds `count` records.
fn wait_for_results(log: &dyn Log, topics: &Topics, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while log.offsets(&topics.results, 0).unwrap().1 < count {
        assert!(Instant::now() < deadline, "no {count} results");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_partition_resumes_from_the_shared_checkpoint_when_the_local_store_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("");
    let log = Arc::new(EmbeddedLog::open(&dir.path().join("log"), LogConfig::default()).unwrap());
    topics.create(&*log, 1).unwrap();
    log.append(&topics.events, 0, &weir_log::borrowed(&heartbeats(0..10)))
        .unwrap();
    let processor = |store: &str| Processor {
        log: log.clone(),
        topics: topics.clone(),
        reactors: vec![ReactorConfig {
            name: "sum".into(),
            pipeline: "sum".into(),
        }],
        config: ProcessorConfig::default(),
        store: CheckpointStore::open(&dir.path().join(store)).unwrap(),
        share_checkpoints: true,
    };
    let first = processor("machine-a").start().unwrap();
    wait_for_results(&*log, &topics, 10);
    assert!(first.stop().is_empty());

    // Another machine, with no local checkpoint, takes the partition over.
    log.append(&topics.events, 0, &weir_log::borrowed(&heartbeats(10..12)))
        .unwrap();
    let second = processor("machine-b").start().unwrap();
    wait_for_results(&*log, &topics, 12);
    std::thread::sleep(Duration::from_millis(300));
    assert!(second.stop().is_empty());
    let results = log
        .read(&topics.results, 0, 0, 1 << 20, Duration::ZERO)
        .unwrap();
    let sums: Vec<f64> = results
        .iter()
        .map(|r| {
            let value: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
            value["metric"].as_f64().unwrap()
        })
        .collect();
    // The running sum continues from the shared state: nothing re-run, nothing lost.
    let expected: Vec<f64> = (0..12).map(|n| (0..=n).sum::<u32>() as f64).collect();
    assert_eq!(sums, expected);
}

/// Every result record in the results topic, sorted.
fn all_results(log: &dyn Log, topics: &Topics) -> Vec<Vec<u8>> {
    let mut results: Vec<Vec<u8>> = log
        .read(&topics.results, 0, 0, 64 << 20, Duration::ZERO)
        .unwrap()
        .into_iter()
        .map(|r| r.value.to_vec())
        .collect();
    results.sort();
    results
}

fn run_until(processor: &Processor, log: &dyn Log, topics: &Topics, results: u64) {
    let running = processor.start().unwrap();
    wait_for_results(log, topics, results);
    std::thread::sleep(Duration::from_millis(200));
    assert!(running.stop().is_empty());
}

#[test]
fn a_reactor_added_later_catches_up_to_what_it_would_have_emitted_from_the_start() {
    let reactor = |name: &str, pipeline: &str| ReactorConfig {
        name: name.into(),
        pipeline: pipeline.into(),
    };
    let old = reactor("total", "sum");
    let new = reactor("high", "over 50 | changed metric");
    let processor = |log: &Arc<EmbeddedLog>, dir: &Path, reactors: Vec<ReactorConfig>| Processor {
        log: log.clone(),
        topics: Topics::new(""),
        reactors,
        config: ProcessorConfig::default(),
        store: CheckpointStore::open(&dir.join("checkpoints")).unwrap(),
        share_checkpoints: false,
    };
    let topics = Topics::new("");
    let open = |dir: &Path| {
        let log = Arc::new(EmbeddedLog::open(&dir.join("log"), LogConfig::default()).unwrap());
        topics.create(&*log, 1).unwrap();
        log
    };

    // History with the old reactor only, then the new one joins.
    let late = tempfile::tempdir().unwrap();
    let log = open(late.path());
    log.append(&topics.events, 0, &weir_log::borrowed(&heartbeats(0..100)))
        .unwrap();
    run_until(
        &processor(&log, late.path(), vec![old.clone()]),
        &*log,
        &topics,
        100,
    );
    log.append(
        &topics.events,
        0,
        &weir_log::borrowed(&heartbeats(100..150)),
    )
    .unwrap();
    // sum: 150 results; "over 50 | changed metric": one per value above 50.
    run_until(
        &processor(&log, late.path(), vec![old.clone(), new.clone()]),
        &*log,
        &topics,
        150 + 99,
    );

    // Both reactors from the start, over the same log.
    let early = tempfile::tempdir().unwrap();
    let reference = open(early.path());
    reference
        .append(&topics.events, 0, &weir_log::borrowed(&heartbeats(0..150)))
        .unwrap();
    run_until(
        &processor(&reference, early.path(), vec![old, new]),
        &*reference,
        &topics,
        150 + 99,
    );

    let got = all_results(&*log, &topics);
    assert_eq!(got.len(), 249);
    assert!(
        got == all_results(&*reference, &topics),
        "the late reactor's results differ from a run from the start"
    );
}

#[test]
fn a_catch_up_runs_beside_live_processing_and_resumes_where_it_was_stopped() {
    let reactor = |name: &str, pipeline: &str| ReactorConfig {
        name: name.into(),
        pipeline: pipeline.into(),
    };
    let (old, new) = (
        reactor("total", "sum"),
        reactor("high", "over 50 | changed metric"),
    );
    let topics = Topics::new("");
    let dir = tempfile::tempdir().unwrap();
    let inner = EmbeddedLog::open(&dir.path().join("log"), LogConfig::default()).unwrap();
    topics.create(&inner, 1).unwrap();
    // Appends of results take a millisecond while `slow` is set, so the
    // catch-up lasts long enough to be stopped midway.
    let slow = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slowed = slow.clone();
    let hook = Box::new(move |topic: &str, _: u32| {
        if topic == "weir.results" && slowed.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    });
    let log = Arc::new(HookedLog::new(inner, hook));
    let store = CheckpointStore::open(&dir.path().join("checkpoints")).unwrap();
    let processor = |reactors: Vec<ReactorConfig>| Processor {
        log: log.clone(),
        topics: topics.clone(),
        reactors,
        config: ProcessorConfig {
            read_max_bytes: 2000,
            checkpoint_interval_ms: 20,
            ..ProcessorConfig::default()
        },
        store: store.clone(),
        share_checkpoints: false,
    };
    const HISTORY: u32 = 20_000;
    log.append(
        &topics.events,
        0,
        &weir_log::borrowed(&heartbeats(0..HISTORY)),
    )
    .unwrap();
    run_until(
        &processor(vec![old.clone()]),
        &*log,
        &topics,
        HISTORY as u64,
    );

    // The new reactor catches up while live events keep coming.
    slow.store(true, Ordering::Relaxed);
    let running = processor(vec![old.clone(), new.clone()]).start().unwrap();
    log.append(
        &topics.events,
        0,
        &weir_log::borrowed(&heartbeats(HISTORY..HISTORY + 100)),
    )
    .unwrap();
    let checkpoint = || store.load("weir.reactors", 0).unwrap().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    // The checkpoint of the run before has no catch-up: wait for the
    // worker's first, then for the catch-up midway with live done.
    let mut seen = false;
    loop {
        let saved = checkpoint();
        let lane = saved.catch_up.as_ref().map_or(0, |c| c.next);
        if saved.offset == HISTORY as u64 + 100 && lane > 2000 {
            break;
        }
        seen |= saved.catch_up.is_some();
        assert!(
            !seen || saved.catch_up.is_some(),
            "the catch-up ended before it was seen midway"
        );
        assert!(
            Instant::now() < deadline,
            "no live progress beside the catch-up"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(running.stop().is_empty());
    let stopped_at = checkpoint().catch_up.expect("stopped midway").next;
    assert!(
        stopped_at > 2000 && stopped_at < HISTORY as u64,
        "{stopped_at}"
    );

    // Restarted, it goes on from there: no result is emitted twice.
    slow.store(false, Ordering::Relaxed);
    run_until(
        &processor(vec![old.clone(), new.clone()]),
        &*log,
        &topics,
        2 * (HISTORY as u64 + 100) - 51,
    );
    assert!(checkpoint().catch_up.is_none());
    let got = all_results(&*log, &topics);
    let mut ids: Vec<_> = got
        .iter()
        .map(|r| ResultRecord::peek_id(r).unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), got.len(), "a result was emitted twice");

    let reference_dir = tempfile::tempdir().unwrap();
    let reference = Arc::new(
        EmbeddedLog::open(&reference_dir.path().join("log"), LogConfig::default()).unwrap(),
    );
    topics.create(&*reference, 1).unwrap();
    reference
        .append(
            &topics.events,
            0,
            &weir_log::borrowed(&heartbeats(0..HISTORY + 100)),
        )
        .unwrap();
    let from_start = Processor {
        log: reference.clone(),
        store: CheckpointStore::open(&reference_dir.path().join("checkpoints")).unwrap(),
        ..processor(vec![old, new])
    };
    run_until(&from_start, &*reference, &topics, got.len() as u64);
    assert!(
        got == all_results(&*reference, &topics),
        "the caught-up results differ from a run from the start"
    );
}

#[test]
fn an_event_stamped_a_year_ahead_moves_the_clock_no_further_than_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("");
    let log = Arc::new(EmbeddedLog::open(&dir.path().join("log"), LogConfig::default()).unwrap());
    topics.create(&*log, 1).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let event = |host: &str, time: f64| {
        let mut event = Event::new(host, time);
        event.ttl = Some(1.0);
        (host.as_bytes().to_vec(), Entry::Event(event).encode())
    };
    // A year-ahead event is already in the log (it came before ingest
    // checked, or by another way); then host b sends its last heartbeat.
    let year = 365.0 * 24.0 * 3600.0;
    log.append(
        &topics.events,
        0,
        &weir_log::borrowed(&[event("skewed", now + year), event("b", now + 0.5)]),
    )
    .unwrap();
    let processor = Processor {
        log: log.clone(),
        topics: topics.clone(),
        reactors: vec![ReactorConfig {
            name: "heartbeats".into(),
            pipeline: "by host | expire".into(),
        }],
        config: ProcessorConfig {
            max_future_secs: 1.0,
            ..ProcessorConfig::default()
        },
        store: CheckpointStore::open(&dir.path().join("checkpoints")).unwrap(),
        share_checkpoints: false,
    };
    let running = processor.start().unwrap();
    // Ticks as the router appends them, once a second of wall clock.
    let expired = || {
        log.read(&topics.results, 0, 0, 1 << 20, Duration::ZERO)
            .unwrap()
            .iter()
            .any(|r| {
                let value: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
                value["host"] == "b" && value["state"] == "expired"
            })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !expired() {
        assert!(Instant::now() < deadline, "b's heartbeat never expired");
        let tick = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        log.append(
            &topics.events,
            0,
            &[(&[][..], &Entry::Tick(tick).encode()[..])],
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(running.stop().is_empty());
}
