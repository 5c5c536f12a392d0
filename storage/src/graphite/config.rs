//! The Graphite sink's options (`type = "graphite"`).

use serde::{Deserialize, Serialize};

/// How lines are spread over the destinations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Distribution {
    /// Every destination gets every line.
    Broadcast,
    /// Each line goes to one destination, in turn.
    RoundRobin,
}

/// `type = "graphite"` options.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GraphiteConfig {
    /// Carbon plaintext listeners, `HOST:PORT`.
    pub destinations: Vec<String>,
    /// `broadcast` or `round-robin`.
    pub distribution: Distribution,
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
            queue_cap: 4096,
            template: "{host}.{service}".into(),
            max_failures: 3,
            backoff_ms: 500,
            connect_timeout_ms: 2000,
            max_destinations: 16,
        }
    }
}
