//! InfluxDB line protocol (`POST /write` on the HTTP listener,
//! `[ingest.influx] listen` for UDP), so collectd's `write_influxdb_udp`,
//! vmagent or an Influx client can send to weir:
//! `measurement[,tag=value…] field=value[,field=value…] [timestamp]`.
//!
//! Each numeric field of a line is one event: `host` from the `host` tag
//! (a line without one is rejected), `service` = `MEASUREMENT.FIELD`,
//! `metric` = the value (`i`/`u` integers, floats, booleans as 1 or 0),
//! the other tags in `meta`, string fields in `meta` too; `time` from the
//! timestamp in the request's `precision` (`ns`, `us`, `ms`, `s`), or, by
//! default, its unit told by its magnitude (collectd sends milliseconds);
//! no timestamp: now.

use serde_json::{Map, Value};
use weir_event::{decode_value, epoch_seconds, DecodeOptions, Reason, Rejection};
use weir_router::Encoded;

use crate::protocol::LineProtocol;

/// The unit of line timestamps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Precision {
    /// Told by magnitude (s, ms, µs or ns).
    Auto,
    /// Nanoseconds.
    Ns,
    /// Microseconds.
    Us,
    /// Milliseconds.
    Ms,
    /// Seconds.
    S,
}

impl Precision {
    /// Reads `precision=` of `POST /write` (`n`/`ns`, `u`/`us`, `ms`, `s`).
    pub fn parse(text: &str) -> Option<Precision> {
        Some(match text {
            "n" | "ns" => Precision::Ns,
            "u" | "us" | "µ" => Precision::Us,
            "ms" => Precision::Ms,
            "s" => Precision::S,
            _ => return None,
        })
    }

    fn seconds(self, timestamp: f64) -> f64 {
        match self {
            Precision::Auto => epoch_seconds(timestamp),
            Precision::Ns => timestamp / 1e9,
            Precision::Us => timestamp / 1e6,
            Precision::Ms => timestamp / 1e3,
            Precision::S => timestamp,
        }
    }
}

/// The line protocol, on one listener or one request.
pub struct Influx {
    /// The `protocol` label.
    pub name: &'static str,
    /// The timestamps' unit.
    pub precision: Precision,
    /// How events are validated (the future bound).
    pub options: DecodeOptions,
}

/// Splits `text` at unescaped `separator`s outside double quotes.
fn split(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut escaped, mut quoted) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Removes backslash escapes.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// A field value: a number, or a string.
fn field_value(text: &str) -> Result<Value, String> {
    if let Some(quoted) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        return Ok(Value::String(unescape(quoted)));
    }
    let number = match text {
        "t" | "T" | "true" | "True" | "TRUE" => 1.0,
        "f" | "F" | "false" | "False" | "FALSE" => 0.0,
        _ => {
            let digits = text.strip_suffix(['i', 'u']).unwrap_or(text);
            digits
                .parse::<f64>()
                .map_err(|_| format!("field value {text:?} is not a number, boolean or string"))?
        }
    };
    serde_json::Number::from_f64(number)
        .map(Value::Number)
        .ok_or_else(|| format!("field value {text:?} is not finite"))
}

impl Influx {
    /// The events of one line.
    fn events(&self, line: &str, now: f64) -> Result<Vec<weir_event::Event>, Rejection> {
        let malformed = |detail: String| Rejection::new(Reason::Malformed, detail);
        let sections = split(line, ' ');
        let sections: Vec<&str> = sections.into_iter().filter(|s| !s.is_empty()).collect();
        let (series, fields, timestamp) = match sections[..] {
            [series, fields] => (series, fields, None),
            [series, fields, timestamp] => (series, fields, Some(timestamp)),
            _ => {
                return Err(malformed(format!(
                    "{line:?} is not \"measurement[,tags] fields [timestamp]\""
                )))
            }
        };
        let mut tags = split(series, ',').into_iter();
        let measurement = unescape(tags.next().unwrap_or_default());
        if measurement.is_empty() {
            return Err(malformed(format!("{line:?} has no measurement")));
        }
        let mut host = None;
        let mut meta = Map::new();
        for tag in tags {
            let Some((key, value)) = tag.split_once('=') else {
                return Err(malformed(format!("tag {tag:?} is not key=value")));
            };
            let (key, value) = (unescape(key), unescape(value));
            if key == "host" {
                host = Some(value);
            } else {
                meta.insert(key, value.into());
            }
        }
        let host = host.ok_or_else(|| {
            Rejection::new(Reason::MissingHost, format!("{line:?} has no host tag"))
        })?;
        let time = match timestamp {
            None => now,
            Some(text) => self.precision.seconds(
                text.parse::<f64>()
                    .map_err(|_| malformed(format!("timestamp {text:?} is not a number")))?,
            ),
        };
        let mut numbers = Vec::new();
        for field in split(fields, ',') {
            let Some((key, value)) = field.split_once('=') else {
                return Err(malformed(format!("field {field:?} is not key=value")));
            };
            match field_value(value).map_err(malformed)? {
                Value::String(text) => drop(meta.insert(unescape(key), text.into())),
                number => numbers.push((unescape(key), number)),
            }
        }
        numbers
            .into_iter()
            .map(|(field, metric)| {
                let mut event = Map::new();
                event.insert("host".into(), host.clone().into());
                event.insert("service".into(), format!("{measurement}.{field}").into());
                event.insert("metric".into(), metric);
                event.insert("time".into(), time.into());
                if !meta.is_empty() {
                    event.insert("meta".into(), Value::Object(meta.clone()));
                }
                decode_value(Value::Object(event), &self.options, now)
            })
            .collect()
    }
}

impl LineProtocol for Influx {
    fn name(&self) -> &'static str {
        self.name
    }

    fn decode_line(
        &self,
        line: &str,
        now: f64,
        events: &mut Encoded,
        rejected: &mut Vec<Rejection>,
    ) {
        if line.starts_with('#') {
            return;
        }
        match self.events(line, now) {
            Ok(decoded) => {
                for event in decoded {
                    events.push(&event.host, &event.to_json());
                }
            }
            Err(rejection) => rejected.push(rejection),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(precision: Precision, line: &str) -> Result<Vec<Value>, Rejection> {
        let influx = Influx {
            name: "influx",
            precision,
            options: DecodeOptions::default(),
        };
        let (mut events, mut rejected) = (Encoded::default(), Vec::new());
        crate::protocol::Protocol::decode(
            &influx,
            line.as_bytes(),
            100.0,
            &mut events,
            &mut rejected,
        );
        match rejected.pop() {
            Some(rejection) => Err(rejection),
            None => Ok(events
                .iter()
                .map(|(_, value)| serde_json::from_slice(value).unwrap())
                .collect()),
        }
    }

    #[test]
    fn each_numeric_field_is_an_event() {
        let events = decode(
            Precision::Auto,
            "load,host=cd2,type=load shortterm=1.09,midterm=1.25,longterm=1.43 1795950987194",
        )
        .unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(
            (&events[0]["host"], &events[0]["service"]),
            (&"cd2".into(), &"load.shortterm".into())
        );
        assert_eq!(
            (&events[1]["metric"], &events[1]["meta"]["type"]),
            (&1.25.into(), &"load".into())
        );
        assert_eq!(
            events[2]["time"], 1795950987.194,
            "milliseconds told by magnitude"
        );
        let events = decode(
            Precision::S,
            r#"disk\ io,host=web\,1,dev=sda ops=12i,up=t,note="a \"b\"",ok=F 1700000000"#,
        )
        .unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(
            (
                &events[0]["service"],
                &events[0]["host"],
                &events[0]["metric"]
            ),
            (&"disk io.ops".into(), &"web,1".into(), &12.0.into())
        );
        assert_eq!(
            (&events[1]["metric"], &events[2]["metric"]),
            (&1.0.into(), &0.0.into())
        );
        assert_eq!(events[0]["meta"]["note"], "a \"b\"");
        assert_eq!(
            decode(Precision::Ns, "m,host=h v=1 1700000000000000000").unwrap()[0]["time"],
            1.7e9
        );
        assert_eq!(
            decode(Precision::Auto, "m,host=h v=1").unwrap()[0]["time"],
            100.0
        );
    }

    #[test]
    fn bad_lines_are_named() {
        for (line, reason, expected) in [
            ("m v=1", Reason::MissingHost, "no host tag"),
            ("m,host=h", Reason::Malformed, "is not"),
            ("m,host=h v=x", Reason::Malformed, "\"x\" is not a number"),
            ("m,host=h v=1 soon", Reason::Malformed, "timestamp"),
            ("m,host v=1", Reason::Malformed, "tag \"host\""),
        ] {
            let rejection = decode(Precision::Auto, line).unwrap_err();
            assert_eq!(rejection.reason, reason, "{line}");
            assert!(rejection.detail.contains(expected), "{line}: {rejection}");
        }
    }
}
