//! Failure ladders in memory only, so a stranger's wrong guesses slow the stranger, not the
//! owner: one ladder per (name, source), and a per-name ceiling over all sources together.
//!
//! A source is the peer service's uid plus the opaque client key its adapter may pass. Both
//! enter the ladders only through a keyed hash whose key is made at start and never leaves
//! memory, so no address or key is held in the clear. An attempt is reserved before any
//! hashing and counts against the ladder while it runs: simultaneous guesses cannot slip past
//! it, and simultaneous logins beyond the free failures wait for the earlier answers instead of
//! being refused.

use crate::config::ThrottleConfig;
use lru::LruCache;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

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

/// Failures of one key, and the attempts on it still being hashed.
#[derive(Debug, Clone, Copy)]
struct Ladder {
    /// Failures counted so far (less those given back); the free ones used up, each further
    /// one doubles the back-off.
    failures: u32,
    /// Attempts reserved and not yet answered: each may still turn out a failure, so they
    /// count against the free failures left.
    running: u32,
    /// When the latest failure was counted: a ladder quiet for long enough starts again.
    last_failure: Instant,
    /// Attempts are refused without hashing until then; `None` while failures remain free.
    blocked_until: Option<Instant>,
}

/// What one ladder says of a further attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    /// It may be hashed now.
    Admit,
    /// Only the attempts still running stand in its way: it may go once one of them answers.
    Wait,
    /// Backed off: refused without hashing.
    Refuse,
}

impl Ladder {
    fn new(now: Instant) -> Ladder {
        Ladder {
            failures: 0,
            running: 0,
            last_failure: now,
            blocked_until: None,
        }
    }

    fn blocks(&self, now: Instant) -> bool {
        self.blocked_until.is_some_and(|until| until > now)
    }

    /// Forgets the failures of a ladder quiet for `quiet` after its own back-off ended.
    fn forget_if_quiet(&mut self, quiet: Duration, now: Instant) {
        let quiet_since = self.blocked_until.unwrap_or(self.last_failure);
        if self.running == 0 && now.saturating_duration_since(quiet_since) > quiet {
            *self = Ladder::new(now);
        }
    }

    /// While failures remain free, as many attempts may run as there are free failures left;
    /// once they are used up and the back-off has passed, one at a time.
    fn verdict(&self, free: u32, now: Instant) -> Verdict {
        if self.blocks(now) {
            return Verdict::Refuse;
        }
        if self.running < free.saturating_sub(self.failures).max(1) {
            Verdict::Admit
        } else {
            Verdict::Wait
        }
    }

    /// Counts a failure; the failure that uses up the free ones starts the back-off, and each
    /// further one doubles it.
    fn fail(&mut self, free: u32, base_delay: Duration, max_delay: Duration, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        self.last_failure = now;
        if self.failures >= free {
            let steps = (self.failures - free).min(31);
            self.blocked_until = Some(now + base_delay.saturating_mul(1 << steps).min(max_delay));
        }
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

/// How an attempt ended, for its ladders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Wrong password or locked account: a failure on both ladders.
    Denied,
    /// Logged in: the source starts afresh and is trusted for the name.
    Accepted,
    /// Never answered (every hashing worker busy, or the client left first, so it learnt
    /// nothing): no failure.
    Unanswered,
}

/// An attempt running against its ladders. `denied` counts the failure, `accepted` clears the
/// source's ladder and trusts it; dropped unsettled, it counts nothing.
#[must_use = "an unsettled reservation counts nothing when dropped"]
pub struct Reservation<'a> {
    /// The throttle whose ladders the attempt runs against.
    throttle: &'a Throttle,
    /// The ladders it runs against.
    keys: Keys,
    /// Set once `denied` or `accepted` settled it.
    settled: bool,
}

impl Reservation<'_> {
    /// The password was wrong (or the account locked): the failure counts.
    pub fn denied(mut self) {
        self.settle(Outcome::Denied, Instant::now());
    }

    /// The attempt logged in: its source starts afresh and is trusted for this name from now
    /// on; the name keeps the failures of others.
    pub fn accepted(mut self) {
        self.settle(Outcome::Accepted, Instant::now());
    }

    fn settle(&mut self, outcome: Outcome, now: Instant) {
        self.settled = true;
        self.throttle.settle(self.keys, outcome, now);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.settle(Outcome::Unanswered, Instant::now());
        }
    }
}

/// Every ladder, behind one lock so an attempt is checked and reserved at once.
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
    /// Woken whenever an attempt settles, so the attempts waiting on it look again.
    settled: Notify,
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

/// Whether an attempt may start now.
enum Admission<'a> {
    /// It may: hash it, then settle the reservation.
    Admitted(Reservation<'a>),
    /// Not before an attempt still running on one of its ladders answers.
    Wait,
    /// Backed off.
    Refused,
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
            settled: Notify::new(),
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

    /// Reserves an attempt for `name` from `source`, or refuses it: while this source is backed
    /// off, or while the name is and this source never logged in. An attempt that only the
    /// running ones stand in the way of waits until one of them answers, then looks again.
    pub async fn reserve(
        &self,
        name: &str,
        source: Source<'_>,
    ) -> Result<Reservation<'_>, Throttled> {
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            // Listening before looking: an attempt settling in between still wakes this one.
            settled.as_mut().enable();
            match self.admit(name, source, Instant::now()) {
                Admission::Admitted(reservation) => return Ok(reservation),
                Admission::Refused => return Err(Throttled),
                Admission::Wait => settled.await,
            }
        }
    }

    /// Checks both ladders and, when they admit the attempt, counts it as running on both.
    fn admit(&self, name: &str, source: Source<'_>, now: Instant) -> Admission<'_> {
        let keys = self.keys(name, source);
        let quiet = self.max_delay.max(self.base_delay);
        let mut guard = self.ladders();
        let ladders = &mut *guard;
        let trusted = ladders.trusted.contains(&keys.source);
        let by_source = ladders
            .sources
            .get_or_insert_mut(keys.source, || Ladder::new(now));
        let by_name = ladders
            .names
            .get_or_insert_mut(keys.name, || Ladder::new(now));
        by_source.forget_if_quiet(quiet, now);
        by_name.forget_if_quiet(quiet, now);
        let mut verdict = by_source.verdict(self.free_failures, now);
        if !trusted {
            verdict = verdict.max(by_name.verdict(self.name_free_failures, now));
        }
        match verdict {
            Verdict::Refuse => Admission::Refused,
            Verdict::Wait => Admission::Wait,
            Verdict::Admit => {
                by_source.running = by_source.running.saturating_add(1);
                by_name.running = by_name.running.saturating_add(1);
                Admission::Admitted(Reservation {
                    throttle: self,
                    keys,
                    settled: false,
                })
            }
        }
    }

    /// Ends a running attempt on its ladders and wakes the attempts waiting for one.
    fn settle(&self, keys: Keys, outcome: Outcome, now: Instant) {
        {
            let mut ladders = self.ladders();
            if outcome == Outcome::Accepted {
                ladders.trusted.put(keys.source, ());
            }
            let ladders = &mut *ladders;
            // The source's ladder starts afresh on a login; the name's keeps others' failures.
            for (map, key, free, cleared_by_login) in [
                (&mut ladders.sources, keys.source, self.free_failures, true),
                (
                    &mut ladders.names,
                    keys.name,
                    self.name_free_failures,
                    false,
                ),
            ] {
                // A ladder forgotten meanwhile (least recently used) is begun again by a failure.
                let ladder = match outcome {
                    Outcome::Denied => Some(map.get_or_insert_mut(key, || Ladder::new(now))),
                    Outcome::Accepted | Outcome::Unanswered => map.peek_mut(&key),
                };
                let Some(ladder) = ladder else { continue };
                ladder.running = ladder.running.saturating_sub(1);
                match outcome {
                    Outcome::Denied => ladder.fail(free, self.base_delay, self.max_delay, now),
                    Outcome::Accepted if cleared_by_login => {
                        *ladder = Ladder {
                            running: ladder.running,
                            ..Ladder::new(now)
                        };
                    }
                    Outcome::Accepted | Outcome::Unanswered => {}
                }
            }
        }
        self.settled.notify_waiters();
    }

    /// An admin set the password or removed the account: the name's ceiling starts afresh
    /// (each source's own ladder runs out by itself; they cannot be found by name).
    pub fn forget(&self, name: &str) {
        let name_key = self.secret.hash_one(name);
        let now = Instant::now();
        if let Some(ladder) = self.ladders().names.peek_mut(&name_key) {
            *ladder = Ladder {
                running: ladder.running,
                ..Ladder::new(now)
            };
        }
        self.settled.notify_waiters();
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
        /// Starts an attempt at `now` that must not have to wait.
        fn start(
            &self,
            name: &str,
            source: Source<'_>,
            now: Instant,
        ) -> Result<Reservation<'_>, Throttled> {
            match self.admit(name, source, now) {
                Admission::Admitted(reservation) => Ok(reservation),
                Admission::Refused => Err(Throttled),
                Admission::Wait => panic!("the attempt on {name} has to wait"),
            }
        }

        /// Starts `count` attempts at `now` and keeps them running.
        fn start_many(&self, count: usize, now: Instant) -> Vec<Reservation<'_>> {
            (0..count)
                .map(|_| self.start("alice", SMTP, now).unwrap())
                .collect()
        }

        /// Whether an attempt at `now` has to wait for a running one.
        fn waits(&self, name: &str, source: Source<'_>, now: Instant) -> bool {
            matches!(self.admit(name, source, now), Admission::Wait)
        }

        /// An attempt that turns out wrong at `now`.
        fn fail(&self, name: &str, source: Source<'_>, now: Instant) -> Result<(), Throttled> {
            self.start(name, source, now)
                .map(|mut reservation| reservation.settle(Outcome::Denied, now))
        }
    }

    /// A throttle whose SMTP ladder for alice used up its free failures at the instant returned.
    fn backed_off() -> (Throttle, Instant) {
        let t = throttle(10);
        let now = Instant::now();
        for _ in 0..3 {
            t.fail("alice", SMTP, now).unwrap();
        }
        (t, now)
    }

    /// Three attempts run and a fourth is reserved, which must still wait after a while; then
    /// `answer` settles the running ones, and the fourth's outcome is returned.
    async fn fourth_attempt_after(answer: fn(Vec<Reservation<'_>>)) -> Result<(), Throttled> {
        let t = throttle(10);
        let running = t.start_many(3, Instant::now());
        let waiting = t.reserve("alice", SMTP);
        tokio::pin!(waiting);
        let early = tokio::time::timeout(Duration::from_millis(50), waiting.as_mut()).await;
        assert!(early.is_err(), "admitted before any answer");
        answer(running);
        waiting.await.map(drop)
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
        let (t, now) = backed_off();
        assert_eq!(t.fail("alice", SMTP, now), Err(Throttled));
        assert!(t.fail("alice", XMPP, now).is_ok());
        assert!(t.fail("alice", client("owner"), now).is_ok());
    }

    #[test]
    fn the_name_ceiling_stops_rotating_strangers_but_not_trusted_sources() {
        let t = throttle(10);
        let now = Instant::now();
        t.start("alice", XMPP, now).unwrap().accepted();
        for n in 0..6 {
            let key = format!("stranger{n}");
            assert!(t.fail("alice", client(&key), now).is_ok(), "{n}");
        }
        assert_eq!(t.fail("alice", client("stranger7"), now), Err(Throttled));
        assert!(t.fail("alice", XMPP, now).is_ok(), "trusted owner");
    }

    #[test]
    fn simultaneous_guesses_beyond_the_free_failures_wait_and_then_are_refused() {
        let t = throttle(10);
        let now = Instant::now();
        let running = t.start_many(3, now);
        for _ in 0..80 {
            assert!(t.waits("alice", SMTP, now), "none admitted while three run");
        }
        for mut guess in running {
            guess.settle(Outcome::Denied, now);
        }
        assert_eq!(t.start("alice", SMTP, now).err(), Some(Throttled));
    }

    #[test]
    fn simultaneous_logins_beyond_the_free_failures_wait_and_then_go() {
        let t = throttle(10);
        let now = Instant::now();
        t.fail("alice", SMTP, now).unwrap();
        let mut running = t.start_many(2, now);
        assert!(t.waits("alice", SMTP, now));
        if let Some(mut login) = running.pop() {
            login.settle(Outcome::Accepted, now);
        }
        // The login cleared the failure: three may run again, one of them still running.
        let _admitted = t.start_many(2, now);
        assert!(t.waits("alice", SMTP, now));
    }

    #[test]
    fn once_backed_off_one_attempt_runs_at_a_time() {
        let (t, now) = backed_off();
        let later = now + Duration::from_secs(1);
        let first = t.start("alice", SMTP, later).unwrap();
        assert!(t.waits("alice", SMTP, later));
        drop(first);
        assert!(t.start("alice", SMTP, later).is_ok());
    }

    #[tokio::test]
    async fn a_waiting_attempt_goes_when_a_running_one_logs_in() {
        let outcome = fourth_attempt_after(|mut running| {
            if let Some(login) = running.pop() {
                login.accepted();
            }
        });
        assert!(outcome.await.is_ok());
    }

    #[tokio::test]
    async fn a_waiting_guess_is_refused_when_the_running_ones_fail() {
        let outcome =
            fourth_attempt_after(|running| running.into_iter().for_each(Reservation::denied));
        assert_eq!(outcome.await, Err(Throttled));
    }

    #[test]
    fn an_attempt_whose_client_left_before_its_answer_is_not_charged() {
        let t = throttle(10);
        let now = Instant::now();
        for _ in 0..10 {
            drop(t.start("alice", SMTP, now).unwrap());
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
        drop(t.start("alice", SMTP, now).unwrap());
        t.start("alice", SMTP, now).unwrap().accepted();
        for _ in 0..3 {
            assert!(t.fail("alice", SMTP, now).is_ok());
        }
    }

    #[test]
    fn a_capped_ladder_is_not_forgotten_while_guessing_goes_on() {
        let (t, mut now) = backed_off();
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
