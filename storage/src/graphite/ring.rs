//! carbon's consistent-hash ring (`carbon/hashing.py`), so that weir puts
//! every metric path on the destination carbon-relay's
//! `RELAY_METHOD = consistent-hashing` (and carbon-c-relay's `carbon_ch`
//! and `fnv1a_ch`) would, and graphite-web finds it where the ring says.
//!
//! The ring is keyed by (server, instance), not the port: 100 replica
//! points per destination, at the 16-bit hash of the destination's
//! Python `repr` plus `:i` (`carbon_ch`, md5) or `i-INSTANCE`
//! (`fnv1a_ch`); a point that collides moves one up. A path goes to the
//! first point at or after its own hash, then on round the ring for
//! replicas (distinct destinations; with diverse replicas, distinct
//! servers).

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

/// Replica points per destination (carbon's `replica_count`).
const REPLICAS: u32 = 100;

/// The ring's hash (carbon's `ROUTER_HASH_TYPE`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashType {
    /// carbon's default: the first 16 bits of md5.
    #[default]
    CarbonCh,
    /// FNV-1a (32 bits) folded to 16.
    Fnv1aCh,
}

/// A destination as carbon writes it: `HOST:PORT[:INSTANCE]`, an IPv6
/// host in brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The host.
    pub server: String,
    /// The plaintext port.
    pub port: u16,
    /// carbon's instance name, if any (part of the ring key).
    pub instance: Option<String>,
}

impl Destination {
    /// Parses carbon's destination syntax (`carbon.util.parseDestination`).
    pub fn parse(text: &str) -> Result<Destination, String> {
        let text = text.trim();
        let bad = || format!("{text:?} is not HOST:PORT or HOST:PORT:INSTANCE");
        let (server, rest) = match text.strip_prefix('[') {
            Some(bracketed) => bracketed.split_once("]:").ok_or_else(bad)?,
            None => text.split_once(':').ok_or_else(bad)?,
        };
        let (port, instance) = match rest.split_once(':') {
            Some((port, instance)) => (port, Some(instance.to_owned())),
            None => (rest, None),
        };
        if server.is_empty() {
            return Err(bad());
        }
        Ok(Destination {
            server: server.to_owned(),
            port: port.parse().map_err(|_| bad())?,
            instance,
        })
    }

    /// The address to connect to.
    pub fn address(&self) -> String {
        if self.server.contains(':') {
            format!("[{}]:{}", self.server, self.port)
        } else {
            format!("{}:{}", self.server, self.port)
        }
    }
}

/// The ring over a list of destinations, in the order they were added.
#[derive(Debug, Clone)]
pub struct Ring {
    hash: HashType,
    /// (position, destination index), sorted by position.
    points: Vec<(u32, usize)>,
    nodes: usize,
}

impl Ring {
    /// The ring of `destinations`, added in order as carbon adds them.
    pub fn new(destinations: &[Destination], hash: HashType) -> Ring {
        let mut ring = Ring {
            hash,
            points: Vec::with_capacity(destinations.len() * REPLICAS as usize),
            nodes: destinations.len(),
        };
        for (index, destination) in destinations.iter().enumerate() {
            let instance = destination.instance.as_deref();
            for i in 0..REPLICAS {
                let key = match hash {
                    HashType::CarbonCh => format!(
                        "({}, {}):{i}",
                        python_repr(&destination.server),
                        instance.map_or("None".to_owned(), python_repr)
                    ),
                    HashType::Fnv1aCh => format!("{i}-{}", instance.unwrap_or("None")),
                };
                let mut position = ring.position(&key);
                // Taken: carbon moves the point up until it is free.
                while ring.points.binary_search_by_key(&position, |p| p.0).is_ok() {
                    position += 1;
                }
                let at = ring.points.partition_point(|p| p.0 < position);
                ring.points.insert(at, (position, index));
            }
        }
        ring
    }

    /// The 16-bit ring position of `key` (carbon's `carbonHash`).
    fn position(&self, key: &str) -> u32 {
        match self.hash {
            HashType::CarbonCh => {
                let digest = Md5::digest(key.as_bytes());
                u32::from(digest[0]) << 8 | u32::from(digest[1])
            }
            HashType::Fnv1aCh => {
                let hash = key.bytes().fold(0x811c_9dc5u32, |h, b| {
                    (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
                });
                (hash >> 16) ^ (hash & 0xffff)
            }
        }
    }

    /// The destinations of `path` in ring order, each once: the first is
    /// its home, the next its replicas (and where it goes when the ones
    /// before are down).
    pub fn walk(&self, path: &str) -> impl Iterator<Item = usize> + '_ {
        let start = self.points.partition_point(|p| p.0 < self.position(path));
        let mut seen = vec![false; self.nodes];
        (0..self.points.len())
            .map(move |i| self.points[(start + i) % self.points.len()].1)
            .filter(move |&node| !std::mem::replace(&mut seen[node], true))
    }
}

/// A string as Python's `repr` writes it (carbon hashes the repr of the
/// destination's (server, instance) tuple).
fn python_repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse_as_carbon_parses_them() {
        let d = Destination::parse("10.0.0.1:2004:a").unwrap();
        assert_eq!(
            (d.server.as_str(), d.port, d.instance.as_deref()),
            ("10.0.0.1", 2004, Some("a"))
        );
        assert_eq!(d.address(), "10.0.0.1:2004");
        let v6 = Destination::parse("[::1]:2003").unwrap();
        assert_eq!((v6.server.as_str(), v6.instance.as_deref()), ("::1", None));
        assert_eq!(v6.address(), "[::1]:2003");
        for bad in ["nohost", ":2003", "h:port", "h:99999"] {
            assert!(Destination::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn python_reprs() {
        assert_eq!(python_repr("127.0.0.1"), "'127.0.0.1'");
        assert_eq!(python_repr("it's"), "\"it's\"");
        assert_eq!(python_repr("a'\"b"), "'a\\'\"b'");
    }
}
