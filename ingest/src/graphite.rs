//! Graphite's plaintext protocol (`[ingest.graphite] listen`, carbon's
//! 2003, TCP and UDP): `path value timestamp` lines, so a carbon relay,
//! collectd's `write_graphite` or polymur can point at weir.
//!
//! A path becomes an event through templates in Graphite's template
//! syntax (as InfluxDB's graphite input reads them): `"FILTER TEMPLATE"`
//! or a default `"TEMPLATE"`. A template names each dot-separated part of
//! the path: `host`, `service` (several are joined with dots), any other
//! word a `meta` key, an empty part skipped; a last part ending in `*`
//! takes the rest of the path. A filter is a path prefix where `*`
//! matches any one part. The first template whose filter matches is used,
//! else the default, else `host.service*`. Parts of the path beyond the
//! template go to `service`. The value is `metric`; the timestamp
//! (seconds; missing or `-1`: now) is `time`.

use serde_json::{Map, Value};
use weir_event::{decode_value, DecodeOptions, Reason, Rejection};
use weir_router::Encoded;

use crate::protocol::LineProtocol;
use crate::IngestError;

/// One part of a template.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Skip,
    Host,
    Service,
    Meta(String),
}

/// A parsed template: an optional filter, then its parts; `rest` takes
/// what follows into the last part.
#[derive(Debug, Clone, PartialEq)]
struct Template {
    filter: Vec<String>,
    parts: Vec<Part>,
    rest: bool,
}

impl Template {
    fn parse(text: &str) -> Result<Template, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let (filter, template) = match words[..] {
            [template] => (Vec::new(), template),
            [filter, template] => (filter.split('.').map(str::to_owned).collect(), template),
            _ => return Err(format!("template {text:?}: expected \"[FILTER] TEMPLATE\"")),
        };
        let mut parts = Vec::new();
        let mut rest = false;
        let names: Vec<&str> = template.split('.').collect();
        for (i, name) in names.iter().enumerate() {
            let name = match name.strip_suffix('*') {
                Some(name) if i + 1 == names.len() => {
                    rest = true;
                    name
                }
                Some(_) => {
                    return Err(format!(
                        "template {text:?}: only the last part may end in *"
                    ))
                }
                None => name,
            };
            parts.push(match name {
                "" => Part::Skip,
                "host" => Part::Host,
                "service" => Part::Service,
                other => Part::Meta(other.to_owned()),
            });
        }
        if !parts.contains(&Part::Host) {
            return Err(format!("template {text:?} names no host part"));
        }
        Ok(Template {
            filter,
            parts,
            rest,
        })
    }

    fn matches(&self, path: &[&str]) -> bool {
        self.filter.len() <= path.len()
            && self
                .filter
                .iter()
                .zip(path)
                .all(|(want, part)| want == "*" || want == part)
    }
}

/// Graphite plaintext over TCP or UDP.
pub struct Graphite {
    name: &'static str,
    /// How events are validated (the future bound).
    options: DecodeOptions,
    /// Templates with filters, in order.
    filtered: Vec<Template>,
    /// The template without a filter.
    default: Template,
}

impl Graphite {
    /// The protocol named `name` with `templates` (see the module doc),
    /// validating events with `options`.
    pub fn new(
        name: &'static str,
        templates: &[String],
        options: DecodeOptions,
    ) -> Result<Graphite, IngestError> {
        let invalid = |detail: String| IngestError::Config {
            protocol: "graphite",
            detail,
        };
        let mut filtered = Vec::new();
        let mut default = None;
        for text in templates {
            let template = Template::parse(text).map_err(invalid)?;
            if template.filter.is_empty() {
                if default.replace(template).is_some() {
                    return Err(invalid("more than one template without a filter".into()));
                }
            } else {
                filtered.push(template);
            }
        }
        let default = match default {
            Some(template) => template,
            None => Template::parse("host.service*").map_err(invalid)?,
        };
        Ok(Graphite {
            name,
            options,
            filtered,
            default,
        })
    }

    fn event(&self, line: &str, now: f64) -> Result<weir_event::Event, Rejection> {
        let malformed = |detail: String| Rejection::new(Reason::Malformed, detail);
        let mut words = line.split_whitespace();
        let (Some(path), Some(value)) = (words.next(), words.next()) else {
            return Err(malformed(format!(
                "{line:?} is not \"path value timestamp\""
            )));
        };
        let time = words.next();
        if words.next().is_some() {
            return Err(malformed(format!("{line:?} has more than three fields")));
        }
        let metric: f64 = value
            .parse()
            .map_err(|_| malformed(format!("value {value:?} is not a number")))?;
        let time = match time {
            None | Some("-1") => now,
            Some(time) => time
                .parse::<f64>()
                .map_err(|_| malformed(format!("timestamp {time:?} is not a number")))?,
        };
        let parts: Vec<&str> = path.split('.').collect();
        let template = self
            .filtered
            .iter()
            .find(|t| t.matches(&parts))
            .unwrap_or(&self.default);
        let mut fields = Map::new();
        let mut service = Vec::new();
        let mut meta = Map::new();
        let last = template.parts.len().saturating_sub(1);
        for (i, part) in template.parts.iter().enumerate() {
            let Some(&name) = parts.get(i) else { break };
            let value = if template.rest && i == last {
                parts[i..].join(".")
            } else {
                name.to_owned()
            };
            match part {
                Part::Skip => {}
                Part::Host => drop(fields.insert("host".into(), value.into())),
                Part::Service => service.push(value),
                Part::Meta(key) => drop(meta.insert(key.clone(), value.into())),
            }
        }
        if !template.rest {
            service.extend(
                parts
                    .iter()
                    .skip(template.parts.len())
                    .map(|p| (*p).to_owned()),
            );
        }
        if !service.is_empty() {
            fields.insert("service".into(), service.join(".").into());
        }
        if !meta.is_empty() {
            fields.insert("meta".into(), Value::Object(meta));
        }
        let number = serde_json::Number::from_f64(metric).ok_or_else(|| {
            Rejection::new(
                Reason::NonFiniteNumber,
                format!("value {value:?} is not finite"),
            )
        })?;
        fields.insert("metric".into(), Value::Number(number));
        fields.insert("time".into(), time.into());
        decode_value(Value::Object(fields), &self.options, now)
    }
}

impl LineProtocol for Graphite {
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
        match self.event(line, now) {
            Ok(event) => events.push(&event.host, &event.to_json()),
            Err(rejection) => rejected.push(rejection),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(templates: &[&str], line: &str) -> Result<Value, Rejection> {
        let templates: Vec<String> = templates.iter().map(|t| (*t).to_owned()).collect();
        let graphite = Graphite::new("graphite", &templates, DecodeOptions::default()).unwrap();
        let (mut events, mut rejected) = (Encoded::default(), Vec::new());
        crate::protocol::Protocol::decode(
            &graphite,
            line.as_bytes(),
            100.0,
            &mut events,
            &mut rejected,
        );
        match rejected.pop() {
            Some(rejection) => Err(rejection),
            None => Ok(serde_json::from_slice(events.iter().next().unwrap().1).unwrap()),
        }
    }

    #[test]
    fn templates_map_paths_to_fields() {
        let collectd = [
            "collectd.* .host.service*",
            "servers.* .host.dc.service",
            "host.service*",
        ];
        let event = decode(
            &collectd,
            "collectd.cd1.load.load.shortterm 4.126 1795950064",
        )
        .unwrap();
        assert_eq!(
            (
                &event["host"],
                &event["service"],
                &event["metric"],
                &event["time"]
            ),
            (
                &"cd1".into(),
                &"load.load.shortterm".into(),
                &4.126.into(),
                &1795950064.0.into()
            )
        );
        // Parts beyond the template go to service; a meta key is kept.
        let event = decode(&collectd, "servers.web-1.eu.cpu.user 7").unwrap();
        assert_eq!(
            (&event["host"], &event["meta"]["dc"], &event["service"]),
            (&"web-1".into(), &"eu".into(), &"cpu.user".into())
        );
        assert_eq!(event["time"], 100.0, "no timestamp: now");
        // The default template.
        let event = decode(&collectd, "db-1.disk.used 1e3 -1").unwrap();
        assert_eq!(
            (&event["host"], &event["service"], &event["time"]),
            (&"db-1".into(), &"disk.used".into(), &100.0.into())
        );
        assert_eq!(
            decode(&[], "a.b 1 2").unwrap()["host"],
            "a",
            "host.service* without templates"
        );
    }

    #[test]
    fn a_timestamp_beyond_the_future_bound_is_refused() {
        let options = DecodeOptions {
            max_future_secs: Some(300.0),
            ..DecodeOptions::default()
        };
        let graphite = Graphite::new("graphite", &[], options).unwrap();
        let (mut events, mut rejected) = (Encoded::default(), Vec::new());
        let year_ahead = format!("web.cpu 1 {}", 100 + 365 * 86_400);
        crate::protocol::Protocol::decode(
            &graphite,
            year_ahead.as_bytes(),
            100.0,
            &mut events,
            &mut rejected,
        );
        assert!(events.is_empty());
        assert_eq!(rejected[0].reason, Reason::TimeInFuture);
    }

    #[test]
    fn bad_lines_and_templates_are_named() {
        for (line, expected) in [
            ("web.cpu", "not \"path value timestamp\""),
            ("web.cpu abc 1", "value \"abc\" is not a number"),
            ("web.cpu 1 x", "timestamp \"x\""),
            ("web.cpu 1 2 3", "more than three fields"),
            ("web.cpu nan 2", "not finite"),
        ] {
            let rejection = decode(&[], line).unwrap_err();
            assert!(rejection.detail.contains(expected), "{line}: {rejection}");
        }
        for template in ["service.x", "host.x*.y", "a b c"] {
            assert!(
                Graphite::new("g", &[template.to_owned()], DecodeOptions::default()).is_err(),
                "{template}"
            );
        }
    }
}
