//! The service registry's admin API and `weir registry`.
//!
//! Routes (on a service that runs the router, behind the admin token):
//! `GET /admin/registry` (the whole view), `GET|PUT|DELETE
//! /admin/registry/hosts/HOST` (`PUT` body `{"uid": "…"}`), `PUT
//! /admin/registry/uids/UID` (body `{"hosts": […]}`, the uid's whole host
//! list), `POST /admin/registry/import` (a seed-format document) and
//! `POST /admin/registry/uids/UID/move` (body `{"partition": P}`: the
//! application and the state kept for its hosts move to partition P). A
//! change is answered once it is in `weir.registry` and applied by the
//! node that took it, with the registry version that includes it; every
//! other node applies it within a tick. Bad input is a 400 naming the
//! problem, and nothing of it is applied.

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::json;
use weir_router::registry::{RegistryError, Seed, View};
use weir_router::{RegistryAnswer, RegistryRequest, RouteError, WeakRouterHandle};

use crate::admin::{admin_url, ClientAuth};

/// Body of `PUT /admin/registry/hosts/HOST`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostBody {
    uid: String,
}

/// Body of `PUT /admin/registry/uids/UID`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostsBody {
    hosts: Vec<String>,
}

/// Body of `POST /admin/registry/uids/UID/move`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveBody {
    partition: u32,
}

/// The registry routes, reaching the router through `router`.
pub fn routes(router: WeakRouterHandle) -> Router {
    Router::new()
        .route("/admin/registry", get(view))
        .route(
            "/admin/registry/hosts/{host}",
            get(show_host).put(set_host).delete(remove_host),
        )
        .route("/admin/registry/uids/{uid}", put(replace_hosts))
        .route("/admin/registry/uids/{uid}/move", post(move_app))
        .route("/admin/registry/import", post(import))
        .with_state(router)
}

type RouterState = State<WeakRouterHandle>;

/// Asks the router; maps its refusals to 400 (bad input) or 503.
async fn ask(
    router: &WeakRouterHandle,
    request: RegistryRequest,
) -> Result<RegistryAnswer, Response> {
    let Some(router) = router.upgrade() else {
        return Err((StatusCode::SERVICE_UNAVAILABLE, "the router has stopped\n").into_response());
    };
    router.registry(request).await.map_err(|error| {
        let status = match &error {
            RouteError::Registry(e)
                if matches!(**e, RegistryError::Invalid(_) | RegistryError::Parse { .. }) =>
            {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        (status, format!("{error}\n")).into_response()
    })
}

/// A change's answer: the version that includes it and the records it took.
async fn change(router: &WeakRouterHandle, request: RegistryRequest) -> Response {
    match ask(router, request).await {
        Ok(RegistryAnswer::Changed { version, records }) => {
            Json(json!({"version": version, "records": records})).into_response()
        }
        Ok(RegistryAnswer::View(_)) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Err(response) => response,
    }
}

async fn current_view(router: &WeakRouterHandle) -> Result<View, Response> {
    match ask(router, RegistryRequest::View).await? {
        RegistryAnswer::View(view) => Ok(view),
        RegistryAnswer::Changed { .. } => Err(StatusCode::INTERNAL_SERVER_ERROR.into_response()),
    }
}

/// Parses a JSON body, naming what is wrong in a 400.
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, (StatusCode, String)> {
    serde_json::from_slice(bytes).map_err(|e| (StatusCode::BAD_REQUEST, format!("body: {e}\n")))
}

async fn view(State(router): RouterState) -> Response {
    match current_view(&router).await {
        Ok(view) => Json(view).into_response(),
        Err(response) => response,
    }
}

async fn show_host(State(router): RouterState, Path(host): Path<String>) -> Response {
    let view = match current_view(&router).await {
        Ok(view) => view,
        Err(response) => return response,
    };
    let uid = view
        .uids
        .get(&host)
        .cloned()
        .unwrap_or_else(|| host.clone());
    let partition = view.partitions.get(&uid);
    let registered = view.uids.contains_key(&host);
    Json(json!({"host": host, "uid": uid, "registered": registered, "partition": partition, "version": view.version}))
        .into_response()
}

async fn set_host(State(router): RouterState, Path(host): Path<String>, bytes: Bytes) -> Response {
    match body::<HostBody>(&bytes) {
        Ok(HostBody { uid }) => change(&router, RegistryRequest::SetHost { host, uid }).await,
        Err(refusal) => refusal.into_response(),
    }
}

async fn remove_host(State(router): RouterState, Path(host): Path<String>) -> Response {
    change(&router, RegistryRequest::RemoveHost { host }).await
}

async fn replace_hosts(
    State(router): RouterState,
    Path(uid): Path<String>,
    bytes: Bytes,
) -> Response {
    match body::<HostsBody>(&bytes) {
        Ok(HostsBody { hosts }) => {
            change(&router, RegistryRequest::ReplaceHosts { uid, hosts }).await
        }
        Err(refusal) => refusal.into_response(),
    }
}

async fn move_app(State(router): RouterState, Path(uid): Path<String>, bytes: Bytes) -> Response {
    match body::<MoveBody>(&bytes) {
        Ok(MoveBody { partition }) => {
            change(&router, RegistryRequest::Move { uid, partition }).await
        }
        Err(refusal) => refusal.into_response(),
    }
}

async fn import(State(router): RouterState, bytes: Bytes) -> Response {
    match Seed::parse("import", &bytes) {
        Ok(seed) => change(&router, RegistryRequest::Import(seed)).await,
        Err(error) => (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response(),
    }
}

/// Arguments of `weir registry`.
#[derive(Args)]
pub struct RegistryArgs {
    #[command(subcommand)]
    command: RegistryCommand,
    /// HTTP or admin address of a running `weir run` or `weir ingest`
    /// (`https://ADDR` over TLS).
    #[arg(
        long,
        value_name = "ADDR",
        global = true,
        default_value = "127.0.0.1:9877"
    )]
    target: String,
    #[command(flatten)]
    auth: ClientAuth,
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// Print every host's application and every application's partition.
    List,
    /// Map HOST to application UID.
    Set {
        /// The host.
        host: String,
        /// Its application.
        uid: String,
    },
    /// Remove HOST's mapping (it becomes its own application).
    Rm {
        /// The host.
        host: String,
    },
    /// Apply a file in the seed format (`{"uids":…, "hosts":…}`) as a whole.
    Import {
        /// The file.
        file: std::path::PathBuf,
    },
    /// Move application UID, with the state its reactors keep under its
    /// hosts' keys, to another partition; waits until it is done.
    Move {
        /// The application.
        uid: String,
        /// Its new partition.
        #[arg(long)]
        partition: u32,
        /// Give up waiting after this long (the move goes on).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "2m")]
        timeout: std::time::Duration,
    },
}

/// Runs `weir registry …`.
pub fn registry(args: RegistryArgs) -> anyhow::Result<()> {
    let client = args.auth.client()?;
    let url = |path: &str| admin_url(&args.target, path);
    let request = match &args.command {
        RegistryCommand::List => client.get(url("/admin/registry")),
        RegistryCommand::Set { host, uid } => client
            .put(url(&format!("/admin/registry/hosts/{}", encode(host))))
            .json(&HostBody { uid: uid.clone() }),
        RegistryCommand::Rm { host } => {
            client.delete(url(&format!("/admin/registry/hosts/{}", encode(host))))
        }
        RegistryCommand::Import { file } => {
            let text =
                std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            Seed::parse(&file.display().to_string(), &text)?;
            client.post(url("/admin/registry/import")).body(text)
        }
        RegistryCommand::Move { uid, partition, .. } => client
            .post(url(&format!("/admin/registry/uids/{}/move", encode(uid))))
            .json(&MoveBody {
                partition: *partition,
            }),
    };
    let text = crate::admin::ask(&args.target, request)?;
    if let RegistryCommand::Move {
        uid,
        partition,
        timeout,
    } = &args.command
    {
        return wait_for_move(&client, &url("/admin/registry"), uid, *partition, *timeout);
    }
    if let RegistryCommand::List = args.command {
        let view: View = serde_json::from_str(&text).context("reading the registry")?;
        println!("version {}", view.version);
        for (host, uid) in &view.uids {
            println!("host {host:<40} uid {uid}");
        }
        for (uid, partition) in &view.partitions {
            match view.moving.get(uid) {
                Some(to) => println!("uid  {uid:<40} partition {partition} (moving to {to})"),
                None => println!("uid  {uid:<40} partition {partition}"),
            }
        }
    } else {
        println!("{}", text.trim());
    }
    Ok(())
}

/// Polls the registry view at `url` until `uid` is on `partition` and no
/// longer moving, showing how long it has waited.
fn wait_for_move(
    client: &reqwest::blocking::Client,
    url: &str,
    uid: &str,
    partition: u32,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message(format!("moving {uid} to partition {partition}"));
    loop {
        spinner.tick();
        let view: View = client
            .get(url)
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.json())
            .with_context(|| format!("reading the registry at {url}"))?;
        if view.partitions.get(uid) == Some(&partition) && !view.moving.contains_key(uid) {
            spinner.finish_and_clear();
            println!(
                "moved {uid} to partition {partition} in {:.1}s (registry version {})",
                started.elapsed().as_secs_f64(),
                view.version
            );
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "{uid} has not reached partition {partition} after {timeout:?} (the move goes on; \
             /readyz names a move that is stuck)"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// `text` as one URL path segment.
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
