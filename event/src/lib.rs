//! The weir event model: godot's wire format (§1 of DESIGN.md).
//!
//! - [`Event`] is one monitoring event. Known fields are typed; unknown
//!   fields are kept in [`Event::extra`] and written back out unchanged.
//! - [`decode_line`] turns one NDJSON line into an `Event` or a
//!   [`Rejection`] with one bounded [`Reason`] and a human-readable detail.
//! - [`Entry`] is what the `weir.events` topic carries: an event or a
//!   router tick that advances a partition's event-time clock.
//! - [`ResultRecord`] is what the `weir.results` topic carries.

mod decode;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod record;

use decode::{check_line, Checked};
pub use decode::{decode_line, decode_value, DecodeOptions, Reason, Rejection, TtlUnit};
pub use record::{
    Decommission, Entry, Handoff, Moved, Moving, Placement, ResultHead, ResultId, ResultRecord,
    RESULT_KEYS,
};

use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// Largest allowed `state`, in bytes (exclusive): "string, < 255 bytes".
pub const MAX_STATE_BYTES: usize = 255;

/// A `time` above this is not in seconds: seconds would put it past the
/// year 5000. godot's client sends milliseconds (`Date.now()`).
pub const MILLIS_THRESHOLD: f64 = 1e11;

/// A `time` in seconds since the epoch, from seconds, milliseconds,
/// microseconds or nanoseconds (told apart by magnitude: each unit's
/// present-day values are 1000 times the previous one's).
pub fn epoch_seconds(time: f64) -> f64 {
    if time > 1e17 {
        time / 1e9
    } else if time > 1e14 {
        time / 1e6
    } else if time > MILLIS_THRESHOLD {
        time / 1e3
    } else {
        time
    }
}

/// One monitoring event.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Event {
    /// Where the event comes from; required and non-empty.
    pub host: String,
    /// What it is about, e.g. `api/reqs` or `cpu`.
    pub service: Option<String>,
    /// A short state word such as `ok`, `warning`, `critical`, `expired`.
    pub state: Option<String>,
    /// Event time in unix epoch seconds (fractional).
    pub time: f64,
    /// Free text.
    pub description: Option<String>,
    /// Tags, in the order given.
    pub tags: Vec<String>,
    /// Free key → value map.
    pub meta: Map<String, Value>,
    /// The single numeric value of the event; always finite.
    pub metric: Option<f64>,
    /// Seconds this event is valid for.
    pub ttl: Option<f64>,
    /// Optional data type that selects receivers and sinks.
    pub kind: Option<String>,
    /// Fields weir does not know, kept so that nothing a producer sent is lost.
    pub extra: Map<String, Value>,
}

impl Event {
    /// A new event for `host` at `time` with every other field empty.
    pub fn new(host: impl Into<String>, time: f64) -> Self {
        Event {
            host: host.into(),
            time,
            ..Event::default()
        }
    }

    /// Writes every present field into `map`, except unknown fields named
    /// in `reserved` (a result's own keys win over an event's extras);
    /// shared by [`Event`] and [`ResultRecord`] serialization.
    fn serialize_fields<M: SerializeMap>(
        &self,
        map: &mut M,
        reserved: &[&str],
    ) -> Result<(), M::Error> {
        map.serialize_entry("host", &self.host)?;
        if let Some(service) = &self.service {
            map.serialize_entry("service", service)?;
        }
        if let Some(state) = &self.state {
            map.serialize_entry("state", state)?;
        }
        map.serialize_entry("time", &self.time)?;
        if let Some(description) = &self.description {
            map.serialize_entry("description", description)?;
        }
        if !self.tags.is_empty() {
            map.serialize_entry("tags", &self.tags)?;
        }
        if !self.meta.is_empty() {
            map.serialize_entry("meta", &self.meta)?;
        }
        if let Some(metric) = self.metric {
            map.serialize_entry("metric", &metric)?;
        }
        if let Some(ttl) = self.ttl {
            map.serialize_entry("ttl", &ttl)?;
        }
        if let Some(kind) = &self.kind {
            map.serialize_entry("type", kind)?;
        }
        for (key, value) in &self.extra {
            if !reserved.contains(&key.as_str()) {
                map.serialize_entry(key, value)?;
            }
        }
        Ok(())
    }

    /// The event as one JSON line (no trailing newline).
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain strings, numbers and JSON values cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a string-valued field by its wire name (`host`, `service`,
    /// `state`, `description`, `type`); `None` when absent.
    pub fn str_field(&self, name: &str) -> Option<&str> {
        match name {
            "host" => Some(&self.host),
            "service" => self.service.as_deref(),
            "state" => self.state.as_deref(),
            "description" => self.description.as_deref(),
            "type" => self.kind.as_deref(),
            _ => None,
        }
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        self.serialize_fields(&mut map, &[])?;
        map.end()
    }
}

/// Reads an event written by its `Serialize` impl (checkpointed state);
/// the same validation as ingest applies.
impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        decode_value(value, &DecodeOptions::default(), 0.0).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_known_fields_then_unknown_ones() {
        let mut event = Event::new("a", 1.5);
        event.service = Some("cpu".into());
        event.metric = Some(2.0);
        event.kind = Some("system_metrics".into());
        event.extra.insert("zone".into(), Value::from("eu"));
        assert_eq!(
            String::from_utf8(event.to_json()).unwrap(),
            r#"{"host":"a","service":"cpu","time":1.5,"metric":2.0,"type":"system_metrics","zone":"eu"}"#
        );
    }

    #[test]
    fn round_trips_through_the_decoder() {
        let line = br#"{"host":"h","service":"s","state":"ok","time":10.25,"description":"d","tags":["x","y"],"meta":{"k":1},"metric":0.1,"ttl":60.0,"type":"t","other":[1,2]}"#;
        let event = decode_line(line, &DecodeOptions::default(), 0.0).unwrap();
        let again = decode_line(&event.to_json(), &DecodeOptions::default(), 0.0).unwrap();
        assert_eq!(event, again);
        assert_eq!(event.extra["other"], serde_json::json!([1, 2]));
    }
}
