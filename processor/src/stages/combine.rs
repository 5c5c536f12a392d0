//! How a group of events becomes one event: `sum|mean|min|max|count|
//! first|last`, as the `combine=` option of the window stages
//! (`fixed-time-window`, `moving-time-window`, `fixed-event-window`,
//! `moving-event-window`, `coalesce`) or as the stage `combine F` after a
//! digest (`rollup`, `coalesce` without `combine=`), whose events are in
//! `meta.events`. The combined event is the group's last event with
//! `metric` = the fold over the group's metrics (events without a metric
//! do not count, except for `count`, which counts every event; the `sum`
//! of no metric is 0, as godot's sum starts from 0, the other folds of
//! none leave the event without a metric).

use serde_json::Value;
use weir_event::Event;

use crate::lang::{Literal, ParseError, StageSpec};
use crate::stage::{Built, Options, Stage, StageDef};

/// The stages this file declares.
pub const STAGES: &[StageDef] = &[
    StageDef {
        name: "combine",
        options: Options::Only(&[]),
        doc: "Folds a digest's meta.events into its metric (godot).",
        build: |spec, _| Built::one(CombineStage::from_spec(spec)?),
    },
];

/// A fold of metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Combine {
    /// Total.
    Sum,
    /// Arithmetic mean.
    Mean,
    /// Linearly weighted mean, oldest weight 1, newest n.
    Weighted,
    /// Smallest.
    Min,
    /// Largest.
    Max,
    /// Number of events.
    Count,
    /// Oldest value.
    First,
    /// Newest value.
    Last,
}

const NAMES: &str = "sum, mean, min, max, count, first, last";

impl Combine {
    /// Reads the required `combine=` option.
    pub fn from_spec(spec: &StageSpec) -> Result<Combine, ParseError> {
        Self::option(spec)?.ok_or_else(|| spec.error(format!("needs combine=… (one of {NAMES})")))
    }

    /// Reads an optional `combine=` option.
    pub fn option(spec: &StageSpec) -> Result<Option<Combine>, ParseError> {
        spec.named("combine")
            .map(|l| Self::parse(spec, l))
            .transpose()
    }

    /// Reads a fold name (`sum`, `mean`, …).
    pub fn parse(spec: &StageSpec, literal: &Literal) -> Result<Combine, ParseError> {
        let name = literal.as_text().ok_or_else(|| {
            spec.error(format!("combine must be one of {NAMES}, found {literal}"))
        })?;
        Ok(match name {
            "sum" => Combine::Sum,
            "mean" => Combine::Mean,
            "min" => Combine::Min,
            "max" => Combine::Max,
            "count" => Combine::Count,
            "first" => Combine::First,
            "last" => Combine::Last,
            other => return Err(spec.error(format!("unknown combine {other:?} (one of {NAMES})"))),
        })
    }

    /// Folds `metrics` (oldest first); `events` counts events with or
    /// without a metric. `None` when there is nothing to fold.
    pub fn apply(self, metrics: &[f64], events: usize) -> Option<f64> {
        let n = metrics.len() as f64;
        match self {
            Combine::Count => (events > 0).then_some(events as f64),
            // Not `Iterator::sum`, whose sum of nothing is −0.
            Combine::Sum => Some(metrics.iter().fold(0.0, |total, m| total + m)),
            _ if metrics.is_empty() => None,
            Combine::Mean => Some(metrics.iter().sum::<f64>() / n),
            Combine::Weighted => {
                let weighted: f64 = metrics
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (i + 1) as f64 * m)
                    .sum();
                Some(weighted / (n * (n + 1.0) / 2.0))
            }
            Combine::Min => Some(metrics.iter().copied().fold(f64::INFINITY, f64::min)),
            Combine::Max => Some(metrics.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
            Combine::First => Some(metrics[0]),
            Combine::Last => Some(metrics[metrics.len() - 1]),
        }
    }
}

/// `combine F`: folds a digest's `meta.events` into the metric of its
/// last event (godot's `rollup(…).combine(fn)`, which emits a copy of the
/// array's last event); an event that is not a digest is a group of one.
pub struct CombineStage {
    combine: Combine,
}

impl CombineStage {
    /// Builds `combine F`.
    pub fn from_spec(spec: &StageSpec) -> Result<CombineStage, ParseError> {
        let literal = spec
            .positional(0)
            .ok_or_else(|| spec.error(format!("needs a fold (one of {NAMES})")))?;
        Ok(CombineStage {
            combine: Combine::parse(spec, literal)?,
        })
    }
}

impl Stage for CombineStage {
    fn event(&mut self, mut event: Event, _now: f64, out: &mut Vec<Event>) {
        let (metrics, count) = match event.meta.remove("events") {
            Some(Value::Array(mut events)) => {
                let metrics: Vec<f64> =
                    events.iter().filter_map(|e| e["metric"].as_f64()).collect();
                let count = events.len();
                let last = events.pop().map(serde_json::from_value::<Event>);
                if let Some(Ok(last)) = last {
                    event = Event {
                        time: event.time,
                        ..last
                    };
                }
                (metrics, count)
            }
            _ => (event.metric.into_iter().collect(), 1),
        };
        event.metric = self.combine.apply(&metrics, count);
        out.push(event);
    }
}
