//! Each uid's CPU budget on the request side while passwords are hashed: connection tasks are
//! metered poll by poll, and a uid over budget waits, so cheap floods leave hashing its cores.

use crate::hasher::Hasher;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// CPU time a peer may spend ahead of its share (a burst of requests needs no waiting).
const BURST: Duration = Duration::from_millis(50);

/// Peers not heard from for this long are forgotten (their balance is full again anyway).
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// One peer's balance.
struct Account {
    /// CPU time the peer may still spend, in nanoseconds; negative is debt.
    balance: i64,
    /// When `balance` was last refilled.
    refilled: Instant,
}

/// The budgets of every peer; cheap to clone.
#[derive(Clone)]
pub struct CpuBudgets {
    /// Each peer's balance by uid, shared by every connection's meter; once there are many,
    /// peers not heard from for a while are forgotten.
    accounts: Arc<Mutex<HashMap<u32, Account>>>,
    /// The share of one core each peer may use while hashing runs (0.1 = 10 %).
    share: f64,
    /// Tells whether hashing runs: the budget applies only then.
    hasher: Hasher,
}

impl CpuBudgets {
    /// `percent` of one core per peer while `hasher` has work.
    pub fn new(percent: u32, hasher: Hasher) -> CpuBudgets {
        CpuBudgets {
            accounts: Arc::default(),
            share: f64::from(percent) / 100.0,
            hasher,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u32, Account>> {
        self.accounts
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Brings `account` up to date: its share of the time since it was last refilled.
    fn refill(&self, account: &mut Account, now: Instant) {
        let earned = now.saturating_duration_since(account.refilled).as_nanos() as f64 * self.share;
        account.balance = (account.balance as f64 + earned).min(BURST.as_nanos() as f64) as i64;
        account.refilled = now;
    }

    /// Charges `spent` CPU time to `uid`.
    pub fn charge(&self, uid: u32, spent: Duration) {
        let now = Instant::now();
        let mut accounts = self.lock();
        if accounts.len() > 1024 {
            accounts.retain(|_, account| now.duration_since(account.refilled) < FORGET_AFTER);
        }
        let account = accounts.entry(uid).or_insert(Account {
            balance: BURST.as_nanos() as i64,
            refilled: now,
        });
        self.refill(account, now);
        let spent = i64::try_from(spent.as_nanos()).unwrap_or(i64::MAX);
        account.balance = account.balance.saturating_sub(spent);
    }

    /// How long `uid` must wait before its next request: zero unless it is in debt while
    /// hashing runs.
    pub fn wait(&self, uid: u32) -> Duration {
        if !self.hasher.has_work() {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let mut accounts = self.lock();
        let Some(account) = accounts.get_mut(&uid) else {
            return Duration::ZERO;
        };
        self.refill(account, now);
        if account.balance >= 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos((-account.balance as f64 / self.share) as u64)
    }

    /// Runs `task` with the CPU time of each of its polls charged to `uid`.
    pub fn metered<F: Future>(&self, uid: u32, task: F) -> Metered<F> {
        Metered {
            task: Box::pin(task),
            uid,
            budgets: self.clone(),
        }
    }
}

/// A future whose polls are charged to a peer (see [`CpuBudgets::metered`]).
pub struct Metered<F> {
    /// The connection's work, pinned on the heap so `Metered` is `Unpin` and `poll` can
    /// reach its fields without pin projection.
    task: Pin<Box<F>>,
    /// The peer each poll's CPU time is charged to.
    uid: u32,
    /// Where the charge goes, and whether hashing runs (only then is time owed).
    budgets: CpuBudgets,
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // A poll runs on one thread from start to end, so that thread's CPU clock measures it.
        let before = thread_cpu_time();
        let hashing_before = self.budgets.hasher.has_work();
        let polled = self.task.as_mut().poll(cx);
        // Only time spent while hashing runs is owed (the budget guards hashing's cores): a
        // peer's setup before it hashes (an import, thousands of links) is no debt to wait out.
        let hashing = hashing_before || self.budgets.hasher.has_work();
        if let (true, Some(before), Some(after)) = (hashing, before, thread_cpu_time()) {
            self.budgets.charge(self.uid, after.saturating_sub(before));
        }
        polled
    }
}

/// CPU time the calling thread has used (user and system).
fn thread_cpu_time() -> Option<Duration> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).ok()?;
    Some(Duration::from(now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HashConfig, PeersConfig};

    fn budgets(percent: u32) -> CpuBudgets {
        // The budget only asks the hasher whether it has work: the cheapest pool will do.
        let config = HashConfig {
            m_cost: 64,
            t_cost: 1,
            workers: 1,
            ..HashConfig::default()
        };
        let hasher = Hasher::start(&config, &PeersConfig::default()).unwrap();
        CpuBudgets::new(percent, hasher)
    }

    #[test]
    fn no_waiting_while_nothing_is_hashed() {
        let budgets = budgets(10);
        budgets.charge(7, Duration::from_secs(5));
        assert_eq!(budgets.wait(7), Duration::ZERO);
    }

    #[test]
    fn debt_is_repaid_at_the_peer_s_share() {
        let budgets = budgets(10);
        budgets.charge(7, BURST + Duration::from_millis(10));
        let account = budgets.lock().get(&7).map(|a| a.balance).unwrap();
        assert!(account < 0);
        // 10 ms of debt at 10 % of a core: about 100 ms to wait (once hashing runs).
        let debt = Duration::from_nanos((-account) as u64);
        assert!(debt <= Duration::from_millis(10));
        assert!(budgets.lock().get(&8).is_none());
    }

    /// 100 ms of this thread's CPU, however loaded the machine is.
    async fn spin() {
        let started = thread_cpu_time().unwrap();
        let mut x = 0u64;
        while thread_cpu_time().unwrap() - started < Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }

    #[tokio::test]
    async fn polls_are_charged_to_their_peer() {
        let budgets = budgets(10);
        let _hashing = budgets.hasher.pretend_hashing();
        budgets.metered(9, spin()).await;
        let balance = budgets.lock().get(&9).map(|a| a.balance).unwrap();
        assert!(balance < 0, "CPU time beyond the 50 ms burst: {balance}");
        assert!(budgets.wait(9) > Duration::ZERO);
    }

    #[tokio::test]
    async fn time_spent_while_nothing_is_hashed_is_not_owed_later() {
        // A peer's setup (imports, links) takes no core from hashing: once its own
        // registrations start hashing, it must not wait out that setup at its share.
        let budgets = budgets(3);
        budgets.metered(9, spin()).await;
        let _hashing = budgets.hasher.pretend_hashing();
        assert_eq!(budgets.wait(9), Duration::ZERO);
    }
}
