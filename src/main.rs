//! `weir`: a durable, replayable monitoring event processor.
//!
//! Subcommands: `run` (every stage in one process), the services `ingest`,
//! `process` and `store` (the same stages split, for Kafka), `send` (godot's producer), `check` (validate a config), `eval` (run a
//! pipeline over recorded events), `stages` (what a pipeline can use),
//! `bench` (load generator), `state`
//! (where reactors' checkpoints stand), `replay` (a reactor over history),
//! `topics` (partition counts, and growing them live).

mod admin;
mod backtest;
mod bench;
mod config;
mod drops;
mod eval;
mod explain;
mod live;
mod registry;
mod replay;
mod run;
mod send;
mod state;
mod telemetry;
mod topics;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc: the pipeline allocates and frees small strings per event on
/// several threads. Its `override` feature makes it the C allocator too, so
/// librdkafka's per-message allocations (made on one thread, freed on
/// another) go through it rather than glibc's locked arenas;
/// docs/PERFORMANCE.md has the measured difference of both.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Durable, replayable monitoring event processor"
)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run ingest, router, processor and storage in one process.
    Run(run::ServiceArgs),
    /// Run the listeners and the router.
    Ingest(run::ServiceArgs),
    /// Run the reactors as a member of their consumer group.
    Process(run::ServiceArgs),
    /// Run the sinks, the notifier and the forwarder.
    Store(run::ServiceArgs),
    /// Send one event, or repeat it (heartbeats), like godot's producer.
    Send(send::SendArgs),
    /// Validate a config file and every reactor in it.
    Check {
        /// The config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run one pipeline over NDJSON events and print what it emits.
    Eval(eval::EvalArgs),
    /// List the stages a pipeline can use, with their options and what
    /// each does (docs/REACTORS.md has the details).
    Stages,
    /// Generate load against a running weir and report throughput.
    Bench(bench::BenchArgs),
    /// Run one reactor over history as its own consumer group (and on live with --follow).
    Replay(replay::ReplayArgs),
    /// Show where a reactor's state stands on each partition of running processors.
    State(state::StateArgs),
    /// Show weir's topics, or grow them to more partitions while weir runs.
    Topics(topics::TopicsArgs),
    /// Show or change the service registry of a running weir.
    Registry(registry::RegistryArgs),
    /// How often would a pipeline have fired? Runs it over the history
    /// in a running weir, writing and sending nothing.
    Backtest(backtest::BacktestArgs),
    /// Why did this result fire? The trigger, the state before, the
    /// host's recent inputs and the deliveries of one result id.
    Explain(explain::ExplainArgs),
    /// What stopped short, where and why, with examples.
    Drops(drops::DropsArgs),
}

/// Prints every registered stage: name, options, one line of doc.
fn stages() {
    use weir_processor::stage::{registered, Options};
    let mut rows: Vec<_> = registered()
        .map(|def| {
            let options = match def.options {
                Options::Only([]) => String::new(),
                Options::Only(names) => format!("[{}]", names.join(" ")),
                // Free options: FIELD=VALUE pairs, a predicate, channel settings.
                Options::Any => "[any]".into(),
            };
            (def.name, options, def.doc)
        })
        .collect();
    rows.sort_by_key(|&(name, ..)| name);
    let name_width = rows.iter().map(|(name, ..)| name.len()).max().unwrap_or(0);
    let options_width = rows
        .iter()
        .map(|(_, options, _)| options.chars().count())
        .max()
        .unwrap_or(0);
    for (name, options, doc) in rows {
        println!("{name:<name_width$}  {options:<options_width$}  {doc}");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_logging(cli.log_json);
    let result = match cli.command {
        Command::Run(args) => run::run(args, run::Roles::ALL),
        Command::Ingest(args) => run::run(
            args,
            run::Roles {
                ingest: true,
                process: false,
                store: false,
            },
        ),
        Command::Process(args) => run::run(
            args,
            run::Roles {
                ingest: false,
                process: true,
                store: false,
            },
        ),
        Command::Store(args) => run::run(
            args,
            run::Roles {
                ingest: false,
                process: false,
                store: true,
            },
        ),
        Command::Send(args) => send::send(args),
        Command::Check { config } => check(&config),
        Command::Eval(args) => eval::eval(args),
        Command::Stages => {
            stages();
            Ok(())
        }
        Command::Bench(args) => bench::bench(args),
        Command::State(args) => state::state(args),
        Command::Replay(args) => replay::replay(args),
        Command::Topics(args) => topics::topics(args),
        Command::Registry(args) => registry::registry(args),
        Command::Backtest(args) => backtest::run_cli(args),
        Command::Explain(args) => explain::run_cli(args),
        Command::Drops(args) => drops::run_cli(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let config = config::Config::load(Some(path))?;
    let sinks = config
        .sinks()
        .map_err(|e| e.context(path.display().to_string()))?;
    match weir_processor::Processor::check(&config.reactor) {
        Ok(reactors) => {
            println!(
                "{}: ok, {} reactors, {} sinks",
                path.display(),
                reactors.len(),
                sinks.len()
            );
            Ok(())
        }
        Err(errors) => {
            for error in &errors {
                eprintln!("{}: {error}", path.display());
            }
            anyhow::bail!(
                "{} of {} reactors have errors",
                errors.len(),
                config.reactor.len()
            )
        }
    }
}
