//! Stage-engine throughput on in-memory events: the reactor the issue names
//! (`where | by host | ewma | over`) and a counting one, through the same
//! `Engine` the runtime uses.

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use weir_event::{Entry, Event};
use weir_processor::{Engine, Reactor, ReactorConfig};

/// The allocator the `weir` binary ships with, so the figures are the
/// service's (state is many small allocations; glibc's malloc took half
/// of a restore's time in a profile).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EVENTS: usize = 100_000;

fn events() -> Vec<Event> {
    (0..EVENTS)
        .map(|i| {
            let mut event = Event::new(
                format!("host-{}", i % 1000),
                1_700_000_000.0 + i as f64 / 1000.0,
            );
            event.service = Some(if i % 4 == 0 { "mem" } else { "cpu" }.to_owned());
            event.metric = Some((i % 100) as f64);
            event.state = Some("ok".into());
            event
        })
        .collect()
}

fn engine(pipeline: &str) -> Engine {
    let reactor = Reactor::build(&ReactorConfig {
        name: "bench".into(),
        pipeline: pipeline.into(),
    })
    .expect("benchmark pipeline builds");
    Engine::new(0, vec![reactor], 60.0)
}

fn bench(c: &mut Criterion) {
    let input = events();
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(EVENTS as u64));
    for pipeline in [
        r#"where service = "cpu" | by host | ewma alpha=0.1 | over 90"#,
        "by host | count 10s",
    ] {
        group.bench_with_input(BenchmarkId::from_parameter(pipeline), &input, |b, input| {
            b.iter_batched(
                || (engine(pipeline), input.clone()),
                |(mut engine, input)| {
                    let mut out = Vec::new();
                    for (offset, event) in input.into_iter().enumerate() {
                        engine.process(offset as u64, Entry::Event(event), &mut out);
                        out.clear();
                    }
                },
                criterion::BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
