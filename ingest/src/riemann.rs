//! Riemann's protobuf protocol (`[ingest.riemann] listen`, Riemann's
//! 5555, TCP and UDP), so Riemann clients and collectd's `write_riemann`
//! send to weir unchanged. Over TCP each message is a 4-byte big-endian
//! length and a `Msg`, answered with a `Msg` once its events are in the
//! log: `ok = true`, or `ok = false` with an error naming each bad event
//! (the good ones are kept) or the log's refusal. Over UDP a datagram is
//! one `Msg`, unanswered.
//!
//! Fields: `host`, `service`, `state`, `description`, `tags`, `ttl` as
//! they are; `metric_sint64`, else `metric_d`, else `metric_f` as
//! `metric`; `time_micros`, else `time` (seconds) as `time`, and the ingest
//! time when neither is set; `attributes` as `meta` (key → value).
//! Queries are refused: weir keeps no index to query.

use prost::Message;
use serde_json::{Map, Value};
use weir_event::{decode_value, DecodeOptions, Reason, Rejection};
use weir_router::Encoded;

use crate::protocol::{Framing, Outcome, Protocol, Resync};

/// Riemann's protobuf over TCP or UDP.
pub struct Riemann {
    /// The `protocol` label: `riemann` or `riemann-udp`.
    pub name: &'static str,
    /// How events are validated.
    pub options: DecodeOptions,
}

/// The riemann-java-client `proto.proto` (proto2) messages weir reads.
mod wire {
    /// A message: events in, an answer out.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Msg {
        #[prost(bool, optional, tag = "2")]
        pub ok: Option<bool>,
        #[prost(string, optional, tag = "3")]
        pub error: Option<String>,
        #[prost(message, optional, tag = "5")]
        pub query: Option<Query>,
        #[prost(message, repeated, tag = "6")]
        pub events: Vec<Event>,
    }

    /// A query (refused).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Query {
        #[prost(string, optional, tag = "1")]
        pub string: Option<String>,
    }

    /// One event.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Event {
        #[prost(int64, optional, tag = "1")]
        pub time: Option<i64>,
        #[prost(string, optional, tag = "2")]
        pub state: Option<String>,
        #[prost(string, optional, tag = "3")]
        pub service: Option<String>,
        #[prost(string, optional, tag = "4")]
        pub host: Option<String>,
        #[prost(string, optional, tag = "5")]
        pub description: Option<String>,
        #[prost(string, repeated, tag = "7")]
        pub tags: Vec<String>,
        #[prost(float, optional, tag = "8")]
        pub ttl: Option<f32>,
        #[prost(message, repeated, tag = "9")]
        pub attributes: Vec<Attribute>,
        #[prost(int64, optional, tag = "10")]
        pub time_micros: Option<i64>,
        #[prost(sint64, optional, tag = "13")]
        pub metric_sint64: Option<i64>,
        #[prost(double, optional, tag = "14")]
        pub metric_d: Option<f64>,
        #[prost(float, optional, tag = "15")]
        pub metric_f: Option<f32>,
    }

    /// A key and value of an event.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Attribute {
        #[prost(string, required, tag = "1")]
        pub key: String,
        #[prost(string, optional, tag = "2")]
        pub value: Option<String>,
    }
}

/// Bytes of the length before each message over TCP.
const LENGTH: usize = 4;

impl Riemann {
    /// A Riemann event as weir's JSON event, validated like any other.
    fn event(&self, event: wire::Event, now: f64) -> Result<weir_event::Event, Rejection> {
        let mut fields = Map::new();
        let mut text = |key: &str, value: Option<String>| {
            if let Some(value) = value {
                fields.insert(key.to_owned(), Value::String(value));
            }
        };
        text("host", event.host);
        text("service", event.service);
        text("state", event.state);
        text("description", event.description);
        let time = match (event.time_micros, event.time) {
            (Some(micros), _) if micros != 0 => micros as f64 / 1e6,
            (_, Some(seconds)) if seconds != 0 => seconds as f64,
            _ => now,
        };
        fields.insert("time".into(), time.into());
        let metric = event
            .metric_sint64
            .map(|m| m as f64)
            .or(event.metric_d)
            .or(event.metric_f.map(f64::from));
        if let Some(metric) = metric {
            let number = serde_json::Number::from_f64(metric).ok_or_else(|| {
                Rejection::new(Reason::NonFiniteNumber, "metric is not a finite number")
            })?;
            fields.insert("metric".into(), Value::Number(number));
        }
        if let Some(ttl) = event
            .ttl
            .and_then(|t| serde_json::Number::from_f64(f64::from(t)))
        {
            fields.insert("ttl".into(), Value::Number(ttl));
        }
        if !event.tags.is_empty() {
            fields.insert("tags".into(), event.tags.into());
        }
        if !event.attributes.is_empty() {
            let meta: Map<String, Value> = event
                .attributes
                .into_iter()
                .map(|a| (a.key, a.value.map_or(Value::Null, Value::String)))
                .collect();
            fields.insert("meta".into(), Value::Object(meta));
        }
        decode_value(Value::Object(fields), &self.options, now)
    }
}

/// A length-framed `Msg` carrying `events`, as a Riemann client writes
/// it over TCP (`weir bench --protocol riemann`).
pub fn framed_message(events: &[weir_event::Event]) -> Vec<u8> {
    let msg = wire::Msg {
        events: events
            .iter()
            .map(|event| wire::Event {
                host: Some(event.host.clone()),
                service: event.service.clone(),
                state: event.state.clone(),
                description: event.description.clone(),
                tags: event.tags.clone(),
                ttl: event.ttl.map(|t| t as f32),
                time_micros: Some((event.time * 1e6) as i64),
                metric_d: event.metric,
                ..wire::Event::default()
            })
            .collect(),
        ..wire::Msg::default()
    };
    let body = msg.encode_to_vec();
    let mut framed = (body.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&body);
    framed
}

impl Protocol for Riemann {
    fn name(&self) -> &'static str {
        self.name
    }

    fn frame(&self, buffer: &[u8]) -> Framing {
        let Some(length) = buffer.get(..LENGTH) else {
            return Framing::Incomplete;
        };
        let length = u32::from_be_bytes([length[0], length[1], length[2], length[3]]) as usize;
        if buffer.len() < LENGTH + length {
            return Framing::Incomplete;
        }
        Framing::Frame {
            len: LENGTH + length,
            payload: LENGTH..LENGTH + length,
        }
    }

    fn resync(&self, _buffer: &[u8]) -> Resync {
        // Lengths cannot be found again in the middle of a message.
        Resync::Never
    }

    fn decode(
        &self,
        payload: &[u8],
        now: f64,
        events: &mut weir_router::Encoded,
        rejected: &mut Vec<Rejection>,
    ) {
        let msg = match wire::Msg::decode(payload) {
            Ok(msg) => msg,
            Err(error) => {
                let detail = format!("not a Riemann Msg: {error}");
                return rejected.push(Rejection::new(Reason::Malformed, detail));
            }
        };
        if msg.query.is_some() {
            let detail = "queries are not supported: weir keeps no index";
            rejected.push(Rejection::new(Reason::Malformed, detail));
        }
        for (i, event) in msg.events.into_iter().enumerate() {
            match self.event(event, now) {
                Ok(event) => events.push(&event.host, &event.to_json()),
                Err(rejection) => rejected.push(Rejection::new(
                    rejection.reason,
                    format!("event {}: {}", i + 1, rejection.detail),
                )),
            }
        }
    }

    fn decode_datagram(
        &self,
        datagram: &[u8],
        now: f64,
        events: &mut Encoded,
        rejected: &mut Vec<Rejection>,
    ) {
        self.decode(datagram, now, events, rejected);
    }

    fn answers(&self) -> bool {
        true
    }

    fn answer(&self, outcome: &Outcome) -> Vec<u8> {
        let mut problems: Vec<String> = outcome.rejected.iter().map(ToString::to_string).collect();
        if let Err(error) = outcome.appended {
            problems.push(error.to_string());
        }
        let msg = wire::Msg {
            ok: Some(problems.is_empty()),
            error: (!problems.is_empty()).then(|| problems.join("; ")),
            ..wire::Msg::default()
        };
        let body = msg.encode_to_vec();
        let mut framed = (body.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&body);
        framed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn riemann() -> Riemann {
        Riemann {
            name: "riemann",
            options: DecodeOptions::default(),
        }
    }

    #[test]
    fn every_field_maps_and_a_bad_event_is_rejected_alone() {
        let msg = wire::Msg {
            events: vec![
                wire::Event {
                    host: Some("web-1".into()),
                    service: Some("cpu".into()),
                    state: Some("ok".into()),
                    description: Some("d".into()),
                    tags: vec!["a".into()],
                    ttl: Some(30.0),
                    attributes: vec![wire::Attribute {
                        key: "dc".into(),
                        value: Some("eu".into()),
                    }],
                    time_micros: Some(1_700_000_000_500_000),
                    time: Some(1),
                    metric_sint64: Some(-3),
                    metric_d: Some(9.0),
                    ..wire::Event::default()
                },
                wire::Event::default(),
                wire::Event {
                    host: Some("web-2".into()),
                    metric_f: Some(0.5),
                    ..wire::Event::default()
                },
            ],
            ..wire::Msg::default()
        };
        let (mut events, mut rejected) = (Encoded::default(), Vec::new());
        riemann().decode(&msg.encode_to_vec(), 123.0, &mut events, &mut rejected);
        let decoded: Vec<Value> = events
            .iter()
            .map(|(_, value)| serde_json::from_slice(value).unwrap())
            .collect();
        assert_eq!(decoded.len(), 2);
        let first = &decoded[0];
        assert_eq!(first["host"], "web-1");
        assert_eq!(first["metric"], -3.0, "metric_sint64 first");
        assert_eq!(first["time"], 1_700_000_000.5, "time_micros first");
        assert_eq!(first["meta"]["dc"], "eu");
        assert_eq!(
            (first["ttl"].as_f64(), &first["tags"][0]),
            (Some(30.0), &Value::from("a"))
        );
        assert_eq!(
            (decoded[1]["metric"].as_f64(), decoded[1]["time"].as_f64()),
            (Some(0.5), Some(123.0))
        );
        assert_eq!(rejected.len(), 1);
        assert!(
            rejected[0].detail.starts_with("event 2:"),
            "{:?}",
            rejected[0]
        );
        // The answer names it.
        let answer = riemann().answer(&Outcome {
            appended: Ok(2),
            rejected: &rejected,
        });
        let msg = wire::Msg::decode(&answer[LENGTH..]).unwrap();
        assert_eq!(msg.ok, Some(false));
        assert!(msg.error.unwrap().contains("event 2"));
    }
}
