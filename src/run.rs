//! `weir run`: the whole pipeline in one process over the embedded log.
//!
//! Start order follows the data: log, processor and storage consumers
//! (which wait for data), router, then the listeners. Shutdown (Ctrl-C or
//! SIGTERM) stops the listeners, lets the router drain, and has every
//! worker checkpoint before exit.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use weir_log::{EmbeddedLog, Log, Topics};
use weir_processor::checkpoint::CheckpointStore;
use weir_processor::Processor;
use weir_storage::consumer::Source;
use weir_storage::file::FileSink;
use weir_storage::forward::Forwarder;
use weir_storage::notify::Notifier;
use weir_storage::spawn_consumers;

use crate::config::Config;
use crate::telemetry;

/// Arguments of `weir run`.
#[derive(Args)]
pub struct RunArgs {
    /// Config file (default: the built-in example).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (log, checkpoints, results); default ./weir-data.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// Runs until interrupted.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())?;
    let reactors = match Processor::check(&config.reactor) {
        Ok(reactors) => reactors,
        Err(errors) => {
            for error in &errors {
                eprintln!("error: {error}");
            }
            anyhow::bail!("the config has {} invalid reactors", errors.len());
        }
    };
    let data_dir = config.data_dir(args.data_dir.as_deref());
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let topics = Topics::new(&config.log.namespace);
    let embedded =
        EmbeddedLog::open(&data_dir.join("log"), config.log.clone()).context("opening the log")?;
    embedded.create_topic(&topics.events, config.log.partitions)?;
    embedded.create_topic(&topics.results, config.log.partitions)?;
    embedded.create_topic(&topics.registry, 1)?;
    for reactor in &reactors {
        if let Some(topic) = reactor.forward_topic() {
            embedded.create_topic(topic, config.log.partitions)?;
        }
    }
    let log: Arc<dyn Log> = Arc::new(embedded);
    let shutdown = Arc::new(AtomicBool::new(false));

    let processor = Processor {
        log: log.clone(),
        topics: topics.clone(),
        reactors: config.reactor.clone(),
        config: config.processor.clone(),
        store: CheckpointStore::open(&data_dir.join("checkpoints"))?,
    };
    let mut workers = processor.spawn(shutdown.clone())?;

    let results_dir = config
        .storage
        .file
        .dir
        .clone()
        .unwrap_or_else(|| data_dir.join("results"));
    let max_file_bytes = config.storage.file.max_file_bytes;
    let source = |group: &str| Source {
        log: log.clone(),
        topic: topics.results.clone(),
        group: group.to_owned(),
    };
    let mut consumers = spawn_consumers(
        &source("weir.storage.file"),
        |p| FileSink::new(&results_dir, p, max_file_bytes),
        shutdown.clone(),
    )?;
    let deliveries = config
        .notify
        .dir
        .clone()
        .unwrap_or_else(|| data_dir.join("notifications"));
    consumers.extend(spawn_consumers(
        &source("weir.notifier"),
        |p| Notifier::new(&config.notify, &deliveries, p),
        shutdown.clone(),
    )?);

    consumers.extend(spawn_consumers(
        &source("weir.forwarder"),
        |p| Forwarder::new(log.clone(), p),
        shutdown.clone(),
    )?);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let router_thread = runtime.block_on(async {
        let (router, router_thread) =
            weir_router::start(log.clone(), topics.clone(), &config.router)?;
        let bound = weir_ingest::listeners::start(&config.ingest, router.clone()).await?;
        if let Some(addr) = bound.tcp {
            println!("listening tcp {addr} (NDJSON)");
        }
        if let Some(addr) = bound.udp {
            println!("listening udp {addr} (NDJSON)");
        }
        if let Some(path) = &bound.unix {
            println!("listening unix {} (NDJSON)", path.display());
        }
        let http = match &config.ingest.http {
            Some(listener) => {
                let socket = tokio::net::TcpListener::bind(&listener.listen)
                    .await
                    .with_context(|| format!("cannot listen on http {}", listener.listen))?;
                println!(
                    "listening http {} (POST /events, GET /metrics, GET /healthz)",
                    socket.local_addr()?
                );
                let app = weir_ingest::http::routes(&config.ingest, router.clone())
                    .merge(telemetry::routes());
                Some(tokio::spawn(async move { axum::serve(socket, app).await }))
            }
            None => None,
        };
        println!(
            "data in {}, results in {}",
            data_dir.display(),
            results_dir.display()
        );
        wait_for_signal().await;
        println!("shutting down");
        if let Some(http) = http {
            http.abort();
        }
        drop(router);
        anyhow::Ok(router_thread)
    })?;
    // Listener tasks end with the runtime; then the router sees no senders.
    runtime.shutdown_background();
    let _ = router_thread.join();
    shutdown.store(true, Ordering::Relaxed);
    for worker in workers.drain(..) {
        if let Ok(Err(error)) = worker.join() {
            tracing::error!(%error, "processor worker failed");
        }
    }
    consumers.into_iter().for_each(|c| {
        let _ = c.join();
    });
    Ok(())
}

async fn wait_for_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
