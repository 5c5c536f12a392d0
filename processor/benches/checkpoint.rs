//! Checkpoint cost for a partition holding 100,000 keys of state
//! (`by host | ewma` over 100,000 hosts): writing a checkpoint (engine
//! state → JSON → sled, flushed) and restoring it (sled → JSON → engine),
//! the work a processor does when a partition is assigned.

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use weir_event::{Entry, Event};
use weir_processor::checkpoint::{Checkpoint, CheckpointStore};
use weir_processor::{Engine, Reactor, ReactorConfig};

/// The allocator the `weir` binary ships with, so the figures are the
/// service's (state is many small allocations; glibc's malloc took half
/// of a restore's time in a profile).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEYS: usize = 100_000;

fn engine() -> Engine {
    let reactor = Reactor::build(&ReactorConfig {
        name: "bench".into(),
        pipeline: "by host | ewma alpha=0.3 | over 90".into(),
    })
    .expect("benchmark pipeline builds");
    Engine::new(0, vec![reactor], 60.0)
}

fn bench(c: &mut Criterion) {
    let mut loaded = engine();
    let mut out = Vec::new();
    for i in 0..KEYS {
        let mut event = Event::new(format!("host-{i}"), 1_700_000_000.0 + i as f64 / 1000.0);
        event.metric = Some((i % 100) as f64);
        loaded.process(i as u64, Entry::Event(event), &mut out);
        out.clear();
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = CheckpointStore::open(&dir.path().join("checkpoints")).expect("store opens");
    let checkpoint = Checkpoint {
        offset: KEYS as u64,
        state: loaded.save(),
        catch_up: None,
    };
    let bytes = store
        .save("bench", 0, &checkpoint)
        .expect("checkpoint saves");
    println!("checkpoint of {KEYS} keys: {bytes} bytes");

    let mut group = c.benchmark_group("checkpoint-100k-keys");
    group.sample_size(10);
    group.bench_function("save", |b| {
        b.iter(|| {
            let checkpoint = Checkpoint {
                offset: KEYS as u64,
                state: loaded.save(),
                catch_up: None,
            };
            store
                .save("bench", 0, &checkpoint)
                .expect("checkpoint saves")
        })
    });
    group.bench_function("restore", |b| {
        b.iter(|| {
            let checkpoint = store
                .load("bench", 0)
                .expect("store reads")
                .expect("checkpoint exists");
            let mut restored = engine();
            restored.load(checkpoint.state).expect("state loads");
            restored
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
