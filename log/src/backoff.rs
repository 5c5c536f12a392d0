//! The one retry policy of weir: capped exponential backoff with jitter.
//! Every retry loop (router appends, processor and sink restarts, the
//! notifier, the forwarder, Graphite connections, ingest's accept loop)
//! waits through a [`Backoff`], so the caps are in one place and many
//! processes retrying one broker do not retry in step.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Capped exponential backoff: the first wait is `first`, each further
/// one doubles, never beyond `cap`; each wait is drawn from its upper
/// half at random (jitter).
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    /// A policy whose first wait is `first` and whose waits stop growing at `cap`.
    pub fn new(first: Duration, cap: Duration) -> Backoff {
        Backoff {
            first: first.max(Duration::from_millis(1)),
            cap: cap.max(first),
            failures: 0,
        }
    }

    /// Restarting a failed worker or sink: 100 ms, up to 10 s.
    pub fn restart() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(10))
    }

    /// Records one more failure and returns how long to wait before the
    /// next try.
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.wait(self.failures)
    }

    /// A try succeeded: the next failure waits `first` again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The wait after the `failures`-th failure in a row (≥ 1), with
    /// jitter, without recording anything.
    pub fn wait(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        let full = self.first.saturating_mul(1 << doublings).min(self.cap);
        let half = full / 2;
        let random = RandomState::new().build_hasher().finish();
        half + half.mul_f64((random >> 11) as f64 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_from_first_to_cap_in_their_upper_half_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let expected_full = [100, 200, 400, 800, 1000, 1000, 1000];
        for full in expected_full {
            let wait = backoff.failed();
            let full = Duration::from_millis(full);
            assert!(
                wait >= full / 2 && wait <= full,
                "{wait:?} outside {full:?}"
            );
        }
        assert_eq!(backoff.failures(), 7);
        backoff.succeeded();
        assert!(backoff.failed() <= Duration::from_millis(100));
        // A huge failure count neither overflows nor exceeds the cap.
        assert!(backoff.wait(u32::MAX) <= Duration::from_secs(1));
    }

    #[test]
    fn waits_are_jittered() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let waits: std::collections::HashSet<_> = (0..20).map(|_| backoff.wait(1)).collect();
        assert!(waits.len() > 1, "20 waits all equal: no jitter");
    }
}
