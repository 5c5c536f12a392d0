//! `weir state --reactor NAME`: per partition, where a reactor's state
//! stands — the checkpointed offset, the checkpoint's age, the reactor's
//! share of it in bytes, and the lag — read from running processors'
//! `/admin/state`.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use weir_processor::PartitionStatus;

/// Arguments of `weir state`.
#[derive(Args)]
pub struct StateArgs {
    /// The reactor (its name in the config).
    #[arg(long)]
    reactor: String,
    /// HTTP or metrics address of a processor (`weir run` or `weir process`); repeatable.
    #[arg(long = "target", value_name = "ADDR", default_value = "127.0.0.1:9877")]
    targets: Vec<String>,
}

/// Prints one line per partition that holds the reactor.
pub fn state(args: StateArgs) -> anyhow::Result<()> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let prefix = format!("{}@", args.reactor);
    println!(
        "{:<22} {:>9} {:>12} {:>9} {:>12} {:>10}",
        "processor", "partition", "offset", "age", "size", "lag"
    );
    let mut shown = 0;
    for target in &args.targets {
        let url = format!("http://{target}/admin/state");
        let partitions: BTreeMap<u32, PartitionStatus> = reqwest::blocking::get(&url)
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.json())
            .with_context(|| format!("reading {url}"))?;
        for (partition, status) in partitions {
            for (identity, bytes) in &status.reactor_bytes {
                if !identity.starts_with(&prefix) {
                    continue;
                }
                let age = now_ms.saturating_sub(status.saved_at_ms) as f64 / 1000.0;
                println!(
                    "{target:<22} {partition:>9} {:>12} {:>8.1}s {:>12} {:>10}",
                    status.offset, age, bytes, status.lag
                );
                shown += 1;
            }
        }
    }
    anyhow::ensure!(
        shown > 0,
        "no partition of {} holds state of reactor {:?}",
        args.targets.join(", "),
        args.reactor
    );
    Ok(())
}
