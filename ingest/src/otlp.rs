//! OpenTelemetry metrics over HTTP (`POST /v1/metrics` on the HTTP
//! listener, OTLP/HTTP in protobuf or JSON), so OpenTelemetry SDKs and
//! collectors export to weir.
//!
//! Each data point is an event: the resource attribute `host.name` →
//! `host` (a resource without one is rejected), `SERVICE/METRIC` →
//! `service` (`service.name` of the resource, then the metric's name; the
//! name alone without a `service.name`), the point's time → `time`, its
//! attributes (and the metric's `unit`) → `meta`. Gauges and sums: the
//! value → `metric` (sums with `meta.temporality` and `meta.monotonic`);
//! histograms: the mean → `metric`, with `count`, `sum`, `min`, `max`,
//! `bounds` and `buckets` in `meta`. Other kinds are refused by name.

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use weir_event::{decode_value, DecodeOptions, Reason, Rejection};
use weir_router::Encoded;

/// OTLP messages (opentelemetry-proto 1.x). A `oneof` is read as its
/// separate optional fields: the same bytes on the wire, and one shape
/// for the JSON mapping too.
mod wire {
    use super::{number, numbers, optional_number};
    use serde::Deserialize;

    /// `ExportMetricsServiceRequest`.
    #[derive(Clone, PartialEq, prost::Message, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    pub struct Request {
        #[prost(message, repeated, tag = "1")]
        pub resource_metrics: Vec<ResourceMetrics>,
    }

    /// `ResourceMetrics`.
    #[derive(Clone, PartialEq, prost::Message, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    pub struct ResourceMetrics {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_metrics: Vec<ScopeMetrics>,
    }

    /// `Resource`.
    #[derive(Clone, PartialEq, prost::Message, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }

    /// `ScopeMetrics`.
    #[derive(Clone, PartialEq, prost::Message, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    pub struct ScopeMetrics {
        #[prost(message, repeated, tag = "2")]
        pub metrics: Vec<Metric>,
    }

    /// `Metric`.
    #[derive(Clone, PartialEq, prost::Message, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    pub struct Metric {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "3")]
        pub unit: String,
        #[prost(message, optional, tag = "5")]
        pub gauge: Option<Points>,
        #[prost(message, optional, tag = "7")]
        pub sum: Option<Points>,
        #[prost(message, optional, tag = "9")]
        pub histogram: Option<Histogram>,
        #[prost(message, optional, tag = "10")]
        pub exponential_histogram: Option<Other>,
        #[prost(message, optional, tag = "11")]
        pub summary: Option<Other>,
    }

    /// `Gauge` and `Sum`.
    #[derive(Clone, PartialEq, prost::Message, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    pub struct Points {
        #[prost(message, repeated, tag = "1")]
        pub data_points: Vec<NumberDataPoint>,
        #[prost(int32, tag = "2")]
        pub aggregation_temporality: i32,
        #[prost(bool, tag = "3")]
        pub is_monotonic: bool,
    }

    /// A kind weir does not take.
    #[derive(Clone, PartialEq, prost::Message, Deserialize)]
    pub struct Other {}

    /// `NumberDataPoint`.
    #[derive(Clone, PartialEq, prost::Message, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    pub struct NumberDataPoint {
        #[prost(message, repeated, tag = "7")]
        pub attributes: Vec<KeyValue>,
        #[prost(fixed64, tag = "3")]
        #[serde(deserialize_with = "number")]
        pub time_unix_nano: u64,
        #[prost(double, optional, tag = "4")]
        pub as_double: Option<f64>,
        #[prost(sfixed64, optional, tag = "6")]
        #[serde(deserialize_with = "optional_number")]
        pub as_int: Option<i64>,
    }

    /// `Histogram`.
    #[derive(Clone, PartialEq, prost::Message, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    pub struct Histogram {
        #[prost(message, repeated, tag = "1")]
        pub data_points: Vec<HistogramDataPoint>,
    }

    /// `HistogramDataPoint`.
    #[derive(Clone, PartialEq, prost::Message, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    pub struct HistogramDataPoint {
        #[prost(message, repeated, tag = "9")]
        pub attributes: Vec<KeyValue>,
        #[prost(fixed64, tag = "3")]
        #[serde(deserialize_with = "number")]
        pub time_unix_nano: u64,
        #[prost(fixed64, tag = "4")]
        #[serde(deserialize_with = "number")]
        pub count: u64,
        #[prost(double, optional, tag = "5")]
        pub sum: Option<f64>,
        #[prost(fixed64, repeated, tag = "6")]
        #[serde(deserialize_with = "numbers")]
        pub bucket_counts: Vec<u64>,
        #[prost(double, repeated, tag = "7")]
        pub explicit_bounds: Vec<f64>,
        #[prost(double, optional, tag = "11")]
        pub min: Option<f64>,
        #[prost(double, optional, tag = "12")]
        pub max: Option<f64>,
    }

    /// `KeyValue`.
    #[derive(Clone, PartialEq, prost::Message, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }

    /// `AnyValue` (scalars; arrays and maps are left out).
    #[derive(Clone, PartialEq, prost::Message, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    pub struct AnyValue {
        #[prost(string, optional, tag = "1")]
        pub string_value: Option<String>,
        #[prost(bool, optional, tag = "2")]
        pub bool_value: Option<bool>,
        #[prost(int64, optional, tag = "3")]
        #[serde(deserialize_with = "optional_number")]
        pub int_value: Option<i64>,
        #[prost(double, optional, tag = "4")]
        pub double_value: Option<f64>,
    }
}

/// OTLP/JSON writes 64-bit integers as strings, or as numbers.
fn number<'de, D: Deserializer<'de>, T: std::str::FromStr + serde::Deserialize<'de>>(
    deserializer: D,
) -> Result<T, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either<T> {
        Text(String),
        Number(T),
    }
    match Either::<T>::deserialize(deserializer)? {
        Either::Number(n) => Ok(n),
        Either::Text(text) => text
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("{text:?} is not an integer"))),
    }
}

fn optional_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    number(deserializer).map(Some)
}

fn numbers<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u64>, D::Error> {
    #[derive(Deserialize)]
    struct Item(#[serde(deserialize_with = "number")] u64);
    Ok(Vec::<Item>::deserialize(deserializer)?
        .into_iter()
        .map(|Item(n)| n)
        .collect())
}

/// The request encodings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Encoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json`.
    Json,
}

fn attributes(list: &[wire::KeyValue]) -> Map<String, Value> {
    list.iter()
        .filter_map(|kv| {
            let value = kv.value.as_ref()?;
            let value = match (
                &value.string_value,
                value.bool_value,
                value.int_value,
                value.double_value,
            ) {
                (Some(text), ..) => Value::String(text.clone()),
                (_, Some(flag), ..) => Value::Bool(flag),
                (_, _, Some(int), _) => Value::from(int),
                (_, _, _, Some(double)) => Value::from(double),
                _ => return None,
            };
            Some((kv.key.clone(), value))
        })
        .collect()
}

/// Decodes a request body into events and the data points it rejected;
/// an error when the body itself does not decode. `options` validate the
/// events.
pub fn decode(
    body: &[u8],
    encoding: Encoding,
    options: &DecodeOptions,
    now: f64,
    events: &mut Encoded,
    rejected: &mut Vec<Rejection>,
) -> Result<(), Rejection> {
    let malformed = |detail: String| Rejection::new(Reason::Malformed, detail);
    let request: wire::Request = match encoding {
        Encoding::Protobuf => prost::Message::decode(body)
            .map_err(|e| malformed(format!("not an OTLP metrics request: {e}")))?,
        Encoding::Json => serde_json::from_slice(body)
            .map_err(|e| malformed(format!("not an OTLP/JSON metrics request: {e}")))?,
    };
    for resource in request.resource_metrics {
        let labels = attributes(&resource.resource.map(|r| r.attributes).unwrap_or_default());
        let host = labels.get("host.name").and_then(Value::as_str);
        let service = labels.get("service.name").and_then(Value::as_str);
        for metric in resource.scope_metrics.iter().flat_map(|s| &s.metrics) {
            let Some(host) = host else {
                let detail = format!("metric {:?}: its resource has no host.name", metric.name);
                rejected.push(Rejection::new(Reason::MissingHost, detail));
                continue;
            };
            let name = match service {
                Some(service) => format!("{service}/{}", metric.name),
                None => metric.name.clone(),
            };
            let mut points = Vec::new();
            if let Some(gauge) = &metric.gauge {
                points.extend(gauge.data_points.iter().map(|p| number_point(p, None)));
            }
            if let Some(sum) = &metric.sum {
                points.extend(sum.data_points.iter().map(|p| number_point(p, Some(sum))));
            }
            if let Some(histogram) = &metric.histogram {
                points.extend(histogram.data_points.iter().map(histogram_point));
            }
            if metric.exponential_histogram.is_some() || metric.summary.is_some() {
                let detail = format!(
                    "metric {:?}: exponential histograms and summaries are not taken",
                    metric.name
                );
                rejected.push(malformed(detail));
            }
            for (metric_value, time, mut meta) in points {
                if !metric.unit.is_empty() {
                    meta.insert("unit".into(), metric.unit.clone().into());
                }
                let mut event = Map::new();
                event.insert("host".into(), host.into());
                event.insert("service".into(), name.clone().into());
                if let Some(value) = metric_value {
                    event.insert("metric".into(), value);
                }
                event.insert("time".into(), if time > 0.0 { time } else { now }.into());
                if !meta.is_empty() {
                    event.insert("meta".into(), Value::Object(meta));
                }
                match decode_value(Value::Object(event), options, now) {
                    Ok(event) => events.push(&event.host, &event.to_json()),
                    Err(rejection) => rejected.push(rejection),
                }
            }
        }
    }
    Ok(())
}

/// A point's metric, time (s) and meta.
type Point = (Option<Value>, f64, Map<String, Value>);

fn number_point(point: &wire::NumberDataPoint, sum: Option<&wire::Points>) -> Point {
    let mut meta = attributes(&point.attributes);
    if let Some(sum) = sum {
        let temporality = match sum.aggregation_temporality {
            1 => "delta",
            2 => "cumulative",
            _ => "unspecified",
        };
        meta.insert("temporality".into(), temporality.into());
        meta.insert("monotonic".into(), sum.is_monotonic.into());
    }
    let value = point
        .as_double
        .or(point.as_int.map(|i| i as f64))
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number);
    (value, point.time_unix_nano as f64 / 1e9, meta)
}

fn histogram_point(point: &wire::HistogramDataPoint) -> Point {
    let mut meta = attributes(&point.attributes);
    meta.insert("count".into(), point.count.into());
    let mut put = |key: &str, value: Option<f64>| {
        if let Some(value) = value.and_then(serde_json::Number::from_f64) {
            meta.insert(key.into(), Value::Number(value));
        }
    };
    put("sum", point.sum);
    put("min", point.min);
    put("max", point.max);
    meta.insert("bounds".into(), point.explicit_bounds.clone().into());
    meta.insert("buckets".into(), point.bucket_counts.clone().into());
    let mean = point
        .sum
        .filter(|_| point.count > 0)
        .map(|sum| sum / point.count as f64)
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number);
    (mean, point.time_unix_nano as f64 / 1e9, meta)
}

/// An `ExportMetricsServiceRequest` of one gauge point per event, a
/// resource per event with its `host.name`, as an OpenTelemetry exporter
/// sends it (`weir bench --protocol otlp`).
pub fn encode(events: &[weir_event::Event]) -> Vec<u8> {
    let text = |value: &str| wire::AnyValue {
        string_value: Some(value.into()),
        ..Default::default()
    };
    let request = wire::Request {
        resource_metrics: events
            .iter()
            .map(|event| wire::ResourceMetrics {
                resource: Some(wire::Resource {
                    attributes: vec![wire::KeyValue {
                        key: "host.name".into(),
                        value: Some(text(&event.host)),
                    }],
                }),
                scope_metrics: vec![wire::ScopeMetrics {
                    metrics: vec![wire::Metric {
                        name: event.service.clone().unwrap_or_default(),
                        gauge: Some(wire::Points {
                            data_points: vec![wire::NumberDataPoint {
                                time_unix_nano: (event.time * 1e9) as u64,
                                as_double: event.metric,
                                ..Default::default()
                            }],
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                }],
            })
            .collect(),
    };
    prost::Message::encode_to_vec(&request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_sums_and_histograms_become_events_from_json_and_protobuf() {
        let json = serde_json::json!({"resourceMetrics": [{
            "resource": {"attributes": [
                {"key": "host.name", "value": {"stringValue": "web-1"}},
                {"key": "service.name", "value": {"stringValue": "shop"}}]},
            "scopeMetrics": [{"metrics": [
                {"name": "queue", "unit": "1", "gauge": {"dataPoints": [
                    {"timeUnixNano": "1700000000500000000", "asInt": "7", "attributes": [{"key": "q", "value": {"stringValue": "a"}}]}]}},
                {"name": "hits", "sum": {"aggregationTemporality": 2, "isMonotonic": true, "dataPoints": [
                    {"timeUnixNano": 1700000000000000000u64, "asDouble": 2.5}]}},
                {"name": "latency", "histogram": {"dataPoints": [
                    {"timeUnixNano": "1700000000000000000", "count": "4", "sum": 10.0, "bucketCounts": ["1", "3"], "explicitBounds": [5.0]}]}},
                {"name": "odd", "summary": {}}]}]},
            {"resource": {}, "scopeMetrics": [{"metrics": [{"name": "orphan", "gauge": {"dataPoints": [{"asDouble": 1}]}}]}]}]});
        let (mut events, mut rejected) = (Encoded::default(), Vec::new());
        decode(
            json.to_string().as_bytes(),
            Encoding::Json,
            &DecodeOptions::default(),
            5.0,
            &mut events,
            &mut rejected,
        )
        .unwrap();
        let decoded: Vec<Value> = events
            .iter()
            .map(|(_, v)| serde_json::from_slice(v).unwrap())
            .collect();
        assert_eq!(decoded.len(), 3);
        assert_eq!(
            (
                &decoded[0]["service"],
                &decoded[0]["metric"],
                &decoded[0]["time"]
            ),
            (&"shop/queue".into(), &7.0.into(), &1_700_000_000.5.into())
        );
        assert_eq!(
            (&decoded[0]["meta"]["q"], &decoded[0]["meta"]["unit"]),
            (&"a".into(), &"1".into())
        );
        assert_eq!(
            (&decoded[1]["meta"]["temporality"], &decoded[1]["metric"]),
            (&"cumulative".into(), &2.5.into())
        );
        assert_eq!(
            (&decoded[2]["metric"], &decoded[2]["meta"]["buckets"]),
            (&2.5.into(), &serde_json::json!([1, 3]))
        );
        assert_eq!(rejected.len(), 2, "{rejected:?}");
        assert!(rejected[0].detail.contains("summaries"));
        assert!(rejected[1].detail.contains("no host.name"));

        // The same gauge in protobuf.
        let request = wire::Request {
            resource_metrics: vec![wire::ResourceMetrics {
                resource: Some(wire::Resource {
                    attributes: vec![wire::KeyValue {
                        key: "host.name".into(),
                        value: Some(wire::AnyValue {
                            string_value: Some("web-2".into()),
                            ..Default::default()
                        }),
                    }],
                }),
                scope_metrics: vec![wire::ScopeMetrics {
                    metrics: vec![wire::Metric {
                        name: "queue".into(),
                        gauge: Some(wire::Points {
                            data_points: vec![wire::NumberDataPoint {
                                as_int: Some(3),
                                time_unix_nano: 2_000_000_000,
                                ..Default::default()
                            }],
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                }],
            }],
        };
        let (mut events, mut rejected) = (Encoded::default(), Vec::new());
        let body = prost::Message::encode_to_vec(&request);
        decode(
            &body,
            Encoding::Protobuf,
            &DecodeOptions::default(),
            5.0,
            &mut events,
            &mut rejected,
        )
        .unwrap();
        let (host, value) = events.iter().next().unwrap();
        let event: Value = serde_json::from_slice(value).unwrap();
        assert_eq!(
            (host, &event["service"], &event["metric"], &event["time"]),
            ("web-2", &"queue".into(), &3.0.into(), &2.0.into())
        );
        assert!(decode(
            b"{",
            Encoding::Json,
            &DecodeOptions::default(),
            0.0,
            &mut events,
            &mut rejected
        )
        .is_err());
    }
}
