//! The per-username failure ladder, in memory only: after a few free failures each further one
//! doubles a back-off during which `verify` answers `throttled` without hashing.

use crate::config::ThrottleConfig;
use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures of one username.
#[derive(Debug, Clone, Copy)]
struct Ladder {
    failures: u32,
    last_failure: Instant,
    blocked_until: Option<Instant>,
}

/// The throttle; bounded by `max_tracked` usernames (least recently failed forgotten first).
pub struct Throttle {
    ladders: Mutex<LruCache<String, Ladder>>,
    free_failures: u32,
    base_delay: Duration,
    max_delay: Duration,
}

impl Throttle {
    pub fn new(config: &ThrottleConfig) -> Throttle {
        let capacity = NonZeroUsize::new(config.max_tracked).unwrap_or(NonZeroUsize::MIN);
        Throttle {
            ladders: Mutex::new(LruCache::new(capacity)),
            free_failures: config.free_failures,
            base_delay: Duration::from_millis(config.base_delay_ms),
            max_delay: Duration::from_secs(config.max_delay_seconds),
        }
    }

    fn ladders(&self) -> std::sync::MutexGuard<'_, LruCache<String, Ladder>> {
        self.ladders
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// `Err(remaining)` while `name` is backed off.
    pub fn check(&self, name: &str, now: Instant) -> Result<(), Duration> {
        match self
            .ladders()
            .peek(name)
            .and_then(|ladder| ladder.blocked_until)
        {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Records a failed attempt for `name`.
    pub fn failure(&self, name: &str, now: Instant) {
        let mut ladders = self.ladders();
        let ladder = ladders.get_or_insert_mut(name.to_owned(), || Ladder {
            failures: 0,
            last_failure: now,
            blocked_until: None,
        });
        // A ladder untouched for longer than the longest back-off starts again.
        if now.saturating_duration_since(ladder.last_failure) > self.max_delay.max(self.base_delay)
        {
            ladder.failures = 0;
        }
        ladder.failures = ladder.failures.saturating_add(1);
        ladder.last_failure = now;
        if ladder.failures > self.free_failures {
            let steps = (ladder.failures - self.free_failures - 1).min(31);
            let delay = self
                .base_delay
                .saturating_mul(1 << steps)
                .min(self.max_delay);
            ladder.blocked_until = Some(now + delay);
        }
    }

    /// A success clears the ladder.
    pub fn success(&self, name: &str) {
        self.ladders().pop(name);
    }

    /// Usernames currently tracked.
    pub fn tracked(&self) -> usize {
        self.ladders().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(max_tracked: usize) -> Throttle {
        Throttle::new(&ThrottleConfig {
            free_failures: 3,
            base_delay_ms: 1000,
            max_delay_seconds: 8,
            max_tracked,
        })
    }

    #[test]
    fn ladder_engages_after_free_failures_and_doubles() {
        let t = throttle(10);
        let now = Instant::now();
        for _ in 0..3 {
            t.failure("alice", now);
            assert!(t.check("alice", now).is_ok());
        }
        t.failure("alice", now);
        assert_eq!(t.check("alice", now), Err(Duration::from_secs(1)));
        t.failure("alice", now);
        assert_eq!(t.check("alice", now), Err(Duration::from_secs(2)));
        for _ in 0..10 {
            t.failure("alice", now);
        }
        assert_eq!(t.check("alice", now), Err(Duration::from_secs(8)), "capped");
        assert!(
            t.check("alice", now + Duration::from_secs(8)).is_ok(),
            "back-off ends"
        );
        assert!(t.check("bob", now).is_ok(), "others unaffected");
    }

    #[test]
    fn success_resets() {
        let t = throttle(10);
        let now = Instant::now();
        for _ in 0..5 {
            t.failure("alice", now);
        }
        t.success("alice");
        assert!(t.check("alice", now).is_ok());
        t.failure("alice", now);
        assert!(t.check("alice", now).is_ok());
    }

    #[test]
    fn old_ladders_are_forgotten() {
        let t = throttle(10);
        let now = Instant::now();
        for _ in 0..4 {
            t.failure("alice", now);
        }
        let later = now + Duration::from_secs(60);
        t.failure("alice", later);
        assert!(t.check("alice", later).is_ok());
    }

    #[test]
    fn memory_is_bounded() {
        let t = throttle(1000);
        let now = Instant::now();
        for n in 0..100_000 {
            t.failure(&format!("user{n}"), now);
        }
        assert_eq!(t.tracked(), 1000);
    }
}
