//! `status`: how many accounts, how busy the hashing pool is and how verifies went, beside
//! the figures the server keeps (uptime, open connections).

use super::{store_failed, Accounts};
use qam_client::wire::{HashingStatus, StatusInfo, VerifyCounts};
use qam_client::{ErrorCode, WireError};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// What the server, not the accounts, knows for `status`.
#[derive(Debug, Clone)]
pub struct ServerFigures {
    /// Time since qamd started.
    pub uptime: Duration,
    /// Client connections open now.
    pub connections: usize,
    /// When the open debug window ends (RFC 3339), if one is open.
    pub debug_until: Option<String>,
}

impl Accounts {
    pub async fn status(&self, server: ServerFigures) -> Result<StatusInfo, WireError> {
        let store = self.store.clone();
        let counts = tokio::task::spawn_blocking(move || store.counts())
            .await
            .map_err(|_| WireError::new(ErrorCode::Internal, "counting users failed"))?
            .map_err(store_failed)?;
        let params = self.hasher.params();
        let count = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        Ok(StatusInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: server.uptime.as_secs(),
            users: counts.users,
            locked: counts.locked,
            connections: server.connections,
            registration_open: self.settings().registration_open,
            hashing: HashingStatus {
                workers: self.hasher.workers(),
                queued: self.hasher.queued(),
                queue_limit: self.hasher.queue_limit(),
                m_cost: params.m_cost(),
                t_cost: params.t_cost(),
                p_cost: params.p_cost(),
            },
            verify: VerifyCounts {
                accepted: count(&self.counters.accepted),
                denied: count(&self.counters.denied),
                throttled: count(&self.counters.throttled),
                busy: count(&self.counters.busy),
            },
            legacy: counts
                .legacy
                .iter()
                .map(|(kind, count)| (kind.to_string(), *count))
                .collect(),
            deleting: counts.deleting,
            debug_until: server.debug_until,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{password, with_alice, SOURCE};
    use super::ServerFigures;
    use std::time::Duration;

    #[tokio::test]
    async fn status_counts_accounts_and_verify_outcomes() {
        let (_dir, accounts) = with_alice().await;
        accounts.set_locked("alice", true).await.unwrap();
        let _ = accounts
            .verify("alice", password("alice-password"), SOURCE)
            .await;
        let figures = ServerFigures {
            uptime: Duration::from_secs(7),
            connections: 3,
            debug_until: None,
        };
        let status = accounts.status(figures).await.unwrap();
        assert_eq!((status.users, status.locked), (1, 1));
        assert_eq!((status.uptime_seconds, status.connections), (7, 3));
        assert_eq!(status.verify.denied, 1);
        assert_eq!(status.verify.accepted, 0);
        assert_eq!(status.hashing.m_cost, 64);
    }
}
