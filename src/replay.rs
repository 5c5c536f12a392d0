//! `weir replay --reactor NAME`: runs one reactor of the config alone over
//! history as its own consumer group (`weir.replay.NAME@VERSION`), all
//! partitions in parallel, appending its results to `weir.results` with
//! the ids live processing gives them (so sinks drop what they already
//! have), and with `--follow` goes on live. Interrupted, it resumes from
//! its group's checkpoints. On the embedded log, stop `weir run` first:
//! the log belongs to one process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use weir_processor::checkpoint::CheckpointStore;
use weir_processor::{Processor, ReplayProgress, ReplayWindow};

use crate::run::{wait_for_signal, ServiceArgs, Setup};

/// Arguments of `weir replay`.
#[derive(Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    service: ServiceArgs,
    /// The reactor to replay (its name in the config).
    #[arg(long)]
    reactor: String,
    /// `earliest`, or an RFC 3339 time: entries appended before it are skipped.
    #[arg(long, default_value = "earliest")]
    from: String,
    /// An RFC 3339 time: stop at the first entry appended after it.
    #[arg(long)]
    to: Option<String>,
    /// After the history, keep processing new entries until interrupted.
    #[arg(long)]
    follow: bool,
}

/// Milliseconds since the epoch of an RFC 3339 time, or of a time
/// relative to now (`-7d`, `-90m`).
pub fn epoch_ms(text: &str) -> anyhow::Result<u64> {
    let time = match text.strip_prefix('-') {
        Some(ago) => {
            let ago = humantime::parse_duration(ago)
                .with_context(|| format!("{text:?} is not a time ago like -7d"))?;
            std::time::SystemTime::now() - ago
        }
        None => humantime::parse_rfc3339_weak(text).with_context(|| {
            format!("{text:?} is not an RFC 3339 time like 2026-11-01T00:00:00Z, nor -7d")
        })?,
    };
    Ok(time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64))
}

/// Replays and prints a summary.
pub fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let window = ReplayWindow {
        from_ms: match args.from.as_str() {
            "earliest" => None,
            time => Some(epoch_ms(time)?),
        },
        to_ms: args.to.as_deref().map(epoch_ms).transpose()?,
        follow: args.follow,
    };
    let Setup {
        config,
        data_dir,
        log,
        topics,
        reactors,
    } = args.service.setup()?;
    // `reactors` are the config's, built, in the same order.
    let index = config
        .reactor
        .iter()
        .position(|r| r.name == args.reactor)
        .with_context(|| {
            let names: Vec<&str> = config.reactor.iter().map(|r| r.name.as_str()).collect();
            format!(
                "no reactor {:?} in the config (it has {names:?})",
                args.reactor
            )
        })?;
    let reactor = &reactors[index];
    let group = format!("weir.replay.{}", reactor.identity());
    let processor = Processor {
        log: log.clone(),
        topics: topics.clone(),
        reactors: vec![config.reactor[index].clone()],
        config: config.processor.clone(),
        store: CheckpointStore::open(&data_dir.join("checkpoints"))?,
        share_checkpoints: false,
    };
    let partitions = log.partitions(&topics.events)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            runtime.block_on(wait_for_signal());
            flag.store(true, Ordering::Relaxed);
        }
    });
    println!(
        "replaying {} as group {group} over {partitions} partitions",
        reactor.identity()
    );
    let progress: Vec<Arc<ReplayProgress>> = (0..partitions).map(|_| Arc::default()).collect();
    let started = Instant::now();
    let workers: Vec<_> = (0..partitions)
        .map(|partition| {
            let (processor, group, window, stop, progress) = (
                processor.clone(),
                group.clone(),
                window.clone(),
                stop.clone(),
                progress[partition as usize].clone(),
            );
            std::thread::spawn(move || {
                processor.replay_partition(partition, &group, &window, &stop, &progress)
            })
        })
        .collect();
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} entries {per_sec} ETA {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let sum =
        |field: fn(&ReplayProgress) -> u64| -> u64 { progress.iter().map(|p| field(p)).sum() };
    while !workers.iter().all(|w| w.is_finished()) {
        std::thread::sleep(Duration::from_millis(200));
        bar.set_length(sum(|p| p.total.load(Ordering::Relaxed)));
        bar.set_position(sum(|p| p.done.load(Ordering::Relaxed)));
        let lag: Vec<String> = progress
            .iter()
            .enumerate()
            .map(|(p, r)| {
                let left = r.total.load(Ordering::Relaxed)
                    - r.done
                        .load(Ordering::Relaxed)
                        .min(r.total.load(Ordering::Relaxed));
                format!("p{p}:{left}")
            })
            .collect();
        bar.set_message(format!("lag {}", lag.join(" ")));
    }
    bar.finish_and_clear();
    let mut failed = 0;
    for (partition, worker) in workers.into_iter().enumerate() {
        match worker.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                eprintln!("error: partition {partition}: {error}");
                failed += 1;
            }
            Err(_) => {
                eprintln!("error: partition {partition}: the replay panicked");
                failed += 1;
            }
        }
    }
    let entries = sum(|p| p.done.load(Ordering::Relaxed));
    let secs = started.elapsed().as_secs_f64();
    println!(
        "replayed {entries} entries in {secs:.2}s ({:.0} entries/s): {} results appended to {}",
        entries as f64 / secs.max(1e-9),
        sum(|p| p.results.load(Ordering::Relaxed)),
        topics.results
    );
    anyhow::ensure!(failed == 0, "{failed} partitions failed");
    Ok(())
}
