//! Decoding and validation of one NDJSON line into an [`Event`].
//!
//! The decoder walks the JSON object once with borrowed keys, takes known
//! fields by type and keeps unknown ones. Every failure is a [`Rejection`]
//! with a bounded [`Reason`] (safe as a metric label) and a detail for logs
//! and HTTP replies.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{epoch_seconds, Event, MAX_STATE_BYTES, MILLIS_THRESHOLD};

pub(crate) mod scan;

/// The unit a listener reads `ttl` in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TtlUnit {
    /// Seconds, as DESIGN.md and godot's README say.
    #[default]
    S,
    /// Milliseconds, as godot's real client sends.
    Ms,
}

/// Per-listener decoding options.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecodeOptions {
    /// How to read `ttl`.
    pub ttl_unit: TtlUnit,
    /// Events stamped more than this many seconds ahead of `now` are
    /// rejected (`time_in_future`); none: any time is taken.
    pub max_future_secs: Option<f64>,
}

/// Why a line was rejected; a small fixed set so it can label a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The line is not JSON.
    InvalidJson,
    /// The line is JSON but not an object.
    NotAnObject,
    /// `host` is missing or empty.
    MissingHost,
    /// A known field has the wrong type.
    InvalidField,
    /// `state` is 255 bytes or longer.
    StateTooLong,
    /// A number is NaN, infinite or out of range.
    NonFiniteNumber,
    /// The line is longer than the listener's limit.
    LineTooLong,
    /// The request holds more events than the batch limit.
    BatchTooLarge,
    /// `time` lies further ahead of the receiving node's clock than allowed.
    TimeInFuture,
    /// A frame of another wire protocol (Graphite, Riemann, …) that does
    /// not parse.
    Malformed,
}

impl Reason {
    /// The metric label and log word for this reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidJson => "invalid_json",
            Reason::NotAnObject => "not_an_object",
            Reason::MissingHost => "missing_host",
            Reason::InvalidField => "invalid_field",
            Reason::StateTooLong => "state_too_long",
            Reason::NonFiniteNumber => "non_finite_number",
            Reason::LineTooLong => "line_too_long",
            Reason::BatchTooLarge => "batch_too_large",
            Reason::TimeInFuture => "time_in_future",
            Reason::Malformed => "malformed",
        }
    }
}

/// A rejected line: the reason and what exactly was wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {detail}", reason.as_str())]
pub struct Rejection {
    /// The bounded reason.
    pub reason: Reason,
    /// What was wrong, for a person.
    pub detail: String,
}

impl Rejection {
    /// A rejection with `reason` and `detail`.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}

/// Decodes and validates one line; `now` (epoch seconds) fills a missing `time`.
pub fn decode_line(line: &[u8], options: &DecodeOptions, now: f64) -> Result<Event, Rejection> {
    let mut typed = Typed::default();
    if decode_fast(line, &mut typed) {
        typed.finish(options, now)
    } else {
        decode_slow(line, options, now)
    }
}

/// A valid line, as ingest needs it.
// Returned and matched at once: boxing the event would cost an allocation
// on the path of every line that needs normalizing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Checked<'a> {
    /// The line needs no normalization (its `time` present and in seconds,
    /// its `ttl` in seconds): it decodes to the same event again without
    /// `now` or the options. Only its host was copied out.
    Unchanged {
        /// The event's host.
        host: Cow<'a, str>,
    },
    /// The event the line normalizes to.
    Normalized(Event),
}

/// Validates one line like [`decode_line`], building the event only when
/// the line cannot stand for it as is.
pub(crate) fn check_line<'a>(
    line: &'a [u8],
    options: &DecodeOptions,
    now: f64,
) -> Result<Checked<'a>, Rejection> {
    let mut typed = Typed::default();
    if !decode_fast(line, &mut typed) {
        return decode_slow(line, options, now).map(Checked::Normalized);
    }
    let unchanged = typed.time.is_some_and(|time| time <= MILLIS_THRESHOLD)
        && (typed.ttl.is_none() || options.ttl_unit == TtlUnit::S);
    if unchanged {
        typed.check()?;
        if let Some(time) = typed.time {
            check_future(time, options, now)?;
        }
        Ok(Checked::Unchanged {
            host: typed.host.unwrap_or_default(),
        })
    } else {
        typed.finish(options, now).map(Checked::Normalized)
    }
}

/// A `time` in seconds ([`epoch_seconds`]); one still beyond
/// [`MILLIS_THRESHOLD`] as nanoseconds (year 5138) is in no unit at all,
/// and is refused rather than read as some distant second (which would
/// also read back differently from the log).
fn seconds(time: f64) -> Result<f64, Rejection> {
    let seconds = epoch_seconds(time);
    if seconds > MILLIS_THRESHOLD {
        return Err(Rejection::new(
            Reason::InvalidField,
            format!("time {time} is not seconds, milliseconds, microseconds or nanoseconds since the epoch"),
        ));
    }
    Ok(seconds)
}

/// Refuses a `time` (seconds) further ahead of `now` than the options allow.
fn check_future(time: f64, options: &DecodeOptions, now: f64) -> Result<(), Rejection> {
    match options.max_future_secs {
        Some(max) if time > now + max => Err(Rejection::new(
            Reason::TimeInFuture,
            format!(
                "time {time} is {:.0} s ahead of this node's clock; at most {max} s is taken",
                time - now
            ),
        )),
        _ => Ok(()),
    }
}

/// The `Value`-based path: slower, but names exactly what is wrong.
pub(crate) fn decode_slow(
    line: &[u8],
    options: &DecodeOptions,
    now: f64,
) -> Result<Event, Rejection> {
    let mut de = serde_json::Deserializer::from_slice(line);
    let raw = match RawSeed
        .deserialize(&mut de)
        .and_then(|raw| de.end().map(|_| raw))
    {
        Ok(raw) => raw,
        Err(error) => return Err(classify(line, &error)),
    };
    let raw = raw.map_err(|kind| Rejection::new(Reason::NotAnObject, kind))?;
    raw.validate(options, now)
}

/// Validates an already parsed JSON value (an element of an HTTP JSON array).
pub fn decode_value(value: Value, options: &DecodeOptions, now: f64) -> Result<Event, Rejection> {
    let Value::Object(object) = value else {
        return Err(Rejection::new(
            Reason::NotAnObject,
            format!("expected an object, found {}", json_kind(&value)),
        ));
    };
    let mut raw = Raw::default();
    for (key, value) in object {
        raw.set(Cow::Owned(key), value);
    }
    raw.validate(options, now)
}

fn classify(line: &[u8], error: &serde_json::Error) -> Rejection {
    let message = error.to_string();
    // serde_json reports the column (1-based) where the bad token starts.
    let column = error.column().saturating_sub(1);
    let rest = line.get(column..).unwrap_or_default();
    let non_finite = ["NaN", "Infinity", "-Infinity"]
        .iter()
        .any(|token| rest.starts_with(token.as_bytes()));
    if non_finite || message.contains("number out of range") {
        Rejection::new(Reason::NonFiniteNumber, message)
    } else {
        Rejection::new(Reason::InvalidJson, message)
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Fields as they arrived, before type checks.
#[derive(Default)]
struct Raw {
    host: Option<Value>,
    service: Option<Value>,
    state: Option<Value>,
    time: Option<Value>,
    description: Option<Value>,
    tags: Option<Value>,
    meta: Option<Value>,
    metric: Option<Value>,
    ttl: Option<Value>,
    kind: Option<Value>,
    extra: Map<String, Value>,
}

impl Raw {
    fn set(&mut self, key: Cow<'_, str>, value: Value) {
        let slot = match key.as_ref() {
            "host" => &mut self.host,
            "service" => &mut self.service,
            "state" => &mut self.state,
            "time" => &mut self.time,
            "description" => &mut self.description,
            "tags" => &mut self.tags,
            "meta" => &mut self.meta,
            "metric" => &mut self.metric,
            "ttl" => &mut self.ttl,
            "type" => &mut self.kind,
            _ => {
                self.extra.insert(key.into_owned(), value);
                return;
            }
        };
        *slot = Some(value);
    }

    /// Checks each known field's JSON type, then the event's rules.
    fn validate(self, options: &DecodeOptions, now: f64) -> Result<Event, Rejection> {
        let host = match self.host {
            None | Some(Value::Null) => None,
            Some(Value::String(host)) => Some(host),
            Some(other) => return Err(wrong_type("host", "a string", &other)),
        };
        let tags = match self.tags {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(tag) => Ok(tag),
                    other => Err(wrong_type("tags", "a list of strings", &other)),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(wrong_type("tags", "a list of strings", &other)),
        };
        let meta = match self.meta {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(meta)) => meta,
            Some(other) => return Err(wrong_type("meta", "an object", &other)),
        };
        let owned = |text: Option<String>| text.map(Cow::Owned);
        let mut typed = Typed {
            host: owned(host),
            service: owned(string_field("service", self.service)?),
            state: owned(string_field("state", self.state)?),
            time: number_field("time", self.time)?,
            description: owned(string_field("description", self.description)?),
            tags: tags.into_iter().map(Cow::Owned).collect(),
            meta,
            metric: number_field("metric", self.metric)?,
            ttl: number_field("ttl", self.ttl)?,
            kind: owned(string_field("type", self.kind)?),
            extra: self.extra,
        };
        typed.finish(options, now)
    }
}

/// Known fields with their JSON types checked, before the event's rules.
/// Strings are borrowed from the line where they have no escapes, so
/// checking a line allocates nothing until an event is built from it.
#[derive(Default)]
pub(crate) struct Typed<'de> {
    host: Option<Cow<'de, str>>,
    service: Option<Cow<'de, str>>,
    state: Option<Cow<'de, str>>,
    time: Option<f64>,
    description: Option<Cow<'de, str>>,
    tags: Vec<Cow<'de, str>>,
    meta: Map<String, Value>,
    metric: Option<f64>,
    ttl: Option<f64>,
    kind: Option<Cow<'de, str>>,
    extra: Map<String, Value>,
}

impl Typed<'_> {
    /// Applies the rules of §1 that can reject: host required, state length.
    fn check(&self) -> Result<(), Rejection> {
        match self.host.as_deref() {
            Some("") => return Err(Rejection::new(Reason::MissingHost, "host is empty")),
            Some(_) => {}
            None => return Err(Rejection::new(Reason::MissingHost, "host is missing")),
        }
        if let Some(state) = &self.state {
            if state.len() >= MAX_STATE_BYTES {
                let detail = format!(
                    "state is {} bytes, the limit is {}",
                    state.len(),
                    MAX_STATE_BYTES - 1
                );
                return Err(Rejection::new(Reason::StateTooLong, detail));
            }
        }
        Ok(())
    }

    /// Checks the rules, normalizes time and ttl units and builds the
    /// event, taking the fields out (`self` is a caller's buffer: moving
    /// the whole struct costs more than the fields).
    pub(crate) fn finish(&mut self, options: &DecodeOptions, now: f64) -> Result<Event, Rejection> {
        self.check()?;
        let owned = |text: &mut Option<Cow<'_, str>>| text.take().map(Cow::into_owned);
        let time = match self.time {
            None => now,
            Some(time) => seconds(time)?,
        };
        check_future(time, options, now)?;
        let ttl = self.ttl.map(|ttl| match options.ttl_unit {
            TtlUnit::S => ttl,
            TtlUnit::Ms => ttl / 1000.0,
        });
        Ok(Event {
            host: owned(&mut self.host).unwrap_or_default(),
            service: owned(&mut self.service),
            state: owned(&mut self.state),
            time,
            description: owned(&mut self.description),
            tags: self.tags.drain(..).map(Cow::into_owned).collect(),
            meta: std::mem::take(&mut self.meta),
            metric: self.metric,
            ttl,
            kind: owned(&mut self.kind),
            extra: std::mem::take(&mut self.extra),
        })
    }
}

/// The fast path: reads known fields straight into their types. Any type
/// error makes it give up, and the caller takes the slow path, which
/// finds the precise reason.
struct TypedVisitor;

impl<'de> Visitor<'de> for TypedVisitor {
    type Value = Typed<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Typed<'de>, A::Error> {
        let text = |value: Option<Text<'de>>| value.map(|Text(text)| text);
        let mut typed = Typed::default();
        while let Some(Text(key)) = access.next_key::<Text<'de>>()? {
            match key.as_ref() {
                "host" => typed.host = text(access.next_value()?),
                "service" => typed.service = text(access.next_value()?),
                "state" => typed.state = text(access.next_value()?),
                "time" => typed.time = access.next_value()?,
                "description" => typed.description = text(access.next_value()?),
                "tags" => {
                    typed.tags = access
                        .next_value::<Option<Vec<Text<'de>>>>()?
                        .unwrap_or_default()
                        .into_iter()
                        .map(|Text(tag)| tag)
                        .collect()
                }
                "meta" => {
                    typed.meta = access
                        .next_value::<Option<Map<String, Value>>>()?
                        .unwrap_or_default()
                }
                "metric" => typed.metric = access.next_value()?,
                "ttl" => typed.ttl = access.next_value()?,
                "type" => typed.kind = text(access.next_value()?),
                _ => {
                    let value = access.next_value()?;
                    typed.extra.insert(key.into_owned(), value);
                }
            }
        }
        Ok(typed)
    }
}

/// A JSON string (key or value), borrowed from the input when it has no
/// escapes (serde's own `Cow<str>` always allocates).
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Borrowed(text)))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Owned(text.to_owned())))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Owned(text)))
    }
}

/// The fast paths into `typed` (a fresh one): the scanner for the common
/// shape, else serde's visitor; `false` if neither took the line.
fn decode_fast<'a>(line: &'a [u8], typed: &mut Typed<'a>) -> bool {
    if scan::scan(line, typed).is_some() {
        return true;
    }
    match decode_visited(line) {
        Some(visited) => {
            *typed = visited;
            true
        }
        None => false,
    }
}

pub(crate) fn decode_visited(line: &[u8]) -> Option<Typed<'_>> {
    let mut de = serde_json::Deserializer::from_slice(line);
    let typed = de.deserialize_map(TypedVisitor).ok()?;
    de.end().ok()?;
    Some(typed)
}

fn wrong_type(field: &str, expected: &str, found: &Value) -> Rejection {
    Rejection::new(
        Reason::InvalidField,
        format!("{field} must be {expected}, found {}", json_kind(found)),
    )
}

fn string_field(field: &str, value: Option<Value>) -> Result<Option<String>, Rejection> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(wrong_type(field, "a string", &other)),
    }
}

fn number_field(field: &str, value: Option<Value>) -> Result<Option<f64>, Rejection> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(number)) => match number.as_f64() {
            Some(x) if x.is_finite() => Ok(Some(x)),
            _ => Err(Rejection::new(
                Reason::NonFiniteNumber,
                format!("{field} is not a finite number"),
            )),
        },
        Some(other) => Err(wrong_type(field, "a number", &other)),
    }
}

/// Reads one JSON value: an object becomes `Ok(Raw)`, anything else
/// `Err(kind)` (kept apart from syntax errors, which serde reports).
struct RawSeed;

impl<'de> DeserializeSeed<'de> for RawSeed {
    type Value = Result<Raw, String>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl RawVisitor {
    fn other<E>(kind: &str) -> Result<Result<Raw, String>, E> {
        Ok(Err(format!("expected an object, found {kind}")))
    }
}

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Result<Raw, String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut raw = Raw::default();
        while let Some(Text(key)) = access.next_key::<Text<'de>>()? {
            let value = access.next_value::<Value>()?;
            raw.set(key, value);
        }
        Ok(Ok(raw))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Self::other("a boolean")
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Self::other("a number")
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Self::other("a number")
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Self::other("a number")
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Self::other("a string")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Self::other("null")
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Self::other("an array")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(line: &str) -> Result<Event, Rejection> {
        decode_line(line.as_bytes(), &DecodeOptions::default(), 1000.0)
    }

    fn reason(line: &str) -> Reason {
        decode(line).unwrap_err().reason
    }

    #[test]
    fn accepts_a_minimal_event_and_fills_time() {
        let event = decode(r#"{"host":"a"}"#).unwrap();
        assert_eq!(event.host, "a");
        assert_eq!(event.time, 1000.0);
    }

    #[test]
    fn reads_large_times_as_milli_micro_or_nanoseconds() {
        for time in [
            "1732280000.5",
            "1732280000500",
            "1732280000500000",
            "1732280000500000000",
        ] {
            let event = decode(&format!(r#"{{"host":"a","time":{time}}}"#)).unwrap();
            assert_eq!(event.time, 1732280000.5, "{time}");
        }
    }

    #[test]
    fn times_too_far_ahead_are_rejected_in_every_unit() {
        let now = 1_732_280_000.0;
        let guarded = DecodeOptions {
            max_future_secs: Some(300.0),
            ..DecodeOptions::default()
        };
        let check = |time: &str| {
            decode_line(
                format!(r#"{{"host":"a","time":{time}}}"#).as_bytes(),
                &guarded,
                now,
            )
        };
        // Within the bound, in seconds and milliseconds: taken.
        assert!(check("1732280299").is_ok());
        assert!(check("1732280299000").is_ok());
        // A year ahead, as seconds or microseconds: refused, saying so.
        for time in ["1763816000", "1763816000000000"] {
            let rejection = check(time).unwrap_err();
            assert_eq!(rejection.reason, Reason::TimeInFuture, "{time}");
            assert!(
                rejection.detail.contains("ahead of this node's clock"),
                "{rejection}"
            );
        }
        // The fast path (no normalizing) and the array path agree.
        assert!(check_line(br#"{"host":"a","time":1763816000}"#, &guarded, now).is_err());
        let value = serde_json::json!({"host": "a", "time": 1763816000});
        assert_eq!(
            decode_value(value, &guarded, now).unwrap_err().reason,
            Reason::TimeInFuture
        );
    }

    #[test]
    fn ttl_unit_is_per_listener() {
        let ms = DecodeOptions {
            ttl_unit: TtlUnit::Ms,
            ..DecodeOptions::default()
        };
        let event = decode_line(br#"{"host":"a","ttl":15000}"#, &ms, 0.0).unwrap();
        assert_eq!(event.ttl, Some(15.0));
        assert_eq!(decode(r#"{"host":"a","ttl":15}"#).unwrap().ttl, Some(15.0));
    }

    #[test]
    fn rejects_each_rule_with_its_own_reason() {
        assert_eq!(reason(r#"{"host":"a""#), Reason::InvalidJson);
        assert_eq!(reason("hello"), Reason::InvalidJson);
        assert_eq!(reason(r#"{"host":"a"} trailing"#), Reason::InvalidJson);
        assert_eq!(reason("[1,2]"), Reason::NotAnObject);
        assert_eq!(reason("42"), Reason::NotAnObject);
        assert_eq!(reason(r#"{"service":"x"}"#), Reason::MissingHost);
        assert_eq!(reason(r#"{"host":""}"#), Reason::MissingHost);
        assert_eq!(reason(r#"{"host":7}"#), Reason::InvalidField);
        assert_eq!(reason(r#"{"host":"a","tags":"x"}"#), Reason::InvalidField);
        assert_eq!(reason(r#"{"host":"a","tags":[1]}"#), Reason::InvalidField);
        assert_eq!(reason(r#"{"host":"a","meta":[]}"#), Reason::InvalidField);
        assert_eq!(reason(r#"{"host":"a","metric":"7"}"#), Reason::InvalidField);
        assert_eq!(
            reason(r#"{"host":"a","metric":NaN}"#),
            Reason::NonFiniteNumber
        );
        assert_eq!(
            reason(r#"{"host":"a","metric":-Infinity}"#),
            Reason::NonFiniteNumber
        );
        assert_eq!(
            reason(r#"{"host":"a","metric":1e400}"#),
            Reason::NonFiniteNumber
        );
        let long_state = format!(r#"{{"host":"a","state":"{}"}}"#, "s".repeat(255));
        assert_eq!(reason(&long_state), Reason::StateTooLong);
        let ok_state = format!(r#"{{"host":"a","state":"{}"}}"#, "s".repeat(254));
        assert!(decode(&ok_state).is_ok());
    }

    #[test]
    fn the_fast_path_agrees_with_the_exact_one() {
        let options = DecodeOptions {
            ttl_unit: TtlUnit::Ms,
            ..DecodeOptions::default()
        };
        let lines = [
            r#"{"host":"a","service":"s","state":"ok","time":1732280000500,"description":"d","tags":["x"],"meta":{"k":[1]},"metric":-0.5,"ttl":15000,"type":"t","extra":{"n":null}}"#,
            r#"{"host":"a","metric":null,"tags":null,"meta":null,"host":"b"}"#,
            r#"{"host":""}"#,
            r#"{"service":"x"}"#,
            r#"{"host":"a","tags":[1]}"#,
            r#"{"host":"a","metric":"1"}"#,
            r#"{"host":"a","metric":1e400}"#,
            r#"{"host":"a"} x"#,
            r#"[1]"#,
        ];
        for line in lines {
            let mut typed = Typed::default();
            let fast =
                decode_fast(line.as_bytes(), &mut typed).then(|| typed.finish(&options, 7.0));
            let slow = decode_slow(line.as_bytes(), &options, 7.0);
            if let Some(fast) = fast {
                assert_eq!(fast, slow, "{line}");
            }
            assert_eq!(decode_line(line.as_bytes(), &options, 7.0), slow, "{line}");
        }
    }

    #[test]
    fn null_optional_fields_are_absent() {
        let event = decode(r#"{"host":"a","metric":null,"tags":null}"#).unwrap();
        assert_eq!(event.metric, None);
        assert!(event.tags.is_empty());
    }

    #[test]
    fn decode_value_applies_the_same_rules() {
        let options = DecodeOptions::default();
        let ok = decode_value(serde_json::json!({"host":"a","x":1}), &options, 5.0).unwrap();
        assert_eq!((ok.time, ok.extra["x"].clone()), (5.0, Value::from(1)));
        let bad = decode_value(serde_json::json!("a"), &options, 5.0).unwrap_err();
        assert_eq!(bad.reason, Reason::NotAnObject);
    }
}
