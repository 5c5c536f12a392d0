//! What every `[[sink]]` shares: its configuration table, the routing of
//! results to it (a `where` predicate and event `type`s), and the
//! dead-letter file for the records it rejects as invalid.
//!
//! A sink is a [`RecordSink`]; [`Routed`] wraps it into the consumer
//! loop's [`ResultHandler`]: it decodes each result, skips what the route
//! does not take, hands the rest to the sink, and writes what the sink
//! rejects to `DEAD_LETTER_DIR/NAME/p{P}.ndjson` with the reason — the
//! sink goes on, and the dead letters are fsynced before the commit.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use weir_event::{Event, ResultRecord};
use weir_lang::lang::ParseError;
use weir_lang::predicate::Predicate;

use crate::consumer::{spawn_consumers, ResultHandler, Source, StorageError, DEFAULT_BATCH_BYTES};
use crate::file::{FileSink, FileSinkConfig};
use crate::graphite::{Distribution, Graphite, GraphiteConfig, Template};
use crate::kafka::{KafkaSink, KafkaSinkConfig};
use crate::metrics::{DEAD_LETTERS, SKIPPED};
use crate::postgres::{PostgresConfig, PostgresSink};
use crate::victoria::{VictoriaConfig, VictoriaSink};

/// One `[[sink]]` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SinkConfig {
    /// Names the sink in metrics, logs, the admin API and its consumer
    /// group (`weir.sink.NAME`); `[A-Za-z0-9_-]+`.
    pub name: String,
    /// Only results satisfying this `where` predicate (reactor language), e.g.
    /// `service =~ "^cpu" and metric > 0`.
    #[serde(default)]
    pub filter: Option<String>,
    /// Only results whose event `type` is one of these (empty: any).
    #[serde(default)]
    pub types: Vec<String>,
    /// Results the sink may fall behind before `/readyz` reports it
    /// (0: no bound).
    #[serde(default = "default_max_lag")]
    pub max_lag: u64,
    /// The kind of sink and its options.
    #[serde(flatten)]
    pub kind: SinkKind,
}

fn default_max_lag() -> u64 {
    100_000
}

/// A sink's `type` and the options of that type.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SinkKind {
    /// NDJSON files.
    File(FileSinkConfig),
    /// Carbon plaintext to one or more destinations.
    Graphite(GraphiteConfig),
    /// InfluxDB line protocol over HTTP (VictoriaMetrics, InfluxDB).
    #[serde(rename = "victoriametrics")]
    VictoriaMetrics(VictoriaConfig),
    /// PostgreSQL tables.
    Postgres(PostgresConfig),
    /// A topic of the (Kafka) log.
    Kafka(KafkaSinkConfig),
}

impl SinkConfig {
    /// The file sink `weir run` uses when no `[[sink]]` is configured.
    pub fn default_file() -> SinkConfig {
        SinkConfig {
            name: "file".into(),
            filter: None,
            types: Vec::new(),
            max_lag: default_max_lag(),
            kind: SinkKind::File(FileSinkConfig::default()),
        }
    }

    /// The consumer group of the sink.
    pub fn group(&self) -> String {
        format!("weir.sink.{}", self.name)
    }

    /// One line saying where the sink writes (no credentials; a Graphite
    /// sink's destinations are its running ones, see [`Graphite::destinations`]).
    pub fn describe(&self, dirs: &SinkDirs) -> String {
        match &self.kind {
            SinkKind::File(file) => {
                let dir = file.dir.clone().unwrap_or_else(|| dirs.results(&self.name));
                format!("file, {}", dir.display())
            }
            SinkKind::Graphite(graphite) => {
                let distribution = match graphite.distribution {
                    Distribution::Broadcast => "broadcast",
                    Distribution::RoundRobin => "round-robin",
                    Distribution::ConsistentHash => "consistent-hash",
                };
                format!("graphite {distribution}")
            }
            SinkKind::VictoriaMetrics(victoria) => format!("victoriametrics, {}", victoria.url),
            SinkKind::Postgres(postgres) => {
                format!(
                    "postgres, tables {}events and {}notifications",
                    postgres.table_prefix, postgres.table_prefix
                )
            }
            SinkKind::Kafka(kafka) => format!("kafka, topic {}", kafka.topic),
        }
    }

    /// Checks what the types cannot: the name's characters, the filter and
    /// a Graphite sink's path template and destinations.
    pub fn validate(&self) -> Result<(), String> {
        let valid_name = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
        if !valid_name {
            return Err(format!("sink name {:?} must be [A-Za-z0-9_-]+", self.name));
        }
        Route::new(self).map_err(|e| format!("sink {}: filter: {e}", self.name))?;
        if let SinkKind::Graphite(graphite) = &self.kind {
            Template::parse(&graphite.template).map_err(|e| format!("sink {}: {e}", self.name))?;
            for destination in &graphite.destinations {
                crate::graphite::ring::Destination::parse(destination)
                    .map_err(|e| format!("sink {}: destinations: {e}", self.name))?;
            }
            if graphite.replication_factor == 0 {
                return Err(format!(
                    "sink {}: replication_factor must be at least 1",
                    self.name
                ));
            }
        }
        Ok(())
    }
}

/// Which results a sink takes.
#[derive(Debug, Clone)]
pub struct Route {
    filter: Option<Predicate>,
    types: Vec<String>,
}

impl Route {
    /// Compiles the sink's `filter` and `types`.
    pub fn new(config: &SinkConfig) -> Result<Route, ParseError> {
        let filter = config.filter.as_deref().map(Predicate::parse).transpose()?;
        Ok(Route {
            filter,
            types: config.types.clone(),
        })
    }

    /// Whether the sink takes `event`.
    pub fn accepts(&self, event: &Event) -> bool {
        let type_ok = self.types.is_empty()
            || event
                .kind
                .as_ref()
                .is_some_and(|kind| self.types.contains(kind));
        type_ok && self.filter.as_ref().is_none_or(|p| p.matches(event))
    }
}

/// Records a sink rejected, with the reason, in one NDJSON file per
/// sink and results partition.
pub struct DeadLetters {
    sink: String,
    path: PathBuf,
    file: Option<File>,
    buffer: Vec<u8>,
}

impl DeadLetters {
    /// Dead letters of `sink`'s `partition` under `dir/SINK/`.
    pub fn new(dir: &Path, sink: &str, partition: u32) -> DeadLetters {
        DeadLetters {
            sink: sink.to_owned(),
            path: dir.join(sink).join(format!("p{partition}.ndjson")),
            file: None,
            buffer: Vec::new(),
        }
    }

    /// Keeps `record` with `reason`; written by [`DeadLetters::sync`].
    pub fn reject(&mut self, record: &[u8], reason: &str) {
        tracing::warn!(sink = %self.sink, reason, "record rejected; kept as a dead letter");
        DEAD_LETTERS.with_label_values(&[&self.sink]).inc();
        weir_log::drops::dropped(&format!("sink:{}", self.sink), "dead_letter", 1, || {
            format!("{reason}: {}", String::from_utf8_lossy(record))
        });
        let record = serde_json::from_slice::<Value>(record)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(record).into_owned()));
        let line = serde_json::json!({"sink": self.sink, "reason": reason, "record": record});
        self.buffer
            .extend_from_slice(&serde_json::to_vec(&line).unwrap_or_default());
        self.buffer.push(b'\n');
    }

    /// Appends and fsyncs what was rejected since the last call.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let io = |what| {
            let path = self.path.clone();
            move |source| StorageError::Io { what, path, source }
        };
        if self.file.is_none() {
            if let Some(parent) = self.path.parent() {
                std::fs::create_dir_all(parent).map_err(io("create"))?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(io("open"))?;
            self.file = Some(file);
        }
        if let Some(file) = &mut self.file {
            file.write_all(&self.buffer).map_err(io("write"))?;
            file.sync_data().map_err(io("fsync"))?;
        }
        self.buffer.clear();
        Ok(())
    }
}

/// A destination of results; [`Routed`] feeds it.
pub trait RecordSink: Send {
    /// Resumes from the sink's part of the last commit (`None`: fresh).
    fn restore(&mut self, _resume: Option<Value>) -> Result<(), StorageError> {
        Ok(())
    }

    /// Takes one routed result (`raw` is its encoded line); an invalid
    /// record is [`StorageError::Rejected`].
    fn handle(&mut self, raw: &[u8], record: ResultRecord) -> Result<(), StorageError>;

    /// Makes everything handled so far durable, rejecting (into `dead`)
    /// what the destination refused as invalid; returns the resume point.
    fn flush(&mut self, dead: &mut DeadLetters) -> Result<Value, StorageError>;

    /// See [`ResultHandler::batch_bytes`].
    fn batch_bytes(&self) -> usize {
        DEFAULT_BATCH_BYTES
    }
}

/// A [`RecordSink`] behind its route and dead letters.
pub struct Routed {
    name: String,
    route: Route,
    dead: DeadLetters,
    sink: Box<dyn RecordSink>,
}

impl Routed {
    /// Wraps `sink` for one results partition.
    pub fn new(name: &str, route: Route, dead: DeadLetters, sink: Box<dyn RecordSink>) -> Routed {
        Routed {
            name: name.to_owned(),
            route,
            dead,
            sink,
        }
    }
}

impl ResultHandler for Routed {
    fn name(&self) -> &str {
        &self.name
    }

    fn restore(&mut self, resume: Option<Value>) -> Result<(), StorageError> {
        self.sink.restore(resume)
    }

    fn handle(&mut self, raw: &[u8]) -> Result<(), StorageError> {
        let record = match ResultRecord::decode(raw) {
            Ok(record) => record,
            Err(rejection) => {
                self.dead
                    .reject(raw, &format!("undecodable result: {}", rejection.detail));
                return Ok(());
            }
        };
        if !self.route.accepts(&record.event) {
            SKIPPED.with_label_values(&[&self.name]).inc();
            weir_log::drops::dropped(&format!("sink:{}", self.name), "filtered", 1, || {
                String::from_utf8_lossy(raw).into_owned()
            });
            return Ok(());
        }
        match self.sink.handle(raw, record) {
            Err(StorageError::Rejected(reason)) => {
                self.dead.reject(raw, &reason);
                Ok(())
            }
            other => other,
        }
    }

    fn batch_bytes(&self) -> usize {
        self.sink.batch_bytes()
    }

    fn flush(&mut self) -> Result<Value, StorageError> {
        let resume = self.sink.flush(&mut self.dead)?;
        self.dead.sync()?;
        Ok(resume)
    }
}

/// Where a sink keeps its files.
pub struct SinkDirs {
    /// The data directory (file sinks write under `results`, or
    /// `results-NAME` for a file sink not named `file`).
    pub data: PathBuf,
}

impl SinkDirs {
    /// Dead letters: `DATA/dead-letters/NAME/p{P}.ndjson`.
    pub fn dead_letters(&self) -> PathBuf {
        self.data.join("dead-letters")
    }

    /// Runtime state, e.g. Graphite destinations changed through the admin API.
    pub fn state(&self) -> PathBuf {
        self.data.join("sinks")
    }

    /// A file sink's default directory.
    pub fn results(&self, name: &str) -> PathBuf {
        match name {
            "file" => self.data.join("results"),
            _ => self.data.join(format!("results-{name}")),
        }
    }
}

/// A started sink.
pub struct RunningSink {
    /// The sink's name.
    pub name: String,
    /// Its consumers' thread (a Graphite sink runs its own).
    pub consumers: Option<JoinHandle<()>>,
    /// The Graphite sink, whose destinations change at runtime.
    pub graphite: Option<Arc<Graphite>>,
}

impl RunningSink {
    /// Waits for the consumers (after `shutdown` was set) and stops a Graphite sink.
    pub fn join(self) {
        if let Some(graphite) = &self.graphite {
            graphite.stop();
        }
        if let Some(consumers) = self.consumers {
            let _ = consumers.join();
        }
    }
}

/// Starts `config`'s consumers on `results` (whose group is replaced by
/// the sink's); they stop when `shutdown` is set.
pub fn start(
    config: &SinkConfig,
    results: &Source,
    dirs: &SinkDirs,
    shutdown: Arc<AtomicBool>,
) -> Result<RunningSink, StorageError> {
    let route = Route::new(config).map_err(|e| StorageError::Sink {
        sink: config.name.clone(),
        detail: format!("filter: {e}"),
    })?;
    let source = Source {
        group: config.group(),
        max_lag: config.max_lag,
        ..results.clone()
    };
    let name = config.name.clone();
    let routed = {
        let (name, route, letters) = (name.clone(), route.clone(), dirs.dead_letters());
        move |partition, sink: Box<dyn RecordSink>| {
            Routed::new(
                &name,
                route.clone(),
                DeadLetters::new(&letters, &name, partition),
                sink,
            )
        }
    };
    let mut running = RunningSink {
        name: name.clone(),
        consumers: None,
        graphite: None,
    };
    running.consumers = match &config.kind {
        SinkKind::File(file) => {
            let dir = file.dir.clone().unwrap_or_else(|| dirs.results(&name));
            let max_file_bytes = file.max_file_bytes;
            Some(spawn_consumers(
                &source,
                move |p| routed(p, Box::new(FileSink::new(&dir, p, max_file_bytes))),
                shutdown,
            )?)
        }
        SinkKind::Graphite(graphite) => {
            running.graphite = Some(Graphite::start(
                &name,
                graphite,
                route.clone(),
                source,
                &dirs.dead_letters(),
                &dirs.state(),
            )?);
            None
        }
        SinkKind::VictoriaMetrics(victoria) => {
            let client = VictoriaSink::client(&name, victoria)?;
            let victoria = victoria.clone();
            Some(spawn_consumers(
                &source,
                move |p| {
                    routed(
                        p,
                        Box::new(VictoriaSink::new(&name, &victoria, client.clone())),
                    )
                },
                shutdown,
            )?)
        }
        SinkKind::Postgres(postgres) => {
            let postgres = postgres.clone();
            Some(spawn_consumers(
                &source,
                move |p| routed(p, Box::new(PostgresSink::new(&name, &postgres))),
                shutdown,
            )?)
        }
        SinkKind::Kafka(kafka) => {
            let (log, topic) = (source.log.clone(), kafka.topic.clone());
            Some(spawn_consumers(
                &source,
                move |p| routed(p, Box::new(KafkaSink::new(log.clone(), &topic, p))),
                shutdown,
            )?)
        }
    };
    Ok(running)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<SinkConfig>, toml::de::Error> {
        #[derive(Deserialize)]
        struct Tables {
            sink: Vec<SinkConfig>,
        }
        toml::from_str::<Tables>(text).map(|t| t.sink)
    }

    #[test]
    fn sink_tables_parse_by_type_and_refuse_unknown_options() {
        let sinks = parse(
            r#"
            [[sink]]
            name = "carbon"
            type = "graphite"
            destinations = ["127.0.0.1:2003", "127.0.0.1:2103"]
            distribution = "round-robin"
            queue_cap = 100
            filter = 'metric exists'

            [[sink]]
            name = "files"
            type = "file"
            "#,
        )
        .unwrap();
        assert_eq!(sinks.len(), 2);
        match &sinks[0].kind {
            SinkKind::Graphite(graphite) => {
                assert_eq!(graphite.destinations.len(), 2);
                assert_eq!(graphite.queue_cap, 100);
            }
            other => panic!("{other:?}"),
        }
        let error = parse(
            r#"
            [[sink]]
            name = "files"
            type = "file"
            queue_cap = 100
            "#,
        )
        .unwrap_err();
        assert!(error.to_string().contains("queue_cap"), "{error}");
        let error = parse("[[sink]]\nname = \"x\"\ntype = \"carrier-pigeon\"\n").unwrap_err();
        assert!(error.to_string().contains("carrier-pigeon"), "{error}");
    }

    #[test]
    fn routes_take_types_and_where_predicates() {
        let mut config = SinkConfig::default_file();
        config.filter = Some(r#"service =~ "^cpu" and metric > 0.5"#.into());
        config.types = vec!["metric".into()];
        let route = Route::new(&config).unwrap();
        let mut event = Event::new("h", 1.0);
        event.service = Some("cpu-0".into());
        event.metric = Some(0.9);
        event.kind = Some("metric".into());
        assert!(route.accepts(&event));
        event.metric = Some(0.1);
        assert!(!route.accepts(&event));
        event.metric = Some(0.9);
        event.kind = None;
        assert!(!route.accepts(&event));

        config.filter = Some("metric > ".into());
        assert!(config.validate().unwrap_err().contains("filter"));
        config.filter = None;
        config.name = "no spaces".into();
        assert!(config.validate().unwrap_err().contains("name"));
        config.name = "carbon".into();
        config.kind = SinkKind::Graphite(GraphiteConfig {
            template: "{host}.{servce}".into(),
            ..GraphiteConfig::default()
        });
        assert!(config.validate().unwrap_err().contains("{servce}"));
    }

    #[test]
    fn dead_letters_keep_the_record_and_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let mut dead = DeadLetters::new(dir.path(), "pg", 3);
        dead.reject(br#"{"host":"h"}"#, "bad host");
        dead.reject(b"not json", "undecodable");
        dead.sync().unwrap();
        let text = std::fs::read_to_string(dir.path().join("pg/p3.ndjson")).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["record"]["host"], "h");
        assert_eq!(lines[0]["reason"], "bad host");
        assert_eq!(lines[1]["record"], "not json");
    }
}
