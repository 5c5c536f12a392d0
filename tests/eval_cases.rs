//! Recorded stage cases run through the real `weir eval`: each file in
//! tests/eval/ holds a pipeline, NDJSON input and the exact NDJSON output
//! (edge cases: empty windows, missing metrics, ttl 0, equal timestamps,
//! out-of-order events, flaps).

mod common;

use common::weir_with_input;

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
        let mut args = vec!["eval", "--pipeline", &case.pipeline];
        if let Some(until) = &case.until {
            args.extend(["--until", until]);
        }
        let output = weir_with_input(&args, case.input.as_bytes());
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
