//! What the topics carry: [`Entry`] on `weir.events`, [`ResultRecord`] on
//! `weir.results`, and the deterministic [`ResultId`] of every result.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::decode::{scan, Typed};
use crate::{check_line, decode_line, Checked, DecodeOptions, Event, Rejection};

/// Prefix of a tick record's value. An event always serializes `host`
/// first, so the control records can never be confused with one.
const TICK_PREFIX: &[u8] = b"{\"tick\":";
/// Prefix of a hand-off marker's value.
const HANDOFF_PREFIX: &[u8] = b"{\"handoff\":";
/// Prefix of a moved-state record's value.
const MOVED_PREFIX: &[u8] = b"{\"moved\":";
/// Prefix of a decommission record's value.
const DECOMMISSION_PREFIX: &[u8] = b"{\"decommission\":";

/// Whether an ingested line looks like a control record (a tick, a
/// hand-off, moved state): such a line is stored re-encoded, as an event,
/// so a client can never inject one.
fn looks_like_control(line: &[u8]) -> bool {
    [
        TICK_PREFIX,
        HANDOFF_PREFIX,
        MOVED_PREFIX,
        DECOMMISSION_PREFIX,
    ]
    .iter()
    .any(|prefix| line.starts_with(prefix))
}

/// One record of `weir.events`.
#[derive(Debug, Clone, PartialEq)]
// Entries live only while one record is processed and ticks are rare:
// boxing the event would cost an allocation per event for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Entry {
    /// A validated event.
    Event(Event),
    /// The router's once-a-second clock record (epoch seconds), which moves
    /// event time forward in a partition with no events.
    Tick(f64),
    /// The router hands an application over to another partition: the
    /// worker moves the state kept for its hosts there.
    Handoff(Handoff),
    /// State of an application's hosts, moved here from another partition.
    Moved(Moved),
    /// A host removed from the registry: its state is dropped, once.
    Decommission(Decommission),
}

/// A host taken out of the registry on purpose: the reactors drop what
/// they keep for it and say so once, instead of expiring it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decommission {
    /// The host.
    pub host: String,
}

/// An application leaving its partition (`weir registry move`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handoff {
    /// The move's id: the same in every record of one move.
    pub id: String,
    /// The application.
    pub uid: String,
    /// Its hosts: the state kept under these keys moves.
    pub hosts: Vec<String>,
    /// The partition it moves to.
    pub to: u32,
}

/// The state of a moving application's hosts, per reactor
/// (`name@version`), as the old partition's stages gave it up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Moved {
    /// The move's id ([`Handoff::id`]).
    pub id: String,
    /// The application.
    pub uid: String,
    /// The partition it left.
    pub from: u32,
    /// Reactor identity → the state its stages gave up.
    pub reactors: serde_json::Map<String, Value>,
}

/// The value of an application's placement record on `weir.registry`
/// (keyed by its uid).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// The partition its events go to.
    pub partition: u32,
    /// Set by a seed or a move: never forgotten when idle.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pinned: bool,
    /// A move under way: events of the application wait in the routers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving: Option<Moving>,
    /// The id of the move this record completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved: Option<String>,
}

/// A move under way ([`Placement::moving`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Moving {
    /// The move's id.
    pub id: String,
    /// The partition it goes to.
    pub to: u32,
}

impl Handoff {
    /// The registry record (key, value) that completes this move: the
    /// application placed on [`Handoff::to`], its events released.
    pub fn completion(&self) -> (Vec<u8>, Vec<u8>) {
        let placement = Placement {
            partition: self.to,
            pinned: true,
            moving: None,
            moved: Some(self.id.clone()),
        };
        let value = serde_json::to_vec(&placement).unwrap_or_default();
        (self.uid.clone().into_bytes(), value)
    }
}

/// `{"<name>":<json of value>}`.
fn wrapped<T: Serialize>(name: &str, value: &T) -> Vec<u8> {
    let mut out = format!("{{\"{name}\":").into_bytes();
    serde_json::to_writer(&mut out, value).unwrap_or_default();
    out.push(b'}');
    out
}

/// Decodes the JSON value after a control record's prefix (`rest`).
fn unwrapped<T: serde::de::DeserializeOwned>(rest: &[u8], what: &str) -> Result<T, Rejection> {
    let inner = rest.strip_suffix(b"}").unwrap_or(rest);
    serde_json::from_slice(inner)
        .map_err(|e| Rejection::new(crate::Reason::InvalidJson, format!("malformed {what}: {e}")))
}

impl Entry {
    /// Encodes the entry as a record value (an event's value is its JSON).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Entry::Event(event) => event.to_json(),
            Entry::Tick(time) => format!("{{\"tick\":{time}}}").into_bytes(),
            Entry::Handoff(handoff) => wrapped("handoff", handoff),
            Entry::Moved(moved) => wrapped("moved", moved),
            Entry::Decommission(decommission) => wrapped("decommission", decommission),
        }
    }

    /// Validates an ingested line into its event's host and its record
    /// value: the line itself when it reads back as the same event
    /// (nothing to normalize, and not mistakable for a tick), so that it is
    /// neither built into an event nor encoded again; the event's JSON
    /// otherwise.
    pub fn from_line<'a>(
        line: &'a [u8],
        options: &DecodeOptions,
        now: f64,
    ) -> Result<(Cow<'a, str>, Cow<'a, [u8]>), Rejection> {
        let checked = if looks_like_control(line) {
            Checked::Normalized(decode_line(line, options, now)?)
        } else {
            check_line(line, options, now)?
        };
        Ok(match checked {
            Checked::Unchanged { host } => (host, Cow::Borrowed(line)),
            Checked::Normalized(event) => {
                let value = event.to_json();
                (Cow::Owned(event.host), Cow::Owned(value))
            }
        })
    }

    /// Decodes a record value written by [`Entry::encode`] or [`Entry::from_line`].
    pub fn decode(value: &[u8]) -> Result<Entry, Rejection> {
        if let Some(rest) = value.strip_prefix(TICK_PREFIX) {
            let number = rest.strip_suffix(b"}").unwrap_or(rest);
            return std::str::from_utf8(number)
                .ok()
                .and_then(|text| text.parse::<f64>().ok())
                .map(Entry::Tick)
                .ok_or_else(|| {
                    Rejection::new(crate::Reason::InvalidJson, "malformed tick record")
                });
        }
        if let Some(rest) = value.strip_prefix(HANDOFF_PREFIX) {
            return unwrapped(rest, "hand-off record").map(Entry::Handoff);
        }
        if let Some(rest) = value.strip_prefix(MOVED_PREFIX) {
            return unwrapped(rest, "moved-state record").map(Entry::Moved);
        }
        if let Some(rest) = value.strip_prefix(DECOMMISSION_PREFIX) {
            return unwrapped(rest, "decommission record").map(Entry::Decommission);
        }
        decode_line(value, &DecodeOptions::default(), 0.0).map(Entry::Event)
    }
}

/// The deterministic identity of a result: which reactor version made it
/// from which input record, and its place among that record's outputs.
/// Re-processing the same input yields the same ids, so sinks drop repeats.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResultId {
    /// The reactor's name (shared: every result of a reactor carries it).
    pub reactor: Arc<str>,
    /// Hash of the reactor's pipeline text (16 hex digits).
    pub version: Arc<str>,
    /// Input partition of `weir.events`.
    pub partition: u32,
    /// Input offset whose processing produced the result.
    pub offset: u64,
    /// Position among the results of that input record.
    pub seq: u32,
}

impl fmt::Display for ResultId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}:{}:{}:{}",
            self.reactor, self.version, self.partition, self.offset, self.seq
        )
    }
}

/// A string that is not a [`ResultId`].
#[derive(Debug, thiserror::Error)]
#[error("malformed result id {0:?}")]
pub struct BadResultId(String);

impl ResultId {
    /// Splits an id's text into its series, `REACTOR@VERSION:PARTITION`
    /// (the results of one reactor version from one input partition, in
    /// order), and its place in that series: (input offset, sequence).
    /// `None` for text that is not an id.
    pub fn split(text: &str) -> Option<(&str, u64, u32)> {
        // From the right: a reactor name may itself contain '@' or ':'.
        let (rest, seq) = text.rsplit_once(':')?;
        let (series, offset) = rest.rsplit_once(':')?;
        let (name, partition) = series.rsplit_once(':')?;
        name.rsplit_once('@')?;
        partition.parse::<u32>().ok()?;
        Some((series, offset.parse().ok()?, seq.parse().ok()?))
    }
}

impl FromStr for ResultId {
    type Err = BadResultId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadResultId(text.to_owned());
        let (series, offset, seq) = ResultId::split(text).ok_or_else(bad)?;
        let (name, partition) = series.rsplit_once(':').ok_or_else(bad)?;
        let (reactor, version) = name.rsplit_once('@').ok_or_else(bad)?;
        Ok(ResultId {
            reactor: reactor.into(),
            version: version.into(),
            partition: partition.parse().map_err(|_| bad())?,
            offset,
            seq,
        })
    }
}

/// Keys a result record sets itself; an event's unknown fields of the same
/// name are left out of the record.
pub const RESULT_KEYS: &[&str] = &["id", "reactor", "notify", "forward"];

/// One record of `weir.results`: the emitted event, its reactor and id,
/// and for a notification the channel and its options.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultRecord {
    /// Deterministic id.
    pub id: ResultId,
    /// `{"channel": "log" | "email" | "webhook", ...options}` for a notification.
    pub notify: Option<Value>,
    /// `{"topic": NAME}` or `{"tcp": "HOST:PORT"}` for a forwarded result.
    pub forward: Option<Value>,
    /// The emitted event.
    pub event: Event,
}

impl ResultRecord {
    /// Encodes the record as one JSON line (no newline).
    pub fn encode(&self) -> Vec<u8> {
        // Most records are shorter: one allocation, no regrowth.
        let mut bytes = Vec::with_capacity(256);
        if !self.encode_plain(&mut bytes) {
            bytes.clear();
            serde_json::to_writer(&mut bytes, self).unwrap_or_default();
        }
        bytes
    }

    /// Writes the common shape — no `notify`, `forward`, `meta` or other
    /// fields, no string that needs escaping — byte for byte as the
    /// serializer does, without its per-byte escaping; false (and `out`
    /// partly written) for any other record.
    fn encode_plain(&self, out: &mut Vec<u8>) -> bool {
        use std::io::Write;
        let event = &self.event;
        if self.notify.is_some()
            || self.forward.is_some()
            || !event.meta.is_empty()
            || !event.extra.is_empty()
        {
            return false;
        }
        out.extend_from_slice(b"{\"id\":\"");
        let id_at = out.len();
        let _ = write!(out, "{}", self.id);
        let mut plain = scan::needs_no_escape(&out[id_at..]);
        let mut string = |out: &mut Vec<u8>, text: &str| {
            plain &= scan::needs_no_escape(text.as_bytes());
            out.push(b'"');
            out.extend_from_slice(text.as_bytes());
            out.push(b'"');
        };
        let number = |out: &mut Vec<u8>, value: f64| {
            let _ = serde_json::to_writer(&mut *out, &value);
        };
        out.extend_from_slice(b"\",\"reactor\":");
        string(out, &self.id.reactor);
        out.extend_from_slice(b",\"host\":");
        string(out, &event.host);
        let texts = [
            (&b",\"service\":"[..], &event.service),
            (b",\"state\":", &event.state),
        ];
        for (key, value) in texts {
            if let Some(value) = value {
                out.extend_from_slice(key);
                string(out, value);
            }
        }
        out.extend_from_slice(b",\"time\":");
        number(out, event.time);
        if let Some(description) = &event.description {
            out.extend_from_slice(b",\"description\":");
            string(out, description);
        }
        if !event.tags.is_empty() {
            out.extend_from_slice(b",\"tags\":[");
            for (i, tag) in event.tags.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(out, tag);
            }
            out.push(b']');
        }
        for (key, value) in [
            (&b",\"metric\":"[..], event.metric),
            (b",\"ttl\":", event.ttl),
        ] {
            if let Some(value) = value {
                out.extend_from_slice(key);
                number(out, value);
            }
        }
        if let Some(kind) = &event.kind {
            out.extend_from_slice(b",\"type\":");
            string(out, kind);
        }
        out.push(b'}');
        plain
    }

    /// Decodes a record written by [`ResultRecord::encode`].
    pub fn decode(value: &[u8]) -> Result<ResultRecord, Rejection> {
        Self::decode_fast(value).unwrap_or_else(|| Self::decode_general(value))
    }

    /// Decodes any record through JSON values.
    fn decode_general(value: &[u8]) -> Result<ResultRecord, Rejection> {
        let mut object: serde_json::Map<String, Value> = serde_json::from_slice(value)
            .map_err(|e| Rejection::new(crate::Reason::InvalidJson, e.to_string()))?;
        let id = match object.remove("id") {
            Some(Value::String(id)) => id.parse().map_err(bad_id)?,
            _ => {
                return Err(Rejection::new(
                    crate::Reason::InvalidField,
                    "a result needs a string id",
                ))
            }
        };
        object.remove("reactor");
        let notify = object.remove("notify");
        let forward = object.remove("forward");
        let event = crate::decode_value(Value::Object(object), &DecodeOptions::default(), 0.0)?;
        Ok(ResultRecord {
            id,
            notify,
            forward,
            event,
        })
    }

    /// Decodes the common shape (a plain result as [`ResultRecord::encode`]
    /// writes it, with an event the line scanner reads) without building
    /// JSON values; `None` for anything else, which takes the general path.
    fn decode_fast(value: &[u8]) -> Option<Result<ResultRecord, Rejection>> {
        let text = std::str::from_utf8(value).ok()?;
        let (id, at) = scan::result_head(text)?;
        let mut typed = Typed::default();
        scan::scan_fields(text, at, &mut typed)?;
        Some(id.parse().map_err(bad_id).and_then(|id| {
            let event = typed.finish(&DecodeOptions::default(), 0.0)?;
            Ok(ResultRecord {
                id,
                notify: None,
                forward: None,
                event,
            })
        }))
    }

    /// Reads the start of an encoded record without parsing the rest.
    ///
    /// [`ResultRecord::encode`] writes `id`, `reactor`, then `notify` and
    /// `forward` when set, then the event: a record in that order tells
    /// from its head whether it has either. A record in any other order
    /// (not written by weir) may have both, and its id is read by a full
    /// parse. `None`: the record has no string id.
    pub fn peek(value: &[u8]) -> Option<ResultHead<'_>> {
        let head = std::str::from_utf8(value).ok().and_then(scan::result_head);
        if let Some((id, at)) = head {
            let rest = &value[at..];
            let may_notify = rest.starts_with(b",\"notify\":");
            return Some(ResultHead {
                id: Cow::Borrowed(id),
                may_notify,
                may_forward: may_notify || rest.starts_with(b",\"forward\":"),
            });
        }
        #[derive(Deserialize)]
        struct IdOnly<'a> {
            #[serde(borrow)]
            id: Cow<'a, str>,
        }
        let only: IdOnly = serde_json::from_slice(value).ok()?;
        Some(ResultHead {
            id: only.id,
            may_notify: true,
            may_forward: true,
        })
    }

    /// Reads only the `id` of an encoded record, skipping everything else.
    pub fn peek_id(value: &[u8]) -> Option<ResultId> {
        Self::peek(value)?.id.parse().ok()
    }
}

/// The start of an encoded [`ResultRecord`], from [`ResultRecord::peek`].
#[derive(Debug, PartialEq)]
pub struct ResultHead<'a> {
    /// The record's id, unparsed ([`ResultId::split`] reads it).
    pub id: Cow<'a, str>,
    /// False when the record certainly has no `notify`.
    pub may_notify: bool,
    /// False when the record certainly has no `forward`.
    pub may_forward: bool,
}

fn bad_id(error: BadResultId) -> Rejection {
    Rejection::new(crate::Reason::InvalidField, error.to_string())
}

impl Serialize for ResultRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("id", &format_args!("{}", self.id))?;
        map.serialize_entry("reactor", &*self.id.reactor)?;
        if let Some(notify) = &self.notify {
            map.serialize_entry("notify", notify)?;
        }
        if let Some(forward) = &self.forward {
            map.serialize_entry("forward", forward)?;
        }
        self.event.serialize_fields(&mut map, RESULT_KEYS)?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let tick = Entry::Tick(1732280000.25);
        assert_eq!(Entry::decode(&tick.encode()).unwrap(), tick);
        let event = Entry::Event(Event::new("h", 3.0));
        assert_eq!(Entry::decode(&event.encode()).unwrap(), event);
        let handoff = Entry::Handoff(Handoff {
            id: "app#7".into(),
            uid: "app".into(),
            hosts: vec!["a".into(), "b".into()],
            to: 3,
        });
        assert_eq!(Entry::decode(&handoff.encode()).unwrap(), handoff);
        let mut reactors = serde_json::Map::new();
        reactors.insert("r@1".into(), serde_json::json!([{"moved": {"a": 1}}]));
        let moved = Entry::Moved(Moved {
            id: "app#7".into(),
            uid: "app".into(),
            from: 1,
            reactors,
        });
        assert_eq!(Entry::decode(&moved.encode()).unwrap(), moved);
        let gone = Entry::Decommission(Decommission {
            host: "db-9".into(),
        });
        assert_eq!(Entry::decode(&gone.encode()).unwrap(), gone);
    }

    #[test]
    fn an_ingested_line_shaped_like_a_control_record_is_stored_as_an_event() {
        let options = &DecodeOptions::default();
        for line in [
            &br#"{"handoff":{"id":"x","uid":"u","hosts":[],"to":0},"host":"h"}"#[..],
            br#"{"moved":{},"host":"h"}"#,
            br#"{"decommission":{"host":"x"},"host":"h"}"#,
            br#"{"tick":5,"host":"h"}"#,
        ] {
            let (host, value) = Entry::from_line(line, options, 0.0).unwrap();
            assert_eq!(host, "h");
            assert!(matches!(Entry::decode(&value).unwrap(), Entry::Event(_)));
        }
    }

    #[test]
    fn an_ingested_line_is_stored_as_is_only_when_it_reads_back_the_same() {
        let seconds = DecodeOptions::default();
        let millis = DecodeOptions {
            ttl_unit: crate::TtlUnit::Ms,
            ..DecodeOptions::default()
        };
        let cases: [(&str, &DecodeOptions, bool); 7] = [
            (
                r#"{"service":"s", "host":"a","time":10.5,"ttl":60,"x":null}"#,
                &seconds,
                true,
            ),
            (r#"{"host":"a","time":10.5,"ttl":60000}"#, &millis, false),
            (r#"{"host":"a","time":10.5}"#, &millis, true),
            (r#"{"host":"a"}"#, &seconds, false),
            (r#"{"host":"a","time":1732280000500}"#, &seconds, false),
            (r#"{"tick":5,"host":"a","time":10.5}"#, &seconds, false),
            (r#"{"host":"a","host":"b","time":1}"#, &seconds, true),
        ];
        for (line, options, kept) in cases {
            let (host, value) = Entry::from_line(line.as_bytes(), options, 99.0).unwrap();
            assert_eq!(matches!(value, Cow::Borrowed(_)), kept, "{line}");
            assert_eq!(value == line.as_bytes(), kept, "{line}");
            let event = decode_line(line.as_bytes(), options, 99.0).unwrap();
            assert_eq!(host, event.host, "{line}");
            assert_eq!(
                Entry::decode(&value).unwrap(),
                Entry::Event(event),
                "{line}"
            );
        }
        let bad = Entry::from_line(br#"{"host":7}"#, &seconds, 0.0).unwrap_err();
        assert_eq!(bad.reason, crate::Reason::InvalidField);
    }

    #[test]
    fn result_ids_parse_back_even_with_separators_in_names() {
        let id = ResultId {
            reactor: "a:b@c".into(),
            version: "00ff".into(),
            partition: 3,
            offset: 99,
            seq: 2,
        };
        assert_eq!(id.to_string().parse::<ResultId>().unwrap(), id);
        assert!("nonsense".parse::<ResultId>().is_err());
    }

    #[test]
    fn results_decode_back_to_what_was_encoded() {
        let mut event = Event::new("web-1", 1732280000.5);
        event.service = Some("cpu".into());
        event.metric = Some(0.75);
        event.tags = vec!["prod".into()];
        let record = ResultRecord {
            id: "cpu@ab12:3:99:1".parse().unwrap(),
            notify: Some(serde_json::json!({"channel": "log"})),
            forward: None,
            event,
        };
        assert_eq!(ResultRecord::decode(&record.encode()).unwrap(), record);
        let error = ResultRecord::decode(br#"{"host":"h","time":1}"#).unwrap_err();
        assert!(error.detail.contains("id"), "{error:?}");
    }

    #[test]
    fn a_results_own_keys_win_over_event_extras() {
        let mut event = Event::new("h", 1.0);
        event
            .extra
            .insert("id".into(), serde_json::json!("spoofed"));
        event.extra.insert("zone".into(), serde_json::json!("eu"));
        let record = ResultRecord {
            id: "r@1:0:5:0".parse().unwrap(),
            notify: None,
            forward: None,
            event,
        };
        let text = String::from_utf8(record.encode()).unwrap();
        assert_eq!(
            text,
            r#"{"id":"r@1:0:5:0","reactor":"r","host":"h","time":1.0,"zone":"eu"}"#
        );
    }

    /// Records that take the fast path, and ones that do not.
    fn sample_records() -> Vec<ResultRecord> {
        let mut plain = Event::new("web-1", 0.25);
        plain.service = Some("cpu".into());
        plain.state = Some("ok".into());
        plain.tags = vec!["a".into(), "b".into()];
        plain.ttl = Some(60.0);
        let mut escaped = plain.clone();
        escaped.description = Some("said \"hi\"\n".into());
        let mut with_meta = plain.clone();
        with_meta.meta.insert("k".into(), serde_json::json!(1));
        let mut no_metric = Event::new("h", 1.0);
        no_metric.metric = None;
        [plain, escaped, with_meta, no_metric]
            .into_iter()
            .enumerate()
            .flat_map(|(i, event)| {
                let id: ResultId = format!("r:x@1:0:{i}:0").parse().unwrap();
                [
                    (None, None),
                    (Some(serde_json::json!({"channel":"log"})), None),
                    (None, Some(serde_json::json!({"topic":"t"}))),
                ]
                .map(|(notify, forward)| ResultRecord {
                    id: id.clone(),
                    notify,
                    forward,
                    event: event.clone(),
                })
            })
            .collect()
    }

    #[test]
    fn the_fast_decode_agrees_with_the_general_one() {
        let mut fast = 0;
        for record in sample_records() {
            let bytes = record.encode();
            if let Some(decoded) = ResultRecord::decode_fast(&bytes) {
                fast += 1;
                assert_eq!(decoded.unwrap(), record);
            }
            assert_eq!(ResultRecord::decode_general(&bytes).unwrap(), record);
            assert_eq!(ResultRecord::decode(&bytes).unwrap(), record);
        }
        // The plain records without notify or forward, meta or escapes.
        assert_eq!(fast, 2);
        for bad in [
            &br#"{"id":"r@1:0:5:0","reactor":"r",}"#[..],
            br#"{"id":"r@1:0:5:0","reactor":"r","host":"h",}"#,
            br#"{"id":"r@1:0:5:0","reactor":"r","host":"h"} x"#,
            br#"{"id":"r@1:0:5:0","reactor":"r"}"#,
            br#"{"id":"nonsense","reactor":"r","host":"h","time":1}"#,
            br#"{"id":"r@1:0:5:0","reactor":"r","host":"","time":1}"#,
        ] {
            let general = ResultRecord::decode_general(bad).map_err(|e| e.to_string());
            let fast = ResultRecord::decode_fast(bad).map(|r| r.map_err(|e| e.to_string()));
            assert!(general.is_err(), "{}", String::from_utf8_lossy(bad));
            assert!(
                fast.is_none_or(|fast| fast == general),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn the_plain_encoding_is_the_serializers_byte_for_byte() {
        let mut records = sample_records();
        let mut full = Event::new("web-1", 1_700_000_000.125);
        full.service = Some("cpu/user".into());
        full.state = Some("critical".into());
        full.description = Some("load is high".into());
        full.tags = vec!["a".into()];
        full.metric = Some(-0.0);
        full.ttl = Some(1e300);
        full.kind = Some("gauge".into());
        let mut bare = Event::new("h", 0.0);
        bare.metric = None;
        let mut control = full.clone();
        control.tags = vec!["tab\there".into()];
        let mut unicode = full.clone();
        unicode.host = "h\u{e9}\u{1f600}".into();
        for event in [full, bare, control, unicode] {
            for reactor in ["r", "quote\"d"] {
                records.push(ResultRecord {
                    id: ResultId {
                        reactor: reactor.into(),
                        version: "00ff".into(),
                        partition: 1,
                        offset: 2,
                        seq: 3,
                    },
                    notify: None,
                    forward: None,
                    event: event.clone(),
                });
            }
        }
        let mut plain = 0;
        for record in &records {
            let expected = serde_json::to_vec(record).unwrap();
            assert_eq!(
                String::from_utf8(record.encode()).unwrap(),
                String::from_utf8(expected.clone()).unwrap()
            );
            let mut out = Vec::new();
            if record.encode_plain(&mut out) {
                plain += 1;
                assert_eq!(out, expected);
            }
        }
        // The sample's two plain records, and full, bare and unicode with
        // a plain reactor name.
        assert_eq!(plain, 5);
    }

    #[test]
    fn peek_tells_from_the_head_what_a_record_cannot_carry() {
        for record in sample_records() {
            let bytes = record.encode();
            let head = ResultRecord::peek(&bytes).unwrap();
            assert_eq!(head.id, record.id.to_string());
            assert_eq!(head.may_notify, record.notify.is_some());
            assert!(head.may_forward >= record.forward.is_some());
        }
        // Another writer's order: anything may follow, the id still reads.
        let other = br#"{"host":"h","id":"r@1:0:5:0","forward":{"topic":"t"}}"#;
        let head = ResultRecord::peek(other).unwrap();
        assert_eq!(
            (head.id.as_ref(), head.may_notify, head.may_forward),
            ("r@1:0:5:0", true, true)
        );
        assert_eq!(ResultRecord::peek(br#"{"host":"h"}"#), None);
    }

    #[test]
    fn split_reads_an_ids_series_and_place() {
        assert_eq!(ResultId::split("a:b@v:3:17:2"), Some(("a:b@v:3", 17, 2)));
        for bad in ["a@v:x:1:2", "av:3:1:2", "a@v:3:1", "a@v:3:1:-2", ""] {
            assert_eq!(ResultId::split(bad), None, "{bad}");
            assert!(bad.parse::<ResultId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn peek_id_reads_the_id_of_an_encoded_record() {
        let record = ResultRecord {
            id: "r@1:0:5:0".parse().unwrap(),
            notify: Some(serde_json::json!({"channel":"log"})),
            forward: None,
            event: Event::new("h", 1.0),
        };
        let bytes = record.encode();
        assert!(String::from_utf8_lossy(&bytes)
            .starts_with(r#"{"id":"r@1:0:5:0","reactor":"r","notify""#));
        assert_eq!(ResultRecord::peek_id(&bytes), Some(record.id));
    }
}
