//! godot 0.7.10 itself against `weir eval`, on the same events: every
//! godot stage weir claims, and each behaviour weir once got wrong, is a
//! named case in tests/godot/cases.json (`godot`: the godot reactor, as a
//! JavaScript expression; `weir`: the pipeline). tests/godot/diff.js runs
//! godot's own reactors with its wall clock set to the events' times;
//! `weir eval` runs the pipeline. What leaves the reactor must agree, and
//! so must what its side branches produce (godot records them with
//! `tap('side')`, weir sends them to `notify`). `time` is not compared
//! (godot stamps several outputs with `Date.now()`), nor fields godot
//! keeps for itself (`_time`), nor a case's `ignore` list (a documented
//! difference, docs/REACTORS.md "Differences from godot").

use std::path::Path;
use std::process::Command;

use serde_json::{Map, Value};

fn godot_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/godot"))
}

/// `value` without time, ids and output markers, the given fields, or
/// empty lists and maps; numbers as f64.
fn normalized(value: &Value, ignore: &[String]) -> Value {
    let Value::Object(fields) = value else {
        return value.clone();
    };
    let mut kept = Map::new();
    for (key, field) in fields {
        let internal = key.starts_with('_')
            || ["time", "id", "reactor", "notify", "forward"].contains(&key.as_str())
            || ignore.contains(key);
        let empty = matches!(field, Value::Array(a) if a.is_empty())
            || matches!(field, Value::Object(o) if o.is_empty());
        if internal || empty {
            continue;
        }
        let field = match field {
            Value::Number(n) => Value::from(n.as_f64().unwrap_or(f64::NAN)),
            Value::Object(_) => normalized(field, &[]),
            other => other.clone(),
        };
        kept.insert(key.clone(), field);
    }
    Value::Object(kept)
}

/// Whether two normalized events agree, numbers within 1e-9 relative.
fn agree(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| agree(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| agree(v, w))
        }
        _ => a == b,
    }
}

/// `weir eval`'s results for a case: (main, side).
fn weir(case: &Value, dir: &Path) -> (Vec<Value>, Vec<Value>) {
    let name = case["name"].as_str().unwrap();
    let events = dir.join(format!("{}.ndjson", name.replace(' ', "_")));
    let lines: Vec<String> = case["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(Value::to_string)
        .collect();
    std::fs::write(&events, lines.join("\n") + "\n").unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
    command
        .args(["eval", "--pipeline", case["weir"].as_str().unwrap()])
        .arg(&events);
    if let Some(until) = case["until"].as_f64() {
        command.args(["--until", &until.to_string()]);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{name}: weir eval failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    results
        .into_iter()
        .partition(|r| r.get("notify").is_none() && r.get("forward").is_none())
}

#[test]
fn weir_agrees_with_godot_on_every_stage_it_claims() {
    let node = Command::new("node")
        .arg(godot_dir().join("diff.js"))
        .arg(godot_dir().join("cases.json"))
        .output()
        .expect("node (scripts/test installs it, and godot with npm)");
    assert!(
        node.status.success(),
        "godot failed: {}",
        String::from_utf8_lossy(&node.stderr)
    );
    let godot: Value = serde_json::from_slice(&node.stdout).unwrap();
    let cases: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(godot_dir().join("cases.json")).unwrap())
            .unwrap();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let dir = tempfile::tempdir().unwrap();
    let mut disagreements = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let ignore: Vec<String> = case["ignore"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        let (main, side) = weir(case, dir.path());
        for (part, ours) in [("main", main), ("side", side)] {
            let theirs = godot[name][part].as_array().unwrap();
            let ours: Vec<Value> = ours.iter().map(|v| normalized(v, &ignore)).collect();
            let theirs: Vec<Value> = theirs.iter().map(|v| normalized(v, &ignore)).collect();
            let same =
                ours.len() == theirs.len() && ours.iter().zip(&theirs).all(|(a, b)| agree(a, b));
            if !same {
                disagreements.push(format!(
                    "{name} ({part}):\n  godot: {}\n  weir:  {}",
                    Value::from(theirs),
                    Value::from(ours)
                ));
            }
        }
        // A case that produces nothing on either side proves nothing.
        assert!(
            !godot[name]["main"].as_array().unwrap().is_empty(),
            "{name}: godot emitted nothing"
        );
    }
    assert!(
        disagreements.is_empty(),
        "{} of {} cases disagree:\n{}",
        disagreements.len(),
        cases.len(),
        disagreements.join("\n")
    );
}
