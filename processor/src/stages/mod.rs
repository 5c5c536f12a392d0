//! One file per stage (or family of stages). Each declares its stages in
//! a `STAGES` list of [`crate::stage::StageDef`] (name, options, one line
//! of doc, constructor) and implements [`crate::stage::Stage`]; semantics
//! are documented on the module and in docs/REACTORS.md. A file is
//! registered by one line below.

use crate::stage::StageDef;

/// Declares the stage files and collects their `STAGES`.
macro_rules! registry {
    ($($module:ident,)*) => {
        $(pub mod $module;)*

        /// The `STAGES` of every stage file.
        pub const ALL: &[&[StageDef]] = &[$($module::STAGES),*];
    };
}

/// `tag T (…)` and `meta KEY (…)`, declared in `modify`.
pub mod annotate;

registry! {
    by,
    change,
    coalesce,
    combine,
    ddt,
    ewma,
    expire,
    fanout,
    fill_in,
    filter,
    index,
    modify,
    moving,
    output,
    rollup,
    running,
    runs,
    stable,
    threshold,
    throttle,
    tumbling,
}
