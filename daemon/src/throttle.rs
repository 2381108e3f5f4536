//! Failure ladders in memory only, so a stranger's wrong guesses slow the stranger, not the
//! owner: one ladder per (name, source), and a per-name ceiling over all sources together.
//!
//! A source is the peer service's uid plus the opaque client key its adapter may pass. Both
//! enter the ladders only through a keyed hash whose key is made at start and never leaves
//! memory, so no address or key is held in the clear. An attempt is charged when it is
//! reserved, before any hashing: simultaneous guesses cannot slip past the ladder.

use crate::config::ThrottleConfig;
use lru::LruCache;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Where an attempt comes from, as far as qamd can tell. No `Debug`: the client key may be
/// an address, which qamd never shows.
#[derive(Clone, Copy)]
pub struct Source<'a> {
    /// The connecting service's uid (SO_PEERCRED).
    pub peer_uid: u32,
    /// What the service's adapter knows about its client (an address, a session), if anything.
    pub client: Option<&'a str>,
}

impl Source<'_> {
    /// A peer service that tells its clients apart no further.
    pub const fn peer(peer_uid: u32) -> Source<'static> {
        Source {
            peer_uid,
            client: None,
        }
    }
}

/// Failures of one key.
#[derive(Debug, Clone, Copy)]
struct Ladder {
    /// Failures counted so far (less those given back); the free ones used up, each further
    /// one doubles the back-off.
    failures: u32,
    /// When the latest failure was charged: a ladder quiet for long enough starts again.
    last_failure: Instant,
    /// Attempts are refused without hashing until then; `None` while failures remain free.
    blocked_until: Option<Instant>,
}

impl Ladder {
    fn blocks(&self, now: Instant) -> bool {
        self.blocked_until.is_some_and(|until| until > now)
    }
}

/// The attempt is refused without hashing: too many recent failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled;

/// The keyed hashes an attempt is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Keys {
    /// The keyed hash of (name, source): the attempt's own ladder, and its entry among the
    /// trusted once it logs in.
    source: u64,
    /// The keyed hash of the name alone: the per-name ceiling every source is charged to.
    name: u64,
}

/// An attempt charged as a failure in advance. `denied` keeps the charge, `accepted` gives it
/// back and trusts the source; dropped unsettled (every hashing worker busy, or the client
/// left before its answer, so it learnt nothing), the charge is given back.
#[must_use = "an unsettled reservation is given back when dropped"]
pub struct Reservation<'a> {
    /// The throttle that charged the attempt.
    throttle: &'a Throttle,
    /// Where the charge went.
    keys: Keys,
    /// Set once `denied` or `accepted` settled the charge.
    settled: bool,
}

impl Reservation<'_> {
    /// The password was wrong (or the account locked): the charge stands.
    pub fn denied(mut self) {
        self.settled = true;
    }

    /// The attempt logged in: its source starts afresh and is trusted for this name from now
    /// on; the name keeps the failures of others.
    pub fn accepted(mut self) {
        self.settled = true;
        let throttle = self.throttle;
        let mut ladders = throttle.ladders();
        ladders.sources.pop(&self.keys.source);
        ladders.trusted.put(self.keys.source, ());
        Throttle::refund(
            &mut ladders.names,
            self.keys.name,
            throttle.name_free_failures,
        );
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let throttle = self.throttle;
        let mut ladders = throttle.ladders();
        Throttle::refund(
            &mut ladders.sources,
            self.keys.source,
            throttle.free_failures,
        );
        Throttle::refund(
            &mut ladders.names,
            self.keys.name,
            throttle.name_free_failures,
        );
    }
}

/// Every ladder, behind one lock so a reservation is checked and charged at once.
struct Ladders {
    /// One ladder per keyed hash of (name, source).
    sources: LruCache<u64, Ladder>,
    /// One ladder per keyed hash of a name, charged by every source.
    names: LruCache<u64, Ladder>,
    /// (name, source) pairs that logged in since start: the per-name ceiling does not stop them.
    trusted: LruCache<u64, ()>,
}

/// The throttle; each map is bounded by `max_tracked` keys (least recently used forgotten first).
pub struct Throttle {
    /// The ladders every verify checks and charges, shared by all connections.
    ladders: Mutex<Ladders>,
    /// Key of the hash every name and source passes through; made at start, memory only.
    secret: RandomState,
    /// Failures one source may make before its back-off starts.
    free_failures: u32,
    /// Failures of all untrusted sources together before the name's back-off starts.
    name_free_failures: u32,
    /// The first back-off, once a ladder's free failures are used up.
    base_delay: Duration,
    /// The longest back-off; also how long a ladder must be quiet to start again.
    max_delay: Duration,
}

impl Throttle {
    pub fn new(config: &ThrottleConfig) -> Throttle {
        let capacity = NonZeroUsize::new(config.max_tracked).unwrap_or(NonZeroUsize::MIN);
        Throttle {
            ladders: Mutex::new(Ladders {
                sources: LruCache::new(capacity),
                names: LruCache::new(capacity),
                trusted: LruCache::new(capacity),
            }),
            secret: RandomState::new(),
            free_failures: config.free_failures,
            name_free_failures: config.name_free_failures(),
            base_delay: Duration::from_millis(config.base_delay_ms),
            max_delay: Duration::from_secs(config.max_delay_seconds),
        }
    }

    fn ladders(&self) -> MutexGuard<'_, Ladders> {
        self.ladders
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn keys(&self, name: &str, source: Source<'_>) -> Keys {
        Keys {
            source: self.secret.hash_one((name, source.peer_uid, source.client)),
            name: self.secret.hash_one(name),
        }
    }

    /// Admits an attempt for `name` from `source` and charges it as a failure, or refuses it:
    /// while this source is backed off, or while the name is and this source never logged in.
    pub fn reserve(
        &self,
        name: &str,
        source: Source<'_>,
        now: Instant,
    ) -> Result<Reservation<'_>, Throttled> {
        let keys = self.keys(name, source);
        let mut ladders = self.ladders();
        if ladders
            .sources
            .peek(&keys.source)
            .is_some_and(|ladder| ladder.blocks(now))
        {
            return Err(Throttled);
        }
        let trusted = ladders.trusted.contains(&keys.source);
        if !trusted
            && ladders
                .names
                .peek(&keys.name)
                .is_some_and(|ladder| ladder.blocks(now))
        {
            return Err(Throttled);
        }
        self.charge(&mut ladders.sources, keys.source, self.free_failures, now);
        self.charge(&mut ladders.names, keys.name, self.name_free_failures, now);
        Ok(Reservation {
            throttle: self,
            keys,
            settled: false,
        })
    }

    /// Adds a failure to one ladder; the failure that uses up the free ones starts the back-off,
    /// and each further one doubles it.
    fn charge(&self, ladders: &mut LruCache<u64, Ladder>, key: u64, free: u32, now: Instant) {
        let ladder = ladders.get_or_insert_mut(key, || Ladder {
            failures: 0,
            last_failure: now,
            blocked_until: None,
        });
        // A ladder without failures for the longest back-off after its own ended starts again.
        let quiet_since = ladder.blocked_until.unwrap_or(ladder.last_failure);
        if now.saturating_duration_since(quiet_since) > self.max_delay.max(self.base_delay) {
            *ladder = Ladder {
                failures: 0,
                last_failure: now,
                blocked_until: None,
            };
        }
        ladder.failures = ladder.failures.saturating_add(1);
        ladder.last_failure = now;
        if ladder.failures >= free {
            let steps = (ladder.failures - free).min(31);
            let delay = self
                .base_delay
                .saturating_mul(1 << steps)
                .min(self.max_delay);
            ladder.blocked_until = Some(now + delay);
        }
    }

    fn refund(ladders: &mut LruCache<u64, Ladder>, key: u64, free: u32) {
        if let Some(ladder) = ladders.peek_mut(&key) {
            ladder.failures = ladder.failures.saturating_sub(1);
            if ladder.failures < free {
                ladder.blocked_until = None;
            }
        }
    }

    /// An admin set the password or removed the account: the name's ceiling starts afresh
    /// (each source's own ladder runs out by itself; they cannot be found by name).
    pub fn forget(&self, name: &str) {
        let mut ladders = self.ladders();
        let name_key = self.secret.hash_one(name);
        ladders.names.pop(&name_key);
    }

    /// Keys tracked in the largest map.
    pub fn tracked(&self) -> usize {
        let ladders = self.ladders();
        ladders
            .sources
            .len()
            .max(ladders.names.len())
            .max(ladders.trusted.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(max_tracked: usize) -> Throttle {
        Throttle::new(&ThrottleConfig {
            free_failures: 3,
            name_free_failures: Some(6),
            base_delay_ms: 1000,
            max_delay_seconds: 8,
            max_tracked,
        })
    }

    const SMTP: Source<'static> = Source {
        peer_uid: 100,
        client: None,
    };
    const XMPP: Source<'static> = Source {
        peer_uid: 101,
        client: None,
    };

    impl Throttle {
        /// An attempt that turns out wrong.
        fn fail(&self, name: &str, source: Source<'_>, now: Instant) -> Result<(), Throttled> {
            self.reserve(name, source, now).map(Reservation::denied)
        }
    }

    fn client(key: &str) -> Source<'_> {
        Source {
            peer_uid: 100,
            client: Some(key),
        }
    }

    #[test]
    fn ladder_engages_after_free_failures_and_doubles() {
        let t = throttle(10);
        let now = Instant::now();
        for _ in 0..3 {
            assert!(t.fail("alice", SMTP, now).is_ok());
        }
        assert_eq!(t.fail("alice", SMTP, now), Err(Throttled));
        let later = now + Duration::from_secs(1);
        assert!(t.fail("alice", SMTP, later).is_ok());
        assert_eq!(
            t.fail("alice", SMTP, later + Duration::from_millis(1999)),
            Err(Throttled),
            "doubled"
        );
        assert!(t.fail("bob", SMTP, now).is_ok(), "others unaffected");
    }

    #[test]
    fn another_source_is_not_slowed_by_a_strangers_failures() {
        let t = throttle(10);
        let now = Instant::now();
        for _ in 0..3 {
            t.fail("alice", SMTP, now).unwrap();
        }
        assert_eq!(t.fail("alice", SMTP, now), Err(Throttled));
        assert!(t.fail("alice", XMPP, now).is_ok());
        assert!(t.fail("alice", client("owner"), now).is_ok());
    }

    #[test]
    fn the_name_ceiling_stops_rotating_strangers_but_not_trusted_sources() {
        let t = throttle(10);
        let now = Instant::now();
        t.reserve("alice", XMPP, now).unwrap().accepted();
        for n in 0..6 {
            let key = format!("stranger{n}");
            assert!(t.fail("alice", client(&key), now).is_ok(), "{n}");
        }
        assert_eq!(t.fail("alice", client("stranger7"), now), Err(Throttled));
        assert!(t.fail("alice", XMPP, now).is_ok(), "trusted owner");
    }

    #[test]
    fn simultaneous_attempts_are_charged_before_any_answer() {
        let t = throttle(10);
        let now = Instant::now();
        let admitted = (0..80)
            .filter(|_| t.fail("alice", SMTP, now).is_ok())
            .count();
        assert_eq!(admitted, 3);
    }

    #[test]
    fn an_attempt_whose_client_left_before_its_answer_is_not_charged() {
        let t = throttle(10);
        let now = Instant::now();
        for _ in 0..10 {
            drop(t.reserve("alice", SMTP, now).unwrap());
        }
        assert!(t.fail("alice", SMTP, now).is_ok());
    }

    #[test]
    fn success_and_unrun_attempts_give_the_charge_back() {
        let t = throttle(10);
        let now = Instant::now();
        for _ in 0..2 {
            t.fail("alice", SMTP, now).unwrap();
        }
        drop(t.reserve("alice", SMTP, now).unwrap());
        t.reserve("alice", SMTP, now).unwrap().accepted();
        for _ in 0..3 {
            assert!(t.fail("alice", SMTP, now).is_ok());
        }
    }

    #[test]
    fn a_capped_ladder_is_not_forgotten_while_guessing_goes_on() {
        let t = throttle(10);
        let mut now = Instant::now();
        for _ in 0..3 {
            t.fail("alice", SMTP, now).unwrap();
        }
        for _ in 0..10 {
            now += Duration::from_secs(9);
            assert!(t.fail("alice", SMTP, now).is_ok());
            assert_eq!(
                t.fail("alice", SMTP, now + Duration::from_millis(1)),
                Err(Throttled),
                "no free failures again"
            );
        }
        let quiet = now + Duration::from_secs(17);
        for _ in 0..3 {
            assert!(t.fail("alice", SMTP, quiet).is_ok(), "forgotten when quiet");
        }
    }

    #[test]
    fn memory_is_bounded() {
        let t = throttle(1000);
        let now = Instant::now();
        for n in 0..100_000 {
            let _ = t.fail(&format!("user{n}"), SMTP, now);
        }
        assert_eq!(t.tracked(), 1000);
    }
}
