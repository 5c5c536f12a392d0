//! `weir explain RESULT_ID` and `GET /admin/explain/ID`: why did this
//! alert fire? The running service replays the result's reactor over its
//! partition up to the result's input offset and answers with the entry
//! that triggered it, the state kept for its host just before, the
//! host's recent inputs, the result as replaying gives it again, and for
//! a notification its delivery records.

use std::io::BufRead;

use anyhow::Context;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use clap::Args;
use serde_json::Value;
use weir_event::ResultId;
use weir_processor::explain::explain;

use crate::admin::{admin_url, ask, ClientAuth};
use crate::backtest::History;

/// `GET /admin/explain/ID`.
pub async fn explain_route(State(history): State<History>, Path(id): Path<String>) -> Response {
    let id: ResultId = match id.parse() {
        Ok(id) => id,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let answer = tokio::task::spawn_blocking(move || {
        let explanation = explain(
            history.log.as_ref(),
            &history.topics,
            &history.reactors,
            &history.config,
            &id,
        )?;
        let deliveries = history
            .deliveries
            .as_deref()
            .map(|dir| deliveries_of(dir, &id.to_string()))
            .unwrap_or_default();
        let mut answer = serde_json::to_value(explanation).unwrap_or_default();
        answer["deliveries"] = Value::Array(deliveries);
        Ok::<_, weir_processor::ProcessorError>(answer)
    })
    .await;
    match answer {
        Ok(Ok(answer)) => Json(answer).into_response(),
        Ok(Err(error)) => (StatusCode::NOT_FOUND, format!("{error}\n")).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
    }
}

/// The delivery records of result `id` in the notifier's logs under `dir`.
fn deliveries_of(dir: &std::path::Path, id: &str) -> Vec<Value> {
    let Ok(files) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for file in files.flatten() {
        let Ok(opened) = std::fs::File::open(file.path()) else {
            continue;
        };
        for line in std::io::BufReader::new(opened)
            .lines()
            .map_while(Result::ok)
        {
            if !line.contains(id) {
                continue;
            }
            if let Ok(record) = serde_json::from_str::<Value>(&line) {
                if record["id"] == id {
                    found.push(record);
                }
            }
        }
    }
    found
}

/// Arguments of `weir explain`.
#[derive(Args)]
pub struct ExplainArgs {
    /// The result id (`REACTOR@VERSION:PARTITION:OFFSET:SEQ`, a result's `id`).
    id: String,
    /// Print the explanation as JSON.
    #[arg(long)]
    json: bool,
    /// HTTP or admin address of the running `weir run` or `weir process`.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9877")]
    target: String,
    #[command(flatten)]
    auth: ClientAuth,
}

/// Runs `weir explain`.
pub fn run_cli(args: ExplainArgs) -> anyhow::Result<()> {
    let id: ResultId = args.id.parse()?;
    let client = args.auth.builder()?.timeout(None).build()?;
    let path = format!(
        "/admin/explain/{}",
        crate::registry::encode(&id.to_string())
    );
    let text = ask(&args.target, client.get(admin_url(&args.target, &path)))?;
    let answer: Value = serde_json::from_str(&text).context("reading the explanation")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let show = |value: &Value| serde_json::to_string(value).unwrap_or_default();
    println!("result   {}", answer["id"].as_str().unwrap_or_default());
    println!(
        "pipeline {}",
        answer["pipeline"].as_str().unwrap_or_default()
    );
    println!(
        "trigger  offset {}: {}",
        answer["trigger"]["offset"],
        show(&answer["trigger"]["entry"])
    );
    println!("result   {}", show(&answer["result"]));
    println!("state before {}", show(&answer["state_before"]));
    println!("recent inputs of the host:");
    for input in answer["recent_inputs"].as_array().into_iter().flatten() {
        println!("  offset {}: {}", input["offset"], show(&input["entry"]));
    }
    for delivery in answer["deliveries"].as_array().into_iter().flatten() {
        println!("delivery {}", show(delivery));
    }
    println!("(replayed {} entries)", answer["replayed"]);
    Ok(())
}
