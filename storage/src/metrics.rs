//! Storage and notifier metrics, all in one place; `sink` is a configured
//! sink kind, `channel` a notify channel: both bounded.

use std::sync::LazyLock;

use prometheus::{register_int_counter_vec, register_int_gauge_vec, IntCounterVec, IntGaugeVec};

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

/// Results forwarded, per kind of target (`topic` or `tcp`).
pub static FORWARDED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("weir_forwarded_total", "Results forwarded", &["target"])
        .expect("metric registers once")
});
