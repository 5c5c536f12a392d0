//! Metric bounds. `over N` and `under N` pass events whose metric is
//! strictly above (below) N; `within MIN MAX` passes MIN ≤ metric ≤ MAX.
//! Events without a metric never pass.

use weir_event::Event;

use crate::lang::{ParseError, StageSpec};
use crate::stage::{Built, Options, Stage, StageDef};

/// The stages this file declares.
pub const STAGES: &[StageDef] = &[
    StageDef {
        name: "over",
        options: Options::Only(&[]),
        doc: "Passes events whose metric is above N.",
        build: |spec, _| Built::one(Threshold::over(spec)?),
    },
    StageDef {
        name: "under",
        options: Options::Only(&[]),
        doc: "Passes events whose metric is below N.",
        build: |spec, _| Built::one(Threshold::under(spec)?),
    },
    StageDef {
        name: "within",
        options: Options::Only(&[]),
        doc: "Passes events whose metric is within MIN..=MAX.",
        build: |spec, _| Built::one(Threshold::within(spec)?),
    },
];

/// A metric bound.
pub struct Threshold {
    range: Range,
}

enum Range {
    Above(f64),
    Below(f64),
    Within(f64, f64),
}

impl Threshold {
    /// Builds `over N`.
    pub fn over(spec: &StageSpec) -> Result<Threshold, ParseError> {
        Ok(Threshold {
            range: Range::Above(Self::bound(spec, 0)?),
        })
    }

    /// Builds `under N`.
    pub fn under(spec: &StageSpec) -> Result<Threshold, ParseError> {
        Ok(Threshold {
            range: Range::Below(Self::bound(spec, 0)?),
        })
    }

    /// Builds `within MIN MAX`.
    pub fn within(spec: &StageSpec) -> Result<Threshold, ParseError> {
        let (min, max) = (Self::bound(spec, 0)?, Self::bound(spec, 1)?);
        if min > max {
            return Err(spec.error(format!("{min} is above {max}")));
        }
        Ok(Threshold {
            range: Range::Within(min, max),
        })
    }

    fn bound(spec: &StageSpec, i: usize) -> Result<f64, ParseError> {
        spec.number("bound", Some(i))?
            .ok_or_else(|| spec.error("needs a number, e.g. over 90 or within 10 20"))
    }
}

impl Stage for Threshold {
    fn event(&mut self, event: Event, _now: f64, out: &mut Vec<Event>) {
        let pass = match (event.metric, &self.range) {
            (Some(metric), Range::Above(bound)) => metric > *bound,
            (Some(metric), Range::Below(bound)) => metric < *bound,
            (Some(metric), Range::Within(min, max)) => *min <= metric && metric <= *max,
            (None, _) => false,
        };
        if pass {
            out.push(event);
        }
    }
}
