//! Account events for qam-hooks (delete, lock, unlock, password): a numbered, bounded log in
//! memory that `events` reads after a cursor, waiting for the next event when there is none.

use qam_client::wire::{AccountEvent, EventKind};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

/// Events kept for a qam-hooks that reads late; older ones are dropped.
const KEPT: usize = 1024;

/// The event log of one qamd run.
pub struct Events {
    /// Names this run, so a cursor of an earlier run is not taken for one of this run.
    epoch: String,
    /// The last `KEPT` events and the number of the first of them.
    log: Mutex<Log>,
    /// The number the next event gets; watched by the readers waiting for one.
    next: watch::Sender<u64>,
    /// qamd is stopping: readers stop waiting, so no connection holds the stop up.
    stopping: AtomicBool,
}

/// The kept events.
struct Log {
    /// Number of `events[0]`.
    first: u64,
    /// The events, oldest first.
    events: VecDeque<AccountEvent>,
}

impl Events {
    pub fn new() -> Events {
        let mut random = [0u8; 8];
        // Without randomness the epoch is the start time: still distinct from earlier runs.
        let epoch = match getrandom::fill(&mut random) {
            Ok(()) => random.iter().map(|byte| format!("{byte:02x}")).collect(),
            Err(_) => format!("{:x}", crate::store::unix_now()),
        };
        Events {
            epoch,
            log: Mutex::new(Log {
                first: 0,
                events: VecDeque::new(),
            }),
            next: watch::Sender::new(0),
            stopping: AtomicBool::new(false),
        }
    }

    /// This run's epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Adds an event for `user`.
    pub fn publish(&self, event: EventKind, user: &str, done: Vec<String>) {
        let mut log = self.log.lock().unwrap_or_else(|poison| poison.into_inner());
        log.events.push_back(AccountEvent {
            event,
            user: user.to_owned(),
            done,
        });
        if log.events.len() > KEPT {
            log.events.pop_front();
            log.first += 1;
        }
        let next = log.first + log.events.len() as u64;
        drop(log);
        self.next.send_replace(next);
    }

    /// Ends every wait now and every later one at once (qamd is stopping).
    pub fn end_waits(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.next.send_modify(|_| {});
    }

    /// The number the next event will get.
    pub fn next(&self) -> u64 {
        *self.next.borrow()
    }

    /// The events numbered `since` and later (those still kept), waiting up to `wait` for one
    /// when there is none yet; and the cursor after them.
    pub async fn after(&self, since: u64, wait: Duration) -> (Vec<AccountEvent>, u64) {
        let mut watcher = self.next.subscribe();
        let arrived = |next: &u64| *next > since || self.stopping.load(Ordering::Relaxed);
        let _ = tokio::time::timeout(wait, watcher.wait_for(arrived)).await;
        let log = self.log.lock().unwrap_or_else(|poison| poison.into_inner());
        let skip = since.saturating_sub(log.first) as usize;
        let events = log.events.iter().skip(skip).cloned().collect();
        (events, log.first + log.events.len() as u64)
    }
}

impl Default for Events {
    fn default() -> Events {
        Events::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readers_get_the_events_after_their_cursor_and_wait_for_new_ones() {
        let events = std::sync::Arc::new(Events::new());
        events.publish(EventKind::Lock, "alice", Vec::new());
        let (seen, next) = events.after(0, Duration::ZERO).await;
        assert_eq!((seen.len(), next), (1, 1));
        assert_eq!(seen[0].user, "alice");
        let (seen, next) = events.after(1, Duration::ZERO).await;
        assert_eq!((seen.len(), next), (0, 1));
        let publisher = std::sync::Arc::clone(&events);
        let waiting = tokio::spawn(async move { events.after(1, Duration::from_secs(30)).await });
        publisher.publish(EventKind::Password, "bob", Vec::new());
        let (seen, next) = waiting.await.unwrap();
        assert_eq!(next, 2);
        assert_eq!(seen[0].event, EventKind::Password);
    }

    #[tokio::test]
    async fn a_stop_ends_the_waits() {
        let events = std::sync::Arc::new(Events::new());
        let stopper = std::sync::Arc::clone(&events);
        let waiting = tokio::spawn(async move { events.after(0, Duration::from_secs(60)).await });
        tokio::task::yield_now().await;
        stopper.end_waits();
        let (seen, next) = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the wait ended with the stop")
            .unwrap();
        assert_eq!((seen.len(), next), (0, 0));
    }

    #[tokio::test]
    async fn only_the_last_events_are_kept() {
        let events = Events::new();
        for index in 0..KEPT + 10 {
            events.publish(EventKind::Lock, &format!("user{index}"), Vec::new());
        }
        let (seen, next) = events.after(0, Duration::ZERO).await;
        assert_eq!(seen.len(), KEPT);
        assert_eq!(next, (KEPT + 10) as u64);
        assert_eq!(seen[0].user, "user10");
        assert_ne!(Events::new().epoch(), events.epoch());
    }
}
