//! The PostgreSQL sink: results in `PREFIXevents`, notifications in
//! `PREFIXnotifications`, tables the sink creates and migrates itself
//! (`PREFIXschema` records the version applied).
//!
//! A consumer batch is one binary `COPY` per table, in one transaction. A
//! result delivered again (after a crash between the server's commit and
//! the consumer's) makes that `COPY` fail on the primary key; the batch
//! then goes through the session's staging table and `INSERT … SELECT …
//! ON CONFLICT (id) DO NOTHING`, so a repeat never adds a row. A batch the
//! server refuses for its data (SQLSTATE classes 22 and 23) is written
//! again record by record, and the records refused alone become dead
//! letters; any other failure (server down, connection lost) makes the
//! consumer retry from its last commit.

use std::path::PathBuf;

use bytes::{BufMut, BytesMut};
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::error::SqlState;
use postgres::types::{accepts, to_sql_checked, IsNull, ToSql, Type};
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

/// The columns both tables have, first in every row the sink writes (a
/// `COPY` names its columns, so their order is the sink's).
const SHARED_COLUMNS: &[(&str, Type)] = &[
    ("id", Type::TEXT),
    ("reactor", Type::TEXT),
    ("host", Type::TEXT),
    ("service", Type::TEXT),
    ("state", Type::TEXT),
    ("time", Type::TIMESTAMPTZ),
    ("metric", Type::FLOAT8),
    ("description", Type::TEXT),
    ("record", Type::JSONB),
];

/// A table the sink writes, and how a result becomes its row.
#[derive(Clone, Copy)]
enum Table {
    Events,
    Notifications,
}

impl Table {
    /// The name after the prefix.
    fn name(self) -> &'static str {
        match self {
            Table::Events => "events",
            Table::Notifications => "notifications",
        }
    }

    /// Its own columns, written after [`SHARED_COLUMNS`].
    fn own_columns(self) -> &'static [(&'static str, Type)] {
        match self {
            Table::Events => &[
                ("tags", Type::TEXT_ARRAY),
                ("meta", Type::JSONB),
                ("type", Type::TEXT),
                ("ttl", Type::FLOAT8),
            ],
            Table::Notifications => &[("channel", Type::TEXT), ("options", Type::JSONB)],
        }
    }

    fn columns(self) -> impl Iterator<Item = &'static (&'static str, Type)> {
        SHARED_COLUMNS.iter().chain(self.own_columns())
    }

    /// The column names, as a statement lists them.
    fn column_list(self) -> String {
        let names: Vec<_> = self.columns().map(|(name, _)| *name).collect();
        names.join(", ")
    }

    /// Writes `row`, its values in the order of [`Table::columns`].
    fn write(self, writer: &mut BinaryCopyInWriter<'_>, row: &Row) -> Result<(), postgres::Error> {
        let event = &row.record.event;
        let reactor: &str = &row.record.id.reactor;
        let time = Timestamp(event.time);
        let (record, detail) = (Jsonb(&row.raw), Jsonb(&row.detail));
        let channel = row.channel();
        let mut values: Vec<&(dyn ToSql + Sync)> = vec![
            &row.id,
            &reactor,
            &event.host,
            &event.service,
            &event.state,
            &time,
            &event.metric,
            &event.description,
            &record,
        ];
        match self {
            Table::Events => values.extend([
                &event.tags as &(dyn ToSql + Sync),
                &detail,
                &event.kind,
                &event.ttl,
            ]),
            Table::Notifications => values.extend([&channel as &(dyn ToSql + Sync), &detail]),
        }
        writer.write(&values)
    }
}

/// A result on its way to a table.
struct Row {
    /// The encoded result (the `record` column, and the dead letter).
    raw: Vec<u8>,
    record: ResultRecord,
    id: String,
    /// The JSON of an event's `meta`, or of a notification's options.
    detail: Vec<u8>,
}

impl Row {
    fn new(raw: &[u8], record: ResultRecord) -> Row {
        let detail = match &record.notify {
            Some(options) => serde_json::to_vec(options),
            None => serde_json::to_vec(&record.event.meta),
        };
        Row {
            raw: raw.to_vec(),
            id: record.id.to_string(),
            detail: detail.unwrap_or_default(),
            record,
        }
    }

    /// A notification's channel (`log` unless its options name one).
    fn channel(&self) -> &str {
        let notify = self.record.notify.as_ref();
        notify.and_then(|n| n["channel"].as_str()).unwrap_or("log")
    }
}

/// Seconds since 1970 as PostgreSQL's `timestamptz`: microseconds since 2000.
#[derive(Debug)]
struct Timestamp(f64);

impl ToSql for Timestamp {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, BoxedError> {
        const Y2K: f64 = 946_684_800.0;
        out.put_i64(((self.0 - Y2K) * 1e6).round() as i64);
        Ok(IsNull::No)
    }

    accepts!(TIMESTAMPTZ);
    to_sql_checked!();
}

/// Encoded JSON as `jsonb` (the server parses it).
#[derive(Debug)]
struct Jsonb<'a>(&'a [u8]);

impl ToSql for Jsonb<'_> {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, BoxedError> {
        // jsonb's binary form: a version byte, then the text.
        out.put_u8(1);
        out.put_slice(self.0);
        Ok(IsNull::No)
    }

    accepts!(JSONB);
    to_sql_checked!();
}

type BoxedError = Box<dyn std::error::Error + Sync + Send>;

/// Writes one results partition to PostgreSQL.
pub struct PostgresSink {
    name: String,
    config: PostgresConfig,
    client: Option<Client>,
    /// Results since the last flush.
    events: Vec<Row>,
    notifications: Vec<Row>,
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
        for table in [Table::Events, Table::Notifications] {
            let staging = format!(
                "CREATE TEMP TABLE IF NOT EXISTS weir_staging_{name} (LIKE {prefix}{name}) ON COMMIT DELETE ROWS",
                name = table.name(),
                prefix = self.config.table_prefix
            );
            client.batch_execute(&staging).map_err(|e| self.failed(e))?;
        }
        Ok(client)
    }

    /// Writes `rows` into `table`; refused rows (bad data) are retried
    /// alone and rejected into `dead`.
    fn insert(
        &mut self,
        table: Table,
        rows: &[Row],
        dead: &mut DeadLetters,
    ) -> Result<(), StorageError> {
        if rows.is_empty() {
            return Ok(());
        }
        let prefix = self.config.table_prefix.clone();
        let Some(client) = self.client.as_mut() else {
            return Err(self.failed("not connected"));
        };
        match store(client, &prefix, table, rows) {
            Ok(()) => return Ok(()),
            Err(Refusal::Data(error)) => {
                tracing::warn!(sink = %self.name, %error, "batch refused; inserting its records one by one")
            }
            Err(error) => return Err(self.failed(error)),
        }
        for row in rows {
            let Some(client) = self.client.as_mut() else {
                return Err(self.failed("not connected"));
            };
            match store(client, &prefix, table, std::slice::from_ref(row)) {
                Ok(()) => {}
                Err(Refusal::Data(reason)) => dead.reject(&row.raw, &reason),
                Err(error) => return Err(self.failed(error)),
            }
        }
        Ok(())
    }
}

/// Why rows were not written.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    /// A row's id is in the table already (SQLSTATE 23505).
    #[error("a result is stored already")]
    Duplicate,
    /// The server refused the data itself (other SQLSTATEs of classes 22
    /// and 23), which no retry can mend: its message.
    #[error("{0}")]
    Data(String),
    /// Anything else (connection lost, server down).
    #[error("{0}")]
    Other(String),
}

impl From<postgres::Error> for Refusal {
    fn from(error: postgres::Error) -> Refusal {
        let code = error.code().map(SqlState::code).unwrap_or_default();
        match error.as_db_error() {
            _ if code == SqlState::UNIQUE_VIOLATION.code() => Refusal::Duplicate,
            Some(db) if code.starts_with("22") || code.starts_with("23") => {
                Refusal::Data(db.message().to_owned())
            }
            _ => Refusal::Other(error.to_string()),
        }
    }
}

/// Writes `rows` into the table `PREFIX` + `table`: straight in with one
/// `COPY`; if one was stored already, through the staging table,
/// skipping the ids the table has.
fn store(client: &mut Client, prefix: &str, table: Table, rows: &[Row]) -> Result<(), Refusal> {
    let target = format!("{prefix}{}", table.name());
    let mut transaction = client.transaction()?;
    match copy(&mut transaction, &target, table, rows) {
        Err(Refusal::Duplicate) => transaction.rollback()?,
        Ok(()) => return Ok(transaction.commit()?),
        Err(error) => return Err(error),
    }
    let staging = format!("pg_temp.weir_staging_{}", table.name());
    let mut transaction = client.transaction()?;
    copy(&mut transaction, &staging, table, rows)?;
    let columns = table.column_list();
    transaction.execute(
        &format!(
            "INSERT INTO {target} ({columns}) SELECT {columns} FROM {staging} ON CONFLICT (id) DO NOTHING"
        ),
        &[],
    )?;
    Ok(transaction.commit()?)
}

/// One binary `COPY` of `rows` into `into`.
fn copy(
    transaction: &mut postgres::Transaction<'_>,
    into: &str,
    table: Table,
    rows: &[Row],
) -> Result<(), Refusal> {
    let sink = transaction.copy_in(&format!(
        "COPY {into} ({}) FROM STDIN (FORMAT binary)",
        table.column_list()
    ))?;
    let types: Vec<Type> = table.columns().map(|(_, kind)| kind.clone()).collect();
    let mut writer = BinaryCopyInWriter::new(sink, &types);
    for row in rows {
        table.write(&mut writer, row)?;
    }
    writer.finish()?;
    Ok(())
}

impl RecordSink for PostgresSink {
    fn restore(&mut self, _resume: Option<Value>) -> Result<(), StorageError> {
        self.events.clear();
        self.notifications.clear();
        Ok(())
    }

    fn handle(&mut self, raw: &[u8], record: ResultRecord) -> Result<(), StorageError> {
        match record.notify {
            Some(_) => self.notifications.push(Row::new(raw, record)),
            None => self.events.push(Row::new(raw, record)),
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
            .insert(Table::Events, &events, dead)
            .and_then(|()| self.insert(Table::Notifications, &notifications, dead));
        if result.is_err() {
            // A broken connection is opened again at the next flush.
            self.client = None;
        }
        result.map(|()| Value::Null)
    }
}
