//! Consumer-group membership: which partitions of a topic this process
//! owns, and the progress it reports.
//!
//! A member is told through its [`Owner`] when the group assigns or
//! revokes partitions; `revoked` returns only after the owner's work on
//! those partitions is checkpointed, so the next owner starts from there.
//! The member commits the owner's progress to the group every second and
//! on every revocation: the commit reports progress (lag), the owner's
//! checkpoint stays the source of truth for where to resume.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{Committed, Log, LogError};

/// How often a member commits its owner's progress.
pub(crate) const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// The work behind a group membership.
pub trait Owner: Send + Sync + 'static {
    /// The group gave this member `partitions`: start working on them.
    fn assigned(&self, partitions: &[u32]);

    /// The group takes `partitions` away: stop and checkpoint them before
    /// returning their final progress. Partitions not owned are ignored.
    fn revoked(&self, partitions: &[u32]) -> Vec<(u32, u64)>;

    /// The next offset to read, per owned partition, as far as checkpointed.
    fn progress(&self) -> Vec<(u32, u64)>;
}

/// A live membership. [`Membership::leave`] revokes every owned partition
/// and leaves the group.
pub trait Membership: Send {
    /// Revokes everything, commits the final progress and leaves.
    fn leave(self: Box<Self>);
}

/// A membership's background thread; leaving stops and joins it.
pub(crate) struct Member {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Member {
    /// Runs `body` on a thread until it sees the stop flag set.
    pub(crate) fn spawn(
        body: impl FnOnce(&AtomicBool) + Send + 'static,
    ) -> Result<Member, LogError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("weir-group".into())
            .spawn(move || body(&flag))
            .map_err(|source| LogError::Io {
                op: "spawn group thread",
                path: Default::default(),
                source,
            })?;
        Ok(Member {
            stop,
            thread: Some(thread),
        })
    }
}

impl Membership for Member {
    fn leave(mut self: Box<Self>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Joins the embedded log's group of one: every partition is assigned at
/// once, and partitions the topic grows by as soon as they appear;
/// progress goes to the log's own group offsets.
pub(crate) fn join_sole(
    log: Arc<dyn Log>,
    group: &str,
    topic: &str,
    owner: Arc<dyn Owner>,
) -> Result<Member, LogError> {
    let mut count = log.partitions(topic)?;
    owner.assigned(&(0..count).collect::<Vec<_>>());
    let (group, topic) = (group.to_owned(), topic.to_owned());
    Member::spawn(move |stop| {
        let mut last = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            match log.partitions(&topic) {
                Ok(now) if now > count => {
                    tracing::info!(
                        topic,
                        before = count,
                        after = now,
                        "the topic grew; taking its new partitions"
                    );
                    owner.assigned(&(count..now).collect::<Vec<_>>());
                    count = now;
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(topic, %error, "partition count"),
            }
            if last.elapsed() >= PROGRESS_INTERVAL {
                commit_progress(&*log, &group, &topic, &owner.progress());
                last = Instant::now();
            }
        }
        let last = owner.revoked(&(0..count).collect::<Vec<_>>());
        commit_progress(&*log, &group, &topic, &last);
    })
}

/// Commits `progress` for `group` on `topic`; failures are logged, the
/// next round retries.
fn commit_progress(log: &dyn Log, group: &str, topic: &str, progress: &[(u32, u64)]) {
    for &(partition, offset) in progress {
        let committed = Committed {
            offset,
            metadata: String::new(),
        };
        if let Err(error) = log.commit(group, topic, partition, &committed) {
            tracing::warn!(group, partition, %error, "progress commit failed");
        }
    }
}
