//! Ingest's Prometheus metrics, all in one place. Labels are bounded:
//! protocol is one of tcp/udp/unix/http, reason one of [`weir_event::Reason`].

use std::sync::LazyLock;

use prometheus::{register_int_counter_vec, register_int_gauge_vec, IntCounterVec, IntGaugeVec};
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

/// Counts and logs one rejected line.
pub fn reject(protocol: &str, rejection: &Rejection) {
    REJECTED
        .with_label_values(&[protocol, rejection.reason.as_str()])
        .inc();
    tracing::debug!(protocol, reason = rejection.reason.as_str(), detail = %rejection.detail, "rejected line");
}
