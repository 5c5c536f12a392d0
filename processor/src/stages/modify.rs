//! Stages that change the event passing through (no state).
//!
//! - `set FIELD=VALUE …` (alias `map`): sets fields: `host service state
//!   description type` (strings), `metric ttl` (numbers), `meta.KEY`
//!   (any value), `tags` (a list).
//! - `scale F`: multiplies the metric by F.
//! - `default FIELD=VALUE …`: like `set`, but only where the field is missing.
//! - `tag T …`: appends tags that are not already there.
//! - `meta KEY=VALUE …`: sets meta entries.

use serde_json::Value;
use weir_event::Event;

use crate::lang::{Arg, Literal, ParseError, StageSpec};
use crate::predicate::{Field, FieldValue};
use crate::stage::{Built, Options, Stage, StageDef};

use super::annotate::Annotate;

/// The stages this file declares (`tag` and `meta` with a nested
/// pipeline are [`Annotate`]).
pub const STAGES: &[StageDef] = &[
    StageDef {
        name: "set",
        options: Options::Any,
        doc: "Sets fields: set FIELD=VALUE ….",
        build: |spec, _| Built::one(Modify::set(spec)?),
    },
    StageDef {
        name: "map",
        options: Options::Any,
        doc: "godot's name for set.",
        build: |spec, _| Built::one(Modify::set(spec)?),
    },
    StageDef {
        name: "default",
        options: Options::Any,
        doc: "Sets fields the event does not have.",
        build: |spec, _| Built::one(Modify::default(spec)?),
    },
    StageDef {
        name: "scale",
        options: Options::Only(&[]),
        doc: "Multiplies the metric by F.",
        build: |spec, _| Built::one(Modify::scale(spec)?),
    },
    StageDef {
        name: "tag",
        options: Options::Only(&[]),
        doc: "Adds tags; tag T (PIPELINE) adds the tag T:METRIC of the nested pipeline (godot).",
        build: |spec, _| match spec.nested() {
            Some(nested) => Built::one(Annotate::from_spec(spec, nested, true)?),
            None => Built::one(Modify::tag(spec)?),
        },
    },
    StageDef {
        name: "meta",
        options: Options::Any,
        doc: "Sets meta keys; meta KEY (PIPELINE) keeps the nested pipeline's metric in meta.KEY (godot).",
        build: |spec, _| match spec.nested() {
            Some(nested) => Built::one(Annotate::from_spec(spec, nested, false)?),
            None => Built::one(Modify::meta(spec)?),
        },
    },
];

/// One field assignment.
#[derive(Debug, Clone)]
struct Assign {
    field: Field,
    value: Literal,
}

/// The kind of change.
enum Change {
    Set(Vec<Assign>),
    Default(Vec<Assign>),
    Scale(f64),
    Tag(Vec<String>),
}

/// A stateless change to each event.
pub struct Modify {
    change: Change,
}

fn assignments(spec: &StageSpec, meta_only: bool) -> Result<Vec<Assign>, ParseError> {
    let mut assigns = Vec::new();
    for arg in &spec.args {
        let Arg::Named(key, value) = arg else {
            return Err(spec.error("takes FIELD=VALUE pairs"));
        };
        let field = if meta_only {
            Field::Meta(key.clone())
        } else {
            Field::parse(key, spec.column)?
        };
        let fits = match (&field, value) {
            (
                Field::Metric | Field::Ttl | Field::Time,
                Literal::Number(_) | Literal::Duration(_),
            ) => true,
            (Field::Metric | Field::Ttl | Field::Time, _) => false,
            (Field::Tags, Literal::List(items)) => items.iter().all(|i| i.as_text().is_some()),
            (Field::Tags, _) => false,
            (Field::Meta(_), _) => true,
            (_, literal) => literal.as_text().is_some(),
        };
        if !fits {
            return Err(spec.error(format!("{key}={value} has the wrong type for {key}")));
        }
        assigns.push(Assign {
            field,
            value: value.clone(),
        });
    }
    if assigns.is_empty() {
        return Err(spec.error("needs at least one FIELD=VALUE"));
    }
    Ok(assigns)
}

fn assign(event: &mut Event, assign: &Assign) {
    let text = || assign.value.as_text().map(str::to_owned);
    let number = || match assign.value {
        Literal::Number(n) | Literal::Duration(n) => Some(n),
        _ => None,
    };
    match &assign.field {
        Field::Host => event.host = text().unwrap_or_default(),
        Field::Service => event.service = text(),
        Field::State => event.state = text(),
        Field::Description => event.description = text(),
        Field::Type => event.kind = text(),
        Field::Metric => event.metric = number(),
        Field::Ttl => event.ttl = number(),
        Field::Time => event.time = number().unwrap_or(event.time),
        Field::Tags => {
            event.tags = match &assign.value {
                Literal::List(items) => items
                    .iter()
                    .filter_map(|i| i.as_text().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            }
        }
        Field::Meta(key) => {
            event.meta.insert(key.clone(), assign.value.to_json());
        }
    }
}

impl Modify {
    /// Builds `set …` / `map …`.
    pub fn set(spec: &StageSpec) -> Result<Modify, ParseError> {
        Ok(Modify {
            change: Change::Set(assignments(spec, false)?),
        })
    }

    /// Builds `default …`.
    pub fn default(spec: &StageSpec) -> Result<Modify, ParseError> {
        Ok(Modify {
            change: Change::Default(assignments(spec, false)?),
        })
    }

    /// Builds `meta KEY=VALUE …`.
    pub fn meta(spec: &StageSpec) -> Result<Modify, ParseError> {
        Ok(Modify {
            change: Change::Set(assignments(spec, true)?),
        })
    }

    /// Builds `scale F`.
    pub fn scale(spec: &StageSpec) -> Result<Modify, ParseError> {
        let factor = spec
            .number("factor", Some(0))?
            .ok_or_else(|| spec.error("needs a factor, e.g. scale 0.001"))?;
        Ok(Modify {
            change: Change::Scale(factor),
        })
    }

    /// Builds `tag T …`.
    pub fn tag(spec: &StageSpec) -> Result<Modify, ParseError> {
        let mut tags = Vec::new();
        for arg in &spec.args {
            let items = match arg {
                Arg::Positional(Literal::List(items)) => items.clone(),
                Arg::Positional(single) => vec![single.clone()],
                _ => return Err(spec.error("takes tags")),
            };
            for item in items {
                tags.push(
                    item.as_text()
                        .ok_or_else(|| spec.error(format!("tags are strings, found {item}")))?
                        .to_owned(),
                );
            }
        }
        if tags.is_empty() {
            return Err(spec.error("needs at least one tag"));
        }
        Ok(Modify {
            change: Change::Tag(tags),
        })
    }
}

impl Stage for Modify {
    fn event(&mut self, mut event: Event, _now: f64, out: &mut Vec<Event>) {
        match &self.change {
            Change::Set(assigns) => assigns.iter().for_each(|a| assign(&mut event, a)),
            Change::Default(assigns) => {
                for a in assigns {
                    let missing = match a.field.get(&event) {
                        FieldValue::Missing => true,
                        FieldValue::Json(Value::Array(items)) => items.is_empty(),
                        _ => false,
                    };
                    if missing {
                        assign(&mut event, a);
                    }
                }
            }
            Change::Scale(factor) => event.metric = event.metric.map(|m| m * factor),
            Change::Tag(tags) => {
                for tag in tags {
                    if !event.tags.contains(tag) {
                        event.tags.push(tag.clone());
                    }
                }
            }
        }
        out.push(event);
    }
}
