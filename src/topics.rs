//! `weir topics`: the partition counts of weir's topics, and `weir topics
//! grow --partitions N`, which adds partitions to `weir.events`,
//! `weir.results` and `weir.checkpoints` of a running deployment.
//! Applications already placed keep their partition; running services
//! take the new partitions without a restart.

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use weir_log::{Log, Topics};

use crate::admin::{admin_url, ClientAuth};
use crate::run::ServiceArgs;

/// Arguments of `weir topics`.
#[derive(Args)]
pub struct TopicsArgs {
    #[command(subcommand)]
    command: TopicsCommand,
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// Print each topic's partition count.
    List(Target),
    /// Grow the events, results and checkpoints topics to N partitions each.
    Grow {
        /// The new partition count (at least the current one).
        #[arg(long)]
        partitions: u32,
        #[command(flatten)]
        target: Target,
    },
}

/// Where the topics are: a running weir's HTTP or metrics address
/// (`--target`; the way to reach an embedded log, which belongs to the
/// process that has it open), or the configured log opened directly.
#[derive(Args)]
struct Target {
    /// HTTP, metrics or admin address of a running weir service
    /// (`https://ADDR` over TLS).
    #[arg(long, value_name = "ADDR")]
    target: Option<String>,
    #[command(flatten)]
    auth: ClientAuth,
    #[command(flatten)]
    service: ServiceArgs,
}

/// A grow request and its answer on the admin API.
#[derive(Debug, Serialize, Deserialize)]
pub struct Grow {
    /// The new partition count.
    pub partitions: u32,
}

/// Partition counts per topic.
pub type Counts = std::collections::BTreeMap<String, u32>;

/// The partition count of each of weir's topics.
pub fn counts(log: &dyn Log, topics: &Topics) -> Result<Counts, weir_log::LogError> {
    [
        &topics.events,
        &topics.results,
        &topics.checkpoints,
        &topics.registry,
    ]
    .into_iter()
    .map(|topic| Ok((topic.clone(), log.partitions(topic)?)))
    .collect()
}

/// Runs `weir topics …`.
pub fn topics(args: TopicsArgs) -> anyhow::Result<()> {
    let (target, grow) = match args.command {
        TopicsCommand::List(target) => (target, None),
        TopicsCommand::Grow { partitions, target } => (target, Some(partitions)),
    };
    let counts = match target.target {
        Some(addr) => {
            let client = target.auth.client()?;
            let url = admin_url(&addr, "/admin/topics");
            let request = match grow {
                Some(partitions) => client
                    .post(format!("{url}/grow"))
                    .json(&Grow { partitions }),
                None => client.get(&url),
            };
            let response = request.send().with_context(|| format!("asking {url}"))?;
            let status = response.status();
            let body = response.text().unwrap_or_default();
            anyhow::ensure!(status.is_success(), "{url}: {status}: {}", body.trim());
            serde_json::from_str(&body).with_context(|| format!("reading {url}"))?
        }
        None => {
            let setup = target.service.setup().context(
                "opening the log (an embedded log in use by a running weir is reached with --target ADDR)",
            )?;
            if let Some(partitions) = grow {
                setup.topics.grow(&*setup.log, partitions)?;
            }
            counts(&*setup.log, &setup.topics)?
        }
    };
    for (topic, count) in counts {
        println!("{topic:<32} {count:>4} partitions");
    }
    Ok(())
}
