//! Storage: consumers of `weir.results` that forward results to where
//! they are kept or delivered.
//!
//! [`consumer`] holds what every such consumer shares: one thread per
//! partition, de-duplication by deterministic result id, and committing an
//! offset only after the [`consumer::ResultHandler`] made everything
//! before it durable. Handlers: the [`file`] sink and the [`notify`]
//! notifier (log, email, webhook), and the [`forward`]er.

pub mod consumer;
pub mod file;
pub mod forward;
pub mod metrics;
pub mod notify;

pub use consumer::{spawn_consumers, ResultHandler, StorageError};
