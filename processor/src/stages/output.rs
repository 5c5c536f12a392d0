//! The ends of a pipeline: `emit` (implicit), `notify CHANNEL [key=value…]`
//! and `forward topic="NAME" | tcp="HOST:PORT"`. The top-level pipeline
//! and every side branch (`around`'s pipelines, `by … recombine=false`'s)
//! end in one of them.

use serde_json::{json, Map, Value};

use crate::lang::{Arg, Literal, ParseError, StageSpec};
use crate::stage::{Options, StageDef};

/// The stages this file declares: only valid last in a pipeline, where
/// [`Output::split`] takes them.
pub const STAGES: &[StageDef] = &[
    StageDef {
        name: "emit",
        options: Options::Only(&[]),
        doc: "Results go to weir.results (the implicit end of every pipeline).",
        build: |spec, _| Err(last_only(spec)),
    },
    StageDef {
        name: "notify",
        options: Options::Any,
        doc: "Results are notifications on a channel: log, email or webhook.",
        build: |spec, _| Err(last_only(spec)),
    },
    StageDef {
        name: "forward",
        options: Options::Only(&["topic", "tcp"]),
        doc: "Results are sent on to a topic of the log or a TCP listener.",
        build: |spec, _| Err(last_only(spec)),
    },
];

fn last_only(spec: &StageSpec) -> ParseError {
    spec.error("must be the last stage of the pipeline")
}

/// Channels the notifier delivers.
const CHANNELS: &[&str] = &["log", "email", "webhook"];

/// Where a pipeline's results go.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Plain results (`emit`, implicit).
    Emit,
    /// Notification records: `{"channel": …, options…}`.
    Notify(Value),
    /// Forwarded records: `{"topic": …}` or `{"tcp": …}`.
    Forward(Value),
}

impl Output {
    /// Splits a pipeline into its stages and where their results go
    /// (`emit` when the last stage names no output).
    pub fn split(specs: &[StageSpec]) -> Result<(&[StageSpec], Output), ParseError> {
        let (stages, output) = Output::split_named(specs)?;
        Ok((stages, output.unwrap_or(Output::Emit)))
    }

    /// Like [`Output::split`], but `None` when the pipeline names no
    /// output (a nested pipeline whose results flow on).
    pub fn split_named(specs: &[StageSpec]) -> Result<(&[StageSpec], Option<Output>), ParseError> {
        match specs.split_last() {
            Some((last, stages)) if matches!(last.name.as_str(), "emit" | "notify" | "forward") => {
                Ok((stages, Some(Output::of(last)?)))
            }
            _ => Ok((specs, None)),
        }
    }

    /// The record's `notify` field, for a notification.
    pub fn notify(&self) -> Option<Value> {
        match self {
            Output::Notify(options) => Some(options.clone()),
            _ => None,
        }
    }

    /// The record's `forward` field, for a forward.
    pub fn forward(&self) -> Option<Value> {
        match self {
            Output::Forward(target) => Some(target.clone()),
            _ => None,
        }
    }

    /// The topics that the `forward topic=…` stages of `specs` (nested
    /// pipelines included) send to: they must exist.
    pub fn topics(specs: &[StageSpec]) -> Vec<String> {
        let mut topics = Vec::new();
        for spec in specs {
            if spec.name == "forward" {
                topics.extend(spec.named("topic").and_then(Literal::as_text).map(str::to_owned));
            }
            for arg in &spec.args {
                if let Arg::Nested(nested) = arg {
                    topics.extend(Output::topics(nested));
                }
            }
        }
        topics
    }

    fn of(spec: &StageSpec) -> Result<Output, ParseError> {
        match spec.name.as_str() {
            "forward" => forward_of(spec),
            "emit" if spec.args.is_empty() => Ok(Output::Emit),
            "emit" => Err(spec.error("takes no arguments")),
            _ => notify_of(spec),
        }
    }
}

fn forward_of(spec: &StageSpec) -> Result<Output, ParseError> {
    spec.only_named(&["topic", "tcp"])?;
    let target = match (spec.named("topic"), spec.named("tcp")) {
        (Some(topic), None) => {
            let topic = topic.as_text().unwrap_or_default();
            let valid = !topic.is_empty()
                && topic
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !valid {
                return Err(spec.error(format!("topic must be [A-Za-z0-9._-]+, found {topic:?}")));
            }
            json!({ "topic": topic })
        }
        (None, Some(address)) => {
            let address = address.as_text().unwrap_or_default();
            if !address.contains(':') {
                return Err(spec.error(format!("tcp needs HOST:PORT, found {address:?}")));
            }
            json!({ "tcp": address })
        }
        _ => return Err(spec.error("needs exactly one of topic=\"NAME\" or tcp=\"HOST:PORT\"")),
    };
    Ok(Output::Forward(target))
}

fn notify_of(spec: &StageSpec) -> Result<Output, ParseError> {
    let channel = match spec.positional(0) {
        Some(Literal::Word(w)) if CHANNELS.contains(&w.as_str()) => w.clone(),
        other => {
            let found = other.map_or("nothing".to_owned(), |o| o.to_string());
            let channels = CHANNELS.join(", ");
            return Err(spec.error(format!("needs a channel ({channels}), found {found}")));
        }
    };
    let required = match channel.as_str() {
        "email" => Some("to"),
        "webhook" => Some("url"),
        _ => None,
    };
    if let Some(key) = required {
        if spec.named(key).and_then(Literal::as_text).is_none() {
            return Err(spec.error(format!("{channel} needs {key}=\"…\"")));
        }
    }
    let mut options = Map::new();
    options.insert("channel".into(), Value::String(channel));
    for arg in &spec.args {
        if let Arg::Named(key, value) = arg {
            options.insert(key.clone(), value.to_json());
        }
    }
    Ok(Output::Notify(Value::Object(options)))
}
