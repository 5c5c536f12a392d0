//! The partition runtime over a real embedded log: results appear in
//! `weir.results`, and a failed append restarts the worker from its
//! checkpoint instead of leaving the partition unprocessed.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_event::{Entry, Event, ResultRecord};
use weir_log::hooked::HookedLog;
use weir_log::{EmbeddedConfig, EmbeddedLog, Log, LogError, Topics};
use weir_processor::checkpoint::CheckpointStore;
use weir_processor::{Processor, ProcessorConfig, ReactorConfig};

#[test]
fn a_failed_append_restarts_the_worker_and_no_result_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("");
    let inner = EmbeddedLog::open(&dir.path().join("log"), EmbeddedConfig::default()).unwrap();
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
    };
    let shutdown = Arc::new(AtomicBool::new(false));
    let workers = processor.spawn(shutdown.clone()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while log.offsets(&topics.results, 0).unwrap().1 < 5 {
        assert!(Instant::now() < deadline, "the worker did not recover");
        std::thread::sleep(Duration::from_millis(20));
    }
    shutdown.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().unwrap().unwrap();
    }
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
