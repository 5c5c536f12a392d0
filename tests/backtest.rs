//! `weir backtest` against a running `weir run`: exact counts on 100,000
//! known events, and nothing written or sent.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use common::{bin, deliveries, results, wait_until, weir_json, Weir, LISTENERS};
use serde_json::{json, Value};

const EVENTS: u64 = 100_000;
const HOSTS: u64 = 20;

/// Event `i`: host `h{i % 20}`, a metric spread over 0..=100.
fn metric(i: u64) -> f64 {
    ((i * 37) % 101) as f64
}

fn backtest(http: std::net::SocketAddr, args: &[&str]) -> Value {
    weir_json(&[&["backtest"], args].concat(), http)
}

#[test]
fn a_backtest_counts_exactly_what_the_pipeline_would_have_emitted_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = format!(
        "[log]\npartitions = 4\n{LISTENERS}\n\
         [[reactor]]\nname = \"alerts\"\npipeline = 'where metric > 95 | notify log'\n"
    );
    let weir = Weir::start(&config, &data);
    let client = reqwest::blocking::Client::new();
    for chunk in 0..10 {
        let body: String = (chunk * EVENTS / 10..(chunk + 1) * EVENTS / 10)
            .map(|i| format!("{}\n", json!({"host": format!("h{}", i % HOSTS), "service": "cpu", "metric": metric(i)})))
            .collect();
        let response = client
            .post(format!("http://{}/events", weir.http))
            .body(body)
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), 202);
    }
    let over = |bound: f64| (0..EVENTS).filter(|&i| metric(i) > bound).count() as u64;
    wait_until(Duration::from_secs(60), "the live alerts", || {
        results(&data).len() as u64 == over(95.0)
    });
    wait_until(Duration::from_secs(30), "their deliveries", || {
        deliveries(&data).len() as u64 == over(95.0)
    });
    let (written, sent) = (results(&data).len(), deliveries(&data).len());

    // The direct computation: per host, in order, avg = 0.5·x + 0.5·avg.
    let mut averages: HashMap<u64, f64> = HashMap::new();
    let mut ewma_over = 0;
    for i in 0..EVENTS {
        let x = metric(i);
        let average = match averages.get(&(i % HOSTS)) {
            None => x,
            Some(previous) => 0.5 * x + (1.0 - 0.5) * previous,
        };
        averages.insert(i % HOSTS, average);
        ewma_over += u64::from(average > 80.0);
    }

    let report = backtest(weir.http, &["--pipeline", "where metric > 90 | notify log"]);
    let tally = &report["reactors"]["backtest"];
    assert_eq!(tally["results"], over(90.0));
    assert_eq!(tally["notifications"], over(90.0));
    assert_eq!(tally["keys"], HOSTS);
    assert!(report["entries"].as_u64().unwrap() >= EVENTS);
    let report = backtest(
        weir.http,
        &["--pipeline", "by host | ewma alpha=0.5 | over 80"],
    );
    assert_eq!(report["reactors"]["backtest"]["results"], ewma_over);
    assert!(ewma_over > 0);
    let report = backtest(weir.http, &["--reactor", "alerts", "--from", "-1h"]);
    assert_eq!(report["reactors"]["alerts"]["results"], over(95.0));
    let future = backtest(
        weir.http,
        &["--reactor", "alerts", "--from", "2999-01-01T00:00:00Z"],
    );
    assert!(future["reactors"].as_object().unwrap().is_empty());

    // Nothing was written or sent, and the live metrics do not count it.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        (results(&data).len(), deliveries(&data).len()),
        (written, sent)
    );
    assert_eq!(
        weir.metric_sum("weir_processor_emits_total"),
        over(95.0) as f64
    );
    let bad = Command::new(bin())
        .args([
            "backtest",
            "--pipeline",
            "where metric >",
            "--target",
            &weir.http.to_string(),
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("400"));
}

fn explain(http: std::net::SocketAddr, id: &str) -> Value {
    weir_json(&["explain", id], http)
}

/// The result as sent, without what a replay cannot know.
fn sent(result: &Value) -> Value {
    let mut result = result.clone();
    result.as_object_mut().unwrap().remove("id");
    result
}

#[test]
fn explain_shows_the_trigger_the_state_before_and_the_window_of_a_result() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = format!(
        "[log]\npartitions = 2\n{LISTENERS}\n\
         [[reactor]]\nname = \"window\"\npipeline = 'where service = \"load\" | by host | sma 3 | over 50'\n\
         [[reactor]]\nname = \"beats\"\npipeline = 'where service = \"beat\" | by host | expire 2s | notify log'\n"
    );
    let weir = Weir::start(&config, &data);
    let client = reqwest::blocking::Client::new();
    let post = |lines: &[Value]| {
        let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let response = client
            .post(format!("http://{}/events", weir.http))
            .body(body)
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), 202);
    };
    for metric in [10, 20, 90, 90, 90] {
        post(&[json!({"host": "a", "service": "load", "metric": metric})]);
    }
    post(&[json!({"host": "b", "service": "beat"})]);
    wait_until(
        Duration::from_secs(30),
        "two window results and an expiry",
        || {
            let all = results(&data);
            all.iter().filter(|r| r["reactor"] == "window").count() == 2
                && all.iter().any(|r| r["reactor"] == "beats")
        },
    );
    wait_until(Duration::from_secs(10), "the expiry delivered", || {
        !deliveries(&data).is_empty()
    });
    let all = results(&data);

    // The window: the first result is the second 90 (mean of 20, 90, 90).
    let window = all.iter().find(|r| r["reactor"] == "window").unwrap();
    let why = explain(weir.http, window["id"].as_str().unwrap());
    assert_eq!(why["trigger"]["entry"]["metric"], 90.0);
    assert_eq!(sent(&why["result"]), sent(window));
    let before: Vec<f64> = why["recent_inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["entry"]["metric"].as_f64().unwrap())
        .collect();
    assert_eq!(before, [10.0, 20.0, 90.0]);
    let state = why["state_before"].to_string();
    assert!(state.contains("\"key\":\"a\""), "{state}");
    assert!(state.contains("20.0") && state.contains("90.0"), "{state}");

    // The expiry: fired by a later entry, its state the last heartbeat.
    let expiry = all.iter().find(|r| r["reactor"] == "beats").unwrap();
    let why = explain(weir.http, expiry["id"].as_str().unwrap());
    assert_eq!(sent(&why["result"]), sent(expiry));
    assert_eq!(why["result"]["state"], "expired");
    let state = why["state_before"].to_string();
    assert!(state.contains("\"key\":\"b\""), "{state}");
    assert_eq!(why["recent_inputs"].as_array().unwrap().len(), 1);
    let delivered = why["deliveries"].as_array().unwrap();
    assert!(!delivered.is_empty(), "{why}");
    assert_eq!(delivered[0]["id"], expiry["id"]);

    let unknown = Command::new(bin())
        .args([
            "explain",
            "nope@0123456789abcdef:0:0:0",
            "--target",
            &weir.http.to_string(),
        ])
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no reactor"));
}
