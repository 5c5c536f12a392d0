//! `forward`: results delivered to another weir over TCP and to a topic of
//! the log, once each.

mod common;

use std::time::Duration;

use common::{results, wait_until, weir_send, Weir, LISTENERS};
use weir_log::{EmbeddedLog, Log, LogConfig};

#[test]
fn forward_reaches_another_weir_and_a_topic() {
    let dir = tempfile::tempdir().unwrap();
    let downstream_data = dir.path().join("downstream");
    let downstream = Weir::start(
        &format!(
            "{LISTENERS}\n[[reactor]]\nname = \"received\"\npipeline = 'where service = \"fwd\"'\n"
        ),
        &downstream_data,
    );
    let upstream_data = dir.path().join("upstream");
    let upstream = Weir::start(
        &format!(
            "{LISTENERS}\n[[reactor]]\nname = \"relay\"\npipeline = 'where service = \"fwd\" | forward tcp=\"{}\"'\n\
             [[reactor]]\nname = \"alerts\"\npipeline = 'where service = \"fwd\" | over 5 | forward topic=\"alerts\"'\n",
            downstream.tcp
        ),
        &upstream_data,
    );
    for (host, metric) in [("f1", "1"), ("f2", "9")] {
        weir_send(
            &format!("tcp://{}", upstream.tcp),
            host,
            "fwd",
            &["--metric", metric],
        );
    }
    wait_until(
        Duration::from_secs(20),
        "forwarded events downstream",
        || {
            results(&downstream_data)
                .iter()
                .filter(|r| r["reactor"] == "received")
                .count()
                == 2
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    upstream.stop();
    downstream.stop();

    let received: Vec<_> = results(&downstream_data);
    let mut hosts: Vec<_> = received
        .iter()
        .map(|r| r["host"].as_str().unwrap().to_owned())
        .collect();
    hosts.sort();
    assert_eq!(hosts, ["f1", "f2"]);

    let log = EmbeddedLog::open(&upstream_data.join("log"), LogConfig::default()).unwrap();
    log.create_topic("alerts", 1, false).unwrap();
    let mut forwarded = Vec::new();
    for partition in 0..log.partitions("alerts").unwrap() {
        for record in log
            .read("alerts", partition, 0, 1 << 20, Duration::ZERO)
            .unwrap()
        {
            forwarded.push(serde_json::from_slice::<serde_json::Value>(&record.value).unwrap());
        }
    }
    assert_eq!(forwarded.len(), 1, "{forwarded:?}");
    assert_eq!(
        (
            forwarded[0]["host"].as_str(),
            forwarded[0]["reactor"].as_str()
        ),
        (Some("f2"), Some("alerts"))
    );
}
