//! `weir backtest` and `POST /admin/backtest`: how often would a rule
//! have fired? The running service (on the embedded log or Kafka) runs a
//! pipeline — or a configured reactor — over the history of every
//! partition, in parallel, writing nothing and sending nothing, and
//! answers with NDJSON: progress lines (`{"done": N, "total": M}`) every
//! half second, then `{"report": …}` (or `{"error": …}`).

use std::io::BufRead;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::json;
use weir_log::{Log, Topics};
use weir_processor::backtest::{backtest, BacktestProgress, BacktestReport};
use weir_processor::{ProcessorConfig, ReactorConfig, ReplayWindow};

use crate::admin::{admin_url, ClientAuth};
use crate::replay::epoch_ms;

/// Body of `POST /admin/backtest`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BacktestRequest {
    /// A pipeline to try…
    pipeline: Option<String>,
    /// …or a reactor of the config.
    reactor: Option<String>,
    /// Skip entries appended before (RFC 3339, or `-7d`).
    from: Option<String>,
    /// Stop at entries appended after.
    to: Option<String>,
}

/// What the history routes (backtest, explain) need: the log, the
/// config's reactors and where deliveries are recorded.
#[derive(Clone)]
pub struct History {
    /// The log.
    pub log: Arc<dyn Log>,
    /// Topic names.
    pub topics: Topics,
    /// The config's reactors (for `reactor`).
    pub reactors: Vec<ReactorConfig>,
    /// Processor settings (lateness, clock bound, read size).
    pub config: ProcessorConfig,
    /// The notifier's delivery logs, where this service runs it.
    pub deliveries: Option<std::path::PathBuf>,
}

/// `POST /admin/backtest` and `GET /admin/explain/ID`.
pub fn routes(history: History) -> Router {
    Router::new()
        .route("/admin/backtest", post(run))
        .route(
            "/admin/explain/{id}",
            axum::routing::get(crate::explain::explain_route),
        )
        .with_state(history)
}

impl History {
    /// The reactor and window a request asks for.
    fn understand(
        &self,
        request: BacktestRequest,
    ) -> Result<(ReactorConfig, ReplayWindow), String> {
        let reactor = match (request.pipeline, request.reactor) {
            (Some(pipeline), None) => ReactorConfig {
                name: "backtest".into(),
                pipeline,
            },
            (None, Some(name)) => self
                .reactors
                .iter()
                .find(|r| r.name == name)
                .cloned()
                .ok_or_else(|| format!("no reactor {name:?} in the config"))?,
            _ => return Err("give exactly one of pipeline and reactor".into()),
        };
        weir_processor::Reactor::build(&reactor).map_err(|e| e.to_string())?;
        let time = |text: Option<String>| {
            text.map(|t| epoch_ms(&t).map_err(|e| format!("{e:#}")))
                .transpose()
        };
        let window = ReplayWindow {
            from_ms: time(request.from)?,
            to_ms: time(request.to)?,
            follow: false,
        };
        Ok((reactor, window))
    }
}

async fn run(State(backtests): State<History>, bytes: Bytes) -> Response {
    let request: BacktestRequest = match serde_json::from_slice(&bytes) {
        Ok(request) => request,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("body: {e}\n")).into_response(),
    };
    let (reactor, window) = match backtests.understand(request) {
        Ok(understood) => understood,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let progress = Arc::new(BacktestProgress::default());
    let running = {
        let progress = progress.clone();
        tokio::task::spawn_blocking(move || {
            backtest(
                backtests.log.as_ref(),
                &backtests.topics,
                &[reactor],
                &backtests.config,
                &window,
                &progress,
            )
        })
    };
    let (lines, receiver) = tokio::sync::mpsc::channel::<String>(4);
    tokio::spawn(async move {
        let mut running = running;
        loop {
            tokio::select! {
                finished = &mut running => {
                    let line = match finished {
                        Ok(Ok(report)) => json!({ "report": report }),
                        Ok(Err(error)) => json!({ "error": error.to_string() }),
                        Err(error) => json!({ "error": error.to_string() }),
                    };
                    let _ = lines.send(format!("{line}\n")).await;
                    return;
                }
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    let line = json!({
                        "done": progress.done.load(std::sync::atomic::Ordering::Relaxed),
                        "total": progress.total.load(std::sync::atomic::Ordering::Relaxed),
                    });
                    if lines.send(format!("{line}\n")).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        let line = receiver.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(line), receiver))
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Arguments of `weir backtest`.
#[derive(Args)]
pub struct BacktestArgs {
    /// A pipeline to try (`where metric > 90 | notify log`)…
    #[arg(long, conflicts_with = "reactor", required_unless_present = "reactor")]
    pipeline: Option<String>,
    /// …or a reactor of the running service's config.
    #[arg(long)]
    reactor: Option<String>,
    /// Only entries appended from this time (RFC 3339, or relative: -7d).
    #[arg(long, allow_hyphen_values = true)]
    from: Option<String>,
    /// Only entries appended until this time.
    #[arg(long, allow_hyphen_values = true)]
    to: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// HTTP or admin address of the running `weir run` or `weir process`.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9877")]
    target: String,
    #[command(flatten)]
    auth: ClientAuth,
}

/// Runs `weir backtest`: asks the running service, shows its progress,
/// prints the report.
pub fn run_cli(args: BacktestArgs) -> anyhow::Result<()> {
    // A long history takes long: no timeout (progress shows it lives).
    let client = args.auth.builder()?.timeout(None).build()?;
    let request = BacktestRequest {
        pipeline: args.pipeline.clone(),
        reactor: args.reactor.clone(),
        from: args.from.clone(),
        to: args.to.clone(),
    };
    let response = client
        .post(admin_url(&args.target, "/admin/backtest"))
        .json(&request)
        .send()
        .with_context(|| format!("asking {}", args.target))?;
    let status = response.status();
    anyhow::ensure!(
        status.is_success(),
        "{}: {status}: {}",
        args.target,
        response.text().unwrap_or_default().trim()
    );
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("backtest {bar:30} {pos}/{len} entries {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    for line in std::io::BufReader::new(response).lines() {
        let line: serde_json::Value =
            serde_json::from_str(&line.context("reading the answer")?).context("an answer line")?;
        if let Some(error) = line.get("error") {
            bar.finish_and_clear();
            anyhow::bail!("the backtest failed: {error}");
        }
        if let Some(report) = line.get("report") {
            bar.finish_and_clear();
            let report: BacktestReport = serde_json::from_value(report.clone())?;
            print_report(&report, args.json);
            return Ok(());
        }
        bar.set_length(line["total"].as_u64().unwrap_or(0));
        bar.set_position(line["done"].as_u64().unwrap_or(0));
    }
    anyhow::bail!("the service closed the answer before its report")
}

fn print_report(report: &BacktestReport, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        );
        return;
    }
    println!(
        "{} entries in {:.1}s ({:.0} entries/s)",
        report.entries,
        report.seconds,
        report.entries as f64 / report.seconds.max(1e-9)
    );
    for (name, tally) in &report.reactors {
        println!(
            "reactor {name}: {} results, {} would-be notifications, {} (host, service)",
            tally.results, tally.notifications, tally.keys
        );
        for key in &tally.top {
            println!(
                "  {:<30} {:<20} {:>8}  first {}  last {}",
                key.host,
                key.service.as_deref().unwrap_or(""),
                key.count,
                rfc3339(key.first),
                rfc3339(key.last)
            );
        }
        for (hour, count) in &tally.per_hour {
            println!("  hour {} {count}", rfc3339(*hour as f64));
        }
    }
}

fn rfc3339(secs: f64) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0));
    humantime::format_rfc3339_seconds(time).to_string()
}
