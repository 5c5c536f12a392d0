//! Ingest's Prometheus metrics, all in one place. Labels are bounded:
//! protocol is one of tcp/udp/unix/http, reason one of [`weir_event::Reason`].

use std::sync::LazyLock;

use prometheus::{
    register_int_counter_vec, register_int_gauge, register_int_gauge_vec, IntCounterVec, IntGauge,
    IntGaugeVec,
};
use weir_event::Rejection;

/// Events accepted, per protocol.
pub static ACCEPTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "weir_ingest_accepted_total",
        "Events accepted",
        &["protocol"]
    )
    .expect("metric registers once")
});

/// Lines rejected, per protocol and reason.
pub static REJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "weir_ingest_rejected_total",
        "Lines rejected",
        &["protocol", "reason"]
    )
    .expect("metric registers once")
});

/// Open connections, per protocol.
pub static CONNECTIONS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "weir_ingest_connections",
        "Open producer connections",
        &["protocol"]
    )
    .expect("metric registers once")
});

/// Failed TLS handshakes (no or a refused client certificate, an
/// untrusted server certificate on the client's side, a timeout), per
/// protocol.
pub static TLS_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "weir_ingest_tls_handshake_failures_total",
        "TLS handshakes that failed",
        &["protocol"]
    )
    .expect("metric registers once")
});

/// Events accepted over HTTP, per producer token name.
pub static PRODUCER_EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "weir_ingest_producer_events_total",
        "Events accepted from each producer token",
        &["producer"]
    )
    .expect("metric registers once")
});

/// Requests refused for a missing (401) or unknown (403) producer token.
pub static UNAUTHORIZED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "weir_ingest_unauthorized_total",
        "Requests refused for a missing or unknown producer token",
        &["protocol", "status"]
    )
    .expect("metric registers once")
});

/// Stream connections closed for sending nothing for `idle_timeout_secs`.
pub static IDLE_CLOSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "weir_ingest_idle_closed_total",
        "Connections closed for idling past idle_timeout_secs",
        &["protocol"]
    )
    .expect("metric registers once")
});

/// `POST /events` requests waiting for a turn (`max_http_requests`).
pub static HTTP_WAITING: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "weir_ingest_http_waiting",
        "HTTP ingest requests waiting for one of max_http_requests turns"
    )
    .expect("metric registers once")
});

/// Counts and logs one rejected line.
pub fn reject(protocol: &str, rejection: &Rejection) {
    REJECTED
        .with_label_values(&[protocol, rejection.reason.as_str()])
        .inc();
    weir_log::drops::dropped(
        &format!("ingest:{protocol}"),
        rejection.reason.as_str(),
        1,
        || rejection.detail.clone(),
    );
    tracing::debug!(protocol, reason = rejection.reason.as_str(), detail = %rejection.detail, "rejected line");
}
