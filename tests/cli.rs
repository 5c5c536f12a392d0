//! The command-line tools: `weir check`, `weir eval`, `weir stages` and
//! `weir bench`, and
//! the services' start-up errors.

mod common;

use std::path::Path;
use std::process::Command;

use common::{bin, weir_with_input, Weir, LISTENERS};

/// `weir check --config PATH` succeeds.
fn assert_checks(path: &Path) {
    let output = Command::new(bin())
        .args(["check", "--config"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn stages_lists_every_stage_with_its_options_and_doc() {
    let output = Command::new(bin()).arg("stages").output().unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let registered: Vec<_> = weir_processor::stage::registered().collect();
    assert_eq!(stdout.lines().count(), registered.len(), "{stdout}");
    for def in registered {
        let line = stdout
            .lines()
            .find(|line| line.split_whitespace().next() == Some(def.name))
            .unwrap_or_else(|| panic!("{} not listed:\n{stdout}", def.name));
        assert!(line.ends_with(def.doc), "{line}");
    }
    let ewma = stdout.lines().find(|l| l.starts_with("ewma ")).unwrap();
    assert!(ewma.contains("[alpha]"), "{ewma}");
}

#[test]
fn check_reports_every_bad_reactor_with_its_column_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        "[[reactor]]\nname = \"cpu\"\npipeline = 'where service = cpu | ovr 50'\n\
         [[reactor]]\nname = \"ok\"\npipeline = 'over 1'\n\
         [[reactor]]\nname = \"hb\"\npipeline = 'by host | expire 60'\n",
    )
    .unwrap();
    let output = Command::new(bin())
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr
            .contains("pipeline \"cpu\", column 23: unknown stage \"ovr\", did you mean \"over\"?"),
        "{stderr}"
    );
    assert!(
        stderr.contains("pipeline \"hb\", column 11: expire: ttl must be a positive duration"),
        "{stderr}"
    );
    assert!(stderr.contains("2 of 3 reactors have errors"), "{stderr}");

    assert_checks(Path::new("examples/default.toml"));
}

#[test]
fn check_reports_a_bad_sink_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        "[[sink]]\nname = \"carbon\"\ntype = \"graphite\"\nfilter = 'metric >'\n",
    )
    .unwrap();
    let output = Command::new(bin())
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("sink carbon: filter"), "{stderr}");
}

#[test]
fn eval_prints_exactly_what_the_pipeline_emits() {
    let output = weir_with_input(
        &["eval", "--pipeline", "by host | expire 10s", "--until", "100"],
        b"{\"host\":\"a\",\"time\":1}\nnot json\n{\"host\":\"b\",\"time\":5}\n{\"host\":\"a\",\"time\":8}\n",
    );
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<_> = stdout.lines().collect();
    let version = lines[0].split(['@', ':']).nth(2).unwrap();
    assert_eq!(
        lines,
        [
            format!(
                r#"{{"id":"eval@{version}:0:3:0","reactor":"eval","host":"b","state":"expired","time":15.0}}"#
            ),
            format!(
                r#"{{"id":"eval@{version}:0:3:1","reactor":"eval","host":"a","state":"expired","time":18.0}}"#
            ),
        ]
    );
    assert!(String::from_utf8(output.stderr)
        .unwrap()
        .contains("line 2: rejected: invalid_json"));
}

#[test]
fn every_example_in_the_reactor_docs_passes_check() {
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/REACTORS.md")).unwrap();
    let examples: Vec<&str> = docs
        .lines()
        .filter_map(|l| l.strip_prefix("Example: `")?.strip_suffix('`'))
        .collect();
    assert!(examples.len() >= 20, "found {} examples", examples.len());
    let config: String = examples
        .iter()
        .enumerate()
        .map(|(i, pipeline)| {
            format!("[[reactor]]\nname = \"example-{i}\"\npipeline = '{pipeline}'\n")
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("examples.toml");
    std::fs::write(&path, config).unwrap();
    assert_checks(&path);
}

#[test]
fn split_services_refuse_the_embedded_log_with_a_pointer_to_weir_run() {
    let dir = tempfile::tempdir().unwrap();
    for service in ["ingest", "process", "store"] {
        let output = Command::new(bin())
            .args([service, "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(!output.status.success(), "weir {service} started");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("--log kafka") && stderr.contains("weir run"),
            "weir {service}: {stderr}"
        );
    }
}

#[test]
fn a_broker_that_does_not_answer_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let output = Command::new(bin())
        .args([
            "process",
            "--log",
            "kafka",
            "--brokers",
            &unused.to_string(),
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("connect to brokers") && stderr.contains(&unused.to_string()),
        "{stderr}"
    );
}

/// `weir run` with one counting reactor in `dir`.
fn counting_weir(dir: &std::path::Path) -> Weir {
    let config =
        format!("{LISTENERS}\n[[reactor]]\nname = \"count\"\npipeline = 'by host | count 10s'\n");
    Weir::start(&config, &dir.join("data"))
}

/// `weir bench` against `weir`: two rounds of 1 s at 3,000 events/s.
fn bench(weir: &Weir, extra: &[&str]) -> std::process::Output {
    Command::new(bin())
        .arg("bench")
        .args(extra)
        .args(["--duration", "1s", "--rate", "3000", "--rounds", "2"])
        .args(["--target", &weir.tcp.to_string()])
        .args(["--metrics", &weir.http.to_string()])
        .output()
        .unwrap()
}

#[test]
fn bench_measures_each_round_until_every_event_is_processed() {
    let dir = tempfile::tempdir().unwrap();
    let weir = counting_weir(dir.path());
    let output = bench(&weir, &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rounds: Vec<&str> = stdout.lines().filter(|l| l.starts_with("round")).collect();
    assert_eq!(rounds, ["round     1/2", "round     2/2"], "{stdout}");
    // Each round sent something and printed `processed` only once the
    // processor's counter had taken all of it (else it fails as stalled).
    let processed: Vec<f64> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("processed "))
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(processed.len(), 2, "{stdout}");
    assert!(processed.iter().all(|&n| n > 0.0), "{stdout}");
}

#[test]
fn bench_godot_measures_godots_own_server_then_weir() {
    let dir = tempfile::tempdir().unwrap();
    let weir = counting_weir(dir.path());
    let modules = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/godot/node_modules");
    let output = bench(&weir, &["--godot", "--godot-modules", modules]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // godot's reactor counted every event sent to it (else the bench
    // fails as stalled), then weir processed its own; a ratio per round
    // and their median.
    let counted: Vec<u64> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("counted   "))
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(counted.len(), 2, "{stdout}");
    assert!(counted.iter().all(|&n| n > 0), "{stdout}");
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("ratio     weir "))
            .count(),
        2,
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|l| l.starts_with("median    weir ")),
        "{stdout}"
    );
    // A godot that never starts listening fails the bench, in time.
    let hanging = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(hanging.path().join("godot")).unwrap();
    std::fs::write(
        hanging.path().join("godot/index.js"),
        // A server whose listen never calls back, as a godot stuck starting.
        "const reactor = () => ({ map: () => null });\n\
         const createServer = () => ({ listen() { setInterval(() => {}, 1000); } });\n\
         module.exports = { reactor, createServer };\n",
    )
    .unwrap();
    let output = Command::new(bin())
        .args(["bench", "--godot", "--godot-start-timeout", "2s"])
        .arg("--godot-modules")
        .arg(hanging.path())
        .args(["--target", &weir.tcp.to_string()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("did not say it was listening"), "{stderr}");
    // A wrong node_modules is named.
    let output = Command::new(bin())
        .args(["bench", "--godot", "--godot-modules", "/nonexistent"])
        .args(["--target", &weir.tcp.to_string()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("/nonexistent"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
