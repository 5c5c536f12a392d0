//! The processor's Prometheus metrics, all in one place. Labels are
//! bounded: reactor names come from the config, partitions from the log.

use std::sync::LazyLock;

use prometheus::{
    register_histogram, register_int_counter, register_int_counter_vec, register_int_gauge,
    register_int_gauge_vec, Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};

/// Entries processed, per partition.
pub static EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "weir_processor_events_total",
        "Log entries processed",
        &["partition"]
    )
    .expect("metric registers once")
});

/// Results emitted, per reactor.
pub static EMITS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "weir_processor_emits_total",
        "Results emitted",
        &["reactor"]
    )
    .expect("metric registers once")
});

/// `/api/index` peers (`[admin] index_peers`) that did not answer, per
/// peer (bounded by the config).
pub static INDEX_PEER_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "weir_index_peer_errors_total",
        "Index queries a peer did not answer",
        &["peer"]
    )
    .expect("metric registers once")
});

/// Entries behind the end of the log, per partition.
pub static LAG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "weir_processor_lag",
        "Entries not yet processed",
        &["partition"]
    )
    .expect("metric registers once")
});

/// Events older than the clock minus the allowed lateness.
pub static LATE_EVENTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "weir_processor_late_events_total",
        "Events later than the allowed lateness"
    )
    .expect("metric registers once")
});

/// Records in the log that are not valid entries (skipped).
pub static UNDECODABLE: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "weir_processor_undecodable_total",
        "Log records that failed to decode"
    )
    .expect("metric registers once")
});

/// Checkpoint duration.
pub static CHECKPOINT_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "weir_processor_checkpoint_seconds",
        "Duration of a partition checkpoint"
    )
    .expect("metric registers once")
});

/// Size of the last checkpoint, per partition.
pub static CHECKPOINT_BYTES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "weir_processor_checkpoint_bytes",
        "Size of the last checkpoint",
        &["partition"]
    )
    .expect("metric registers once")
});

/// Reactors' moved state that could not be taken in (it did not fit, or
/// the reactor does not run here).
pub static MOVED_STATE_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "weir_processor_moved_state_dropped_total",
        "Reactors' state moved with an application that could not be taken in"
    )
    .expect("metric registers once")
});

/// Applications handed over to another partition (`weir registry move`).
pub static HANDOFFS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "weir_processor_handoffs_total",
        "Applications whose state was handed over to another partition"
    )
    .expect("metric registers once")
});

/// Checkpoints that could not be restored (state rebuilt from the log).
pub static RESTORE_FAILURES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "weir_processor_restore_failures_total",
        "Checkpoints that could not be restored"
    )
    .expect("metric registers once")
});

/// Partition workers restarted after a failure.
pub static WORKER_RESTARTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "weir_processor_worker_restarts_total",
        "Partition workers restarted after a failure"
    )
    .expect("metric registers once")
});

/// 1 for each partition this processor owns, 0 once revoked.
pub static OWNED: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "weir_processor_partition_owned",
        "1 while this processor owns the partition",
        &["partition"]
    )
    .expect("metric registers once")
});

/// How many partitions this processor owns (the group's split).
pub static OWNED_COUNT: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "weir_processor_partitions_owned",
        "Partitions of weir.events this processor owns"
    )
    .expect("metric registers once")
});

/// Time to restore a partition's state when it is assigned.
pub static RESTORE_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "weir_processor_restore_seconds",
        "Time to restore a partition's checkpoint on assignment",
        vec![0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 30.0]
    )
    .expect("metric registers once")
});

/// Entries a new reactor still has to catch up on, per partition.
pub static CATCH_UP_LAG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "weir_processor_catch_up_lag",
        "History entries a newly added reactor has yet to replay",
        &["partition"]
    )
    .expect("metric registers once")
});

/// Listeners connected to the live feed.
pub static LIVE_CLIENTS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "weir_live_clients",
        "Listeners connected to the live feed (SSE and WebSocket)"
    )
    .expect("metric registers once")
});

/// Messages live listeners missed because they fell behind (each such
/// listener is disconnected).
pub static LIVE_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "weir_live_dropped_total",
        "Live feed messages listeners missed by falling behind (they were disconnected)"
    )
    .expect("metric registers once")
});

/// Index entries not made because a partition's index was full.
pub static INDEX_FULL: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "weir_index_full_total",
        "Events of a new (host, service) not indexed because the partition's index was full"
    )
    .expect("metric registers once")
});
