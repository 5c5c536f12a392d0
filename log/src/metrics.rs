//! The log's Prometheus metrics, all in one place.

use std::sync::LazyLock;

use prometheus::{register_histogram, register_int_counter_vec, Histogram, IntCounterVec};

/// Records appended, per topic.
pub(crate) static APPENDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "weir_log_appended_records_total",
        "Records appended to the log",
        &["topic"]
    )
    .expect("metric registers once")
});

/// Bytes appended, per topic.
pub(crate) static APPENDED_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "weir_log_appended_bytes_total",
        "Bytes appended to the log",
        &["topic"]
    )
    .expect("metric registers once")
});

/// Time spent in fsync.
pub(crate) static FSYNC_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "weir_log_fsync_seconds",
        "Duration of log fsyncs",
        vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]
    )
    .expect("metric registers once")
});

/// Segments deleted by retention, per topic.
pub(crate) static SEGMENTS_DELETED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "weir_log_segments_deleted_total",
        "Segments removed by retention",
        &["topic"]
    )
    .expect("metric registers once")
});

/// Free bytes on the embedded log's disk, as last checked.
pub(crate) static DISK_FREE: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    prometheus::register_int_gauge!(
        "weir_log_disk_free_bytes",
        "Free bytes on the embedded log's disk, as last checked"
    )
    .expect("metric registers once")
});

/// Partition assignments received by group members.
#[cfg(feature = "kafka")]
pub(crate) static REBALANCES: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        "weir_log_rebalances_total",
        "Partition assignments received from the group coordinator"
    )
    .expect("metric registers once")
});

/// Whether the Kafka brokers answered the last metadata request (1) or not (0).
#[cfg(feature = "kafka")]
pub(crate) static BROKERS_REACHABLE: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    prometheus::register_int_gauge!(
        "weir_log_brokers_reachable",
        "1 when the Kafka brokers answered the last metadata request (every 5 s), else 0"
    )
    .expect("metric registers once")
});
