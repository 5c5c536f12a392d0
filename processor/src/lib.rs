//! The weir processor: reactors over the partitions of `weir.events`.
//!
//! - [`lang`] parses pipeline text; [`predicate`] compiles `where`
//!   predicates (both from the `weir-lang` crate, which sinks share).
//! - [`stage`] defines the [`stage::Stage`] trait and chains; each stage
//!   lives in its own file under [`stages`].
//! - [`reactor`] builds reactors and runs them per partition on event time
//!   ([`reactor::Engine`]); the same engine backs `weir eval`.
//! - [`runtime`] drives one worker per partition over the log, with
//!   [`checkpoint`] state in sled.

pub mod backtest;
pub mod checkpoint;
pub mod eval;
pub mod explain;
pub mod index;
pub mod live;
pub mod metrics;
pub mod reactor;
pub mod runtime;
pub mod stage;
pub mod stages;

pub use reactor::{Engine, Reactor, ReactorConfig, ReactorError};
pub use runtime::{
    PartitionStatus, Processor, ProcessorConfig, ProcessorError, ReplayProgress, ReplayWindow,
    Status,
};
pub use weir_lang::{lang, predicate};
