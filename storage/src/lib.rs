//! Storage: consumers of `weir.results` that forward results to where
//! they are kept or delivered.
//!
//! [`consumer`] holds what every such consumer shares: one thread per
//! partition, de-duplication by deterministic result id, and committing an
//! offset only after the [`consumer::ResultHandler`] made everything
//! before it durable. [`sink`] holds what every configured `[[sink]]`
//! shares (routing, dead letters); the sinks are [`file`], [`graphite`],
//! [`victoria`] (VictoriaMetrics / InfluxDB line protocol), [`postgres`]
//! and [`kafka`]. Besides them: the [`notify`] notifier (log, email,
//! webhook) and the [`forward`]er; [`tls`] builds the clients of TLS peers.

pub mod consumer;
pub mod file;
pub mod forward;
pub mod graphite;
pub mod kafka;
pub mod metrics;
pub mod notify;
pub mod postgres;
pub mod sink;
pub mod tls;
pub mod victoria;

pub use consumer::{spawn_consumers, ResultHandler, StorageError};
pub use sink::{SinkConfig, SinkKind};
