//! The service registry: host → application uid, uid → hosts, and uid →
//! partition (sticky), as one global view every router keeps a local copy
//! of (routing reads only that copy).
//!
//! The view is the compacted `weir.registry` topic, replayed: every change,
//! whatever made it (the admin API, the seed file, an HTTP source, a new
//! application's placement), is first a record there, and every router
//! applies the records in order ([`Registry::follow`]), so all converge.
//! [`Registry::version`] is the offset after the last record applied.
//!
//! Records (key → value; an empty value removes the key):
//! - `UID` → `{"partition": N}` (`"pinned": true` when a seed or a move
//!   placed it): a uid's partition, pinned the first time it is seen
//!   (murmur2 over the partition count at that moment), so adding
//!   partitions never moves an application; `"moving": {"id", "to"}`
//!   while a move is under way (routers hold its events), and
//!   `"moved": ID` on the record the old partition's worker appends once
//!   the state is handed over (applied only while that move is under way);
//! - `␟host␟HOST` → `{"uid": UID, "origin": …}`: a host's application and
//!   what set it (`admin`, or the source's name);
//! - `␟source␟NAME` → `{"hash": H}`: the content of a source (seed file,
//!   HTTP source) last applied, so an unchanged source is not applied
//!   again after a restart, or by every node.
//!
//! A source's content is in the seed's format:
//! `{"uids": {"10.0.0.1": "app-1"}, "hosts": {"app-1": ["10.0.0.1"]},
//! "partitions": {"app-1": 3}}`. A source is authoritative for the hosts
//! it lists when its content changes: they are set to its uids, and hosts
//! it set before but no longer lists are removed.
//!
//! Memory stays bounded under host churn: a placement not used for
//! `forget_after_secs` is forgotten ([`Registry::forget_idle`]) with a
//! tombstone. Pinned placements are kept. An application seen again is
//! placed anew, on the same partition unless the topic grew meanwhile.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_event::{Handoff, Moving, Placement};
use weir_log::{Log, LogError, OwnedProduce};

use crate::murmur2::partition_for;

/// Errors loading the registry or refusing a change.
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
    /// A source's content is not in the seed format.
    #[error("registry source {source_name}: {detail}")]
    Parse {
        /// The source (a file path or a URL).
        source_name: String,
        /// What is wrong.
        detail: String,
    },
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The registry topic did not deliver every record it holds.
    #[error("reading {topic}: nothing arrived from offset {read} of {end} within {REGISTRY_READ_WAIT:?}; the registry cannot be loaded")]
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
    /// A change names an invalid host or uid.
    #[error("{0}")]
    Invalid(String),
}

/// The longest a read of the registry topic waits for its records.
const REGISTRY_READ_WAIT: Duration = Duration::from_secs(10);

/// Key prefix of a host's mapping (`␟host␟`; ␟ is U+001F, in no host name).
const HOST_KEY: &str = "\u{1f}host\u{1f}";
/// Key prefix of a source's applied content hash.
const SOURCE_KEY: &str = "\u{1f}source\u{1f}";
/// The origin of changes made through the admin API.
pub const ADMIN_ORIGIN: &str = "admin";
/// Longest host or uid taken.
const MAX_NAME_BYTES: usize = 255;

/// A registry source's content: the seed format.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    /// Host → uid.
    #[serde(default)]
    pub uids: HashMap<String, String>,
    /// Uid → its hosts.
    #[serde(default)]
    pub hosts: HashMap<String, Vec<String>>,
    /// Uid → pinned partition.
    #[serde(default)]
    pub partitions: HashMap<String, u32>,
}

impl Seed {
    /// Parses and validates `text` from `source_name`.
    pub fn parse(source_name: &str, text: &[u8]) -> Result<Seed, RegistryError> {
        let seed: Seed = serde_json::from_slice(text).map_err(|e| RegistryError::Parse {
            source_name: source_name.to_owned(),
            detail: e.to_string(),
        })?;
        let invalid = |detail: String| RegistryError::Parse {
            source_name: source_name.to_owned(),
            detail,
        };
        for (host, uid) in &seed.uids {
            check_host(host)
                .and_then(|()| check_uid(uid))
                .map_err(|e| invalid(e.to_string()))?;
        }
        for (uid, hosts) in &seed.hosts {
            check_uid(uid).map_err(|e| invalid(e.to_string()))?;
            for host in hosts {
                check_host(host).map_err(|e| invalid(e.to_string()))?;
            }
        }
        for uid in seed.partitions.keys() {
            check_uid(uid).map_err(|e| invalid(e.to_string()))?;
        }
        Ok(seed)
    }

    /// Every host it names, with its uid (`uids` entries win over `hosts` lists).
    fn mappings(&self) -> BTreeMap<&str, &str> {
        let mut mappings = BTreeMap::new();
        for (uid, hosts) in &self.hosts {
            for host in hosts {
                mappings.insert(host.as_str(), uid.as_str());
            }
        }
        for (host, uid) in &self.uids {
            mappings.insert(host.as_str(), uid.as_str());
        }
        mappings
    }
}

/// A stable hash of a source's content (FNV-1a, 64 bits): equal content,
/// equal hash, on every node and across versions.
pub fn content_hash(text: &[u8]) -> u64 {
    text.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Refuses an empty, over-long or control-character host.
pub fn check_host(host: &str) -> Result<(), RegistryError> {
    check_name("host", host)?;
    if host.chars().any(char::is_whitespace) {
        return Err(RegistryError::Invalid(format!(
            "host {host:?} contains whitespace"
        )));
    }
    Ok(())
}

/// Refuses an empty, over-long or control-character uid.
pub fn check_uid(uid: &str) -> Result<(), RegistryError> {
    check_name("uid", uid)
}

fn check_name(what: &str, name: &str) -> Result<(), RegistryError> {
    if name.is_empty() {
        return Err(RegistryError::Invalid(format!("{what} is empty")));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(RegistryError::Invalid(format!(
            "{what} {:?}… is {} bytes, more than {MAX_NAME_BYTES}",
            name.chars().take(20).collect::<String>(),
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(RegistryError::Invalid(format!(
            "{what} {name:?} contains a control character"
        )));
    }
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct HostValue {
    uid: String,
    origin: String,
}

#[derive(Serialize, Deserialize)]
struct SourceValue {
    hash: u64,
}

/// Where an application's events go.
#[derive(Debug, Clone)]
struct Placed {
    partition: u32,
    /// [`Registry::clock`] when it was last routed to.
    seen: u64,
    /// Pinned by a seed or a move: never forgotten.
    pinned: bool,
    /// A move under way: its events wait.
    moving: Option<Moving>,
}

/// A host's application and what set it.
#[derive(Debug, Clone)]
struct Mapping {
    uid: String,
    origin: String,
}

/// The whole view, as `GET /admin/registry` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct View {
    /// Offset after the last registry record applied.
    pub version: u64,
    /// Host → uid.
    pub uids: BTreeMap<String, String>,
    /// Uid → hosts.
    pub hosts: BTreeMap<String, BTreeSet<String>>,
    /// Uid → partition.
    pub partitions: BTreeMap<String, u32>,
    /// Uid → the partition it is moving to, while its move is under way.
    #[serde(default)]
    pub moving: BTreeMap<String, u32>,
}

/// The registry as one router sees it: a local copy of the whole view.
#[derive(Debug, Default)]
pub struct Registry {
    uids: HashMap<String, Mapping>,
    hosts: HashMap<String, BTreeSet<String>>,
    partitions: HashMap<String, Placed>,
    /// The uids with a move under way (`moving` set in `partitions`).
    moving: BTreeSet<String>,
    /// Source name → hash of the content last applied.
    sources: HashMap<String, u64>,
    /// Placements (`None`: forgettings) not yet persisted
    /// ([`Registry::placements_persisted`]).
    new_placements: Vec<(String, Option<u32>)>,
    /// Seconds, advanced by [`Registry::forget_idle`].
    clock: u64,
    /// Offset after the last record applied.
    version: u64,
    /// Append time (ms) of the last record applied.
    applied_ms: u64,
}

impl Registry {
    /// Loads every record of the registry topic (up to its end now).
    pub fn load(log: &dyn Log, topic: &str) -> Result<Registry, RegistryError> {
        let mut registry = Registry::default();
        let (earliest, _) = log.offsets(topic, 0)?;
        registry.version = earliest;
        registry.follow(log, topic, REGISTRY_READ_WAIT)?;
        Ok(registry)
    }

    /// Applies the records appended to the registry topic since the last
    /// call, up to its end as it is now, waiting up to `wait` for a remote
    /// log to deliver them. Returns how many were applied.
    pub fn follow(
        &mut self,
        log: &dyn Log,
        topic: &str,
        wait: Duration,
    ) -> Result<usize, RegistryError> {
        let (earliest, end) = log.offsets(topic, 0)?;
        self.version = self.version.max(earliest);
        let mut applied = 0;
        while self.version < end {
            let batch = log.read(topic, 0, self.version, 1 << 20, wait)?;
            let Some(last) = batch.last() else {
                return Err(RegistryError::Incomplete {
                    topic: topic.to_owned(),
                    read: self.version,
                    end,
                });
            };
            self.version = last.offset + 1;
            self.applied_ms = last.timestamp_ms;
            applied += batch.len();
            for record in &batch {
                self.apply(&record.key, &record.value);
            }
        }
        Ok(applied)
    }

    /// Applies records this node appended, ahead of reading them back
    /// (which applies them again, in log order, to the same effect).
    pub fn apply_own(&mut self, records: &[OwnedProduce]) {
        for (key, value) in records {
            self.apply(key, value);
        }
    }

    /// Applies one registry record.
    fn apply(&mut self, key: &[u8], value: &[u8]) {
        let key = String::from_utf8_lossy(key);
        if let Some(host) = key.strip_prefix(HOST_KEY) {
            self.unmap(host);
            if value.is_empty() {
                return;
            }
            match serde_json::from_slice::<HostValue>(value) {
                Ok(HostValue { uid, origin }) => {
                    self.hosts
                        .entry(uid.clone())
                        .or_default()
                        .insert(host.to_owned());
                    self.uids.insert(host.to_owned(), Mapping { uid, origin });
                }
                Err(error) => tracing::warn!(%host, %error, "skipping a malformed host record"),
            }
        } else if let Some(source) = key.strip_prefix(SOURCE_KEY) {
            match serde_json::from_slice::<SourceValue>(value) {
                Ok(SourceValue { hash }) => drop(self.sources.insert(source.to_owned(), hash)),
                Err(_) => drop(self.sources.remove(source)),
            }
        } else if value.is_empty() {
            // A tombstone: forgotten (a pinned placement stays).
            if self.partitions.get(&*key).is_some_and(|p| !p.pinned) {
                self.partitions.remove(&*key);
                self.moving.remove(&*key);
            }
        } else {
            match serde_json::from_slice::<Placement>(value) {
                Ok(placement) => self.place_recorded(key.into_owned(), placement),
                Err(error) => {
                    tracing::warn!(uid = %key, %error, "skipping a malformed registry record")
                }
            }
        }
    }

    /// Applies a placement record. A move's completion applies only while
    /// that move is under way (or to an application not known yet, after
    /// compaction); a plain placement does not end a move.
    fn place_recorded(&mut self, uid: String, placement: Placement) {
        let current = self.partitions.get(&uid);
        let under_way = current.and_then(|p| p.moving.as_ref());
        if let Some(id) = &placement.moved {
            if current.is_some() && under_way.is_none_or(|m| &m.id != id) {
                tracing::debug!(%uid, %id, "skipping the completion of a move not under way");
                return;
            }
        }
        let moving = match (&placement.moving, &placement.moved) {
            (Some(moving), _) => Some(moving.clone()),
            (None, Some(_)) => None,
            (None, None) => under_way.cloned(),
        };
        if moving.is_some() {
            self.moving.insert(uid.clone());
        } else {
            self.moving.remove(&uid);
        }
        let placed = self.partitions.entry(uid).or_insert(Placed {
            partition: placement.partition,
            seen: self.clock,
            pinned: false,
            moving: None,
        });
        placed.partition = placement.partition;
        placed.pinned |= placement.pinned;
        placed.moving = moving;
    }

    fn unmap(&mut self, host: &str) {
        if let Some(old) = self.uids.remove(host) {
            if let Some(hosts) = self.hosts.get_mut(&old.uid) {
                hosts.remove(host);
                if hosts.is_empty() {
                    self.hosts.remove(&old.uid);
                }
            }
        }
    }

    /// Offset after the last registry record applied: equal versions,
    /// equal views.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Append time (Unix ms) of the last record applied.
    pub fn applied_ms(&self) -> u64 {
        self.applied_ms
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
        self.uids.get(host).map_or(host, |m| m.uid.as_str())
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
        let uid = self.uids.get(host).map_or(host, |m| m.uid.as_str());
        place(
            self.clock,
            &mut self.partitions,
            &mut self.new_placements,
            uid,
            partitions,
        )
    }

    /// The hosts `records` remove from the registry, each with the
    /// partition its application is on now (before the records apply):
    /// where their decommission markers go.
    pub fn removed_hosts(&self, records: &[OwnedProduce]) -> Vec<(String, u32)> {
        records
            .iter()
            .filter(|(_, value)| value.is_empty())
            .filter_map(|(key, _)| {
                let host = std::str::from_utf8(key).ok()?.strip_prefix(HOST_KEY)?;
                let partition = self.placement(self.uid(host))?;
                Some((host.to_owned(), partition))
            })
            .collect()
    }

    /// The partition `uid` is placed on, if it is.
    pub fn placement(&self, uid: &str) -> Option<u32> {
        self.partitions.get(uid).map(|p| p.partition)
    }

    /// Whether `host`'s application is moving (its events wait).
    pub fn is_moving(&self, host: &str) -> bool {
        let uid = self.uid(host);
        self.partitions.get(uid).is_some_and(|p| p.moving.is_some())
    }

    /// Whether any application is moving.
    pub fn any_moving(&self) -> bool {
        !self.moving.is_empty()
    }

    /// Every move under way: the old partition and its hand-off marker
    /// (the application's hosts are its mapped hosts and the uid itself).
    pub fn handoffs(&self) -> Vec<(u32, Handoff)> {
        self.moving
            .iter()
            .filter_map(|uid| {
                let placed = self.partitions.get(uid)?;
                let moving = placed.moving.as_ref()?;
                let mut hosts: BTreeSet<String> = self.hosts.get(uid).cloned().unwrap_or_default();
                hosts.insert(uid.clone());
                let handoff = Handoff {
                    id: moving.id.clone(),
                    uid: uid.clone(),
                    hosts: hosts.into_iter().collect(),
                    to: moving.to,
                };
                Some((placed.partition, handoff))
            })
            .collect()
    }

    /// The record that starts moving `uid` to partition `to` of
    /// `partitions` (none when it is there already; an application not
    /// placed yet is simply placed there).
    pub fn move_to(
        &self,
        uid: &str,
        to: u32,
        partitions: u32,
    ) -> Result<Vec<OwnedProduce>, RegistryError> {
        check_uid(uid)?;
        if to >= partitions {
            return Err(RegistryError::Invalid(format!(
                "partition {to} does not exist: the events topic has {partitions}"
            )));
        }
        let Some(placed) = self.partitions.get(uid) else {
            return Ok(vec![placement_record(uid, to, true)]);
        };
        if let Some(moving) = &placed.moving {
            return Err(RegistryError::Invalid(format!(
                "application {uid:?} is already moving to partition {}",
                moving.to
            )));
        }
        if placed.partition == to {
            return Ok(Vec::new());
        }
        let placement = Placement {
            partition: placed.partition,
            pinned: placed.pinned,
            moving: Some(Moving {
                id: format!("{uid}#{}", self.version),
                to,
            }),
            moved: None,
        };
        let value = serde_json::to_vec(&placement).unwrap_or_default();
        Ok(vec![(uid.as_bytes().to_vec(), value)])
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
            let keep =
                placed.pinned || placed.moving.is_some() || now.saturating_sub(placed.seen) < idle;
            if !keep {
                forgotten.push((uid.clone(), None));
            }
            keep
        });
        before - self.partitions.len()
    }

    /// Placements not yet persisted, as registry-topic records (key, value).
    pub fn new_placements(&self) -> Vec<OwnedProduce> {
        self.new_placements
            .iter()
            .map(|(uid, p)| match p {
                Some(partition) => placement_record(uid, *partition, false),
                None => (uid.clone().into_bytes(), Vec::new()),
            })
            .collect()
    }

    /// The placements [`Registry::new_placements`] gave are durable.
    pub fn placements_persisted(&mut self) {
        self.new_placements.clear();
    }

    /// The whole view.
    pub fn view(&self) -> View {
        View {
            version: self.version,
            uids: self
                .uids
                .iter()
                .map(|(host, m)| (host.clone(), m.uid.clone()))
                .collect(),
            hosts: self
                .hosts
                .iter()
                .map(|(uid, hosts)| (uid.clone(), hosts.clone()))
                .collect(),
            partitions: self
                .partitions
                .iter()
                .map(|(uid, p)| (uid.clone(), p.partition))
                .collect(),
            moving: self
                .partitions
                .iter()
                .filter_map(|(uid, p)| Some((uid.clone(), p.moving.as_ref()?.to)))
                .collect(),
        }
    }

    /// The records that map `host` to `uid` (none if it already is).
    pub fn set_host(
        &self,
        host: &str,
        uid: &str,
        origin: &str,
    ) -> Result<Vec<OwnedProduce>, RegistryError> {
        check_host(host)?;
        check_uid(uid)?;
        let current = self.uids.get(host);
        if current.is_some_and(|m| m.uid == uid && m.origin == origin) {
            return Ok(Vec::new());
        }
        Ok(vec![host_record(host, Some((uid, origin)))])
    }

    /// The record that removes `host`'s mapping (none if it has none).
    pub fn remove_host(&self, host: &str) -> Result<Vec<OwnedProduce>, RegistryError> {
        check_host(host)?;
        Ok(self
            .uids
            .contains_key(host)
            .then(|| host_record(host, None))
            .into_iter()
            .collect())
    }

    /// The records that make `hosts` exactly `uid`'s hosts.
    pub fn replace_hosts(
        &self,
        uid: &str,
        hosts: &[String],
        origin: &str,
    ) -> Result<Vec<OwnedProduce>, RegistryError> {
        check_uid(uid)?;
        for host in hosts {
            check_host(host)?;
        }
        let wanted: BTreeSet<&str> = hosts.iter().map(String::as_str).collect();
        let mut records = Vec::new();
        for host in self.hosts.get(uid).into_iter().flatten() {
            if !wanted.contains(host.as_str()) {
                records.push(host_record(host, None));
            }
        }
        for host in wanted {
            records.extend(self.set_host(host, uid, origin)?);
        }
        Ok(records)
    }

    /// The records that apply `seed`, the content of source `name` (or of
    /// an import, with `name` = [`ADMIN_ORIGIN`]): hosts it lists set to its
    /// uids, hosts it set before and no longer lists removed, its
    /// placements pinned, and its content hash. None when the same
    /// content was applied last.
    pub fn apply_source(&self, name: &str, seed: &Seed, hash: u64) -> Vec<OwnedProduce> {
        if name != ADMIN_ORIGIN && self.sources.get(name) == Some(&hash) {
            return Vec::new();
        }
        let mappings = seed.mappings();
        let mut records = Vec::new();
        if name != ADMIN_ORIGIN {
            for (host, mapping) in &self.uids {
                if mapping.origin == name && !mappings.contains_key(host.as_str()) {
                    records.push(host_record(host, None));
                }
            }
        }
        for (host, uid) in mappings {
            let current = self.uids.get(host);
            if !current.is_some_and(|m| m.uid == uid && m.origin == name) {
                records.push(host_record(host, Some((uid, name))));
            }
        }
        for (uid, &partition) in &seed.partitions {
            let current = self.partitions.get(uid);
            if !current.is_some_and(|p| p.partition == partition && p.pinned) {
                records.push(placement_record(uid, partition, true));
            }
        }
        if name != ADMIN_ORIGIN {
            let value = serde_json::to_vec(&SourceValue { hash }).unwrap_or_default();
            records.push((format!("{SOURCE_KEY}{name}").into_bytes(), value));
        }
        records
    }
}

fn host_record(host: &str, mapping: Option<(&str, &str)>) -> OwnedProduce {
    let value = mapping.map_or_else(Vec::new, |(uid, origin)| {
        let value = HostValue {
            uid: uid.to_owned(),
            origin: origin.to_owned(),
        };
        serde_json::to_vec(&value).unwrap_or_default()
    });
    (format!("{HOST_KEY}{host}").into_bytes(), value)
}

fn placement_record(uid: &str, partition: u32, pinned: bool) -> OwnedProduce {
    let placement = Placement {
        partition,
        pinned,
        moving: None,
        moved: None,
    };
    let value = serde_json::to_vec(&placement).unwrap_or_default();
    (uid.as_bytes().to_vec(), value)
}

/// Reads a seed file.
pub fn read_seed_file(path: &Path) -> Result<(Seed, u64), RegistryError> {
    let text = std::fs::read(path).map_err(|source| RegistryError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let seed = Seed::parse(&path.display().to_string(), &text)?;
    Ok((seed, content_hash(&text)))
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
        moving: None,
    };
    placed.insert(uid.to_owned(), p);
    new.push((uid.to_owned(), Some(partition)));
    partition
}
