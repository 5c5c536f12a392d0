//! Event fields and compiled predicates (the `where` stage, sink filters).

use std::borrow::Cow;

use regex::Regex;
use serde_json::Value;
use weir_event::Event;

use crate::lang::{Literal, Op, ParseError, PredicateSpec};

/// A field of an event that predicates and `by` can read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Field {
    /// `host`
    Host,
    /// `service`
    Service,
    /// `state`
    State,
    /// `description`
    Description,
    /// `type`
    Type,
    /// `metric`
    Metric,
    /// `time`
    Time,
    /// `ttl`
    Ttl,
    /// `tags` (as a list)
    Tags,
    /// `meta.KEY`
    Meta(String),
}

/// A field's value in one event.
#[derive(Debug, PartialEq)]
pub enum FieldValue<'a> {
    /// Absent.
    Missing,
    /// A string field.
    Str(&'a str),
    /// A numeric field.
    Num(f64),
    /// A meta value or the tag list.
    Json(Value),
}

impl Field {
    /// Parses a field name; `column` locates errors.
    pub fn parse(name: &str, column: usize) -> Result<Field, ParseError> {
        Ok(match name {
            "host" => Field::Host,
            "service" => Field::Service,
            "state" => Field::State,
            "description" => Field::Description,
            "type" => Field::Type,
            "metric" => Field::Metric,
            "time" => Field::Time,
            "ttl" => Field::Ttl,
            "tags" => Field::Tags,
            _ => match name.strip_prefix("meta.") {
                Some(key) if !key.is_empty() => Field::Meta(key.to_owned()),
                _ => {
                    return Err(ParseError::new(
                        column,
                        format!(
                            "unknown field {name:?} (fields: host service state metric time ttl description type tags meta.KEY)"
                        ),
                    ))
                }
            },
        })
    }

    /// Reads the field from `event`.
    pub fn get<'a>(&self, event: &'a Event) -> FieldValue<'a> {
        let text =
            |s: &'a Option<String>| s.as_deref().map_or(FieldValue::Missing, FieldValue::Str);
        let num = |n: Option<f64>| n.map_or(FieldValue::Missing, FieldValue::Num);
        match self {
            Field::Host => FieldValue::Str(&event.host),
            Field::Service => text(&event.service),
            Field::State => text(&event.state),
            Field::Description => text(&event.description),
            Field::Type => text(&event.kind),
            Field::Metric => num(event.metric),
            Field::Time => FieldValue::Num(event.time),
            Field::Ttl => num(event.ttl),
            Field::Tags => {
                FieldValue::Json(event.tags.iter().map(|t| Value::from(t.as_str())).collect())
            }
            Field::Meta(key) => match event.meta.get(key) {
                None => FieldValue::Missing,
                Some(Value::String(s)) => FieldValue::Str(s),
                Some(Value::Number(n)) => n.as_f64().map_or(FieldValue::Missing, FieldValue::Num),
                Some(other) => FieldValue::Json(other.clone()),
            },
        }
    }

    /// The field as text for `by` keys; missing is the empty string.
    pub fn key<'a>(&self, event: &'a Event) -> Cow<'a, str> {
        match self.get(event) {
            FieldValue::Missing => Cow::Borrowed(""),
            FieldValue::Str(s) => Cow::Borrowed(s),
            FieldValue::Num(n) => Cow::Owned(n.to_string()),
            FieldValue::Json(v) => Cow::Owned(v.to_string()),
        }
    }
}

/// A compiled predicate.
#[derive(Debug, Clone)]
pub enum Predicate {
    /// `field = literal` (string or number)
    Equals(Field, Literal),
    /// numeric comparison
    Numeric(Field, Op, f64),
    /// glob or regex match on a string field
    Matches(Field, Regex),
    /// `field in [...]`
    In(Field, Vec<Literal>),
    /// `field exists`
    Exists(Field),
    /// `tagged any|all`
    Tagged {
        /// every tag (true) or at least one (false)
        all: bool,
        /// the tags
        tags: Vec<String>,
    },
    /// both
    And(Box<Predicate>, Box<Predicate>),
    /// either
    Or(Box<Predicate>, Box<Predicate>),
    /// negation
    Not(Box<Predicate>),
}

/// Translates a glob (`*` = any run of characters) into an anchored regex.
pub fn glob_regex(glob: &str) -> Regex {
    let pattern = glob
        .split('*')
        .map(regex::escape)
        .collect::<Vec<_>>()
        .join(".*");
    Regex::new(&format!("^{pattern}$")).expect("an escaped glob is a valid regex")
}

impl Predicate {
    /// Parses and compiles the text of a `where` (without the `where`),
    /// as a sink's filter or an API query gives it.
    pub fn parse(text: &str) -> Result<Predicate, ParseError> {
        let stages = crate::lang::parse(&format!("where {text}"))?;
        match stages.as_slice() {
            [stage] if stage.name == "where" => match &stage.predicate {
                Some(spec) => Predicate::compile(spec),
                None => Err(stage.error("needs a predicate")),
            },
            _ => Err(ParseError::new(0, "expected one predicate, without `|`")),
        }
    }

    /// Compiles a parsed predicate, checking fields and operand types.
    pub fn compile(spec: &PredicateSpec) -> Result<Predicate, ParseError> {
        Ok(match spec {
            PredicateSpec::Compare(name, op, literal, column) => {
                let field = Field::parse(name, *column)?;
                match (op, literal) {
                    (Op::Eq, _) => Predicate::Equals(field, literal.clone()),
                    (Op::Ne, _) => {
                        Predicate::Not(Box::new(Predicate::Equals(field, literal.clone())))
                    }
                    (Op::Glob, l) => {
                        let text = l.as_text().ok_or_else(|| {
                            ParseError::new(*column, format!("~ needs a string pattern, found {l}"))
                        })?;
                        Predicate::Matches(field, glob_regex(text))
                    }
                    (Op::Regex, l) => {
                        let text = l.as_text().ok_or_else(|| {
                            ParseError::new(
                                *column,
                                format!("=~ needs a string pattern, found {l}"),
                            )
                        })?;
                        let regex = Regex::new(text)
                            .map_err(|e| ParseError::new(*column, format!("bad regex: {e}")))?;
                        Predicate::Matches(field, regex)
                    }
                    (_, Literal::Number(n) | Literal::Duration(n)) => {
                        Predicate::Numeric(field, *op, *n)
                    }
                    (_, other) => {
                        return Err(ParseError::new(
                            *column,
                            format!("{name} {op:?} needs a number, found {other}"),
                        ))
                    }
                }
            }
            PredicateSpec::In(name, items, column) => {
                Predicate::In(Field::parse(name, *column)?, items.clone())
            }
            PredicateSpec::Exists(name, column) => Predicate::Exists(Field::parse(name, *column)?),
            PredicateSpec::Tagged(all, tags) => Predicate::Tagged {
                all: *all,
                tags: tags.clone(),
            },
            PredicateSpec::And(a, b) => {
                Predicate::And(Box::new(Self::compile(a)?), Box::new(Self::compile(b)?))
            }
            PredicateSpec::Or(a, b) => {
                Predicate::Or(Box::new(Self::compile(a)?), Box::new(Self::compile(b)?))
            }
            PredicateSpec::Not(a) => Predicate::Not(Box::new(Self::compile(a)?)),
        })
    }

    /// Whether `event` satisfies the predicate. A missing field satisfies
    /// no comparison (so `!=` on a missing field is true).
    pub fn matches(&self, event: &Event) -> bool {
        match self {
            Predicate::Equals(field, literal) => equals(&field.get(event), literal),
            Predicate::Numeric(field, op, bound) => match field.get(event) {
                FieldValue::Num(x) => match op {
                    Op::Lt => x < *bound,
                    Op::Le => x <= *bound,
                    Op::Gt => x > *bound,
                    Op::Ge => x >= *bound,
                    _ => false,
                },
                _ => false,
            },
            Predicate::Matches(field, regex) => match field.get(event) {
                FieldValue::Str(s) => regex.is_match(s),
                _ => false,
            },
            Predicate::In(field, items) => {
                let value = field.get(event);
                items.iter().any(|item| equals(&value, item))
            }
            Predicate::Exists(field) => field.get(event) != FieldValue::Missing,
            Predicate::Tagged { all, tags } => {
                let has = |t: &String| event.tags.contains(t);
                if *all {
                    tags.iter().all(has)
                } else {
                    tags.iter().any(has)
                }
            }
            Predicate::And(a, b) => a.matches(event) && b.matches(event),
            Predicate::Or(a, b) => a.matches(event) || b.matches(event),
            Predicate::Not(a) => !a.matches(event),
        }
    }
}

fn equals(value: &FieldValue, literal: &Literal) -> bool {
    match (value, literal) {
        (FieldValue::Str(s), l) => l.as_text() == Some(s),
        (FieldValue::Num(x), Literal::Number(n) | Literal::Duration(n)) => x == n,
        (FieldValue::Json(v), l) => *v == l.to_json(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lang::parse;

    fn matches(predicate: &str, event: &Event) -> bool {
        let stages = parse(&format!("where {predicate}")).unwrap();
        Predicate::compile(stages[0].predicate.as_ref().unwrap())
            .unwrap()
            .matches(event)
    }

    fn event() -> Event {
        let mut e = Event::new("web-1", 10.0);
        e.service = Some("app/health/heartbeat".into());
        e.metric = Some(42.0);
        e.tags = vec!["a".into(), "b".into()];
        e.meta.insert("region".into(), Value::from("eu"));
        e.meta.insert("load".into(), Value::from(0.5));
        e
    }

    #[test]
    fn comparisons() {
        let e = event();
        assert!(matches(r#"host = "web-1""#, &e));
        assert!(matches("host = web-1", &e));
        assert!(matches(r#"host != "web-2""#, &e));
        assert!(matches("metric > 41 and metric <= 42", &e));
        assert!(!matches("metric < 42", &e));
        assert!(matches(r#"service ~ "*/health/heartbeat""#, &e));
        assert!(!matches(r#"service ~ "*/health""#, &e));
        assert!(matches(r#"service =~ "^app/""#, &e));
        assert!(matches(r#"meta.region in ["us", "eu"]"#, &e));
        assert!(matches("meta.load >= 0.5", &e));
        assert!(matches("state != ok", &e), "missing field is not equal");
        assert!(!matches("state exists", &e));
        assert!(matches(r#"tagged "a""#, &e));
        assert!(matches(r#"tagged any ["z", "b"]"#, &e));
        assert!(!matches(r#"tagged all ["z", "b"]"#, &e));
        assert!(matches(r#"not (host = x or metric < 1)"#, &e));
    }

    #[test]
    fn compile_errors_name_the_problem() {
        let stages = parse("where hots = 1").unwrap();
        let err = Predicate::compile(stages[0].predicate.as_ref().unwrap()).unwrap_err();
        assert_eq!(err.column, 7);
        assert!(err.message.contains("unknown field \"hots\""));
        let stages = parse("where metric > high").unwrap();
        assert!(Predicate::compile(stages[0].predicate.as_ref().unwrap()).is_err());
    }
}
