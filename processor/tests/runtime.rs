//! The partition runtime over a real embedded log: results appear in
//! `weir.results`, and a failed append restarts the worker from its
//! checkpoint instead of leaving the partition unprocessed.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_event::{Entry, Event, ResultRecord};
use weir_log::{Committed, EmbeddedConfig, EmbeddedLog, Log, LogError, Produce, Record, Topics};
use weir_processor::checkpoint::CheckpointStore;
use weir_processor::{Processor, ProcessorConfig, ReactorConfig};

/// An embedded log whose first `failures` appends to the results topic fail.
struct FlakyLog {
    inner: EmbeddedLog,
    failures: AtomicU32,
}

impl Log for FlakyLog {
    fn partitions(&self, topic: &str) -> Result<u32, LogError> {
        self.inner.partitions(topic)
    }
    fn append(&self, topic: &str, partition: u32, records: &[Produce]) -> Result<u64, LogError> {
        let failing = topic == "weir.results"
            && self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if failing {
            return Err(LogError::Poisoned(format!(
                "{topic}/{partition} (injected)"
            )));
        }
        self.inner.append(topic, partition, records)
    }
    fn read(
        &self,
        t: &str,
        p: u32,
        from: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Record>, LogError> {
        self.inner.read(t, p, from, max, wait)
    }
    fn offsets(&self, topic: &str, partition: u32) -> Result<(u64, u64), LogError> {
        self.inner.offsets(topic, partition)
    }
    fn commit(&self, g: &str, t: &str, p: u32, c: &Committed) -> Result<(), LogError> {
        self.inner.commit(g, t, p, c)
    }
    fn committed(&self, g: &str, t: &str, p: u32) -> Result<Option<Committed>, LogError> {
        self.inner.committed(g, t, p)
    }
}

#[test]
fn a_failed_append_restarts_the_worker_and_no_result_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("");
    let inner = EmbeddedLog::open(&dir.path().join("log"), EmbeddedConfig::default()).unwrap();
    inner.create_topic(&topics.events, 1).unwrap();
    inner.create_topic(&topics.results, 1).unwrap();
    let log = Arc::new(FlakyLog {
        inner,
        failures: AtomicU32::new(2),
    });
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
        log.failures.load(Ordering::SeqCst),
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
