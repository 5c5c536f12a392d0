//! The service registry: host → application uid (the seed's `uids`),
//! uid → hosts (`hosts`), and uid → partition (`partitions`, sticky).
//!
//! The seed file has the seed's format:
//! `{"uids": {"10.0.0.1": "app-1"}, "hosts": {"app-1": ["10.0.0.1"]}}`.
//! A uid's partition is pinned the first time it is seen (murmur2 over the
//! partition count at that moment) and persisted as a record of
//! `weir.registry` (key uid, value `{"partition": N}`), so the placement
//! survives restarts and adding partitions never moves an application.
//!
//! Memory stays bounded under host churn: a placement not used for
//! `forget_after_secs` is forgotten ([`Registry::forget_idle`]) and a
//! tombstone (empty value) appended, so a restart does not load it either.
//! Placements the seed file pins are kept. An application seen again is
//! placed anew, on the same partition unless the topic grew meanwhile.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use weir_log::{Log, LogError};

use crate::murmur2::partition_for;

/// Errors loading the registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The seed file could not be read.
    #[error("registry file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The seed file is not in the seed format.
    #[error("registry file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: serde_json::Error,
    },
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The registry topic did not deliver every placement it holds.
    #[error("reading {topic}: nothing arrived from offset {read} of {end} within {REGISTRY_READ_WAIT:?}; placements cannot be loaded")]
    Incomplete {
        /// The registry topic.
        topic: String,
        /// The offset the read stopped at.
        read: u64,
        /// The end of the topic.
        end: u64,
    },
    /// A placement names a partition the events topic does not have.
    #[error("the registry places application {uid:?} on partition {partition}, but the events topic has only {partitions} partitions (a topic never shrinks: was it recreated?)")]
    Placement {
        /// The application.
        uid: String,
        /// Its recorded partition.
        partition: u32,
        /// Partitions the events topic has.
        partitions: u32,
    },
}

/// The longest a read of the registry topic waits for its records.
const REGISTRY_READ_WAIT: Duration = Duration::from_secs(10);

/// The seed file's shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Seed {
    #[serde(default)]
    uids: HashMap<String, String>,
    #[serde(default)]
    hosts: HashMap<String, Vec<String>>,
    #[serde(default)]
    partitions: HashMap<String, u32>,
}

#[derive(Deserialize)]
struct Placement {
    partition: u32,
}

/// Where an application's events go.
#[derive(Debug, Clone, Copy)]
struct Placed {
    partition: u32,
    /// [`Registry::clock`] when it was last routed to.
    seen: u64,
    /// Pinned by the seed file: never forgotten.
    pinned: bool,
}

/// The registry as one router sees it: a local cache of the whole state.
#[derive(Debug, Default)]
pub struct Registry {
    uids: HashMap<String, String>,
    hosts: HashMap<String, Vec<String>>,
    partitions: HashMap<String, Placed>,
    /// Placements (`None`: forgettings) not yet persisted
    /// ([`Registry::placements_persisted`]).
    new_placements: Vec<(String, Option<u32>)>,
    /// Seconds, advanced by [`Registry::forget_idle`].
    clock: u64,
}

impl Registry {
    /// Loads the seed file (if any), then every placement in the registry topic.
    pub fn load(
        seed: Option<&Path>,
        log: &dyn Log,
        registry_topic: &str,
    ) -> Result<Registry, RegistryError> {
        let seed = match seed {
            None => Seed::default(),
            Some(path) => {
                let text = std::fs::read(path).map_err(|source| RegistryError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                serde_json::from_slice(&text).map_err(|source| RegistryError::Parse {
                    path: path.to_path_buf(),
                    source,
                })?
            }
        };
        let pinned = |(uid, partition)| {
            let placed = Placed {
                partition,
                seen: 0,
                pinned: true,
            };
            (uid, placed)
        };
        let mut registry = Registry {
            uids: seed.uids,
            hosts: seed.hosts,
            partitions: seed.partitions.into_iter().map(pinned).collect(),
            new_placements: Vec::new(),
            clock: 0,
        };
        // `hosts` also names hosts of a uid; fill `uids` from it.
        for (uid, hosts) in &registry.hosts {
            for host in hosts {
                registry
                    .uids
                    .entry(host.clone())
                    .or_insert_with(|| uid.clone());
            }
        }
        // Every placement up to the end of the topic as it is now; a
        // remote log may take a moment to deliver what it holds.
        let (earliest, end) = log.offsets(registry_topic, 0)?;
        let mut next = earliest;
        while next < end {
            let batch = log.read(registry_topic, 0, next, 1 << 20, REGISTRY_READ_WAIT)?;
            let Some(last) = batch.last() else {
                return Err(RegistryError::Incomplete {
                    topic: registry_topic.to_owned(),
                    read: next,
                    end,
                });
            };
            next = last.offset + 1;
            for record in batch {
                let uid = String::from_utf8_lossy(&record.key).into_owned();
                if record.value.is_empty() {
                    // A tombstone: forgotten (a pinned placement stays).
                    registry
                        .partitions
                        .retain(|placed_uid, placed| placed.pinned || *placed_uid != uid);
                    continue;
                }
                match serde_json::from_slice::<Placement>(&record.value) {
                    Ok(placement) => {
                        let placed = registry.partitions.entry(uid).or_insert(Placed {
                            partition: placement.partition,
                            seen: 0,
                            pinned: false,
                        });
                        placed.partition = placement.partition;
                    }
                    Err(error) => {
                        tracing::warn!(%uid, %error, "skipping malformed registry record")
                    }
                }
            }
        }
        Ok(registry)
    }

    /// Checks every recorded placement fits `partitions` partitions.
    pub fn check(&self, partitions: u32) -> Result<(), RegistryError> {
        let highest = self.partitions.iter().max_by_key(|(_, p)| p.partition);
        match highest.map(|(uid, p)| (uid, p.partition)) {
            Some((uid, partition)) if partition >= partitions => Err(RegistryError::Placement {
                uid: uid.clone(),
                partition,
                partitions,
            }),
            _ => Ok(()),
        }
    }

    /// The application uid of `host`: its registered uid, or the host itself.
    pub fn uid<'a>(&'a self, host: &'a str) -> &'a str {
        self.uids.get(host).map_or(host, String::as_str)
    }

    /// The hosts registered for `uid`.
    pub fn hosts(&self, uid: &str) -> &[String] {
        self.hosts.get(uid).map_or(&[], Vec::as_slice)
    }

    /// The partition of `uid`, placing it by murmur2 if it has none yet.
    pub fn partition(&mut self, uid: &str, partitions: u32) -> u32 {
        place(
            self.clock,
            &mut self.partitions,
            &mut self.new_placements,
            uid,
            partitions,
        )
    }

    /// The partition of `host`'s application ([`Registry::uid`],
    /// [`Registry::partition`]).
    pub fn route(&mut self, host: &str, partitions: u32) -> u32 {
        let uid = self.uids.get(host).map_or(host, String::as_str);
        place(
            self.clock,
            &mut self.partitions,
            &mut self.new_placements,
            uid,
            partitions,
        )
    }

    /// Applications with a placement (the registry's size).
    pub fn placed(&self) -> usize {
        self.partitions.len()
    }

    /// Sets the clock to `now` (seconds) and forgets every placement not
    /// routed to for `idle` seconds (0: never), except pinned ones; their
    /// tombstones join [`Registry::new_placements`]. Returns how many.
    pub fn forget_idle(&mut self, now: u64, idle: u64) -> usize {
        self.clock = now;
        if idle == 0 {
            return 0;
        }
        let before = self.partitions.len();
        let forgotten = &mut self.new_placements;
        self.partitions.retain(|uid, placed| {
            // A placement loaded at start has seen 0: its idle time counts from now.
            if placed.seen == 0 {
                placed.seen = now;
            }
            let keep = placed.pinned || now.saturating_sub(placed.seen) < idle;
            if !keep {
                forgotten.push((uid.clone(), None));
            }
            keep
        });
        before - self.partitions.len()
    }

    /// Placements not yet persisted, as registry-topic records (key, value).
    pub fn new_placements(&self) -> Vec<weir_log::OwnedProduce> {
        self.new_placements
            .iter()
            .map(|(uid, p)| {
                let value = p.map(|p| format!("{{\"partition\":{p}}}"));
                (
                    uid.clone().into_bytes(),
                    value.unwrap_or_default().into_bytes(),
                )
            })
            .collect()
    }

    /// The placements [`Registry::new_placements`] gave are durable.
    pub fn placements_persisted(&mut self) {
        self.new_placements.clear();
    }
}

/// The partition of `uid` in `placed` (marked seen at `clock`), placing
/// it by murmur2 (and noting that in `new`) over `partitions` if it has none.
fn place(
    clock: u64,
    placed: &mut HashMap<String, Placed>,
    new: &mut Vec<(String, Option<u32>)>,
    uid: &str,
    partitions: u32,
) -> u32 {
    // Every recorded placement fits (`Registry::check`; topics never shrink).
    if let Some(p) = placed.get_mut(uid) {
        p.seen = clock;
        return p.partition;
    }
    let partition = partition_for(uid.as_bytes(), partitions);
    let p = Placed {
        partition,
        seen: clock,
        pinned: false,
    };
    placed.insert(uid.to_owned(), p);
    new.push((uid.to_owned(), Some(partition)));
    partition
}
