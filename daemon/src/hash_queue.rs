//! The hashing pool's waiting room: one queue per peer (uid), served round-robin, with a share
//! per peer and a total bound, so a peer flooding verifies waits behind itself, not the others.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The whole queue, or this peer's share of it, is full.
    Full,
    /// The pool has stopped.
    Stopped,
}

/// What a worker's wait produced.
pub enum Taken<J> {
    Job(J),
    /// Nothing arrived for the whole wait.
    Idle,
    Stopped,
}

/// The jobs waiting, by peer.
struct Waiting<J> {
    /// Each peer's jobs in arrival order.
    by_peer: HashMap<u32, VecDeque<J>>,
    /// Peers with jobs, in the order they are served next: a worker takes one job from the
    /// front peer, which goes to the back if it has more.
    turn: VecDeque<u32>,
    /// Jobs waiting over all peers.
    total: usize,
    /// Set once: workers finish and new jobs are refused.
    stopped: bool,
}

/// A fair, bounded queue between request tasks and hashing threads.
pub struct FairQueue<J> {
    /// The jobs and whose turn is next, under one lock shared by request tasks pushing and
    /// workers taking.
    waiting: Mutex<Waiting<J>>,
    /// Wakes a worker when a job arrives or the queue stops.
    arrived: Condvar,
    /// Jobs waiting at most, over all peers.
    limit: usize,
    /// Jobs one peer may have waiting at most.
    per_peer: usize,
}

impl<J> FairQueue<J> {
    pub fn new(limit: usize, per_peer: usize) -> FairQueue<J> {
        FairQueue {
            waiting: Mutex::new(Waiting {
                by_peer: HashMap::new(),
                turn: VecDeque::new(),
                total: 0,
                stopped: false,
            }),
            arrived: Condvar::new(),
            limit,
            per_peer: per_peer.min(limit).max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Waiting<J>> {
        self.waiting
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Queues `job` for `peer`, or refuses at once.
    pub fn push(&self, peer: u32, job: J) -> Result<(), Refused> {
        let mut waiting = self.lock();
        if waiting.stopped {
            return Err(Refused::Stopped);
        }
        if waiting.total >= self.limit {
            return Err(Refused::Full);
        }
        let queue = waiting.by_peer.entry(peer).or_default();
        if queue.len() >= self.per_peer {
            return Err(Refused::Full);
        }
        queue.push_back(job);
        if queue.len() == 1 {
            waiting.turn.push_back(peer);
        }
        waiting.total += 1;
        drop(waiting);
        self.arrived.notify_one();
        Ok(())
    }

    /// The next job in round-robin order between peers, waiting at most `idle` for one.
    pub fn take(&self, idle: Duration) -> Taken<J> {
        let mut waiting = self.lock();
        loop {
            if waiting.stopped {
                return Taken::Stopped;
            }
            if let Some(job) = waiting.pop() {
                return Taken::Job(job);
            }
            let (next, timeout) = self
                .arrived
                .wait_timeout(waiting, idle)
                .unwrap_or_else(|poison| poison.into_inner());
            waiting = next;
            if timeout.timed_out() && waiting.total == 0 && !waiting.stopped {
                return Taken::Idle;
            }
        }
    }

    /// Jobs waiting over all peers.
    pub fn len(&self) -> usize {
        self.lock().total
    }

    /// True when no job waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses new jobs, drops the waiting ones (their requesters hear the pool stopped) and
    /// lets every worker finish.
    pub fn stop(&self) {
        let mut waiting = self.lock();
        waiting.stopped = true;
        waiting.by_peer.clear();
        waiting.turn.clear();
        waiting.total = 0;
        drop(waiting);
        self.arrived.notify_all();
    }
}

impl<J> Waiting<J> {
    fn pop(&mut self) -> Option<J> {
        let peer = self.turn.pop_front()?;
        let queue = self.by_peer.get_mut(&peer)?;
        let job = queue.pop_front();
        if queue.is_empty() {
            self.by_peer.remove(&peer);
        } else {
            self.turn.push_back(peer);
        }
        self.total -= usize::from(job.is_some());
        job
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(queue: &FairQueue<(u32, u32)>) -> Vec<(u32, u32)> {
        let mut order = Vec::new();
        while let Taken::Job(job) = queue.take(Duration::from_millis(1)) {
            order.push(job);
        }
        order
    }

    #[test]
    fn peers_take_turns_whatever_the_arrival_order() {
        let queue = FairQueue::new(100, 10);
        for n in 0..5 {
            queue.push(1, (1, n)).unwrap();
        }
        queue.push(2, (2, 0)).unwrap();
        queue.push(2, (2, 1)).unwrap();
        let order = drain(&queue);
        assert_eq!(order[..4], [(1, 0), (2, 0), (1, 1), (2, 1)]);
        assert_eq!(order.len(), 7);
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn a_peer_is_refused_beyond_its_share_while_others_still_get_in() {
        let queue = FairQueue::new(6, 4);
        for n in 0..4 {
            queue.push(1, (1, n)).unwrap();
        }
        assert_eq!(queue.push(1, (1, 9)), Err(Refused::Full));
        queue.push(2, (2, 0)).unwrap();
        queue.push(2, (2, 1)).unwrap();
        assert_eq!(queue.push(3, (3, 0)), Err(Refused::Full), "total bound");
    }

    #[test]
    fn stopping_wakes_workers_and_refuses_jobs() {
        let queue = std::sync::Arc::new(FairQueue::<(u32, u32)>::new(4, 4));
        let worker = {
            let queue = std::sync::Arc::clone(&queue);
            std::thread::spawn(move || {
                matches!(queue.take(Duration::from_secs(60)), Taken::Stopped)
            })
        };
        queue.stop();
        assert!(worker.join().unwrap());
        assert_eq!(queue.push(1, (1, 0)), Err(Refused::Stopped));
    }
}
