//! One file per stage. Each has a `from_spec` that validates its
//! arguments and a [`crate::stage::Stage`] impl; semantics are documented
//! on the type and in docs/REACTORS.md.

pub mod by;
pub mod count;
pub mod ewma;
pub mod expire;
pub mod filter;
pub mod threshold;
pub mod throttle;
