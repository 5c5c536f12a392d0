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

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use weir_event::Event;

use crate::live;
use crate::stage::Time;

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

/// A partition's index.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PartitionIndex {
    entries: HashMap<String, IndexEntry>,
    /// `(deadline, key)`: expiry of live entries, removal of expired ones.
    deadlines: BTreeSet<(Time, String)>,
    /// The ttl of events that carry none.
    #[serde(skip)]
    default_ttl: f64,
    /// Most entries kept; new keys beyond it are not indexed.
    #[serde(skip)]
    max_entries: usize,
}

/// The index as the worker and the HTTP API share it.
pub type SharedIndex = Arc<Mutex<PartitionIndex>>;

/// Locks a shared index (a poisoned lock still holds a usable index).
pub fn lock(index: &SharedIndex) -> std::sync::MutexGuard<'_, PartitionIndex> {
    index.lock().unwrap_or_else(|e| e.into_inner())
}

fn key_of(event: &Event) -> String {
    format!(
        "{}\u{1f}{}",
        event.host,
        event.service.as_deref().unwrap_or("")
    )
}

impl PartitionIndex {
    /// An empty index; events without a ttl live `default_ttl` seconds.
    pub fn new(default_ttl: f64, max_entries: usize) -> PartitionIndex {
        PartitionIndex {
            default_ttl,
            max_entries,
            ..PartitionIndex::default()
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records `event` of application `uid` as its (host, service)'s latest.
    pub fn update(&mut self, uid: &str, event: &Event) {
        let key = key_of(event);
        let expires = event.time + event.ttl.unwrap_or(self.default_ttl);
        match self.entries.get_mut(&key) {
            Some(entry) => {
                if entry.event.time > event.time {
                    return;
                }
                self.deadlines.remove(&(Time(entry.expires), key.clone()));
                entry.event = event.clone();
                entry.expires = expires;
                if entry.uid != uid {
                    entry.uid = uid.to_owned();
                }
            }
            None => {
                if self.entries.len() >= self.max_entries {
                    crate::metrics::INDEX_FULL.inc();
                    return;
                }
                let entry = IndexEntry {
                    uid: uid.to_owned(),
                    event: event.clone(),
                    expires,
                };
                self.entries.insert(key.clone(), entry);
            }
        }
        self.deadlines.insert((Time(expires), key));
    }

    /// Expires entries whose deadline passed by `now` (publishing them
    /// to live listeners) and drops those expired for a ttl.
    pub fn advance(&mut self, now: f64) {
        while let Some((deadline, _)) = self.deadlines.first() {
            if deadline.0 > now {
                break;
            }
            let Some((deadline, key)) = self.deadlines.pop_first() else {
                break;
            };
            let Some(entry) = self.entries.get_mut(&key) else {
                continue;
            };
            if entry.event.state.as_deref() == Some("expired") {
                self.entries.remove(&key);
                continue;
            }
            let ttl = entry.expires - entry.event.time;
            entry.event.state = Some("expired".into());
            entry.event.time = deadline.0;
            entry.expires = deadline.0 + ttl.max(1.0);
            live::publish_expired(&entry.uid, &entry.event);
            self.deadlines.insert((Time(entry.expires), key));
        }
    }

    /// The entries `keep` accepts, at most `limit`, sorted by uid, host
    /// and service.
    pub fn query(&self, keep: impl Fn(&Event) -> bool, limit: usize) -> Vec<IndexEntry> {
        let mut found: Vec<IndexEntry> = self
            .entries
            .values()
            .filter(|entry| keep(&entry.event))
            .cloned()
            .collect();
        found.sort_by(|a, b| {
            (&a.uid, &a.event.host, &a.event.service).cmp(&(
                &b.uid,
                &b.event.host,
                &b.event.service,
            ))
        });
        found.truncate(limit);
        found
    }

    /// Replaces the entries with `saved`'s (a checkpoint's), keeping this
    /// index's settings.
    pub fn restore(&mut self, saved: PartitionIndex) {
        self.entries = saved.entries;
        self.deadlines = saved.deadlines;
    }
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
        index.advance(17.0);
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
        let saved: PartitionIndex =
            serde_json::from_value(serde_json::to_value(&index).unwrap()).unwrap();
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
