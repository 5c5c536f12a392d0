//! The index (Riemann's idea): the latest event of every (host, service)
//! a partition has seen, with its application uid, expiring on event
//! time. An entry whose `time + ttl` (the event's `ttl`, else the
//! configured default) passes without a newer event turns `expired` and
//! is published to live listeners; it stays, expired, for one more ttl
//! and is then dropped. The index is part of the partition's checkpoint,
//! so it survives restarts and moves with the partition.
//!
//! The live worker updates it; the HTTP API reads it through the shared
//! handle ([`SharedIndex`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use weir_event::Event;

use crate::live;

/// One (host, service) as last seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// The application (the record's key on `weir.events`).
    pub uid: String,
    /// The latest event (its `state` is `expired` once it expired).
    pub event: Event,
    /// When it expires (event time), or expired.
    pub expires: f64,
}

/// A partition's index: host → service → entry, so that updating an
/// entry allocates nothing; expiry by a sweep at most once a second of
/// event time (Riemann sweeps every `expired-interval`, 10 s by default).
#[derive(Debug, Default)]
pub struct PartitionIndex {
    entries: HashMap<String, HashMap<String, IndexEntry>>,
    /// Entries held.
    count: usize,
    /// No entry expires (or is dropped) before this.
    earliest: f64,
    /// The event time of the last sweep.
    swept: f64,
    /// The ttl of events that carry none.
    default_ttl: f64,
    /// Most entries kept; new keys beyond it are not indexed.
    max_entries: usize,
}

/// The index as the worker and the HTTP API share it.
pub type SharedIndex = Arc<Mutex<PartitionIndex>>;

/// `entries` sorted by uid, host and service, at most `limit` of them
/// (one partition's answer, or several merged).
pub fn sorted(mut entries: Vec<IndexEntry>, limit: usize) -> Vec<IndexEntry> {
    entries.sort_by(|a, b| {
        (&a.uid, &a.event.host, &a.event.service).cmp(&(&b.uid, &b.event.host, &b.event.service))
    });
    entries.truncate(limit);
    entries
}

/// Locks a shared index (a poisoned lock still holds a usable index).
pub fn lock(index: &SharedIndex) -> std::sync::MutexGuard<'_, PartitionIndex> {
    index.lock().unwrap_or_else(|e| e.into_inner())
}

/// Copies `from` into `to`, reusing `to`'s allocations.
fn assign(to: &mut Event, from: &Event) {
    to.state.clone_from(&from.state);
    to.time = from.time;
    to.description.clone_from(&from.description);
    to.tags.clone_from(&from.tags);
    if to.meta != from.meta {
        to.meta.clone_from(&from.meta);
    }
    to.metric = from.metric;
    to.ttl = from.ttl;
    to.kind.clone_from(&from.kind);
    if to.extra != from.extra {
        to.extra.clone_from(&from.extra);
    }
}

/// How often (event time) the index looks for expired entries at most.
const SWEEP_SECS: f64 = 1.0;

impl PartitionIndex {
    /// An empty index; events without a ttl live `default_ttl` seconds.
    pub fn new(default_ttl: f64, max_entries: usize) -> PartitionIndex {
        PartitionIndex {
            default_ttl,
            max_entries,
            earliest: f64::INFINITY,
            swept: f64::NEG_INFINITY,
            ..PartitionIndex::default()
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Records `event` of application `uid` as its (host, service)'s latest.
    pub fn update(&mut self, uid: &str, event: &Event) {
        let service = event.service.as_deref().unwrap_or("");
        let expires = event.time + event.ttl.unwrap_or(self.default_ttl);
        self.earliest = self.earliest.min(expires);
        if let Some(entry) = self
            .entries
            .get_mut(event.host.as_str())
            .and_then(|services| services.get_mut(service))
        {
            if entry.event.time > event.time {
                return;
            }
            assign(&mut entry.event, event);
            entry.expires = expires;
            if entry.uid != uid {
                entry.uid = uid.to_owned();
            }
            return;
        }
        if self.count >= self.max_entries {
            crate::metrics::INDEX_FULL.inc();
            weir_log::drops::dropped("index", "full", 1, || {
                format!(
                    "{} {service}: the partition's index holds {} entries",
                    event.host, self.count
                )
            });
            return;
        }
        let entry = IndexEntry {
            uid: uid.to_owned(),
            event: event.clone(),
            expires,
        };
        self.insert(entry);
    }

    fn insert(&mut self, entry: IndexEntry) {
        let service = entry.event.service.clone().unwrap_or_default();
        self.earliest = self.earliest.min(entry.expires);
        let services = self.entries.entry(entry.event.host.clone()).or_default();
        if services.insert(service, entry).is_none() {
            self.count += 1;
        }
    }

    /// Expires entries whose time passed by `now` (publishing them to
    /// live listeners) and drops those expired for a ttl.
    pub fn advance(&mut self, now: f64) {
        if now < self.earliest || now < self.swept + SWEEP_SECS {
            return;
        }
        self.swept = now;
        let mut earliest = f64::INFINITY;
        let mut dropped = 0;
        self.entries.retain(|_, services| {
            services.retain(|_, entry| {
                if entry.expires > now {
                    earliest = earliest.min(entry.expires);
                    return true;
                }
                if entry.event.state.as_deref() == Some("expired") {
                    dropped += 1;
                    return false;
                }
                let ttl = entry.expires - entry.event.time;
                entry.event.state = Some("expired".into());
                entry.event.time = entry.expires;
                entry.expires += ttl.max(SWEEP_SECS);
                earliest = earliest.min(entry.expires);
                live::publish_expired(&entry.uid, &entry.event);
                true
            });
            !services.is_empty()
        });
        self.count -= dropped;
        self.earliest = earliest;
    }

    /// Drops every entry of `host` (decommissioned).
    pub fn remove_host(&mut self, host: &str) {
        if let Some(services) = self.entries.remove(host) {
            self.count -= services.len();
        }
    }

    /// Every entry, in no order.
    fn all(&self) -> impl Iterator<Item = &IndexEntry> {
        self.entries.values().flat_map(HashMap::values)
    }

    /// The entries `keep` accepts, at most `limit`, sorted by uid, host
    /// and service.
    pub fn query(&self, keep: impl Fn(&Event) -> bool, limit: usize) -> Vec<IndexEntry> {
        let found = self
            .all()
            .filter(|entry| keep(&entry.event))
            .cloned()
            .collect();
        sorted(found, limit)
    }

    /// Replaces the entries with `saved`'s (a checkpoint's), keeping this
    /// index's settings.
    pub fn restore(&mut self, saved: SavedIndex) {
        self.entries.clear();
        self.count = 0;
        self.earliest = f64::INFINITY;
        for entry in saved.entries {
            self.insert(entry);
        }
    }

    /// The entries, for a checkpoint.
    pub fn save(&self) -> serde_json::Value {
        #[derive(Serialize)]
        struct Saving<'a> {
            entries: Vec<&'a IndexEntry>,
        }
        serde_json::to_value(Saving {
            entries: self.all().collect(),
        })
        .unwrap_or_default()
    }
}

/// A checkpointed index ([`PartitionIndex::save`]).
#[derive(Debug, Deserialize)]
pub struct SavedIndex {
    entries: Vec<IndexEntry>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(host: &str, service: &str, time: f64, ttl: Option<f64>) -> Event {
        let mut event = Event::new(host, time);
        event.service = Some(service.into());
        event.ttl = ttl;
        event
    }

    #[test]
    fn the_latest_event_wins_expires_and_is_dropped_a_ttl_later() {
        let mut index = PartitionIndex::new(60.0, 10);
        index.update("app", &event("a", "cpu", 10.0, Some(5.0)));
        index.update("app", &event("a", "cpu", 12.0, Some(5.0)));
        index.update("app", &event("a", "cpu", 11.0, Some(5.0)));
        index.update("app", &event("b", "cpu", 12.0, None));
        index.advance(16.9);
        let all = index.query(|_| true, 100);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].event.time, 12.0);
        assert_eq!(all[0].event.state, None);
        // Swept at most once a second of event time: due at 17, seen by 17.9.
        index.advance(17.0);
        index.advance(17.9);
        let a = &index.query(|e| e.host == "a", 100)[0];
        assert_eq!(a.event.state.as_deref(), Some("expired"));
        assert_eq!(a.event.time, 17.0);
        index.advance(22.0);
        assert!(index.query(|e| e.host == "a", 100).is_empty());
        assert_eq!(index.len(), 1, "b lives its default 60 s");
        // Seen again: indexed afresh.
        index.update("app", &event("a", "cpu", 30.0, Some(5.0)));
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn it_is_bounded_and_survives_a_checkpoint() {
        let mut index = PartitionIndex::new(60.0, 2);
        for host in ["a", "b", "c"] {
            index.update("app", &event(host, "cpu", 1.0, None));
        }
        assert_eq!(index.len(), 2);
        let saved: SavedIndex = serde_json::from_value(index.save()).unwrap();
        let mut restored = PartitionIndex::new(60.0, 2);
        restored.restore(saved);
        assert_eq!(restored.query(|_| true, 10), index.query(|_| true, 10));
        restored.advance(61.0);
        assert!(restored
            .query(|_| true, 10)
            .iter()
            .all(|e| e.event.state.as_deref() == Some("expired")));
    }
}
