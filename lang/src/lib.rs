//! weir's reactor language, shared by the processor (pipelines) and the
//! sinks (`filter = "…"` predicates), so that a sink does not need the
//! whole processor:
//!
//! - [`lang`] parses pipeline text into stage specs and predicates;
//! - [`predicate`] compiles a predicate and matches it against events.

pub mod lang;
pub mod predicate;
