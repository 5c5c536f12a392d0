//! The services: `weir ingest` (listeners + router), `weir process` (the
//! reactors, a consumer-group member), `weir store` (sinks, notifier,
//! forwarder), and `weir run`, all three in one process. Every service
//! reads the same config and takes `--log` and `--brokers` overrides.
//!
//! Start order follows the data: log, processor and storage consumers
//! (which wait for data), router, then the listeners. Shutdown (Ctrl-C or
//! SIGTERM) stops the listeners, lets the router drain, and has every
//! processor partition checkpoint before exit.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use clap::Args;
use weir_log::{Backend, EmbeddedLog, Log, LogConfig, Topics};
use weir_processor::checkpoint::CheckpointStore;
use weir_processor::{Processor, Reactor};
use weir_storage::consumer::Source;
use weir_storage::forward::Forwarder;
use weir_storage::notify::Notifier;
use weir_storage::sink::{RunningSink, SinkDirs};
use weir_storage::{spawn_consumers, SinkKind};

use crate::admin;
use crate::config::Config;
use crate::telemetry;

/// Arguments every service takes.
#[derive(Args)]
pub struct ServiceArgs {
    /// Config file (default: the built-in example).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (embedded log, checkpoints, results); default ./weir-data.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Log backend, overriding `[log] backend`.
    #[arg(long, value_name = "embedded|kafka")]
    log: Option<Backend>,
    /// Kafka bootstrap servers `host:port,…`, overriding `[log] brokers`.
    #[arg(long, value_name = "LIST")]
    brokers: Option<String>,
    /// Serve /metrics, /healthz and /readyz here (e.g. 127.0.0.1:9101; port 0 picks one).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
}

/// What every service starts from.
pub struct Setup {
    /// The config with the command line applied.
    pub config: Config,
    /// The data directory (created).
    pub data_dir: PathBuf,
    /// The opened log, with weir's topics created.
    pub log: Arc<dyn Log>,
    /// Topic names.
    pub topics: Topics,
    /// The config's reactors, every one valid.
    pub reactors: Vec<Reactor>,
}

impl ServiceArgs {
    /// Loads the config, applies the command line, checks the reactors
    /// (all errors at once) and opens the log.
    pub fn setup(self) -> anyhow::Result<Setup> {
        let mut config = Config::load(self.config.as_deref())?;
        config.ingest.max_future_secs = Some(config.processor.max_future_secs);
        if let Some(backend) = self.log {
            config.log.backend = backend;
        }
        if let Some(brokers) = self.brokers {
            config.log.brokers = brokers;
        }
        if let Some(metrics) = self.metrics {
            config.metrics_listen = Some(metrics);
        }
        let reactors = match Processor::check(&config.reactor) {
            Ok(reactors) => reactors,
            Err(errors) => {
                for error in &errors {
                    eprintln!("error: {error}");
                }
                anyhow::bail!("the config has {} invalid reactors", errors.len());
            }
        };
        let data_dir = config.data_dir(self.data_dir.as_deref());
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let topics = Topics::new(&config.log.namespace);
        let log = weir_log::open(&config.log, &data_dir).context("opening the log")?;
        topics
            .create(&*log, config.log.partitions)
            .context("creating weir's topics")?;
        Ok(Setup {
            config,
            data_dir,
            log,
            topics,
            reactors,
        })
    }
}

/// Which stages a process runs.
#[derive(Clone, Copy)]
pub struct Roles {
    /// Listeners and router.
    pub ingest: bool,
    /// Reactors.
    pub process: bool,
    /// Sinks, notifier, forwarder.
    pub store: bool,
}

impl Roles {
    /// Everything in one process.
    pub const ALL: Roles = Roles {
        ingest: true,
        process: true,
        store: true,
    };
}

/// Runs the `roles` until interrupted.
pub fn run(args: ServiceArgs, roles: Roles) -> anyhow::Result<()> {
    let whole = roles.ingest && roles.process && roles.store;
    let Setup {
        config,
        data_dir,
        log,
        topics,
        reactors,
    } = args.setup()?;
    if !whole && config.log.backend == Backend::Embedded {
        anyhow::bail!(
            "the services share the log across processes, which needs `--log kafka` \
             (or `[log] backend = \"kafka\"`); the embedded log belongs to one process: use `weir run`"
        );
    }
    for reactor in &reactors {
        for topic in reactor.forward_topics() {
            log.create_topic(topic, config.log.partitions, false)?;
        }
    }
    let shutdown = Arc::new(AtomicBool::new(false));

    let processor = if roles.process {
        let processor = Processor {
            log: log.clone(),
            topics: topics.clone(),
            reactors: config.reactor.clone(),
            config: config.processor.clone(),
            store: CheckpointStore::open(&data_dir.join("checkpoints"))?,
            share_checkpoints: log.guarantees().shared,
        };
        Some(processor.start()?)
    } else {
        None
    };
    let storage = if roles.store {
        Some(start_storage(&config, &log, &topics, &data_dir, &shutdown)?)
    } else {
        None
    };

    let router = if roles.ingest {
        Some(weir_router::start(
            log.clone(),
            topics.clone(),
            &config.router,
        )?)
    } else {
        None
    };
    let admin = admin::Admin {
        log: log.clone(),
        topics: topics.clone(),
        status: processor.as_ref().map(|p| p.status()),
        graphite: Arc::new(storage.as_ref().map(Storage::graphite).unwrap_or_default()),
        registry: router.as_ref().map(|(handle, _)| handle.downgrade()),
        token: config.admin.token()?,
        read_token: config.admin.read_token()?,
        index_peers: config.admin.index_peers.clone(),
        backtests: roles.process.then(|| crate::backtest::History {
            log: log.clone(),
            topics: topics.clone(),
            reactors: config.reactor.clone(),
            config: config.processor.clone(),
            deliveries: roles.store.then(|| {
                config
                    .notify
                    .dir
                    .clone()
                    .unwrap_or_else(|| data_dir.join("notifications"))
            }),
        }),
    };
    // The admin routes go on their own listener, or beside the others.
    let shared_admin = config.admin.listen.is_none().then_some(&admin);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (router, router_thread) = router.unzip();
    runtime.block_on(async {
        let mut servers = Vec::new();
        if let Some(listen) = &config.admin.listen {
            servers.push(serve("admin", listen, Router::new(), "", Some(&admin), None).await?);
        }
        if let Some(listen) = &config.metrics_listen {
            let what = "GET /metrics, GET /healthz, GET /readyz";
            let app = telemetry::routes();
            servers.push(serve("metrics", listen, app, what, shared_admin, None).await?);
        }
        let http = match &router {
            Some(router) => start_ingest(&config, router, shared_admin).await?,
            None => None,
        };
        println!("data in {}", data_dir.display());
        wait_for_signal().await;
        println!("shutting down");
        bound_shutdown(Duration::from_secs(config.shutdown_timeout_secs));
        servers.iter().for_each(|server| server.abort());
        if let Some(http) = http {
            http.abort();
        }
        anyhow::Ok(())
    })?;
    drop(router);
    // Listener tasks end with the runtime; then the router sees no senders.
    runtime.shutdown_background();
    if let Some(router_thread) = router_thread {
        let _ = router_thread.join();
    }
    shutdown.store(true, Ordering::Relaxed);
    if let Some(processor) = processor {
        for error in processor.stop() {
            tracing::error!(%error, "processor worker failed");
        }
    }
    if let Some(storage) = storage {
        storage.join();
    }
    Ok(())
}

/// The results consumers: the sinks, the notifier and the forwarder.
struct Storage {
    sinks: Vec<RunningSink>,
    consumers: Vec<JoinHandle<()>>,
}

impl Storage {
    /// The Graphite sinks, by name, for the admin API.
    fn graphite(&self) -> admin::GraphiteSinks {
        self.sinks
            .iter()
            .filter_map(|sink| Some((sink.name.clone(), sink.graphite.clone()?)))
            .collect()
    }

    /// Joins everything (after `shutdown` was set).
    fn join(self) {
        self.sinks.into_iter().for_each(RunningSink::join);
        self.consumers.into_iter().for_each(|c| {
            let _ = c.join();
        });
    }
}

fn start_storage(
    config: &Config,
    log: &Arc<dyn Log>,
    topics: &Topics,
    data_dir: &std::path::Path,
    shutdown: &Arc<AtomicBool>,
) -> anyhow::Result<Storage> {
    let sinks = config.sinks()?;
    // Where the log does not keep commit metadata, positions live here.
    let positions: Option<Arc<dyn Log>> = if log.guarantees().commit_metadata {
        None
    } else {
        Some(Arc::new(EmbeddedLog::open(
            &data_dir.join("positions"),
            LogConfig::default(),
        )?))
    };
    let source = |group: &str| Source {
        log: log.clone(),
        topic: topics.results.clone(),
        group: group.to_owned(),
        positions: positions.clone(),
        max_lag: 0,
    };
    let dirs = SinkDirs {
        data: data_dir.to_path_buf(),
    };
    let mut started = Vec::new();
    for sink in &sinks {
        if let SinkKind::Kafka(kafka) = &sink.kind {
            log.create_topic(&kafka.topic, config.log.partitions, false)?;
        }
        let running = weir_storage::sink::start(sink, &source(""), &dirs, shutdown.clone())
            .with_context(|| format!("starting sink {}", sink.name))?;
        let mut description = sink.describe(&dirs);
        if let Some(graphite) = &running.graphite {
            for destination in graphite.destinations() {
                description.push_str(&format!(", {}", destination.address));
            }
        }
        println!("sink {} ({description})", sink.name);
        started.push(running);
    }
    let deliveries = config
        .notify
        .dir
        .clone()
        .unwrap_or_else(|| data_dir.join("notifications"));
    let notify = config.notify.clone();
    let channels = notify.channels()?;
    let forward_log = log.clone();
    let consumers = vec![
        spawn_consumers(
            &source("weir.notifier"),
            move |p| Notifier::new(&notify, &deliveries, p, channels.clone()),
            shutdown.clone(),
        )?,
        spawn_consumers(
            &source("weir.forwarder"),
            move |p| Forwarder::new(forward_log.clone(), p),
            shutdown.clone(),
        )?,
    ];
    Ok(Storage {
        sinks: started,
        consumers,
    })
}

/// Every configured listener, feeding `router`; the HTTP listener also
/// serves /metrics and /healthz, and the admin routes when given.
async fn start_ingest(
    config: &Config,
    router: &weir_router::RouterHandle,
    admin: Option<&admin::Admin>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<std::io::Result<()>>>> {
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
    if let Some(addr) = bound.graphite {
        println!("listening graphite {addr} (Graphite plaintext, TCP and UDP)");
    }
    if let Some(addr) = bound.riemann {
        println!("listening riemann {addr} (Riemann protobuf, TCP and UDP)");
    }
    if let Some(addr) = bound.influx {
        println!("listening influx {addr} (InfluxDB line protocol, UDP)");
    }
    if let Some(addr) = bound.statsd {
        println!("listening statsd {addr} (StatsD, UDP and TCP)");
    }
    if let Some(listener) = &config.ingest.otlp_grpc {
        let app = weir_ingest::http::grpc_routes(&config.ingest, router.clone());
        let what = "OTLP/gRPC MetricsService/Export";
        let tls = listener.acceptor("otlp-grpc")?;
        // The task ends with the runtime, like the stream listeners.
        drop(serve("otlp-grpc", &listener.listen, app, what, None, tls).await?);
    }
    let http = match &config.ingest.http {
        Some(listener) => {
            let app = weir_ingest::http::routes(&config.ingest, router.clone())
                .merge(telemetry::routes());
            let what = "POST /events, POST /write, POST /api/v1/write, POST /v1/metrics, GET /ws, GET /metrics, GET /healthz, GET /readyz";
            let tls = listener.acceptor("http")?;
            Some(serve("http", &listener.listen, app, what, admin, tls).await?)
        }
        None => None,
    };
    Ok(http)
}

/// Binds `listen` and serves `app` there (over TLS with `tls`), with the
/// admin routes when `admin` is given (refused beyond loopback without a
/// token); prints `listening KIND ADDR (WHAT)`.
async fn serve(
    kind: &str,
    listen: &str,
    app: Router,
    what: &str,
    admin: Option<&admin::Admin>,
    tls: Option<weir_ingest::tls::Acceptor>,
) -> anyhow::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let socket = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {kind} {listen}"))?;
    let bound = socket.local_addr()?;
    let (app, what) = match admin {
        Some(admin) => {
            admin::check_exposure(bound, admin.token.as_ref())
                .with_context(|| format!("the {kind} listener"))?;
            let what = [what, "/admin/…"].join(if what.is_empty() { "" } else { ", " });
            (app.merge(admin::routes(admin.clone())), what)
        }
        None => (app, what.to_owned()),
    };
    let scheme = if tls.is_some() { ", TLS" } else { "" };
    println!("listening {kind} {bound} ({what}{scheme})");
    Ok(match tls {
        None => {
            use axum::serve::ListenerExt;
            // Small writes (a live feed's messages) go out at once.
            let socket = socket.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            tokio::spawn(async move { axum::serve(socket, app).await })
        }
        Some(tls) => {
            let socket = weir_ingest::tls::TlsListener::new(socket, tls)?;
            tokio::spawn(async move { axum::serve(socket, app).await })
        }
    })
}

/// Ends the process if the shutdown under way has not finished within
/// `timeout` (a broker or sink that does not answer must not hold it
/// forever: partitions checkpoint locally first, so what is lost is
/// only what could not be committed remotely) or at a second Ctrl-C or
/// SIGTERM.
fn bound_shutdown(timeout: Duration) {
    let watch = move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        let second_signal = match runtime {
            Ok(runtime) => runtime.block_on(async {
                tokio::select! {
                    _ = wait_for_signal() => true,
                    _ = tokio::time::sleep(timeout) => false,
                }
            }),
            Err(_) => {
                std::thread::sleep(timeout);
                false
            }
        };
        if second_signal {
            tracing::warn!("second signal: exiting without finishing the shutdown");
        } else {
            tracing::error!(
                ?timeout,
                "the shutdown did not finish within shutdown_timeout_secs; exiting"
            );
        }
        std::process::exit(1);
    };
    if let Err(error) = std::thread::Builder::new()
        .name("weir-shutdown".into())
        .spawn(watch)
    {
        tracing::warn!(%error, "cannot bound the shutdown");
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn wait_for_signal() {
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
