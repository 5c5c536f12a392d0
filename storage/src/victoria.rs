//! The VictoriaMetrics sink: InfluxDB line protocol over HTTP, one gzip
//! POST per consumer batch (also accepted by InfluxDB's `/write`).
//!
//! A result with a metric becomes one line:
//! `MEASUREMENT,host=…,service=…,state=…,type=…,reactor=…,tags=a;b,KEY=… metric=VALUE TIME_NS`
//! (VictoriaMetrics names it `MEASUREMENT_metric`); `KEY` are the
//! configured `meta` keys. Timestamps are whole milliseconds.
//!
//! The batch is committed only after the server answered 2xx. A refused
//! batch (4xx other than 408/429) is sent again line by line, and the
//! lines the server refuses alone become dead letters. A server that is
//! down makes the consumer retry from its last commit, so a line may be
//! sent twice: VictoriaMetrics absorbs that with
//! `-dedup.minScrapeInterval=1ms` (identical samples collapse).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use flate2::write::GzEncoder;
use flate2::Compression;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use weir_event::ResultRecord;

use crate::consumer::StorageError;
use crate::metrics::SKIPPED;
use crate::sink::{DeadLetters, RecordSink};

/// `type = "victoriametrics"` options.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VictoriaConfig {
    /// The line-protocol endpoint.
    pub url: String,
    /// The measurement of every line.
    pub measurement: String,
    /// `meta` keys that become labels.
    pub meta: Vec<String>,
    /// Compress request bodies.
    pub gzip: bool,
    /// Request timeout.
    pub timeout_ms: u64,
    /// PEM file of a CA to trust besides the system's, for an https `url`
    /// under a private CA.
    pub ca_file: Option<PathBuf>,
}

impl Default for VictoriaConfig {
    fn default() -> Self {
        VictoriaConfig {
            url: "http://127.0.0.1:8428/write".into(),
            measurement: "weir".into(),
            meta: Vec::new(),
            gzip: true,
            timeout_ms: 10_000,
            ca_file: None,
        }
    }
}

/// Escapes a measurement, tag key or tag value of the line protocol.
fn escape_into(line: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            ',' | '=' | ' ' | '\\' => {
                line.push('\\');
                line.push(c);
            }
            '\n' | '\r' => line.push(' '),
            c => line.push(c),
        }
    }
}

/// The line of `record`, if it has a metric.
pub fn encode_line(config: &VictoriaConfig, record: &ResultRecord) -> Option<String> {
    let event = &record.event;
    let metric = event.metric?;
    let mut line = String::with_capacity(128);
    escape_into(&mut line, &config.measurement);
    let mut label = |key: &str, value: &str| {
        if !value.is_empty() {
            line.push(',');
            escape_into(&mut line, key);
            line.push('=');
            escape_into(&mut line, value);
        }
    };
    label("host", &event.host);
    label("service", event.service.as_deref().unwrap_or_default());
    label("state", event.state.as_deref().unwrap_or_default());
    label("type", event.kind.as_deref().unwrap_or_default());
    label("reactor", &record.id.reactor);
    label("tags", &event.tags.join(";"));
    for key in &config.meta {
        match event.meta.get(key) {
            Some(Value::String(text)) => label(key, text),
            Some(Value::Null) | None => {}
            Some(other) => label(key, &other.to_string()),
        }
    }
    let millis = (event.time * 1000.0).round() as i64;
    line.push_str(&format!(" metric={metric} {}\n", millis * 1_000_000));
    Some(line)
}

/// Writes one results partition to a line-protocol endpoint.
pub struct VictoriaSink {
    name: String,
    config: VictoriaConfig,
    client: reqwest::blocking::Client,
    /// Lines since the last flush, with the records they came from.
    lines: Vec<(String, Vec<u8>)>,
}

/// What the server said to a request.
enum Answer {
    Accepted,
    Refused(String),
}

impl VictoriaSink {
    /// The HTTP client the sink's partitions share.
    pub fn client(
        name: &str,
        config: &VictoriaConfig,
    ) -> Result<reqwest::blocking::Client, StorageError> {
        let timeout = Duration::from_millis(config.timeout_ms);
        crate::tls::http_client(timeout, config.ca_file.as_deref()).map_err(|detail| {
            StorageError::Sink {
                sink: name.to_owned(),
                detail,
            }
        })
    }

    /// A sink named `name` posting to `config.url` with `client`.
    pub fn new(
        name: &str,
        config: &VictoriaConfig,
        client: reqwest::blocking::Client,
    ) -> VictoriaSink {
        VictoriaSink {
            name: name.to_owned(),
            config: config.clone(),
            client,
            lines: Vec::new(),
        }
    }

    fn failed(&self, detail: impl std::fmt::Display) -> StorageError {
        StorageError::Sink {
            sink: self.name.clone(),
            detail: format!("{}: {detail}", self.config.url),
        }
    }

    fn post<'a>(&self, lines: impl Iterator<Item = &'a str>) -> Result<Answer, StorageError> {
        let mut body = Vec::new();
        for line in lines {
            body.extend_from_slice(line.as_bytes());
        }
        let mut request = self.client.post(&self.config.url);
        if self.config.gzip {
            let mut encoder =
                GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::fast());
            encoder.write_all(&body).map_err(|e| self.failed(e))?;
            body = encoder.finish().map_err(|e| self.failed(e))?;
            request = request.header("Content-Encoding", "gzip");
        }
        let response = request
            .body(body)
            .send()
            .map_err(|e| self.failed(crate::tls::with_causes(&e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(Answer::Accepted);
        }
        let text = response.text().unwrap_or_default();
        let refused = status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429;
        if refused {
            Ok(Answer::Refused(format!("{status}: {}", text.trim())))
        } else {
            Err(self.failed(format!("{status}: {}", text.trim())))
        }
    }
}

impl RecordSink for VictoriaSink {
    fn restore(&mut self, _resume: Option<Value>) -> Result<(), StorageError> {
        self.lines.clear();
        Ok(())
    }

    fn handle(&mut self, raw: &[u8], record: ResultRecord) -> Result<(), StorageError> {
        match encode_line(&self.config, &record) {
            Some(line) => self.lines.push((line, raw.to_vec())),
            None => {
                SKIPPED.with_label_values(&[&self.name]).inc();
                weir_log::drops::dropped(&format!("sink:{}", self.name), "no_metric", 1, || {
                    format!("{} has no metric", record.id)
                });
            }
        }
        Ok(())
    }

    fn flush(&mut self, dead: &mut DeadLetters) -> Result<Value, StorageError> {
        if self.lines.is_empty() {
            return Ok(Value::Null);
        }
        if let Answer::Refused(reason) = self.post(self.lines.iter().map(|(l, _)| l.as_str()))? {
            tracing::warn!(sink = %self.name, %reason, "batch refused; sending its lines one by one");
            for (line, raw) in &self.lines {
                if let Answer::Refused(reason) = self.post(std::iter::once(line.as_str()))? {
                    dead.reject(raw, &reason);
                }
            }
        }
        self.lines.clear();
        Ok(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_event::Event;

    #[test]
    fn lines_carry_labels_escaped_and_millisecond_timestamps() {
        let mut event = Event::new("web 1", 1732280000.1234);
        event.service = Some("api,reqs".into());
        event.state = Some("ok".into());
        event.metric = Some(2.5);
        event.tags = vec!["prod".into(), "eu".into()];
        event.meta.insert("dc".into(), Value::from("fra=1"));
        event.meta.insert("other".into(), Value::from("x"));
        let record = ResultRecord {
            id: "cpu@00:0:1:0".parse().unwrap(),
            notify: None,
            forward: None,
            event,
        };
        let config = VictoriaConfig {
            meta: vec!["dc".into()],
            ..VictoriaConfig::default()
        };
        assert_eq!(
            encode_line(&config, &record).unwrap(),
            "weir,host=web\\ 1,service=api\\,reqs,state=ok,reactor=cpu,tags=prod;eu,dc=fra\\=1 \
             metric=2.5 1732280000123000000\n"
        );
        let mut without_metric = record.clone();
        without_metric.event.metric = None;
        assert!(encode_line(&config, &without_metric).is_none());
    }
}
