//! Who may use the admin API: with a token every admin route needs it
//! (401 without, 403 with a wrong one) while /metrics and /healthz stay
//! open, the CLI sends it, and without a token weir refuses to serve the
//! admin API beyond loopback.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

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

fn curl(args: &[&str]) -> (bool, String) {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

/// Sends `line` over TLS with openssl's own client; `client` names the
/// certificate and key files it presents, if any.
fn s_client(addr: &str, ca: &Path, client: Option<(&Path, &Path)>, line: &str) {
    let mut command = Command::new("timeout");
    command
        .args([
            "10",
            "openssl",
            "s_client",
            "-quiet",
            "-no_ign_eof",
            "-connect",
            addr,
        ])
        .arg("-CAfile")
        .arg(ca);
    if let Some((cert, key)) = client {
        command.arg("-cert").arg(cert).arg("-key").arg(key);
    }
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{line}").unwrap();
    drop(stdin);
    child.wait().unwrap();
}

#[test]
fn listeners_speak_tls_ask_client_certificates_and_reload_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for name in ["server", "client", "renewed"] {
        common::certificates(d, name);
    }
    let (cert, key) = (d.join("live-cert.pem"), d.join("live-key.pem"));
    std::fs::copy(d.join("server-cert.pem"), &cert).unwrap();
    std::fs::copy(d.join("server-key.pem"), &key).unwrap();
    let tls = format!(
        "{{ cert = {:?}, key = {:?}",
        cert.display().to_string(),
        key.display().to_string()
    );
    let config = format!(
        r#"metrics_listen = "127.0.0.1:0"
[ingest.tcp]
listen = "127.0.0.1:0"
tls = {tls}, client_ca = {:?} }}
[ingest.udp]
listen = "127.0.0.1:0"
[ingest.http]
listen = "127.0.0.1:0"
tls = {tls} }}
[[reactor]]
name = "all"
pipeline = "emit"
"#,
        d.join("client-ca.pem").display().to_string()
    );
    let weir = Weir::start(&config, &d.join("data"));
    let https = format!("https://{}", weir.http);
    let ca = |name: &str| d.join(format!("{name}-ca.pem")).display().to_string();

    // HTTP over TLS, with the server's CA; refused without it.
    let (ok, body) = curl(&["--cacert", &ca("server"), &format!("{https}/healthz")]);
    assert!(ok && body.contains("ok"), "{body}");
    let events = r#"{"host":"tls-http","service":"s","metric":1}"#;
    let (ok, body) = curl(&[
        "--cacert",
        &ca("server"),
        "--data-binary",
        events,
        &format!("{https}/events"),
    ]);
    assert!(ok && body.contains("\"accepted\":1"), "{body}");
    let (ok, body) = curl(&[&format!("{https}/healthz")]);
    assert!(!ok, "an unknown CA was accepted: {body}");
    // The CLI reaches the admin API on a TLS listener too.
    let listed = crate::weir(
        &[
            "topics",
            "list",
            "--target",
            &https,
            "--ca-file",
            &ca("server"),
        ],
        None,
    );
    assert!(listed.status.success(), "{listed:?}");
    assert!(String::from_utf8_lossy(&listed.stdout).contains("weir.events"));

    // NDJSON over TLS with a client certificate; without one, nothing gets in.
    let accepted = || {
        weir.service
            .metric("weir_ingest_accepted_total{protocol=\"tcp\"}")
    };
    let failures = || {
        weir.service
            .metric("weir_ingest_tls_handshake_failures_total{protocol=\"tcp\"}")
    };
    let tcp = weir.tcp.to_string();
    let server_ca = d.join("server-ca.pem");
    let line = r#"{"host":"tls-tcp","service":"s","metric":2}"#;
    s_client(&tcp, &server_ca, None, line);
    common::wait_until(
        Duration::from_secs(10),
        "the refused handshake counted",
        || failures() >= 1.0,
    );
    assert_eq!(accepted(), 0.0);
    let client = (d.join("client-cert.pem"), d.join("client-key.pem"));
    s_client(&tcp, &server_ca, Some((&client.0, &client.1)), line);
    common::wait_until(Duration::from_secs(10), "the event over mTLS", || {
        accepted() == 1.0
    });
    // A certificate from another CA is refused too.
    let other = (d.join("renewed-cert.pem"), d.join("renewed-key.pem"));
    s_client(&tcp, &server_ca, Some((&other.0, &other.1)), line);
    common::wait_until(
        Duration::from_secs(10),
        "the second refusal counted",
        || failures() >= 2.0,
    );
    assert_eq!(accepted(), 1.0);

    // New certificate files take effect on SIGHUP, without a restart.
    std::fs::copy(d.join("renewed-cert.pem"), &cert).unwrap();
    std::fs::copy(d.join("renewed-key.pem"), &key).unwrap();
    weir.service.signal("HUP");
    common::wait_until(
        Duration::from_secs(10),
        "the renewed certificate served",
        || curl(&["--cacert", &ca("renewed"), &format!("{https}/healthz")]).0,
    );
    assert!(!curl(&["--cacert", &ca("server"), &format!("{https}/healthz")]).0);
    weir.stop();
}

#[test]
fn with_producer_tokens_http_ingest_needs_one_and_counts_each_producer() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web-token");
    std::fs::write(&web, "web-fleet-token\n").unwrap();
    let config = format!(
        "{LISTENERS}\n[ingest.tokens]\nweb = {{ file = {:?} }}\nbatch = \"batch-token\"\n",
        web.display().to_string()
    );
    let weir_run = Weir::start(&config, &dir.path().join("data"));
    let events = format!("http://{}/events", weir_run.http);
    let post = |token: Option<&str>| {
        let mut request = reqwest::blocking::Client::new()
            .post(&events)
            .body("{\"host\":\"a\",\"metric\":1}\n{\"host\":\"b\",\"metric\":2}\n");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().unwrap();
        (response.status().as_u16(), response.text().unwrap())
    };
    let (status, body) = post(None);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("producer token"), "{body}");
    assert_eq!(post(Some("guess")).0, 403);
    assert_eq!(post(Some("web-fleet-token")).0, 202);
    assert_eq!(post(Some("batch-token")).0, 202);
    assert_eq!(post(Some("web-fleet-token")).0, 202);
    let producer = |name: &str| {
        weir_run.metric(&format!(
            "weir_ingest_producer_events_total{{producer=\"{name}\"}}"
        ))
    };
    assert_eq!((producer("web"), producer("batch")), (4.0, 2.0));
    assert_eq!(
        weir_run.metric("weir_ingest_accepted_total{protocol=\"http\"}"),
        6.0
    );
    assert_eq!(
        weir_run.metric("weir_ingest_unauthorized_total{protocol=\"http\",status=\"401\"}"),
        1.0
    );
    // Scrapes and health checks stay open.
    assert_eq!(
        get(&format!("http://{}/healthz", weir_run.http), None).0,
        200
    );
    weir_run.stop();
}
