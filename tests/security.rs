//! Who may use the admin API: with a token every admin route needs it
//! (401 without, 403 with a wrong one) while /metrics and /healthz stay
//! open, the CLI sends it, and without a token weir refuses to serve the
//! admin API beyond loopback.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Weir, LISTENERS};

fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let mut request = reqwest::blocking::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().unwrap();
    (response.status().as_u16(), response.text().unwrap())
}

fn weir(args: &[&str], token_env: Option<&str>) -> std::process::Output {
    let mut command = Command::new(common::bin());
    command.args(args).env_remove("WEIR_ADMIN_TOKEN");
    if let Some(token) = token_env {
        command.env("WEIR_ADMIN_TOKEN", token);
    }
    command.output().unwrap()
}

#[test]
fn with_a_token_every_admin_route_needs_it_and_the_cli_sends_it() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, "  correct-horse-battery\n").unwrap();
    let config = format!(
        "{LISTENERS}\n[admin]\ntoken_file = {:?}\n[[reactor]]\nname = \"all\"\npipeline = \"emit\"\n",
        token_file.display().to_string()
    );
    let weir_run = Weir::start(&config, &dir.path().join("data"));
    let base = format!("http://{}", weir_run.http);

    let (status, body) = get(&format!("{base}/admin/topics"), None);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Authorization: Bearer"), "{body}");
    let (status, body) = get(&format!("{base}/admin/state"), Some("correct-horse"));
    assert_eq!(status, 403, "{body}");
    let (status, body) = get(
        &format!("{base}/admin/topics"),
        Some("correct-horse-battery"),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"weir.events\":4"), "{body}");
    // What every monitoring system scrapes stays open.
    assert_eq!(get(&format!("{base}/metrics"), None).0, 200);
    assert_eq!(get(&format!("{base}/healthz"), None).0, 200);

    let target = weir_run.http.to_string();
    let file = token_file.display().to_string();
    let listed = weir(
        &["topics", "list", "--target", &target, "--token-file", &file],
        None,
    );
    assert!(listed.status.success(), "{listed:?}");
    let listed = weir(
        &["topics", "list", "--target", &target],
        Some("correct-horse-battery"),
    );
    assert!(listed.status.success(), "{listed:?}");
    let refused = weir(&["topics", "list", "--target", &target], None);
    assert!(!refused.status.success());
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(error.contains("401"), "{error}");
    let state = weir(
        &[
            "state",
            "--reactor",
            "all",
            "--target",
            &target,
            "--token-file",
            &file,
        ],
        None,
    );
    let stdout = String::from_utf8_lossy(&state.stdout);
    assert!(stdout.contains("partition"), "{state:?}");
    weir_run.stop();
    // The token never reaches the log.
    let log = std::fs::read_to_string(dir.path().join("data.stderr")).unwrap();
    assert!(!log.contains("correct-horse-battery"));
}

fn config_file(dir: &Path, http: &str, admin: &str) -> String {
    let path = dir.join(format!("weir-{}.toml", http.replace([':', '.'], "-")));
    let config = format!(
        "[ingest.tcp]\nlisten = \"127.0.0.1:0\"\n[ingest.udp]\nlisten = \"127.0.0.1:0\"\n\
         [ingest.http]\nlisten = \"{http}\"\n{admin}"
    );
    std::fs::write(&path, config).unwrap();
    path.display().to_string()
}

#[test]
fn without_a_token_the_admin_api_is_refused_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    let exposed = config_file(dir.path(), "0.0.0.0:0", "");
    let output = weir(&["run", "--config", &exposed, "--data-dir", &data], None);
    assert!(!output.status.success(), "{output:?}");
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("reachable on 0.0.0.0") && error.contains("token_file"),
        "{error}"
    );

    // The admin API alone on loopback: the HTTP listener may face the
    // network and carries no admin route.
    let apart = config_file(
        dir.path(),
        "0.0.0.0:0",
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
    );
    let service = common::Service::start("run", Path::new(&apart), Path::new(&data), &[], "warn");
    let http = service.addr("http").port();
    let (status, _) = get(&format!("http://127.0.0.1:{http}/admin/topics"), None);
    assert_eq!(status, 404);
    let (status, body) = get(
        &format!("http://{}/admin/topics", service.addr("admin")),
        None,
    );
    assert_eq!(status, 200, "{body}");
    service.stop();
}
