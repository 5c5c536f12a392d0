//! Notifications through the real binary to real servers: email to an SMTP
//! server (Python's aiosmtpd, started by the test) and a webhook to a local
//! HTTP server that fails the first attempt. Each notification arrives
//! once, also across a SIGKILL and restart.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{wait_until, weir_send, Weir, LISTENERS};
use serde_json::Value;

/// aiosmtpd writing every message into a Maildir.
struct Smtp(Child);

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_smtp(maildir: &Path) -> (Smtp, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("python3")
        .args([
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{port}"),
            "-c",
            "aiosmtpd.handlers.Mailbox",
        ])
        .arg(maildir)
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 with aiosmtpd (README's test command installs it)");
    let smtp = Smtp(child);
    wait_until(Duration::from_secs(20), "the SMTP server", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (smtp, port)
}

/// A webhook receiver: answers 500 to the first request if `fail_first`,
/// 200 to every other.
struct Webhook {
    port: u16,
    /// Bodies of the requests answered 200.
    accepted: Arc<Mutex<Vec<Value>>>,
    /// Every request, failed or not.
    requests: Arc<Mutex<u32>>,
}

fn start_webhook(fail_first: bool) -> Webhook {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let requests = Arc::new(Mutex::new(0));
    let (accepted2, requests2) = (accepted.clone(), requests.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let mut count = requests2.lock().unwrap();
            *count += 1;
            let status = if fail_first && *count == 1 {
                "500 Internal Server Error"
            } else {
                accepted2
                    .lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
                "200 OK"
            };
            write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            .unwrap();
        }
    });
    Webhook {
        port,
        accepted,
        requests,
    }
}

fn mails(maildir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(maildir.join("new")) else {
        return Vec::new();
    };
    entries
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect()
}

fn send(weir: &Weir, host: &str, metric: &str) {
    weir_send(
        &format!("tcp://{}", weir.tcp),
        host,
        "disk",
        &["--metric", metric],
    );
}

#[test]
fn email_and_webhook_notifications_arrive_once() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    let (_smtp, smtp_port) = start_smtp(&maildir);
    let Webhook {
        port: hook_port,
        accepted: hooks,
        requests,
    } = start_webhook(true);
    let data = dir.path().join("data");
    let config = format!(
        r#"{LISTENERS}
[notify]
backoff_ms = 50
[notify.smtp]
port = {smtp_port}
from = "weir@example.com"

[[reactor]]
name = "disk-mail"
pipeline = 'where service = "disk" | over 90 | notify email to="ops@example.com"'

[[reactor]]
name = "disk-hook"
pipeline = 'where service = "disk" | over 95 | notify webhook url="http://127.0.0.1:{hook_port}/hook"'
"#
    );
    let weir = Weir::start(&config, &data);
    send(&weir, "db-1", "97");
    send(&weir, "db-2", "92");
    send(&weir, "db-3", "10");
    // Two hours old: recorded as suppressed (max_age_secs defaults to an hour).
    let stale = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 7200;
    let mut stream = std::net::TcpStream::connect(weir.tcp).unwrap();
    writeln!(
        stream,
        r#"{{"host":"db-old","service":"disk","metric":99,"time":{stale}}}"#
    )
    .unwrap();
    drop(stream);
    // Killed once every delivery is on record: a crash between a
    // receiver's acceptance and the record may repeat that one (README).
    wait_until(
        Duration::from_secs(30),
        "two emails and one webhook, all five outcomes recorded",
        || {
            mails(&maildir).len() == 2
                && hooks.lock().unwrap().len() == 1
                && common::deliveries(&data).len() == 5
        },
    );
    weir.kill();
    let weir = Weir::start(&config, &data);
    std::thread::sleep(Duration::from_secs(3));
    weir.stop();

    let mails = mails(&maildir);
    assert_eq!(mails.len(), 2, "no email twice");
    let db1 = mails.iter().find(|m| m.contains("db-1")).unwrap();
    assert!(
        db1.contains("Subject: [weir] disk-mail: db-1 disk is notified"),
        "{db1}"
    );
    assert!(
        db1.contains("To: ops@example.com") && db1.contains("\"metric\": 97.0"),
        "{db1}"
    );
    let hooks = hooks.lock().unwrap();
    assert_eq!(hooks.len(), 1);
    assert_eq!(
        (hooks[0]["host"].as_str(), hooks[0]["reactor"].as_str()),
        (Some("db-1"), Some("disk-hook"))
    );
    assert_eq!(
        *requests.lock().unwrap(),
        2,
        "one failed attempt, one retry"
    );

    let deliveries = common::deliveries(&data);
    assert_eq!(deliveries.len(), 5, "{deliveries:?}");
    let suppressed: Vec<_> = deliveries
        .iter()
        .filter(|d| d["status"] == "suppressed")
        .collect();
    assert_eq!(
        suppressed.len(),
        2,
        "db-old's email and webhook: {deliveries:?}"
    );
    assert!(suppressed[0]["error"]
        .as_str()
        .unwrap()
        .contains("older than max_age_secs = 3600"));
    assert_eq!(
        deliveries
            .iter()
            .filter(|d| d["status"] == "delivered")
            .count(),
        3
    );
    let hook = deliveries
        .iter()
        .find(|d| d["channel"] == "webhook" && d["status"] == "delivered")
        .unwrap();
    assert_eq!(hook["attempts"], 2);
}

/// Runs one of the tests/tls Python servers on a free port until dropped.
fn tls_server(script: &str, args: &[&Path], extra: &[&str]) -> (Smtp, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = format!("{}/tests/tls/{script}", env!("CARGO_MANIFEST_DIR"));
    let child = Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .args(args)
        .args(extra)
        .spawn()
        .unwrap();
    let server = Smtp(child);
    wait_until(Duration::from_secs(20), "the TLS server", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (server, port)
}

#[test]
fn notifications_reach_tls_peers_through_a_private_ca_and_an_unknown_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::certificates(d, "ours");
    common::certificates(d, "theirs");
    let (cert, key) = (d.join("ours-cert.pem"), d.join("ours-key.pem"));
    let trusted_hooks = d.join("trusted.ndjson");
    let (_trusted, trusted_port) = tls_server("https_hook.py", &[&cert, &key, &trusted_hooks], &[]);
    let unknown_hooks = d.join("unknown.ndjson");
    let (_unknown, unknown_port) = tls_server(
        "https_hook.py",
        &[
            &d.join("theirs-cert.pem"),
            &d.join("theirs-key.pem"),
            &unknown_hooks,
        ],
        &[],
    );
    let maildir = d.join("maildir");
    let (_smtp, smtp_port) = tls_server(
        "smtp_starttls.py",
        &[&cert, &key],
        &["weir", "pa55word", &maildir.display().to_string()],
    );
    let password = d.join("smtp-password");
    std::fs::write(&password, "pa55word\n").unwrap();
    let ca = d.join("ours-ca.pem").display().to_string();
    let config = format!(
        r#"{LISTENERS}
[notify]
backoff_ms = 50
max_attempts = 2
ca_file = "{ca}"
[notify.smtp]
host = "127.0.0.1"
port = {smtp_port}
from = "weir@example.com"
tls = "starttls"
username = "weir"
password = {{ file = "{password}" }}
ca_file = "{ca}"

[[reactor]]
name = "mail"
pipeline = 'where service = "disk" | notify email to="ops@example.com"'

[[reactor]]
name = "trusted"
pipeline = 'where service = "disk" | notify webhook url="https://127.0.0.1:{trusted_port}/hook"'

[[reactor]]
name = "unknown"
pipeline = 'where service = "disk" | notify webhook url="https://localhost:{unknown_port}/hook"'
"#,
        password = password.display()
    );
    let data = d.join("data");
    let weir = Weir::start(&config, &data);
    send(&weir, "db-1", "97");
    wait_until(Duration::from_secs(30), "three outcomes recorded", || {
        common::deliveries(&data).len() == 3
    });
    weir.stop();

    let outcome = |reactor_channel: &str| {
        common::deliveries(&data)
            .into_iter()
            .find(|d| d["id"].as_str().unwrap().starts_with(reactor_channel))
            .unwrap()
    };
    assert_eq!(outcome("trusted@")["status"], "delivered");
    let hooks = std::fs::read_to_string(&trusted_hooks).unwrap();
    assert!(hooks.contains("\"host\":\"db-1\""), "{hooks}");
    assert_eq!(outcome("mail@")["status"], "delivered");
    let mails = mails(&maildir);
    assert_eq!(mails.len(), 1);
    assert!(mails[0].contains("db-1"), "{}", mails[0]);
    // The receiver whose CA weir does not know never gets the request.
    let refused = outcome("unknown@");
    assert_eq!(
        (refused["status"].as_str(), refused["attempts"].as_u64()),
        (Some("failed"), Some(2))
    );
    let error = refused["error"].as_str().unwrap();
    assert!(
        error.contains("certificate") || error.contains("Unknown"),
        "{error}"
    );
    assert!(!unknown_hooks.exists());
}

#[test]
fn a_dead_webhook_holds_up_no_other_notification_and_costs_one_timeout_per_retry() {
    // Accepts, reads and never answers.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    let dead_connections = Arc::new(Mutex::new(Vec::new()));
    let held = dead_connections.clone();
    std::thread::spawn(move || {
        for stream in dead.incoming() {
            held.lock().unwrap().push(stream.unwrap());
        }
    });
    let live = start_webhook(false);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = format!(
        r#"{LISTENERS}
[notify]
webhook_timeout_ms = 1000
backoff_ms = 1000
max_attempts = 3

[[reactor]]
name = "to-dead"
pipeline = 'where service = "dead" | notify webhook url="http://127.0.0.1:{dead_port}/hook"'

[[reactor]]
name = "to-live"
pipeline = 'where service = "live" | notify webhook url="http://127.0.0.1:{}/hook"'
"#,
        live.port
    );
    let weir = Weir::start(&config, &data);
    // One host, so one partition and one notifier, dead endpoint first.
    let mut stream = TcpStream::connect(weir.tcp).unwrap();
    for service in ["dead", "live"] {
        for i in 0..5 {
            writeln!(
                stream,
                r#"{{"host":"h1","service":"{service}","metric":{i}}}"#
            )
            .unwrap();
        }
    }
    drop(stream);
    wait_until(
        Duration::from_secs(60),
        "five deliveries and five failures",
        || common::deliveries(&data).len() == 10,
    );
    let deliveries = common::deliveries(&data);
    let at = |status: &str| -> Vec<f64> {
        deliveries
            .iter()
            .filter(|d| d["status"] == status)
            .map(|d| d["at"].as_f64().unwrap())
            .collect()
    };
    let (delivered, failed) = (at("delivered"), at("failed"));
    assert_eq!((delivered.len(), failed.len()), (5, 5), "{deliveries:?}");
    assert_eq!(live.accepted.lock().unwrap().len(), 5);
    let last_delivered = delivered.iter().copied().fold(f64::MIN, f64::max);
    let first_failed = failed.iter().copied().fold(f64::MAX, f64::min);
    assert!(
        last_delivered < first_failed,
        "the live webhook waited for the dead one: {deliveries:?}"
    );
    for failure in deliveries.iter().filter(|d| d["status"] == "failed") {
        assert_eq!(failure["attempts"], 3, "{failure}");
    }
    // Three rounds of retries, one timeout each, not one per notification.
    assert_eq!(dead_connections.lock().unwrap().len(), 3, "{deliveries:#?}");
    assert_eq!(weir.metric("weir_notifications_waiting"), 0.0);
    assert_eq!(
        weir.metric("weir_notifications_failed_total{channel=\"webhook\"}"),
        5.0
    );
    weir.stop();
}
