//! `where PREDICATE`: passes the events that satisfy the predicate.

use weir_event::Event;

use crate::lang::{Arg, Literal, Op, ParseError, StageSpec};
use crate::predicate::{Field, Predicate};
use crate::stage::{Built, Options, Stage, StageDef};

/// The stages this file declares.
pub const STAGES: &[StageDef] = &[
    StageDef {
        name: "where",
        options: Options::Any,
        doc: "Passes the events that satisfy a predicate.",
        build: |spec, _| Built::one(Where::from_spec(spec)?),
    },
    StageDef {
        name: "tagged",
        options: Options::Only(&[]),
        doc: "Passes events with any (or all) of the tags (godot).",
        build: |spec, _| Built::one(Where::named(spec)?),
    },
    StageDef {
        name: "has-meta",
        options: Options::Only(&[]),
        doc: "Passes events whose meta has any (or all) of the keys (godot).",
        build: |spec, _| Built::one(Where::named(spec)?),
    },
    StageDef {
        name: "any-meta",
        options: Options::Only(&[]),
        doc: "Passes events whose meta has any of the keys (godot).",
        build: |spec, _| Built::one(Where::named(spec)?),
    },
    StageDef {
        name: "all-meta",
        options: Options::Only(&[]),
        doc: "Passes events whose meta has all of the keys (godot).",
        build: |spec, _| Built::one(Where::named(spec)?),
    },
    StageDef {
        name: "over-meta",
        options: Options::Only(&[]),
        doc: "Passes events whose meta.KEY is above N (godot).",
        build: |spec, _| Built::one(Where::named(spec)?),
    },
    StageDef {
        name: "under-meta",
        options: Options::Only(&[]),
        doc: "Passes events whose meta.KEY is below N (godot).",
        build: |spec, _| Built::one(Where::named(spec)?),
    },
];

/// Passes events matching a predicate.
pub struct Where {
    predicate: Predicate,
}

impl Where {
    /// Builds from `where …`.
    pub fn from_spec(spec: &StageSpec) -> Result<Where, ParseError> {
        let predicate = spec
            .predicate
            .as_ref()
            .ok_or_else(|| spec.error("needs a predicate"))?;
        Ok(Where {
            predicate: Predicate::compile(predicate)?,
        })
    }
}

impl Stage for Where {
    fn event(&mut self, event: Event, _now: f64, out: &mut Vec<Event>) {
        if self.predicate.matches(&event) {
            out.push(event);
        }
    }
}

/// The meta and tag filters of godot, as predicates:
///
/// - `has-meta [any|all] KEYS` (default any), `any-meta KEYS`, `all-meta KEYS`:
///   events whose `meta` has any (all) of the keys.
/// - `over-meta KEY N`, `under-meta KEY N`: `meta.KEY` strictly above (below) N.
/// - `tagged [any|all] TAGS` (default any; godot means any, Riemann all).
impl Where {
    /// Builds one of the named filters above.
    pub fn named(spec: &StageSpec) -> Result<Where, ParseError> {
        let predicate = match spec.name.as_str() {
            "over-meta" | "under-meta" => {
                let key = spec
                    .positional(0)
                    .and_then(Literal::as_text)
                    .ok_or_else(|| {
                        spec.error("needs a meta key and a number, e.g. over-meta load 0.9")
                    })?;
                let bound = spec.number("bound", Some(1))?.ok_or_else(|| {
                    spec.error("needs a meta key and a number, e.g. over-meta load 0.9")
                })?;
                let op = if spec.name == "over-meta" {
                    Op::Gt
                } else {
                    Op::Lt
                };
                Predicate::Numeric(Field::Meta(key.to_owned()), op, bound)
            }
            name => {
                let (all, items) = quantified(spec, name == "all-meta")?;
                if name == "tagged" {
                    Predicate::Tagged { all, tags: items }
                } else {
                    items
                        .into_iter()
                        .map(|key| Predicate::Exists(Field::Meta(key)))
                        .reduce(|a, b| {
                            if all {
                                Predicate::And(Box::new(a), Box::new(b))
                            } else {
                                Predicate::Or(Box::new(a), Box::new(b))
                            }
                        })
                        .ok_or_else(|| spec.error("needs at least one key"))?
                }
            }
        };
        Ok(Where { predicate })
    }
}

/// Reads `[any|all] ITEM…` (items may be lists); `all_default` when unquantified.
fn quantified(spec: &StageSpec, all_default: bool) -> Result<(bool, Vec<String>), ParseError> {
    let mut all = all_default;
    let mut items = Vec::new();
    for (i, arg) in spec.args.iter().enumerate() {
        let Arg::Positional(literal) = arg else {
            return Err(spec.error("takes names or lists of names"));
        };
        match literal {
            Literal::Word(w) if i == 0 && (w == "any" || w == "all") => all = w == "all",
            Literal::List(list) => {
                for item in list {
                    items.push(
                        item.as_text()
                            .ok_or_else(|| spec.error(format!("expected a name, found {item}")))?
                            .to_owned(),
                    );
                }
            }
            other => items.push(
                other
                    .as_text()
                    .ok_or_else(|| spec.error(format!("expected a name, found {other}")))?
                    .to_owned(),
            ),
        }
    }
    if items.is_empty() {
        return Err(spec.error("needs at least one name"));
    }
    Ok((all, items))
}
