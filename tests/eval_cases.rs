//! Recorded stage cases run through the real `weir eval`: each file in
//! tests/eval/ holds a pipeline, NDJSON input and the exact NDJSON output
//! (edge cases: empty windows, missing metrics, ttl 0, equal timestamps,
//! out-of-order events, flaps).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::bin;

struct Case {
    pipeline: String,
    until: Option<String>,
    input: String,
    expected: String,
}

fn parse(text: &str) -> Case {
    let (head, rest) = text.split_once("--- input\n").expect("a --- input section");
    let (input, expected) = rest
        .split_once("--- expected\n")
        .expect("a --- expected section");
    let field = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(str::to_owned)
    };
    Case {
        pipeline: field("pipeline").expect("a pipeline: line"),
        until: field("until"),
        input: input.to_owned(),
        expected: expected.to_owned(),
    }
}

#[test]
fn every_recorded_case_gives_exactly_its_output() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/eval");
    let mut ran = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let case = parse(&std::fs::read_to_string(&path).unwrap());
        let mut command = Command::new(bin());
        command.args(["eval", "--pipeline", &case.pipeline]);
        if let Some(until) = &case.until {
            command.args(["--until", until]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(case.input.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", path.display());
        assert_eq!(
            String::from_utf8(output.stdout).unwrap(),
            case.expected,
            "{}",
            path.display()
        );
        ran += 1;
    }
    assert!(ran >= 5);
}
