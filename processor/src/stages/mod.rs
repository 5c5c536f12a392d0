//! One file per stage (or family of stages). Each has a constructor that
//! validates its arguments and a [`crate::stage::Stage`] impl; semantics
//! are documented on the module and in docs/REACTORS.md.

pub mod annotate;
pub mod by;
pub mod change;
pub mod coalesce;
pub mod combine;
pub mod ewma;
pub mod expire;
pub mod fanout;
pub mod filter;
pub mod index;
pub mod modify;
pub mod moving;
pub mod rollup;
pub mod running;
pub mod stable;
pub mod threshold;
pub mod throttle;
pub mod tumbling;
