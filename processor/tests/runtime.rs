//! The partition runtime over a real embedded log: results appear in
//! `weir.results`, and a failed append restarts the worker from its
//! checkpoint instead of leaving the partition unprocessed.

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
    inner.create_topic(&topics.events, 1).unwrap();
    inner.create_topic(&topics.results, 1).unwrap();
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
    log.append(&topics.events, 0, &events).unwrap();

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

fn heartbeats(range: std::ops::Range<u32>) -> Vec<(Vec<u8>, Vec<u8>)> {
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
    log.append(&topics.events, 0, &heartbeats(0..10)).unwrap();
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
    log.append(&topics.events, 0, &heartbeats(10..12)).unwrap();
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
