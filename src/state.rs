//! `weir state --reactor NAME`: per partition and version, where a
//! reactor's state stands — the checkpointed offset, the checkpoint's age,
//! the version's share of it in bytes, and the lag — read from running
//! processors' `/admin/state`. Retired versions (no longer configured)
//! are kept until `--forget VERSION` drops them.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use weir_processor::PartitionStatus;

use crate::admin::{admin_url, ClientAuth};

/// Arguments of `weir state`.
#[derive(Args)]
pub struct StateArgs {
    /// The reactor (its name in the config).
    #[arg(long)]
    reactor: String,
    /// HTTP or metrics address of a processor (`weir run` or `weir
    /// process`), `https://ADDR` over TLS; repeatable.
    #[arg(long = "target", value_name = "ADDR", default_value = "127.0.0.1:9877")]
    targets: Vec<String>,
    /// Drop the kept state of this retired version of the reactor (a
    /// version no longer in the config; `weir state` lists it) at every
    /// partition's next checkpoint.
    #[arg(long, value_name = "VERSION")]
    forget: Option<String>,
    #[command(flatten)]
    auth: ClientAuth,
}

/// Prints one line per partition and version of the reactor, or with
/// `--forget` asks every target to drop a retired version.
pub fn state(args: StateArgs) -> anyhow::Result<()> {
    let client = args.auth.client()?;
    if let Some(version) = &args.forget {
        let identity = format!("{}@{version}", args.reactor);
        for target in &args.targets {
            let url = admin_url(target, &format!("/admin/state/{identity}"));
            client
                .delete(&url)
                .send()
                .and_then(|r| r.error_for_status())
                .with_context(|| format!("DELETE {url}"))?;
        }
        println!("{identity}: its kept state goes at each partition's next checkpoint");
        return Ok(());
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let prefix = format!("{}@", args.reactor);
    println!(
        "{:<22} {:>9} {:>18} {:>12} {:>9} {:>12} {:>10}",
        "processor", "partition", "version", "offset", "age", "size", "lag"
    );
    let mut shown = 0;
    for target in &args.targets {
        let url = admin_url(target, "/admin/state");
        let partitions: BTreeMap<u32, PartitionStatus> = client
            .get(&url)
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.json())
            .with_context(|| format!("reading {url}"))?;
        for (partition, status) in partitions {
            for (identity, bytes) in &status.reactor_bytes {
                let Some(version) = identity.strip_prefix(&prefix) else {
                    continue;
                };
                let age = now_ms.saturating_sub(status.saved_at_ms) as f64 / 1000.0;
                println!(
                    "{target:<22} {partition:>9} {version:>18} {:>12} {:>8.1}s {:>12} {:>10}",
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
