//! How a window of events becomes one event: `combine=sum|mean|min|max|
//! count|first|last` on the window stages (`fixed-time-window`,
//! `moving-time-window`, `fixed-event-window`, `moving-event-window`,
//! `coalesce`). The combined event is the window's last event with
//! `metric` = the fold over the metrics of the window (events without a
//! metric do not count, except for `count`, which counts every event).

use crate::lang::{Literal, ParseError, StageSpec};

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
        let combine = match spec.named("combine") {
            Some(Literal::Word(w) | Literal::Str(w)) => match w.as_str() {
                "sum" => Combine::Sum,
                "mean" => Combine::Mean,
                "min" => Combine::Min,
                "max" => Combine::Max,
                "count" => Combine::Count,
                "first" => Combine::First,
                "last" => Combine::Last,
                other => {
                    return Err(spec.error(format!("unknown combine {other:?} (one of {NAMES})")))
                }
            },
            Some(other) => {
                return Err(spec.error(format!("combine must be one of {NAMES}, found {other}")))
            }
            None => return Err(spec.error(format!("needs combine=… (one of {NAMES})"))),
        };
        Ok(combine)
    }

    /// Folds `metrics` (oldest first); `events` counts events with or
    /// without a metric. `None` when there is nothing to fold.
    pub fn apply(self, metrics: &[f64], events: usize) -> Option<f64> {
        if self == Combine::Count {
            return (events > 0).then_some(events as f64);
        }
        if metrics.is_empty() {
            return None;
        }
        let n = metrics.len() as f64;
        Some(match self {
            Combine::Sum => metrics.iter().sum(),
            Combine::Mean => metrics.iter().sum::<f64>() / n,
            Combine::Weighted => {
                let weighted: f64 = metrics
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (i + 1) as f64 * m)
                    .sum();
                weighted / (n * (n + 1.0) / 2.0)
            }
            Combine::Min => metrics.iter().copied().fold(f64::INFINITY, f64::min),
            Combine::Max => metrics.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            Combine::First => metrics[0],
            Combine::Last | Combine::Count => metrics[metrics.len() - 1],
        })
    }
}
