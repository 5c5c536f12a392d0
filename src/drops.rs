//! `weir drops` and `GET /admin/drops`: every event or result that
//! stopped short, by stage and reason, with its latest examples
//! ([`weir_log::drops`]).

use anyhow::Context;
use axum::routing::get;
use axum::{Json, Router};
use clap::Args;
use weir_log::drops::{report, Drops};

use crate::admin::{admin_url, ask, ClientAuth};

/// `GET /admin/drops`.
pub fn routes() -> Router {
    Router::new().route("/admin/drops", get(|| async { Json(report()) }))
}

/// Arguments of `weir drops`.
#[derive(Args)]
pub struct DropsArgs {
    /// Print them as JSON.
    #[arg(long)]
    json: bool,
    /// HTTP, metrics or admin address of a running weir service.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9877")]
    target: String,
    #[command(flatten)]
    auth: ClientAuth,
}

/// Runs `weir drops`.
pub fn run_cli(args: DropsArgs) -> anyhow::Result<()> {
    let request = args
        .auth
        .client()?
        .get(admin_url(&args.target, "/admin/drops"));
    let text = ask(&args.target, request)?;
    let drops: Vec<Drops> = serde_json::from_str(&text).context("reading the drops")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&drops)?);
        return Ok(());
    }
    if drops.is_empty() {
        println!("nothing dropped");
    }
    for drop in &drops {
        println!("{:<24} {:<22} {:>10}", drop.stage, drop.reason, drop.count);
        for example in &drop.examples {
            println!("    {}", example.text);
        }
    }
    Ok(())
}
