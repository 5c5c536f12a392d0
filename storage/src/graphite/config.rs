//! The Graphite sink's options (`type = "graphite"`).

use serde::{Deserialize, Serialize};

use super::ring::HashType;

/// How lines are spread over the destinations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Distribution {
    /// Every destination gets every line.
    Broadcast,
    /// Each line goes to one destination, in turn.
    RoundRobin,
    /// Each metric path goes to the destination carbon's consistent-hash
    /// ring gives it (and `replication_factor - 1` more), as carbon-relay
    /// places it.
    ConsistentHash,
}

/// `type = "graphite"` options.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GraphiteConfig {
    /// Carbon plaintext listeners, `HOST:PORT` or carbon's
    /// `HOST:PORT:INSTANCE` (the ring is keyed by host and instance).
    pub destinations: Vec<String>,
    /// `broadcast`, `round-robin` or `consistent-hash`.
    pub distribution: Distribution,
    /// Consistent hash: destinations per path (carbon's `REPLICATION_FACTOR`).
    pub replication_factor: usize,
    /// Consistent hash: `carbon_ch` (carbon's default) or `fnv1a_ch`.
    pub hash: HashType,
    /// Consistent hash: replicas on distinct hosts (carbon's `DIVERSE_REPLICAS`).
    pub diverse_replicas: bool,
    /// Lines a destination holds before the pool passes it over (and, in
    /// broadcast, before its consumer waits).
    pub queue_cap: usize,
    /// The metric path: `{host}`, `{service}`, `{state}`, `{type}`,
    /// `{reactor}` and `{meta.KEY}` are replaced by the result's field,
    /// with every character but `[A-Za-z0-9_-]` turned into `_`.
    pub template: String,
    /// Failed connects in a row after which a round-robin destination
    /// leaves the pool.
    pub max_failures: u32,
    /// First reconnect delay; doubled per failure up to 10 s.
    pub backoff_ms: u64,
    /// Connect timeout.
    pub connect_timeout_ms: u64,
    /// Most destinations the admin API may give the sink (each runs
    /// its own writer, and in broadcast its own consumers).
    pub max_destinations: usize,
}

impl Default for GraphiteConfig {
    fn default() -> Self {
        GraphiteConfig {
            destinations: vec!["127.0.0.1:2003".into()],
            distribution: Distribution::Broadcast,
            replication_factor: 1,
            hash: HashType::CarbonCh,
            diverse_replicas: true,
            queue_cap: 4096,
            template: "{host}.{service}".into(),
            max_failures: 3,
            backoff_ms: 500,
            connect_timeout_ms: 2000,
            max_destinations: 16,
        }
    }
}
