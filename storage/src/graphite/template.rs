//! Metric paths from a template over a result's fields.

use serde_json::Value;
use weir_event::ResultRecord;

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Host,
    Service,
    State,
    Type,
    Reactor,
    Meta(String),
}

/// A parsed path template.
#[derive(Debug, Clone)]
pub struct Template(Vec<Part>);

impl Template {
    /// Parses `text`, refusing unknown `{fields}` and unclosed braces.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("template {text:?}: unclosed {{"))?;
            let field = &rest[open + 1..open + close];
            parts.push(match field {
                "host" => Part::Host,
                "service" => Part::Service,
                "state" => Part::State,
                "type" => Part::Type,
                "reactor" => Part::Reactor,
                _ => match field.strip_prefix("meta.") {
                    Some(key) if !key.is_empty() => Part::Meta(key.to_owned()),
                    _ => return Err(format!("template {text:?}: unknown field {{{field}}}")),
                },
            });
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template(parts))
    }

    /// The metric path of `record`, or which field it lacks.
    pub fn render(&self, record: &ResultRecord) -> Result<String, String> {
        let event = &record.event;
        let mut path = String::new();
        for part in &self.0 {
            let (name, value) = match part {
                Part::Text(text) => {
                    path.push_str(text);
                    continue;
                }
                Part::Host => ("host", Some(event.host.as_str())),
                Part::Service => ("service", event.service.as_deref()),
                Part::State => ("state", event.state.as_deref()),
                Part::Type => ("type", event.kind.as_deref()),
                Part::Reactor => ("reactor", Some(&*record.id.reactor)),
                Part::Meta(key) => {
                    let value = event.meta.get(key);
                    let text = match value {
                        Some(Value::String(s)) => Some(s.clone()),
                        Some(Value::Null) | None => None,
                        Some(other) => Some(other.to_string()),
                    };
                    match text {
                        Some(text) if !text.is_empty() => {
                            escape_into(&mut path, &text);
                            continue;
                        }
                        _ => return Err(format!("the path template needs meta.{key}")),
                    }
                }
            };
            match value {
                Some(value) if !value.is_empty() => escape_into(&mut path, value),
                _ => return Err(format!("the path template needs {name}")),
            }
        }
        Ok(path)
    }
}

fn escape_into(path: &mut String, value: &str) {
    path.extend(value.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
            c
        } else {
            '_'
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_event::Event;

    fn record(host: &str, service: Option<&str>) -> ResultRecord {
        let mut event = Event::new(host, 1.0);
        event.service = service.map(Into::into);
        event.meta.insert("dc".into(), Value::from("eu west"));
        ResultRecord {
            id: "cpu@00:0:1:0".parse().unwrap(),
            notify: None,
            forward: None,
            event,
        }
    }

    #[test]
    fn templates_fill_fields_and_escape_unsafe_characters() {
        let template = Template::parse("weir.{meta.dc}.{host}.{service}").unwrap();
        assert_eq!(
            template
                .render(&record("web-1.example.com", Some("api/reqs p99")))
                .unwrap(),
            "weir.eu_west.web-1_example_com.api_reqs_p99"
        );
        let error = template.render(&record("h", None)).unwrap_err();
        assert!(error.contains("service"), "{error}");
        assert!(Template::parse("{host}.{nope}").is_err());
        assert!(Template::parse("{host").is_err());
        assert_eq!(
            Template::parse("{reactor}.x")
                .unwrap()
                .render(&record("h", None))
                .unwrap(),
            "cpu.x"
        );
    }
}
