//! The one TOML config file. Every key has a default; unknown keys are
//! errors, so a typo never silently falls back to a default.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use weir_ingest::IngestConfig;
use weir_log::{Backend, LogConfig};
use weir_processor::{ProcessorConfig, ReactorConfig};
use weir_router::RouterConfig;
use weir_storage::notify::NotifyConfig;
use weir_storage::{SinkConfig, SinkKind};

use crate::admin::AdminConfig;

/// The built-in example config used when `weir run` gets no `--config`.
pub const DEFAULT_CONFIG: &str = include_str!("../examples/default.toml");

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the embedded log, checkpoints and file-sink output live.
    pub data_dir: Option<PathBuf>,
    /// Where a service serves /metrics besides the HTTP ingest listener.
    pub metrics_listen: Option<String>,
    /// The longest a shutdown (SIGTERM, Ctrl-C) may take before the
    /// process exits anyway; a second signal exits at once.
    pub shutdown_timeout_secs: u64,
    /// The log backend.
    pub log: LogConfig,
    /// Producer-facing listeners.
    pub ingest: IngestConfig,
    /// Registry and routing.
    pub router: RouterConfig,
    /// Reactor runtime.
    pub processor: ProcessorConfig,
    /// `[[sink]]` tables; none: one file sink named `file`.
    pub sink: Vec<SinkConfig>,
    /// Notification delivery.
    pub notify: NotifyConfig,
    /// The reactors.
    pub reactor: Vec<ReactorConfig>,
    /// Who may use the admin API, and where it listens.
    pub admin: AdminConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: None,
            metrics_listen: None,
            shutdown_timeout_secs: 30,
            log: LogConfig::default(),
            ingest: IngestConfig::default(),
            router: RouterConfig::default(),
            processor: ProcessorConfig::default(),
            sink: Vec::new(),
            notify: NotifyConfig::default(),
            reactor: Vec::new(),
            admin: AdminConfig::default(),
        }
    }
}

impl Config {
    /// Parses config text; `origin` names it in errors. Any string value
    /// may be given as `{ file = "PATH" }` (the file's text, without its
    /// final newline) or `{ env = "NAME" }` (an environment variable), so
    /// secrets need not live in the file.
    pub fn parse(text: &str, origin: &str) -> anyhow::Result<Config> {
        let context = || format!("config {origin}");
        let mut value: toml::Value = toml::from_str(text).with_context(context)?;
        let config: Config = if resolve_secrets(&mut value, "").with_context(context)? {
            value.try_into().with_context(context)?
        } else {
            // Parsed from the text itself, errors point at lines.
            toml::from_str(text).with_context(context)?
        };
        // An empty token would let in any request that sends `Bearer `.
        for (name, token) in &config.ingest.tokens {
            anyhow::ensure!(
                !token.0.trim().is_empty(),
                "config {origin}: [ingest.tokens] {name} is empty"
            );
        }
        Ok(config)
    }

    /// The configured sinks, or the default file sink; checked (names
    /// unique and valid, filters and templates parse, a kafka sink only on
    /// the Kafka log).
    pub fn sinks(&self) -> anyhow::Result<Vec<SinkConfig>> {
        if self.sink.is_empty() {
            return Ok(vec![SinkConfig::default_file()]);
        }
        let mut names = std::collections::HashSet::new();
        for sink in &self.sink {
            sink.validate().map_err(anyhow::Error::msg)?;
            anyhow::ensure!(
                names.insert(&sink.name),
                "two sinks are named {:?}",
                sink.name
            );
            anyhow::ensure!(
                !matches!(sink.kind, SinkKind::Kafka(_)) || self.log.backend == Backend::Kafka,
                "sink {}: a kafka sink needs the Kafka log (`--log kafka`)",
                sink.name
            );
        }
        Ok(self.sink.clone())
    }

    /// Reads `path`, or the built-in example when `None`.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        match path {
            None => Config::parse(DEFAULT_CONFIG, "(built-in example)"),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config {}", path.display()))?;
                Config::parse(&text, &path.display().to_string())
            }
        }
    }

    /// The data directory: the command line, then the config, then `./weir-data`.
    pub fn data_dir(&self, flag: Option<&Path>) -> PathBuf {
        flag.map(Path::to_path_buf)
            .or_else(|| self.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from("weir-data"))
    }
}

/// Replaces every `{ file = … }` and `{ env = … }` table under `value`
/// (at `key`) by the secret it names; whether there was any. Errors name
/// the key and the source, never a secret.
fn resolve_secrets(value: &mut toml::Value, key: &str) -> anyhow::Result<bool> {
    let secret = match value {
        toml::Value::Table(table) if table.len() == 1 => match table.iter().next() {
            Some((kind, toml::Value::String(source))) if kind == "file" => Some(
                std::fs::read_to_string(source)
                    .map(|text| text.strip_suffix('\n').unwrap_or(&text).to_owned())
                    .with_context(|| format!("key `{key}`: reading secret file {source}"))?,
            ),
            Some((kind, toml::Value::String(source))) if kind == "env" => {
                Some(std::env::var(source).with_context(|| {
                    format!("key `{key}`: environment variable {source} is not set")
                })?)
            }
            _ => None,
        },
        _ => None,
    };
    if let Some(secret) = secret {
        *value = toml::Value::String(secret);
        return Ok(true);
    }
    let mut found = false;
    match value {
        toml::Value::Table(table) => {
            for (name, child) in table.iter_mut() {
                let path = if key.is_empty() {
                    name.clone()
                } else {
                    format!("{key}.{name}")
                };
                found |= resolve_secrets(child, &path)?;
            }
        }
        toml::Value::Array(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                found |= resolve_secrets(child, &format!("{key}[{i}]"))?;
            }
        }
        _ => {}
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_config_parses_and_its_reactors_build() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut seen = 0;
        let examples = std::fs::read_dir(root.join("examples")).unwrap();
        let paths = examples
            .map(|entry| entry.unwrap().path())
            .chain([root.join("deploy/weir.toml")]);
        for path in paths {
            if path.extension().is_some_and(|e| e == "toml") {
                let config = Config::load(Some(&path)).unwrap();
                weir_processor::Processor::check(&config.reactor)
                    .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
                config
                    .sinks()
                    .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 3);
        assert_eq!(Config::load(None).unwrap().reactor.len(), 2);
    }

    #[test]
    fn the_readme_config_reference_parses() {
        let readme = include_str!("../README.md");
        let block = readme
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("README has a toml block");
        let config = Config::parse(block, "README.md").unwrap();
        assert_eq!(config.reactor.len(), 1);
        assert_eq!(config.sinks().unwrap().len(), 4);
        assert_eq!(config.metrics_listen.as_deref(), Some("127.0.0.1:9101"));
    }

    #[test]
    fn secrets_come_from_files_and_the_environment_and_errors_never_show_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pg-url");
        std::fs::write(&file, "host=db password=hunter2\n").unwrap();
        std::env::set_var("WEIR_TEST_KAFKA_PASSWORD", "sw0rdfish");
        let text = format!(
            r#"
[log.kafka]
properties = {{ "sasl.password" = {{ env = "WEIR_TEST_KAFKA_PASSWORD" }} }}
[[sink]]
name = "pg"
type = "postgres"
url = {{ file = {:?} }}
"#,
            file.display().to_string()
        );
        let config = Config::parse(&text, "secrets.toml").unwrap();
        assert_eq!(config.log.kafka.properties["sasl.password"], "sw0rdfish");
        match &config.sink[0].kind {
            SinkKind::Postgres(pg) => assert_eq!(pg.url, "host=db password=hunter2"),
            other => panic!("{other:?}"),
        }
        // A missing secret names its key and its source, never a secret.
        let missing = text.replace("WEIR_TEST_KAFKA_PASSWORD", "WEIR_TEST_UNSET_VARIABLE");
        let error = format!("{:#}", Config::parse(&missing, "secrets.toml").unwrap_err());
        assert!(
            error.contains("log.kafka.properties.sasl.password"),
            "{error}"
        );
        assert!(
            error.contains("WEIR_TEST_UNSET_VARIABLE") && !error.contains("hunter2"),
            "{error}"
        );
        let gone = text.replace("pg-url", "no-such-file");
        let error = format!("{:#}", Config::parse(&gone, "secrets.toml").unwrap_err());
        assert!(
            error.contains("sink[0].url") && error.contains("no-such-file"),
            "{error}"
        );
    }

    #[test]
    fn an_empty_producer_token_is_refused() {
        let error = Config::parse("[ingest.tokens]\nweb = \" \"\n", "t.toml").unwrap_err();
        assert!(
            format!("{error:#}").contains("[ingest.tokens] web is empty"),
            "{error:#}"
        );
    }

    #[test]
    fn unknown_keys_are_errors_with_a_location() {
        let error = Config::parse("[ingest]\nmax_line = 5\n", "test.toml").unwrap_err();
        let text = format!("{error:#}");
        assert!(
            text.contains("test.toml") && text.contains("max_line"),
            "{text}"
        );
    }
}
