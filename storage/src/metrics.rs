//! Storage and notifier metrics, all in one place; `sink` is a configured
//! sink kind, `channel` a notify channel: both bounded.

use std::sync::LazyLock;

use prometheus::{
    register_int_counter_vec, register_int_gauge, register_int_gauge_vec, IntCounterVec, IntGauge,
    IntGaugeVec,
};

/// Results written, per sink.
pub static WRITTEN: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "weir_storage_written_total",
        "Results written by a sink",
        &["sink"]
    )
    .expect("metric registers once")
});

/// Results skipped because their id was already applied, per sink.
pub static DUPLICATES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "weir_storage_duplicates_total",
        "Re-delivered results dropped",
        &["sink"]
    )
    .expect("metric registers once")
});

/// Failures that made a sink retry from its last commit, per sink.
pub static ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "weir_storage_errors_total",
        "Sink failures (retried)",
        &["sink"]
    )
    .expect("metric registers once")
});

/// Results not yet consumed, per sink and partition.
pub static LAG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "weir_storage_lag",
        "Results not yet consumed",
        &["sink", "partition"]
    )
    .expect("metric registers once")
});

/// Notifications delivered, per channel.
pub static NOTIFICATIONS_SENT: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "weir_notifications_sent_total",
        "Notifications delivered",
        &["channel"]
    )
    .expect("metric registers once")
});

/// Notifications given up on after every attempt, per channel.
pub static NOTIFICATIONS_FAILED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "weir_notifications_failed_total",
        "Notifications not delivered after every attempt",
        &["channel"]
    )
    .expect("metric registers once")
});

/// Notifications recorded but not delivered because their event is too
/// old (`notify.max_age_secs`), per channel.
pub static NOTIFICATIONS_SUPPRESSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "weir_notifications_suppressed_total",
        "Notifications about events older than notify.max_age_secs, recorded and not delivered",
        &["channel"]
    )
    .expect("metric registers once")
});

/// Notifications waiting for a retry, over every partition.
pub static NOTIFICATIONS_WAITING: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "weir_notifications_waiting",
        "Notifications waiting for a retry after a failed delivery"
    )
    .expect("metric registers once")
});

/// Results forwarded, per kind of target (`topic` or `tcp`).
pub static FORWARDED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("weir_forwarded_total", "Results forwarded", &["target"])
        .expect("metric registers once")
});

/// Results a sink's route did not take, or that it cannot represent
/// (e.g. a result without a metric for a metrics store), per sink.
pub static SKIPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "weir_sink_skipped_total",
        "Results a sink did not take (route, or nothing to store)",
        &["sink"]
    )
    .expect("metric registers once")
});

/// Records a sink rejected as invalid, kept as dead letters, per sink.
pub static DEAD_LETTERS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "weir_sink_dead_letters_total",
        "Records a sink rejected as invalid, written to its dead-letter file",
        &["sink"]
    )
    .expect("metric registers once")
});

/// Destinations in a Graphite sink's pool (its ring, for consistent hash).
pub static RING_NODES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "weir_graphite_ring_nodes",
        "Destinations in a Graphite sink's pool or ring (those that left it not counted)",
        &["sink"]
    )
    .expect("metric registers once")
});

/// Delivered lines a destination that left the pool kept for resending
/// to itself, not handed to another destination (no duplicates there).
pub static NOT_RESENT: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "weir_graphite_not_resent_total",
        "Delivered lines of a destination that left the pool, not sent again elsewhere",
        &["sink", "destination"]
    )
    .expect("metric registers once")
});

/// Lines written to a Graphite destination, per sink and destination.
pub static DESTINATION_SENT: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "weir_graphite_sent_total",
        "Lines written to a Graphite destination",
        &["sink", "destination"]
    )
    .expect("metric registers once")
});

/// Lines waiting in a Graphite destination's queue.
pub static DESTINATION_QUEUED: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "weir_graphite_queued",
        "Lines waiting in a Graphite destination's queue",
        &["sink", "destination"]
    )
    .expect("metric registers once")
});

/// Lines dropped by a Graphite destination (removed while lines waited,
/// in broadcast mode; round-robin hands them to the others instead).
pub static DESTINATION_DROPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "weir_graphite_dropped_total",
        "Lines a Graphite destination dropped",
        &["sink", "destination"]
    )
    .expect("metric registers once")
});

/// Failed connects and broken connections of a Graphite destination.
pub static DESTINATION_RECONNECTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "weir_graphite_reconnects_total",
        "Failed connects and broken connections of a Graphite destination",
        &["sink", "destination"]
    )
    .expect("metric registers once")
});
