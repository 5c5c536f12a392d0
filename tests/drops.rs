//! Drop accounting through the real binary: every kind of input that
//! stops short is counted by stage and reason, with an example, in
//! `weir drops` (and `weir_dropped_total`).

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use common::{bin, wait_until, weir_json, Weir, LISTENERS};
use serde_json::{json, Value};

fn drops(weir: &Weir) -> Vec<Value> {
    serde_json::from_value(weir_json(&["drops"], weir.http)).unwrap()
}

#[test]
fn every_kind_of_drop_is_counted_with_its_reason_and_an_example() {
    // A carbon stand-in that reads and forgets.
    let carbon = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = carbon.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in carbon.incoming() {
            let mut stream = stream.unwrap();
            std::thread::spawn(move || {
                let mut sink = Vec::new();
                let _ = stream.read_to_end(&mut sink);
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[log]\npartitions = 1\n[processor]\nindex_max_entries = 1\n{LISTENERS}\n\
         [[reactor]]\nname = \"all\"\npipeline = 'where service != \"zzz\"'\n\
         [[sink]]\nname = \"file\"\ntype = \"file\"\nfilter = 'service = \"keep\"'\n\
         [[sink]]\nname = \"carbon\"\ntype = \"graphite\"\ndestinations = [\"{address}\"]\n\
         template = \"{{host}}.{{meta.dc}}\"\n"
    );
    let weir = Weir::start(&config, &dir.path().join("data"));
    let lines = [
        r#"{"host":"a","service":"keep","metric":1,"meta":{"dc":"fra"}}"#.to_owned(),
        r#"{"host":"#.to_owned(),
        json!({"host": "a", "service": "keep", "time": 4102444800u64}).to_string(),
        json!({"host": "b", "service": "drop", "metric": 2}).to_string(),
        json!({"host": "c", "service": "keep"}).to_string(),
    ];
    let response = reqwest::blocking::Client::new()
        .post(format!("http://{}/events", weir.http))
        .body(lines.join("\n") + "\n")
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 400, "the bad lines are named");
    let expected = [
        ("ingest:http", "invalid_json"),
        ("ingest:http", "time_in_future"),
        ("index", "full"),
        ("sink:file", "filtered"),
        ("sink:carbon", "dead_letter"),
        ("sink:carbon", "no_metric"),
    ];
    let found = |all: &[Value], (stage, reason): (&str, &str)| {
        all.iter()
            .find(|d| d["stage"] == stage && d["reason"] == reason)
            .cloned()
    };
    wait_until(Duration::from_secs(30), "every drop counted", || {
        let all = drops(&weir);
        expected.iter().all(|e| found(&all, *e).is_some())
    });
    let all = drops(&weir);
    for (stage, reason) in expected {
        let drop = found(&all, (stage, reason)).unwrap();
        assert!(drop["count"].as_u64().unwrap() >= 1, "{drop}");
        let example = drop["examples"][0]["text"].as_str().unwrap();
        assert!(!example.is_empty(), "{drop}");
        assert_eq!(
            weir.metric(&format!(
                "weir_dropped_total{{reason=\"{reason}\",stage=\"{stage}\"}}"
            )),
            drop["count"].as_f64().unwrap()
        );
    }
    let dead = found(&all, ("sink:carbon", "dead_letter")).unwrap();
    assert!(
        dead["examples"][0]["text"]
            .as_str()
            .unwrap()
            .contains("meta.dc"),
        "{dead}"
    );
    let human = Command::new(bin())
        .args(["drops", "--target", &weir.http.to_string()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&human.stdout).contains("time_in_future"));
}
