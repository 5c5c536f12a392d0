//! Stage semantics: recorded inputs, exact expected outputs.

use serde_json::{json, Value};
use weir_event::{decode_value, DecodeOptions, Event};
use weir_processor::eval::eval;
use weir_processor::{Engine, Reactor, ReactorConfig};

/// Every pipeline in `bad` fails to build.
fn assert_all_rejected(bad: &[&str]) {
    for pipeline in bad {
        let config = ReactorConfig {
            name: "x".into(),
            pipeline: (*pipeline).into(),
        };
        assert!(Reactor::build(&config).is_err(), "{pipeline}");
    }
}

fn events(values: Value) -> Vec<Event> {
    values
        .as_array()
        .unwrap()
        .iter()
        .map(|v| decode_value(v.clone(), &DecodeOptions::default(), 0.0).unwrap())
        .collect()
}

fn run(pipeline: &str, input: Value, until: Option<f64>) -> Vec<Value> {
    eval(pipeline, events(input), until)
        .unwrap()
        .into_iter()
        .map(|r| serde_json::to_value(&r.event).unwrap())
        .collect()
}

#[test]
fn where_over_under() {
    let input = json!([
        {"host":"a","service":"cpu","metric":95,"time":1},
        {"host":"b","service":"cpu","metric":50,"time":2},
        {"host":"c","service":"mem","metric":99,"time":3},
        {"host":"d","service":"cpu","time":4}
    ]);
    assert_eq!(
        run(r#"where service = "cpu" | over 90"#, input.clone(), None),
        vec![json!({"host":"a","service":"cpu","time":1.0,"metric":95.0})]
    );
    let hosts: Vec<_> = run("under 96", input, None)
        .iter()
        .map(|e| e["host"].clone())
        .collect();
    assert_eq!(
        hosts,
        vec![json!("a"), json!("b")],
        "no metric never passes"
    );
}

#[test]
fn expire_fires_once_per_silence_on_event_time() {
    let input = json!([
        {"host":"a","service":"hb","time":0},
        {"host":"b","service":"hb","time":10},
        {"host":"a","service":"hb","time":30},
        {"host":"b","service":"hb","time":100},
        {"host":"b","service":"hb","time":200}
    ]);
    let out = run("by host | expire 60s", input, Some(1000.0));
    assert_eq!(
        out,
        vec![
            json!({"host":"b","service":"hb","state":"expired","time":70.0}),
            json!({"host":"a","service":"hb","state":"expired","time":90.0}),
            json!({"host":"b","service":"hb","state":"expired","time":160.0}),
            json!({"host":"b","service":"hb","state":"expired","time":260.0})
        ]
    );
}

#[test]
fn expire_without_argument_uses_the_event_ttl() {
    let input = json!([{"host":"a","ttl":5,"time":0}, {"host":"a","time":1}]);
    // The second event has no ttl: the 300s default applies from then on.
    let out = run("expire", input, Some(1000.0));
    assert_eq!(
        out,
        vec![json!({"host":"a","state":"expired","time":301.0})]
    );
}

#[test]
fn count_emits_per_window_and_skips_empty_ones() {
    let input = json!([
        {"host":"a","time":0},{"host":"a","time":3},{"host":"a","time":9.5},
        {"host":"a","time":10},
        {"host":"a","time":35}
    ]);
    let out = run("count 10s", input, Some(100.0));
    let counts: Vec<_> = out
        .iter()
        .map(|e| (e["time"].clone(), e["metric"].clone(), e["tags"].clone()))
        .collect();
    assert_eq!(
        counts,
        vec![
            (json!(10.0), json!(3.0), json!(["per 10s"])),
            (json!(20.0), json!(1.0), json!(["per 10s"])),
            (json!(40.0), json!(1.0), json!(["per 10s"]))
        ]
    );
}

#[test]
fn ewma_averages_the_values() {
    let input = json!([{"host":"a","metric":10,"time":1},{"host":"a","metric":20,"time":2},{"host":"a","time":3},{"host":"a","metric":20,"time":4}]);
    let metrics: Vec<_> = run("ewma alpha=0.5", input, None)
        .iter()
        .map(|e| e["metric"].as_f64().unwrap())
        .collect();
    assert_eq!(metrics, vec![10.0, 15.0, 17.5]);
}

#[test]
fn throttle_limits_per_window() {
    let input = json!([
        {"host":"a","time":0},{"host":"a","time":1},{"host":"a","time":2},
        {"host":"a","time":60},{"host":"a","time":61},{"host":"a","time":121}
    ]);
    let times: Vec<_> = run("throttle 2 per 1m", input, None)
        .iter()
        .map(|e| e["time"].as_f64().unwrap())
        .collect();
    assert_eq!(times, vec![0.0, 1.0, 60.0, 61.0, 121.0]);
}

#[test]
fn by_keeps_state_per_key_and_nested_pipelines_recombine() {
    let input = json!([
        {"host":"a","metric":100,"time":1},
        {"host":"b","metric":0,"time":2},
        {"host":"a","metric":0,"time":3},
        {"host":"b","metric":100,"time":4}
    ]);
    let out = run(
        "by host (ewma alpha=0.5 | over 40) | notify log",
        input,
        None,
    );
    let pairs: Vec<_> = out
        .iter()
        .map(|e| (e["host"].clone(), e["metric"].clone()))
        .collect();
    assert_eq!(
        pairs,
        vec![
            (json!("a"), json!(100.0)),
            (json!("a"), json!(50.0)),
            (json!("b"), json!(50.0))
        ]
    );
}

#[test]
fn notify_marks_results_and_ids_are_deterministic() {
    let input = json!([{"host":"a","metric":95,"time":1}, {"host":"a","metric":96,"time":2}]);
    let records = eval(
        r#"over 90 | notify log level="warn""#,
        events(input.clone()),
        None,
    )
    .unwrap();
    assert_eq!(
        records[0].notify,
        Some(json!({"channel":"log","level":"warn"}))
    );
    let ids: Vec<_> = records.iter().map(|r| r.id.to_string()).collect();
    let again: Vec<_> = eval(r#"over 90 | notify log level="warn""#, events(input), None)
        .unwrap()
        .iter()
        .map(|r| r.id.to_string())
        .collect();
    assert_eq!(ids, again);
    assert!(
        ids[0].starts_with("eval@") && ids[0].ends_with(":0:0:0"),
        "{}",
        ids[0]
    );
    assert!(ids[1].ends_with(":0:1:0"));
}

#[test]
fn build_errors_name_the_reactor_and_column() {
    let error = Reactor::build(&ReactorConfig {
        name: "cpu".into(),
        pipeline: "where service = cpu | ovr 50".into(),
    })
    .err()
    .unwrap();
    assert_eq!(
        error.to_string(),
        "pipeline \"cpu\", column 23: unknown stage \"ovr\", did you mean \"over\"?"
    );
    assert_all_rejected(&[
        "expire 60",
        "ewma alpha=2",
        "throttle 0 per 1m",
        "notify pager",
        "count",
        "by",
        "emit | over 1",
        "over 1 extra=2",
    ]);
}

#[test]
fn saved_state_restores_to_the_same_future() {
    let pipeline = "by host | count 10s | over 1";
    let all = events(json!([
        {"host":"a","time":0},{"host":"b","time":1},{"host":"a","time":5},
        {"host":"b","time":12},{"host":"a","time":14},{"host":"a","time":25},{"host":"b","time":40}
    ]));
    let build = || {
        let reactor = Reactor::build(&ReactorConfig {
            name: "r".into(),
            pipeline: pipeline.into(),
        })
        .unwrap();
        Engine::new(0, vec![reactor], 60.0)
    };
    let mut whole = Vec::new();
    let mut engine = build();
    for (i, e) in all.iter().enumerate() {
        engine.process(i as u64, weir_event::Entry::Event(e.clone()), &mut whole);
    }
    for split in 0..all.len() {
        let mut out = Vec::new();
        let mut first = build();
        for (i, e) in all[..split].iter().enumerate() {
            first.process(i as u64, weir_event::Entry::Event(e.clone()), &mut out);
        }
        let saved = serde_json::to_string(&first.save()).unwrap();
        let mut second = build();
        assert!(second
            .load(serde_json::from_str(&saved).unwrap())
            .unwrap()
            .is_empty());
        for (i, e) in all.iter().enumerate().skip(split) {
            second.process(i as u64, weir_event::Entry::Event(e.clone()), &mut out);
        }
        assert_eq!(out, whole, "split at {split}");
    }
    assert!(!whole.is_empty());
}

fn metrics(pipeline: &str, input: Value, until: Option<f64>) -> Vec<f64> {
    run(pipeline, input, until)
        .iter()
        .map(|e| e["metric"].as_f64().unwrap())
        .collect()
}

#[test]
fn within_is_inclusive() {
    let input = json!([{"host":"a","metric":9,"time":1},{"host":"a","metric":10,"time":2},{"host":"a","metric":20,"time":3},{"host":"a","metric":21,"time":4},{"host":"a","time":5}]);
    assert_eq!(metrics("within 10 20", input, None), vec![10.0, 20.0]);
}

#[test]
fn rate_is_per_second_over_the_interval_and_percentiles_use_nearest_rank() {
    let input = json!([
        {"host":"a","service":"lat","metric":10,"time":0},{"host":"a","service":"lat","metric":30,"time":4},
        {"host":"a","service":"lat","time":5},
        {"host":"a","service":"lat","metric":20,"time":9},{"host":"a","service":"lat","metric":40,"time":12}
    ]);
    let out = run("rate 10s", input.clone(), Some(30.0));
    let pairs: Vec<_> = out
        .iter()
        .map(|e| (e["time"].clone(), e["metric"].clone()))
        .collect();
    assert_eq!(
        pairs,
        vec![(json!(10.0), json!(6.0)), (json!(20.0), json!(4.0))]
    );
    let out = run("percentiles 10s [0.5, 1]", input, Some(30.0));
    let rows: Vec<_> = out
        .iter()
        .map(|e| (e["service"].clone(), e["metric"].clone()))
        .collect();
    assert_eq!(
        rows,
        vec![
            (json!("lat 0.5"), json!(20.0)),
            (json!("lat 1"), json!(30.0)),
            (json!("lat 0.5"), json!(40.0)),
            (json!("lat 1"), json!(40.0))
        ]
    );
}

#[test]
fn moving_windows_by_count_and_by_time() {
    let input = json!([{"host":"a","metric":1,"time":0},{"host":"a","metric":2,"time":1},{"host":"a","metric":3,"time":2},{"host":"a","time":2.5},{"host":"a","metric":6,"time":10}]);
    assert_eq!(
        metrics("sma 2", input.clone(), None),
        vec![1.0, 1.5, 2.5, 4.5]
    );
    // weights 1, 2, 3: (1·1 + 2·2 + 3·3) / 6
    assert_eq!(metrics("wma 3", input.clone(), None)[2], 14.0 / 6.0);
    assert_eq!(
        metrics("window-sum 5s", input.clone(), None),
        vec![1.0, 3.0, 6.0, 6.0]
    );
    assert_eq!(
        metrics("window-max 2", input.clone(), None),
        vec![1.0, 2.0, 3.0, 6.0]
    );
    assert_eq!(
        metrics("window-min 10s", input, None),
        vec![1.0, 1.0, 1.0, 2.0]
    );
}

#[test]
fn running_sum_and_mean() {
    let input = json!([{"host":"a","metric":2,"time":0},{"host":"a","time":1},{"host":"a","metric":4,"time":2}]);
    assert_eq!(metrics("sum", input.clone(), None), vec![2.0, 6.0]);
    assert_eq!(metrics("mean", input, None), vec![2.0, 3.0]);
}

#[test]
fn change_and_changed() {
    let input = json!([
        {"host":"a","state":"ok","time":0},{"host":"a","state":"ok","time":1},{"host":"a","state":"critical","time":2},
        {"host":"a","state":"ok","time":3},{"host":"a","state":"warning","time":4}
    ]);
    let times = |pipeline: &str| -> Vec<f64> {
        run(pipeline, input.clone(), None)
            .iter()
            .map(|e| e["time"].as_f64().unwrap())
            .collect()
    };
    assert_eq!(times("change state"), vec![2.0, 3.0, 4.0]);
    assert_eq!(times(r#"change state from="critical" to="ok""#), vec![3.0]);
    assert_eq!(times("changed"), vec![0.0, 2.0, 3.0, 4.0]);
    assert_eq!(times(r#"changed state init="ok""#), vec![2.0, 3.0, 4.0]);
}

#[test]
fn stable_holds_flaps_and_releases_lasting_states() {
    let input = json!([
        {"host":"a","state":"ok","time":0},{"host":"a","state":"critical","time":1},{"host":"a","state":"ok","time":2},
        {"host":"a","state":"ok","time":5},{"host":"a","state":"ok","time":20},{"host":"a","state":"critical","time":21}
    ]);
    let out = run("stable 10s", input, Some(25.0));
    let rows: Vec<_> = out
        .iter()
        .map(|e| (e["time"].clone(), e["state"].clone()))
        .collect();
    assert_eq!(
        rows,
        vec![
            (json!(2.0), json!("ok")),
            (json!(5.0), json!("ok")),
            (json!(20.0), json!("ok"))
        ]
    );
}

#[test]
fn split_takes_the_first_matching_branch_and_around_tees() {
    let input = json!([{"host":"a","metric":95,"time":0},{"host":"a","metric":75,"time":1},{"host":"a","metric":5,"time":2}]);
    let pipeline = r#"split (where metric > 90 | set state="critical") (where metric > 70 | set state="warning") (set state="ok")"#;
    let states: Vec<_> = run(pipeline, input.clone(), None)
        .iter()
        .map(|e| e["state"].clone())
        .collect();
    assert_eq!(
        states,
        vec![json!("critical"), json!("warning"), json!("ok")]
    );
    // around passes each event on, then its branches' results follow
    // (emitted, as they name no output): 95 → 95 | 95; 75 → 75 | 75, 750;
    // 5 → 5 | 50.
    let around = metrics("around (over 50) (under 80 | scale 10)", input, None);
    assert_eq!(around, vec![95.0, 95.0, 75.0, 75.0, 750.0, 5.0, 50.0]);
}

#[test]
fn set_default_tag_meta_and_scale() {
    let input =
        json!([{"host":"a","service":"x","metric":2,"time":0,"tags":["t"]},{"host":"b","time":1}]);
    let out = run(
        r#"default service="unknown" state="ok" | set meta.team="ops" ttl=30s | tag "t" "new" | meta region="eu" | scale 0.5"#,
        input,
        None,
    );
    assert_eq!(
        out,
        vec![
            json!({"host":"a","service":"x","state":"ok","time":0.0,"tags":["t","new"],"meta":{"region":"eu","team":"ops"},"metric":1.0,"ttl":30.0}),
            json!({"host":"b","service":"unknown","state":"ok","time":1.0,"tags":["t","new"],"meta":{"region":"eu","team":"ops"},"ttl":30.0})
        ]
    );
}

#[test]
fn meta_and_tag_filters() {
    let input = json!([
        {"host":"a","meta":{"load":0.95,"zone":"x"},"tags":["web","prod"],"time":0},
        {"host":"b","meta":{"load":0.2},"tags":["web"],"time":1},
        {"host":"c","time":2}
    ]);
    let hosts = |pipeline: &str| -> Vec<String> {
        run(pipeline, input.clone(), None)
            .iter()
            .map(|e| e["host"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(hosts("has-meta zone load"), ["a", "b"]);
    assert_eq!(hosts("has-meta all [zone, load]"), ["a"]);
    assert_eq!(hosts("all-meta zone load"), ["a"]);
    assert_eq!(hosts("any-meta zone"), ["a"]);
    assert_eq!(hosts("over-meta load 0.9"), ["a"]);
    assert_eq!(hosts("under-meta load 0.9"), ["b"]);
    assert_eq!(hosts("tagged web"), ["a", "b"]);
    assert_eq!(hosts("tagged all [web, prod]"), ["a"]);
    assert_eq!(hosts("tagged any [prod, none]"), ["a"]);
}

#[test]
fn stage_argument_errors_are_caught_when_building() {
    assert_all_rejected(&[
        "within 5 1",
        "sma",
        "sma 0",
        "wma 1.5",
        "rate",
        "percentiles 1m [2]",
        "change",
        "change state from=\"a\"",
        "stable",
        "split (over 1)",
        "around over",
        "set metric=\"x\"",
        "set bogus=1",
        "scale",
        "tag",
        "meta",
        "has-meta",
        "over-meta load",
        "sum 1",
    ]);
}

#[test]
fn riemann_windows_combine_their_events() {
    let input = json!([
        {"host":"a","metric":1,"time":0},{"host":"a","metric":2,"time":1},{"host":"a","metric":3,"time":2},
        {"host":"a","time":3},{"host":"a","metric":4,"time":12}
    ]);
    // Event windows hold events without a metric too (godot's
    // eventWindow): [1, 2] → 3, [3, –] → 3, and [4] waits for its second.
    assert_eq!(
        metrics("fixed-event-window 2 combine=sum", input.clone(), None),
        vec![3.0, 3.0]
    );
    assert_eq!(
        metrics("fixed-event-window 2 combine=count", input.clone(), None),
        vec![2.0, 2.0]
    );
    assert_eq!(
        metrics("moving-event-window 2 combine=max", input.clone(), None),
        vec![1.0, 2.0, 3.0, 3.0, 4.0]
    );
    // At time 12 the window (2, 12] holds only the last event.
    assert_eq!(
        metrics("moving-time-window 10s combine=first", input.clone(), None),
        vec![1.0, 1.0, 1.0, 4.0]
    );
    let out = run(
        "fixed-time-window 10s combine=count",
        input.clone(),
        Some(100.0),
    );
    let rows: Vec<_> = out
        .iter()
        .map(|e| (e["time"].clone(), e["metric"].clone()))
        .collect();
    assert_eq!(
        rows,
        vec![(json!(10.0), json!(4.0)), (json!(20.0), json!(1.0))]
    );
    assert_eq!(
        metrics("fixed-time-window 10s combine=mean", input, Some(100.0)),
        vec![2.0, 4.0]
    );
}

#[test]
fn rollup_emits_digests_and_carries_the_overflow() {
    let input = json!([
        {"host":"a","state":"critical","time":0},{"host":"b","state":"critical","time":1},{"host":"c","state":"critical","time":2}
    ]);
    let out = run("rollup 1m limit=2", input, Some(1000.0));
    assert_eq!(out.len(), 2);
    assert_eq!(
        (out[0]["time"].clone(), out[0]["metric"].clone()),
        (json!(60.0), json!(2.0))
    );
    let hosts: Vec<_> = out[0]["meta"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["host"].clone())
        .collect();
    assert_eq!(hosts, vec![json!("a"), json!("b")]);
    assert_eq!(out[0]["tags"], json!(["rollup"]));
    assert_eq!(
        (
            out[1]["time"].clone(),
            out[1]["metric"].clone(),
            out[1]["host"].clone()
        ),
        (json!(120.0), json!(1.0), json!("c"))
    );
}

#[test]
fn coalesce_combines_the_latest_event_of_each_host_and_drops_expired_ones() {
    let input = json!([
        {"host":"a","service":"rps","metric":10,"time":0,"ttl":30},
        {"host":"b","service":"rps","metric":5,"time":1,"ttl":30},
        {"host":"a","service":"rps","metric":20,"time":2,"ttl":30},
        {"host":"b","service":"rps","metric":1,"time":100,"ttl":30}
    ]);
    assert_eq!(
        metrics("coalesce combine=sum", input, None),
        vec![10.0, 15.0, 25.0, 1.0]
    );
}

#[test]
fn index_passes_events_and_expires_entries_by_ttl() {
    let input = json!([
        {"host":"a","service":"x","state":"ok","time":0,"ttl":10},
        {"host":"b","service":"x","state":"ok","time":1},
        {"host":"a","service":"x","state":"ok","time":5,"ttl":10},
        {"host":"c","service":"x","state":"ok","time":6,"ttl":1}
    ]);
    let out = run("index", input, Some(100.0));
    let rows: Vec<_> = out
        .iter()
        .map(|e| (e["host"].clone(), e["state"].clone(), e["time"].clone()))
        .collect();
    assert_eq!(
        rows,
        vec![
            (json!("a"), json!("ok"), json!(0.0)),
            (json!("b"), json!("ok"), json!(1.0)),
            (json!("a"), json!("ok"), json!(5.0)),
            (json!("c"), json!("ok"), json!(6.0)),
            (json!("c"), json!("expired"), json!(7.0)),
            (json!("a"), json!("expired"), json!(15.0))
        ]
    );
}

#[test]
fn window_stage_errors() {
    assert_all_rejected(&[
        "fixed-time-window 1m",
        "moving-time-window 10 combine=sum",
        "moving-event-window 5s combine=sum",
        "coalesce combine=median",
        "combine",
        "combine median",
        "rollup",
        "rollup 1m limit=0",
        "index 5",
    ]);
}

#[test]
fn ewma_by_event_count_and_by_time() {
    let input = json!([{"host":"a","metric":0,"time":0},{"host":"a","metric":30,"time":10},{"host":"a","metric":30,"time":10}]);
    // N = 2 events: alpha = 2/3.
    assert_eq!(
        metrics("ewma 2", input.clone(), None),
        vec![0.0, 20.0, 80.0 / 3.0]
    );
    // D = 10s: after 10s a new value weighs 1 - 1/e; at Δt = 0 it weighs nothing.
    let by_time = metrics("ewma 10s", input, None);
    let expected = 30.0 * (1.0 - (-1.0f64).exp());
    assert_eq!(by_time, vec![0.0, expected, expected]);
}

#[test]
fn nested_meta_and_tag_keep_the_events_own_metric() {
    let input = json!([{"host":"a","metric":10,"time":0},{"host":"a","metric":20,"time":1},{"host":"a","time":2}]);
    let out = run("meta avg (sma 2) | tag total (sum)", input, None);
    assert_eq!(
        out,
        vec![
            json!({"host":"a","time":0.0,"tags":["total:10"],"meta":{"avg":10.0,"variance":0.0,"stdDev":0.0},"metric":10.0}),
            json!({"host":"a","time":1.0,"tags":["total:30"],"meta":{"avg":15.0,"variance":25.0,"stdDev":5.0},"metric":20.0})
        ]
    );
}

#[test]
fn combine_folds_digests_from_rollup_and_coalesce() {
    let input = json!([
        {"host":"a","service":"rps","metric":10,"time":0},
        {"host":"b","service":"rps","metric":5,"time":1},
        {"host":"a","service":"rps","metric":20,"time":2}
    ]);
    assert_eq!(
        metrics("rollup 1m | combine sum", input.clone(), Some(100.0)),
        vec![35.0]
    );
    assert_eq!(
        metrics("coalesce | combine max", input.clone(), None),
        vec![10.0, 10.0, 20.0]
    );
    let digest = run("coalesce", input.clone(), None);
    assert_eq!(digest[2]["metric"], json!(2.0));
    assert_eq!(digest[2]["meta"]["events"].as_array().unwrap().len(), 2);
    assert_eq!(
        metrics("combine mean", input, None),
        vec![10.0, 5.0, 20.0],
        "a plain event is a group of one"
    );
}

/// `(metric, notify channel, forward target)` of each result, in order.
fn outputs(pipeline: &str, input: Value) -> Vec<(Option<f64>, Value, Value)> {
    eval(pipeline, events(input), None)
        .unwrap()
        .into_iter()
        .map(|r| {
            let channel = r.notify.map_or(Value::Null, |n| n["channel"].clone());
            (r.event.metric, channel, r.forward.unwrap_or(Value::Null))
        })
        .collect()
}

#[test]
fn around_side_branches_notify_and_forward_while_events_go_on() {
    let input = json!([
        {"host":"a","metric":95,"time":0,"state":"critical"},
        {"host":"a","metric":50,"time":1}
    ]);
    let pipeline = r#"around (over 90 | notify log) (where state = "critical" | forward topic="alerts") | sma 2"#;
    let expected = vec![
        // 95: the pipeline goes on (sma), then the branches' results.
        (Some(95.0), Value::Null, Value::Null),
        (Some(95.0), json!("log"), Value::Null),
        (Some(95.0), Value::Null, json!({"topic": "alerts"})),
        // 50: only the sma.
        (Some(72.5), Value::Null, Value::Null),
    ];
    assert_eq!(outputs(pipeline, input.clone()), expected);
    // Result ids are deterministic: numbered in that order per input.
    let ids = |_| -> Vec<String> {
        eval(pipeline, events(input.clone()), None)
            .unwrap()
            .iter()
            .map(|r| format!("{}:{}", r.id.offset, r.id.seq))
            .collect()
    };
    assert_eq!(ids(()), ["0:0", "0:1", "0:2", "1:0"]);
    assert_eq!(ids(()), ids(()));
    let reactor = Reactor::build(&ReactorConfig {
        name: "x".into(),
        pipeline: pipeline.into(),
    })
    .unwrap();
    assert_eq!(reactor.forward_topics(), ["alerts"]);
}

#[test]
fn by_without_recombine_passes_events_on_and_its_copies_notify() {
    let input = json!([
        {"host":"a","metric":95,"time":0},
        {"host":"b","metric":10,"time":1},
        {"host":"a","metric":97,"time":2}
    ]);
    // godot's by (recombine false): every event goes on to `sum`; each
    // host's copy notifies on its own.
    let out = outputs(
        "by host recombine=false (over 90 | notify log) | sum",
        input.clone(),
    );
    assert_eq!(
        out,
        vec![
            (Some(95.0), Value::Null, Value::Null),
            (Some(95.0), json!("log"), Value::Null),
            (Some(105.0), Value::Null, Value::Null),
            (Some(202.0), Value::Null, Value::Null),
            (Some(97.0), json!("log"), Value::Null),
        ]
    );
    // A nested pipeline that names an output is a side branch even when
    // recombining: nothing flows on from it.
    let out = outputs("by host (over 90 | notify log)", input);
    assert_eq!(
        out,
        vec![
            (Some(95.0), json!("log"), Value::Null),
            (Some(97.0), json!("log"), Value::Null),
        ]
    );
}

#[test]
fn by_each_fans_out_per_field_like_godot() {
    let input = json!([
        {"host":"a","service":"x","metric":1,"time":0},
        {"host":"b","service":"x","metric":2,"time":1},
        {"host":"a","service":"y","metric":4,"time":2}
    ]);
    // Composite key (Riemann): (a,x) 1, (b,x) 2, (a,y) 4.
    assert_eq!(
        metrics("by host service (sum)", input.clone(), None),
        vec![1.0, 2.0, 4.0]
    );
    // Each field on its own (godot): host a 1, service x 1; host b 2,
    // service x 3; host a 5, service y 4.
    assert_eq!(
        metrics("by host service each=true (sum)", input, None),
        vec![1.0, 1.0, 2.0, 3.0, 5.0, 4.0]
    );
}

#[test]
fn side_branch_and_by_option_errors() {
    assert_all_rejected(&[
        "by host recombine=false",
        "by host recombine=maybe (sum)",
        "around (notify log | over 1)",
        "around (over 1 | notify pager)",
        "split (over 1 | notify log)",
        "around ()",
    ]);
}

#[test]
fn sum_of_no_metric_is_zero_and_coalesce_keeps_first_seen_order() {
    let input = json!([
        {"host":"b","service":"s","metric":1,"time":0},
        {"host":"a","service":"s","metric":2,"time":1},
        {"host":"b","service":"s","metric":3,"time":2},
        {"host":"c","service":"s","time":3}
    ]);
    // First seen: b, then a (key order would put a first).
    assert_eq!(
        metrics("coalesce combine=first", input.clone(), None),
        vec![1.0, 1.0, 3.0, 3.0]
    );
    assert_eq!(
        metrics("coalesce combine=last", input.clone(), None),
        vec![1.0, 2.0, 2.0, 2.0]
    );
    // A rollup of events without a metric sums to 0 (godot's sum starts at 0).
    let none = json!([{"host":"a","time":0},{"host":"a","time":1}]);
    assert_eq!(
        metrics("rollup 10s | combine sum", none.clone(), Some(20.0)),
        vec![0.0]
    );
    let out = run("rollup 10s | combine max", none, Some(20.0));
    assert_eq!(out[0].get("metric"), None, "max of nothing: {out:?}");
}

#[test]
fn moving_averages_set_variance_and_standard_deviation() {
    let input = json!([{"host":"a","metric":2,"time":0},{"host":"a","metric":4,"time":1},{"host":"a","metric":9,"time":2}]);
    let out = run("sma 3", input, None);
    // Window [2, 4, 9]: mean 5, variance ((9 + 1 + 16) / 3).
    assert_eq!(out[2]["metric"], json!(5.0));
    let variance: f64 = 26.0 / 3.0;
    assert_eq!(out[2]["meta"]["variance"], json!(variance));
    assert_eq!(out[2]["meta"]["stdDev"], json!(variance.sqrt()));
    assert_eq!(out[0]["meta"], json!({"variance": 0.0, "stdDev": 0.0}));
}

#[test]
fn riemann_ddt_runs_and_counter() {
    // ddt: (20 − 10) / 2 = 5; the second event at t=2 has Δt = 0 (skipped,
    // but it is the new previous); (5 − 25) / (7 − 2) = −4.
    let input = json!([
        {"host":"a","metric":10,"time":0},{"host":"a","metric":20,"time":2},
        {"host":"a","metric":25,"time":2},{"host":"a","time":3},{"host":"a","metric":5,"time":7}
    ]);
    assert_eq!(metrics("ddt", input, None), vec![5.0, -4.0]);

    // runs 3: the newest of every three equal states in a row.
    let states = [
        "ok", "ok", "ok", "critical", "critical", "critical", "critical", "ok",
    ];
    let input: Value = states
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"host":"a","state":s,"metric":i,"time":i}))
        .collect();
    assert_eq!(metrics("runs 3 state", input, None), vec![2.0, 5.0, 6.0]);

    // counter 100: +5, a metric-less event passes unchanged, a reset to
    // 10, +1.
    let input = json!([
        {"host":"a","metric":5,"time":0},{"host":"a","time":1},
        {"host":"a","metric":10,"time":2,"tags":["reset"]},{"host":"a","metric":1,"time":3}
    ]);
    let out: Vec<Value> = run("counter 100", input, None)
        .iter()
        .map(|e| e["metric"].clone())
        .collect();
    assert_eq!(out, [json!(105.0), Value::Null, json!(10.0), json!(11.0)]);
}

#[test]
fn riemann_fill_in_fills_silences_until_an_event_or_the_ttl() {
    let input = json!([
        {"host":"a","metric":5,"time":0},{"host":"a","metric":6,"time":5},
        {"host":"a","metric":7,"time":40},
        {"host":"a","metric":1,"time":50,"ttl":15}
    ]);
    let out: Vec<(f64, f64)> = run("fill-in 10s metric=0", input, Some(100.0))
        .iter()
        .map(|e| (e["time"].as_f64().unwrap(), e["metric"].as_f64().unwrap()))
        .collect();
    // Gaps of 10 s after t=5: fills at 15, 25, 35; the event at 40; a fill
    // due at 50 comes before the event of that time (as an expiry does);
    // that event's ttl ends at 65, so one fill at 60 and none at 70.
    assert_eq!(
        out,
        [
            (0.0, 5.0),
            (5.0, 6.0),
            (15.0, 0.0),
            (25.0, 0.0),
            (35.0, 0.0),
            (40.0, 7.0),
            (50.0, 0.0),
            (50.0, 1.0),
            (60.0, 0.0)
        ]
    );
    // An expired event stops the filling.
    let input = json!([{"host":"a","metric":5,"time":0},{"host":"a","state":"expired","time":5}]);
    assert_eq!(run("fill-in 10s metric=0", input, Some(100.0)).len(), 2);
    // A clock that jumps a day ahead gets at most `max` fills (default
    // 1000), not 8,640.
    let input = json!([{"host":"a","metric":5,"time":0}]);
    assert_eq!(
        run("fill-in 10s", input.clone(), Some(86_400.0)).len(),
        1 + 1000
    );
    assert_eq!(run("fill-in 10s max=3", input, Some(86_400.0)).len(), 1 + 3);
}

#[test]
fn riemann_fold_interval_apdex_and_changed_state() {
    let input = json!([
        {"host":"a","metric":3,"time":0},{"host":"a","metric":9,"time":4},
        {"host":"a","metric":1,"time":8},{"host":"a","metric":2,"time":12}
    ]);
    assert_eq!(
        metrics("fold-interval 10s max", input, Some(30.0)),
        vec![9.0, 2.0]
    );

    // Response times against T = 0.5 s: 0.2 and 0.5 satisfied, 1.0
    // tolerated (≤ 4T), 3 frustrated, the expired event not counted:
    // (2 + 0.5) / 4.
    let input = json!([
        {"host":"a","metric":0.2,"time":0},{"host":"a","metric":0.5,"time":1},
        {"host":"a","metric":1.0,"time":2},{"host":"a","metric":3,"time":3},
        {"host":"a","state":"expired","time":4}
    ]);
    assert_eq!(
        metrics("apdex 10s satisfied=0.5", input, Some(30.0)),
        vec![0.625]
    );
    // By state: 1 satisfied, 2 tolerated, 1 neither: (1 + 1) / 4.
    let input = json!([
        {"host":"a","state":"ok","time":0},{"host":"a","state":"warning","time":1},
        {"host":"a","state":"warning","time":2},{"host":"a","state":"critical","time":3}
    ]);
    let pipeline = r#"apdex 10s satisfied='state = "ok"' tolerated='state = "warning"'"#;
    assert_eq!(metrics(pipeline, input, Some(30.0)), vec![0.5]);

    // changed-state: each (host, service) on its own, init ok.
    let input = json!([
        {"host":"a","service":"x","state":"ok","time":0},
        {"host":"a","service":"x","state":"critical","time":1},
        {"host":"b","service":"x","state":"critical","time":2},
        {"host":"a","service":"x","state":"critical","time":3},
        {"host":"b","service":"x","state":"ok","time":4},
        {"host":"a","service":"y","state":"ok","time":5}
    ]);
    let changes: Vec<(Value, Value)> = run(r#"changed-state init="ok""#, input, None)
        .iter()
        .map(|e| (e["host"].clone(), e["state"].clone()))
        .collect();
    assert_eq!(
        changes,
        [
            (json!("a"), json!("critical")),
            (json!("b"), json!("critical")),
            (json!("b"), json!("ok"))
        ]
    );
    assert_all_rejected(&[
        "ddt 5",
        "runs",
        "runs 0",
        "fill-in",
        "fill-in 10s metric=\"x\"",
        "fill-in 10s max=0",
        "counter 1 2",
        "fold-interval 10s",
        "fold-interval 10s median",
        "apdex 10s",
        "apdex 10s satisfied='state = '",
        "apdex 10s satisfied='state = \"ok\"'",
        "changed-state state",
    ]);
}
