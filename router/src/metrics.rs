//! The router's Prometheus metrics, all in one place.

use std::sync::LazyLock;

use prometheus::{
    register_histogram, register_int_counter, register_int_gauge, Histogram, IntCounter, IntGauge,
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
