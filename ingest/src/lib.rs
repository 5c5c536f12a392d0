//! Ingest: terminates producer connections, decodes each protocol into
//! events, validates them line by line, and hands batches to the router.
//!
//! - [`protocol`] is the one shape of a wire protocol (framing, decoding
//!   with per-item rejections, answers) and the stream and datagram
//!   serving every protocol shares;
//! - [`ndjson`] (godot's NDJSON over TCP, UDP, Unix sockets), [`graphite`]
//!   (plaintext, TCP and UDP), [`riemann`] (protobuf, TCP and UDP) and
//!   [`influx`] (line protocol, HTTP and UDP) are the protocols, and
//!   [`remote_write`] (Prometheus, HTTP), [`otlp`] (OpenTelemetry
//!   metrics over HTTP), [`statsd`] (UDP and TCP,
//!   aggregated per flush) and [`websocket`] (poa agents' typed JSON and
//!   MessagePack messages);
//! - [`listeners`] binds them, with a connection limit;
//! - [`http`] serves `POST /events` (JSON array or NDJSON).
//!
//! Backpressure: a connection awaits the router's bounded queue before it
//! reads more, so a slow log stops socket reads instead of growing memory.

#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod graphite;
pub mod http;
pub mod influx;
pub mod listeners;
pub mod metrics;
pub mod ndjson;
pub mod otlp;
pub mod protocol;
pub mod remote_write;
pub mod riemann;
pub mod statsd;
pub mod tls;
pub mod websocket;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use weir_event::TtlUnit;
use weir_log::Secret;

/// One socket listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// `host:port` (TCP, UDP, HTTP) or a socket path (Unix).
    pub listen: String,
    /// Unit of `ttl` on this listener: `s` or `ms` (godot's client).
    #[serde(default)]
    pub ttl_unit: TtlUnit,
    /// TLS (TCP and HTTP listeners): certificate, key, and optionally the
    /// CA client certificates must chain to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<tls::TlsConfig>,
}

impl Listener {
    fn at(listen: &str) -> Self {
        Listener {
            listen: listen.into(),
            ttl_unit: TtlUnit::S,
            tls: None,
        }
    }

    /// The same listener on `port` (the UDP side of a TCP listener
    /// whose port was chosen by the system).
    pub fn at_port(&self, port: u16) -> Listener {
        let host = self.listen.rsplit_once(':').map_or("", |(host, _)| host);
        Listener {
            listen: format!("{host}:{port}"),
            ..self.clone()
        }
    }

    /// The listener's TLS acceptor, if it has TLS.
    pub fn acceptor(&self, protocol: &'static str) -> Result<Option<tls::Acceptor>, IngestError> {
        self.tls
            .as_ref()
            .map(|config| {
                tls::Acceptor::load(config).map_err(|detail| IngestError::Tls { protocol, detail })
            })
            .transpose()
    }
}

/// Ingest settings (`[ingest]` in the config).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// NDJSON over TCP (godot's `tcp` client).
    pub tcp: Option<Listener>,
    /// NDJSON over UDP, one or more lines per datagram.
    pub udp: Option<Listener>,
    /// NDJSON over a Unix stream socket (godot's `unix` client).
    pub unix: Option<Listener>,
    /// HTTP: `POST /events`, `/metrics`, `/healthz`.
    pub http: Option<Listener>,
    /// Graphite plaintext, TCP and UDP on the same port (carbon's 2003).
    pub graphite: Option<GraphiteListener>,
    /// Riemann's protobuf, TCP and UDP on the same port (Riemann's 5555).
    pub riemann: Option<Listener>,
    /// InfluxDB line protocol over UDP (Influx's 8089; over HTTP it is
    /// `POST /write` on the HTTP listener).
    pub influx: Option<Listener>,
    /// StatsD, UDP and TCP on the same port (8125).
    pub statsd: Option<statsd::StatsdConfig>,
    /// OTLP over gRPC (4317): `MetricsService/Export` over HTTP/2 (over
    /// HTTP it is `POST /v1/metrics` on the HTTP listener).
    pub otlp_grpc: Option<Listener>,
    /// `GET /ws` on the HTTP listener: the message types taken.
    pub websocket: websocket::WebSocketConfig,
    /// Longest accepted line, in bytes.
    pub max_line_bytes: usize,
    /// Most simultaneous stream connections (TCP + Unix each).
    pub max_connections: usize,
    /// A stream connection that sends nothing this long is closed.
    pub idle_timeout_secs: u64,
    /// Largest HTTP request body, in bytes.
    pub max_body_bytes: usize,
    /// Most events in one HTTP request.
    pub max_batch_events: usize,
    /// Most `POST /events` handled at once; more wait their turn before
    /// their bodies are read (backpressure, like the stream listeners).
    pub max_http_requests: usize,
    /// Events stamped further ahead of this node's clock are rejected
    /// (`time_in_future`). Not a key of `[ingest]`: the services set it
    /// from `[processor] max_future_secs`, the bound the partition clock
    /// keeps too.
    #[serde(skip)]
    pub max_future_secs: Option<f64>,
    /// Producer name → bearer token. When any is set, `POST /events`
    /// requires `Authorization: Bearer TOKEN` of one of them, and what
    /// each producer sends is counted under its name.
    pub tokens: BTreeMap<String, Secret>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            tcp: Some(Listener::at("127.0.0.1:9876")),
            udp: Some(Listener::at("127.0.0.1:9876")),
            unix: None,
            http: Some(Listener::at("127.0.0.1:9877")),
            graphite: None,
            riemann: None,
            influx: None,
            statsd: None,
            otlp_grpc: None,
            websocket: websocket::WebSocketConfig::default(),
            max_line_bytes: 1 << 20,
            max_connections: 1024,
            idle_timeout_secs: 300,
            max_body_bytes: 16 << 20,
            max_batch_events: 100_000,
            max_http_requests: 64,
            max_future_secs: None,
            tokens: BTreeMap::new(),
        }
    }
}

/// The Graphite listener: where, and how paths become events.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GraphiteListener {
    /// Where it listens, and its TLS (TCP).
    #[serde(flatten)]
    pub listener: Listener,
    /// Templates, `"[FILTER] TEMPLATE"` ([`graphite`]); none:
    /// `host.service*`.
    #[serde(default)]
    pub templates: Vec<String>,
}

/// Errors starting ingest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// A listener could not bind.
    #[error("cannot listen on {protocol} {address}: {source}")]
    Bind {
        /// Which protocol.
        protocol: &'static str,
        /// The configured address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// A protocol's settings are invalid.
    #[error("[ingest.{protocol}]: {detail}")]
    Config {
        /// Which protocol.
        protocol: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// A listener's TLS set-up failed (or it cannot have TLS).
    #[error("TLS on the {protocol} listener: {detail}")]
    Tls {
        /// Which protocol.
        protocol: &'static str,
        /// What is wrong.
        detail: String,
    },
}

/// Where each started listener actually listens (ports resolved).
#[derive(Debug, Clone, Default)]
pub struct Bound {
    /// TCP address.
    pub tcp: Option<std::net::SocketAddr>,
    /// UDP address.
    pub udp: Option<std::net::SocketAddr>,
    /// Unix socket path.
    pub unix: Option<PathBuf>,
    /// Graphite plaintext (TCP and UDP).
    pub graphite: Option<std::net::SocketAddr>,
    /// Riemann protobuf (TCP and UDP).
    pub riemann: Option<std::net::SocketAddr>,
    /// InfluxDB line protocol (UDP).
    pub influx: Option<std::net::SocketAddr>,
    /// StatsD (UDP and TCP).
    pub statsd: Option<std::net::SocketAddr>,
}

/// Wall-clock seconds, for events that arrive without a `time`.
pub(crate) fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
