//! Prometheus remote_write 1.0 (`POST /api/v1/write` on the HTTP
//! listener): a snappy-compressed protobuf `WriteRequest`, so Prometheus,
//! vmagent or Grafana Agent can write to weir.
//!
//! Each sample is an event: `__name__` → `service`, the `host` label (else
//! `instance`) → `host`, the other labels → `meta`, the value → `metric`,
//! the timestamp (ms) → `time`. Prometheus's staleness markers (a special
//! NaN) are skipped; a series without a name or a host is rejected with
//! its labels named. Answers: `204`; `400` for a body that does not
//! decode or a partial write (not retried by senders; the good samples
//! are kept); `503` when the log refuses (retried).

use prost::Message;
use serde_json::{Map, Value};
use weir_event::{decode_value, DecodeOptions, Reason, Rejection};
use weir_router::Encoded;

/// The remote_write 1.0 messages weir reads (prometheus `prompb`).
mod wire {
    /// A batch of series.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }

    /// One series and its samples.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }

    /// A label.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// A sample.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }
}

/// Prometheus's staleness marker.
const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// Decodes a request body into events and the series it rejected; an
/// error when the body itself does not decode. `max_bytes` bounds the
/// decompressed size; `options` validate the events.
pub fn decode(
    body: &[u8],
    max_bytes: usize,
    options: &DecodeOptions,
    now: f64,
    events: &mut Encoded,
    rejected: &mut Vec<Rejection>,
) -> Result<(), Rejection> {
    let malformed = |detail: String| Rejection::new(Reason::Malformed, detail);
    let length = snap::raw::decompress_len(body).map_err(|e| malformed(format!("snappy: {e}")))?;
    if length > max_bytes {
        return Err(Rejection::new(
            Reason::BatchTooLarge,
            format!("{length} bytes decompressed, more than {max_bytes}"),
        ));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| malformed(format!("snappy: {e}")))?;
    let request = wire::WriteRequest::decode(&raw[..])
        .map_err(|e| malformed(format!("not a remote_write WriteRequest: {e}")))?;
    for series in request.timeseries {
        let label = |name: &str| {
            series
                .labels
                .iter()
                .find(|l| l.name == name)
                .map(|l| l.value.as_str())
        };
        let named = || {
            let labels: Vec<String> = series
                .labels
                .iter()
                .map(|l| format!("{}={:?}", l.name, l.value))
                .collect();
            format!("{{{}}}", labels.join(", "))
        };
        let Some(service) = label("__name__") else {
            rejected.push(malformed(format!("series {} has no __name__", named())));
            continue;
        };
        let host_label = if label("host").is_some() {
            "host"
        } else {
            "instance"
        };
        let Some(host) = label(host_label).filter(|h| !h.is_empty()) else {
            let detail = format!("series {} has no host or instance label", named());
            rejected.push(Rejection::new(Reason::MissingHost, detail));
            continue;
        };
        let meta: Map<String, Value> = series
            .labels
            .iter()
            .filter(|l| l.name != "__name__" && l.name != host_label)
            .map(|l| (l.name.clone(), l.value.clone().into()))
            .collect();
        for sample in &series.samples {
            if sample.value.to_bits() == STALE_NAN {
                continue;
            }
            let Some(metric) = serde_json::Number::from_f64(sample.value) else {
                let detail = format!("series {}: sample {} is not finite", named(), sample.value);
                rejected.push(Rejection::new(Reason::NonFiniteNumber, detail));
                continue;
            };
            let mut event = Map::new();
            event.insert("host".into(), host.into());
            event.insert("service".into(), service.into());
            event.insert("metric".into(), Value::Number(metric));
            event.insert("time".into(), (sample.timestamp as f64 / 1000.0).into());
            if !meta.is_empty() {
                event.insert("meta".into(), Value::Object(meta.clone()));
            }
            match decode_value(Value::Object(event), options, now) {
                Ok(event) => events.push(&event.host, &event.to_json()),
                Err(rejection) => rejected.push(rejection),
            }
        }
    }
    Ok(())
}

/// A snappy-compressed `WriteRequest` of one sample per event
/// (`service` as `__name__`, `host` as `instance`), as Prometheus sends
/// it (`weir bench --protocol remote-write`).
pub fn encode(events: &[weir_event::Event]) -> Vec<u8> {
    let label = |name: &str, value: &str| wire::Label {
        name: name.into(),
        value: value.into(),
    };
    let request = wire::WriteRequest {
        timeseries: events
            .iter()
            .map(|event| wire::TimeSeries {
                labels: vec![
                    label("__name__", event.service.as_deref().unwrap_or("")),
                    label("instance", &event.host),
                ],
                samples: vec![wire::Sample {
                    value: event.metric.unwrap_or(0.0),
                    timestamp: (event.time * 1000.0) as i64,
                }],
            })
            .collect(),
    };
    snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(name: &str, value: &str) -> wire::Label {
        wire::Label {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn samples_become_events_and_bad_series_are_named() {
        let sample = |value, timestamp| wire::Sample { value, timestamp };
        let request = wire::WriteRequest {
            timeseries: vec![
                wire::TimeSeries {
                    labels: vec![
                        label("__name__", "up"),
                        label("instance", "web-1:9100"),
                        label("job", "node"),
                    ],
                    samples: vec![
                        sample(1.0, 1_700_000_000_500),
                        sample(f64::from_bits(STALE_NAN), 1),
                    ],
                },
                wire::TimeSeries {
                    labels: vec![label("__name__", "x")],
                    samples: vec![sample(1.0, 1)],
                },
                wire::TimeSeries {
                    labels: vec![label("host", "db")],
                    samples: vec![sample(1.0, 1)],
                },
            ],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .unwrap();
        let (mut events, mut rejected) = (Encoded::default(), Vec::new());
        decode(
            &body,
            1 << 20,
            &DecodeOptions::default(),
            0.0,
            &mut events,
            &mut rejected,
        )
        .unwrap();
        let decoded: Vec<Value> = events
            .iter()
            .map(|(_, v)| serde_json::from_slice(v).unwrap())
            .collect();
        assert_eq!(decoded.len(), 1, "the staleness marker skipped");
        assert_eq!(
            (&decoded[0]["host"], &decoded[0]["service"]),
            (&"web-1:9100".into(), &"up".into())
        );
        assert_eq!(
            (&decoded[0]["time"], &decoded[0]["meta"]["job"]),
            (&1_700_000_000.5.into(), &"node".into())
        );
        assert_eq!(rejected.len(), 2);
        assert!(rejected[0].detail.contains("no host or instance"));
        assert!(rejected[1].detail.contains("no __name__"));
        let error = decode(
            b"not snappy",
            1 << 20,
            &DecodeOptions::default(),
            0.0,
            &mut events,
            &mut rejected,
        )
        .unwrap_err();
        assert_eq!(error.reason, Reason::Malformed);
        let error = decode(
            &body,
            10,
            &DecodeOptions::default(),
            0.0,
            &mut events,
            &mut rejected,
        )
        .unwrap_err();
        assert_eq!(error.reason, Reason::BatchTooLarge);
    }
}
