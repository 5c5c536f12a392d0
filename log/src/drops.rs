//! Drop accounting: every place an event or a result stops short —
//! refused at ingest, undecodable, not indexed, filtered or skipped by a
//! sink, dead-lettered, a notification given up or suppressed, a live
//! listener cut off — is counted in `weir_dropped_total{stage,reason}`
//! and keeps its latest examples, for `GET /admin/drops` and `weir drops`.

use std::collections::{HashMap, VecDeque};
use std::sync::{LazyLock, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{register_int_counter_vec, IntCounterVec};
use serde::{Deserialize, Serialize};

/// Examples kept per stage and reason.
const EXAMPLES: usize = 5;
/// Longest example kept, in bytes.
const EXAMPLE_BYTES: usize = 300;

/// Events and results that stopped short, by stage and reason.
pub static DROPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "weir_dropped_total",
        "Events and results that stopped short of their destination, by stage and reason",
        &["stage", "reason"]
    )
    .expect("metric registers once")
});

/// One example of a drop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// When (Unix ms).
    pub at_ms: u64,
    /// What was dropped, and why, as far as known (truncated).
    pub text: String,
}

/// A stage and reason's drops, as `GET /admin/drops` lists them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drops {
    /// Where: `ingest:PROTOCOL`, `processor`, `index`, `sink:NAME`, `notify`, `live`.
    pub stage: String,
    /// Why.
    pub reason: String,
    /// How many since the start.
    pub count: u64,
    /// The latest examples, oldest first.
    pub examples: Vec<Example>,
}

#[derive(Default)]
struct Kept {
    count: u64,
    examples: VecDeque<Example>,
    last_ms: u64,
}

/// Stage → reason → what was kept.
static KEPT: LazyLock<Mutex<HashMap<String, HashMap<String, Kept>>>> =
    LazyLock::new(Mutex::default);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Counts `count` drops at `stage` for `reason`; `example` is asked for
/// at most once a second per stage and reason (a flood costs a counter).
pub fn dropped(stage: &str, reason: &str, count: u64, example: impl FnOnce() -> String) {
    DROPPED.with_label_values(&[stage, reason]).inc_by(count);
    let now = now_ms();
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    let reasons = match kept.get_mut(stage) {
        Some(reasons) => reasons,
        None => kept.entry(stage.to_owned()).or_default(),
    };
    let kept = match reasons.get_mut(reason) {
        Some(kept) => kept,
        None => reasons.entry(reason.to_owned()).or_default(),
    };
    kept.count += count;
    if kept.examples.len() < EXAMPLES || now >= kept.last_ms + 1000 {
        let mut text = example();
        if text.len() > EXAMPLE_BYTES {
            let mut end = EXAMPLE_BYTES;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push('…');
        }
        if kept.examples.len() == EXAMPLES {
            kept.examples.pop_front();
        }
        kept.examples.push_back(Example { at_ms: now, text });
        kept.last_ms = now;
    }
}

/// Every stage and reason with drops, sorted.
pub fn report() -> Vec<Drops> {
    let kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    let mut all: Vec<Drops> = kept
        .iter()
        .flat_map(|(stage, reasons)| {
            reasons.iter().map(move |(reason, kept)| Drops {
                stage: stage.clone(),
                reason: reason.clone(),
                count: kept.count,
                examples: kept.examples.iter().cloned().collect(),
            })
        })
        .collect();
    all.sort_by(|a, b| (&a.stage, &a.reason).cmp(&(&b.stage, &b.reason)));
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_counted_with_a_few_short_examples() {
        for i in 0..10 {
            dropped("test-stage", "why", 2, || {
                format!("example {i} {}", "x".repeat(400))
            });
        }
        let mine = report()
            .into_iter()
            .find(|d| d.stage == "test-stage")
            .unwrap();
        assert_eq!((mine.reason.as_str(), mine.count), ("why", 20));
        assert_eq!(mine.examples.len(), EXAMPLES);
        assert!(mine.examples[0].text.starts_with("example 0"));
        assert!(mine
            .examples
            .iter()
            .all(|e| e.text.len() <= EXAMPLE_BYTES + 3));
    }
}
