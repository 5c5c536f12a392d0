//! The router's Prometheus metrics, all in one place.

use std::sync::LazyLock;

use prometheus::{
    register_gauge, register_histogram, register_int_counter, register_int_counter_vec,
    register_int_gauge, Gauge, Histogram, IntCounter, IntCounterVec, IntGauge,
};

/// Events appended to `weir.events`.
pub(crate) static ROUTED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "weir_router_events_total",
        "Events appended to the events topic"
    )
    .expect("metric registers once")
});

/// Time for one round of appends (produce latency).
pub(crate) static APPEND_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "weir_router_append_seconds",
        "Duration of one round of appends to the log",
        vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]
    )
    .expect("metric registers once")
});

/// Partitions of `weir.events` the router places new applications over.
pub(crate) static PARTITIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "weir_router_partitions",
        "Partitions of the events topic new applications are placed over"
    )
    .expect("metric registers once")
});

/// Applications with a placement in the router's registry.
pub(crate) static APPLICATIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "weir_router_applications",
        "Applications with a placement in the router's registry"
    )
    .expect("metric registers once")
});

/// Placements forgotten after `forget_after_secs` without events.
pub(crate) static FORGOTTEN: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "weir_router_forgotten_total",
        "Application placements forgotten after router.forget_after_secs without events"
    )
    .expect("metric registers once")
});

/// Offset after the last `weir.registry` record this node applied.
pub(crate) static VERSION: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "weir_registry_version",
        "Offset after the last registry record this node applied (equal versions, equal views)"
    )
    .expect("metric registers once")
});

/// Seconds between the last applied registry record's append and its
/// application here.
pub(crate) static APPLY_LAG: LazyLock<Gauge> = LazyLock::new(|| {
    register_gauge!(
        "weir_registry_apply_lag_seconds",
        "Seconds from the last applied registry record's append to its application on this node"
    )
    .expect("metric registers once")
});

/// Contents read from a registry source, per source.
pub(crate) static SOURCE_UPDATES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "weir_registry_source_reads_total",
        "New contents read from a registry source",
        &["source"]
    )
    .expect("metric registers once")
});

/// Failed reads of a registry source (down, an error status, invalid content), per source.
pub(crate) static SOURCE_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "weir_registry_source_errors_total",
        "Registry source reads that failed (the view was left as it was)",
        &["source"]
    )
    .expect("metric registers once")
});

/// Application moves under way, as this node sees them.
pub(crate) static MOVES_PENDING: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "weir_registry_moves_pending",
        "Application moves under way (their events wait in the routers)"
    )
    .expect("metric registers once")
});

/// Events waiting in this router for their application's move.
pub(crate) static HELD: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "weir_router_held_events",
        "Events waiting in this router for their application's move to finish"
    )
    .expect("metric registers once")
});

/// Moves this node saw finish.
pub(crate) static MOVES_DONE: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "weir_registry_moves_total",
        "Application moves this node saw finish"
    )
    .expect("metric registers once")
});
