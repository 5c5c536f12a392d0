//! The PostgreSQL sink: results in `PREFIXevents`, notifications in
//! `PREFIXnotifications`, tables the sink creates and migrates itself
//! (`PREFIXschema` records the version applied).
//!
//! A consumer batch is one `INSERT … SELECT … FROM jsonb_array_elements($1)
//! ON CONFLICT (id) DO NOTHING` per table: one round trip, and a result
//! delivered again (after a crash or an outage) never adds a row. A batch
//! the server refuses for its data (SQLSTATE classes 22 and 23) is written
//! again record by record, and the records refused alone become dead
//! letters; any other failure (server down, connection lost) makes the
//! consumer retry from its last commit.

use std::path::PathBuf;

use postgres::error::SqlState;
use postgres::Client;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use weir_event::ResultRecord;

use crate::consumer::StorageError;
use crate::sink::{DeadLetters, RecordSink};

/// `type = "postgres"` options.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// libpq-style connection string (`host=… user=… dbname=…`) or URL.
    /// Its `sslmode` means what it means to libpq: `disable`; `prefer`
    /// (the default) and `require` encrypt without authenticating the
    /// server; `verify-ca` and `verify-full` also verify its certificate
    /// (both as verify-full: chain and host name).
    pub url: String,
    /// Prefix of the sink's table names.
    pub table_prefix: String,
    /// PEM file of a CA to trust besides the system's (`verify-*`).
    pub ca_file: Option<PathBuf>,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: "host=127.0.0.1 user=weir dbname=weir".into(),
            table_prefix: "weir_".into(),
            ca_file: None,
        }
    }
}

/// The schema, one step per version; a step runs once, in a transaction.
const MIGRATIONS: &[&str] = &[
    // 1: results and notifications.
    "CREATE TABLE {p}events (
        id text PRIMARY KEY,
        reactor text NOT NULL,
        host text NOT NULL,
        service text,
        state text,
        time timestamptz NOT NULL,
        metric double precision,
        description text,
        tags text[] NOT NULL DEFAULT '{}',
        meta jsonb NOT NULL DEFAULT '{}',
        type text,
        ttl double precision,
        record jsonb NOT NULL
     );
     CREATE INDEX {p}events_host_time ON {p}events (host, time);
     CREATE TABLE {p}notifications (
        id text PRIMARY KEY,
        reactor text NOT NULL,
        channel text NOT NULL,
        options jsonb NOT NULL,
        host text NOT NULL,
        service text,
        state text,
        time timestamptz NOT NULL,
        metric double precision,
        description text,
        record jsonb NOT NULL
     );
     CREATE INDEX {p}notifications_time ON {p}notifications (time);",
];

const INSERT_EVENTS: &str = "INSERT INTO {p}events
    (id, reactor, host, service, state, time, metric, description, tags, meta, type, ttl, record)
    SELECT r->>'id', r->>'reactor', r->>'host', r->>'service', r->>'state',
           to_timestamp((r->>'time')::float8), (r->>'metric')::float8, r->>'description',
           ARRAY(SELECT jsonb_array_elements_text(COALESCE(r->'tags', '[]'))),
           COALESCE(r->'meta', '{}'), r->>'type', (r->>'ttl')::float8, r
    FROM jsonb_array_elements($1::text::jsonb) AS r
    ON CONFLICT (id) DO NOTHING";

const INSERT_NOTIFICATIONS: &str = "INSERT INTO {p}notifications
    (id, reactor, channel, options, host, service, state, time, metric, description, record)
    SELECT r->>'id', r->>'reactor', COALESCE(r->'notify'->>'channel', 'log'), r->'notify',
           r->>'host', r->>'service', r->>'state',
           to_timestamp((r->>'time')::float8), (r->>'metric')::float8, r->>'description', r
    FROM jsonb_array_elements($1::text::jsonb) AS r
    ON CONFLICT (id) DO NOTHING";

/// Writes one results partition to PostgreSQL.
pub struct PostgresSink {
    name: String,
    config: PostgresConfig,
    client: Option<Client>,
    /// Encoded results since the last flush (a result's JSON is the row's source).
    events: Vec<Vec<u8>>,
    notifications: Vec<Vec<u8>>,
}

impl PostgresSink {
    /// A sink named `name`; it connects (and migrates) at its first flush.
    pub fn new(name: &str, config: &PostgresConfig) -> PostgresSink {
        PostgresSink {
            name: name.to_owned(),
            config: config.clone(),
            client: None,
            events: Vec::new(),
            notifications: Vec::new(),
        }
    }

    fn failed(&self, error: impl std::fmt::Display) -> StorageError {
        StorageError::Sink {
            sink: self.name.clone(),
            detail: error.to_string(),
        }
    }

    fn sql(&self, template: &str) -> String {
        template.replace("{p}", &self.config.table_prefix)
    }

    /// Connects and brings the schema up to date.
    fn connect(&self) -> Result<Client, StorageError> {
        let (mode, url) =
            crate::tls::postgres_sslmode(&self.config.url).map_err(|e| self.failed(e))?;
        let tls = crate::tls::postgres_tls(mode, self.config.ca_file.as_deref())
            .map_err(|e| self.failed(e))?;
        let mut client =
            Client::connect(&url, tls).map_err(|e| self.failed(crate::tls::with_causes(&e)))?;
        let schema = self.sql("{p}schema");
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {schema} (version integer NOT NULL)"
            ))
            .map_err(|e| self.failed(e))?;
        let mut transaction = client.transaction().map_err(|e| self.failed(e))?;
        // One migrating sink at a time; the others wait here.
        transaction
            .batch_execute(&format!("LOCK TABLE {schema} IN EXCLUSIVE MODE"))
            .map_err(|e| self.failed(e))?;
        let applied: i32 = transaction
            .query_opt(&format!("SELECT version FROM {schema}"), &[])
            .map_err(|e| self.failed(e))?
            .map(|row| row.get(0))
            .unwrap_or(0);
        for (version, step) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
            tracing::info!(sink = %self.name, version = version + 1, "migrating the schema");
            transaction
                .batch_execute(&self.sql(step))
                .map_err(|e| self.failed(e))?;
        }
        transaction
            .batch_execute(&format!(
                "DELETE FROM {schema}; INSERT INTO {schema} VALUES ({})",
                MIGRATIONS.len()
            ))
            .map_err(|e| self.failed(e))?;
        transaction.commit().map_err(|e| self.failed(e))?;
        Ok(client)
    }

    /// Inserts `rows` with `statement`; refused rows (bad data) are
    /// retried alone and rejected into `dead`.
    fn insert(
        &mut self,
        statement: &str,
        rows: &[Vec<u8>],
        dead: &mut DeadLetters,
    ) -> Result<(), StorageError> {
        if rows.is_empty() {
            return Ok(());
        }
        let statement = self.sql(statement);
        let batch = json_array(rows.iter().map(Vec::as_slice));
        let Some(client) = self.client.as_mut() else {
            return Err(self.failed("not connected"));
        };
        match client.execute(&statement, &[&batch]) {
            Ok(_) => return Ok(()),
            Err(error) if !is_data_error(&error) => return Err(self.failed(error)),
            Err(error) => {
                tracing::warn!(sink = %self.name, %error, "batch refused; inserting its records one by one")
            }
        }
        for raw in rows {
            let one = json_array(std::iter::once(raw.as_slice()));
            let Some(client) = self.client.as_mut() else {
                return Err(self.failed("not connected"));
            };
            match client.execute(&statement, &[&one]) {
                Ok(_) => {}
                Err(error) if is_data_error(&error) => {
                    let reason = error
                        .as_db_error()
                        .map(|db| db.message().to_owned())
                        .unwrap_or_else(|| error.to_string());
                    dead.reject(raw, &reason);
                }
                Err(error) => return Err(self.failed(error)),
            }
        }
        Ok(())
    }
}

/// `[r1,r2,…]` from encoded records, as the statements' one parameter.
fn json_array<'a>(records: impl Iterator<Item = &'a [u8]>) -> String {
    let mut array = String::from("[");
    for (i, record) in records.enumerate() {
        if i > 0 {
            array.push(',');
        }
        array.push_str(&String::from_utf8_lossy(record));
    }
    array.push(']');
    array
}

/// Whether the server refused the data itself (SQLSTATE classes 22, 23),
/// which no retry can mend.
fn is_data_error(error: &postgres::Error) -> bool {
    error
        .code()
        .map(SqlState::code)
        .is_some_and(|code| code.starts_with("22") || code.starts_with("23"))
}

impl RecordSink for PostgresSink {
    fn restore(&mut self, _resume: Option<Value>) -> Result<(), StorageError> {
        self.events.clear();
        self.notifications.clear();
        Ok(())
    }

    fn handle(&mut self, raw: &[u8], record: ResultRecord) -> Result<(), StorageError> {
        match record.notify {
            Some(_) => self.notifications.push(raw.to_vec()),
            None => self.events.push(raw.to_vec()),
        }
        Ok(())
    }

    fn flush(&mut self, dead: &mut DeadLetters) -> Result<Value, StorageError> {
        if self.events.is_empty() && self.notifications.is_empty() {
            return Ok(Value::Null);
        }
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = Some(self.connect()?);
        }
        let events = std::mem::take(&mut self.events);
        let notifications = std::mem::take(&mut self.notifications);
        let result = self
            .insert(INSERT_EVENTS, &events, dead)
            .and_then(|()| self.insert(INSERT_NOTIFICATIONS, &notifications, dead));
        if result.is_err() {
            // A broken connection is opened again at the next flush.
            self.client = None;
        }
        result.map(|()| Value::Null)
    }
}
