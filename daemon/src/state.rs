//! What every connection of every door shares: the accounts, the access policy in force
//! (replaced on reload), the count of open connections and the start time.

use crate::accounts::{Accounts, ServerFigures};
use crate::log_level::LogLevel;
use crate::policy::Policy;
use crate::reloadable::Reloadable;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The daemon's shared state; one per process, behind an `Arc`.
pub struct State {
    /// The account logic every operation runs on.
    pub accounts: Accounts,
    /// Who may call what; replaced whole on reload, so a connection sees one version.
    policy: Reloadable<Policy>,
    /// Open client connections on the main socket, for `status`.
    connections: AtomicUsize,
    /// When qamd started, for `status`'s uptime.
    started: Instant,
    /// The running log level, which `debug` opens a window of debug logging on.
    pub log_level: Arc<LogLevel>,
}

impl State {
    pub fn new(accounts: Accounts, policy: Policy, log_level: Arc<LogLevel>) -> State {
        State {
            accounts,
            policy: Reloadable::new(policy),
            connections: AtomicUsize::new(0),
            started: Instant::now(),
            log_level,
        }
    }

    /// The policy in force now.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.get()
    }

    /// Replaces the policy (config reload).
    pub fn set_policy(&self, policy: Policy) {
        self.policy.replace(policy);
    }

    /// Counts a connection as open until the returned guard drops.
    pub fn connection_opened(self: &Arc<State>) -> OpenConnection {
        self.connections.fetch_add(1, Ordering::Relaxed);
        OpenConnection(Arc::clone(self))
    }

    /// The figures `status` takes from the server.
    pub fn figures(&self) -> ServerFigures {
        ServerFigures {
            uptime: self.started.elapsed(),
            connections: self.connections.load(Ordering::Relaxed),
            debug_until: self.log_level.window_until(),
        }
    }
}

/// One open connection in `status`'s count; dropping it closes the count.
pub struct OpenConnection(Arc<State>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}
