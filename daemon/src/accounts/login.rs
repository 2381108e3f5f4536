//! Logging in: `verify` and `change_password` check a password the same way, and a hash made
//! with older parameters is upgraded on success.
//!
//! The check is: look up, reserve the attempt with the throttle, hash, count.

use super::{denied, hash_failed, rule_failed, store_failed, Accounts};
use crate::hasher::HashError;
use crate::store::Record;
use crate::throttle::Source;
use qam_client::wire::{Done, EventKind, NameInfo};
use qam_client::{ErrorCode, Password, WireError};
use std::sync::atomic::Ordering;

/// A successful password check.
struct Checked {
    /// The record as read before hashing, so an upgrade cannot overwrite a later change.
    record: Record,
    /// The password that matched, to hash again with the current parameters.
    password: Password,
    /// The stored hash used older parameters than the current ones.
    needs_rehash: bool,
}

/// The answer while a source is backed off; it says nothing about when the back-off ends,
/// which would let any peer watch another user's failures.
fn throttled() -> WireError {
    WireError::new(
        ErrorCode::Throttled,
        "too many failed attempts; try again later",
    )
}

impl Accounts {
    /// Checks a password. Unknown, invalid and locked names cost the same argon2 work as a
    /// wrong password and answer the same `denied`.
    pub async fn verify(
        &self,
        user: &str,
        password: Password,
        source: Source<'_>,
    ) -> Result<NameInfo, WireError> {
        let (name, checked) = self.check_password(user, password, source).await?;
        if checked.needs_rehash {
            self.rehash(&name, checked).await;
        }
        Ok(NameInfo { name })
    }

    /// A user changes their own password, proving the old one. The new hash replaces exactly
    /// the record the old password was checked against: if an admin set a password, locked
    /// the account or another change landed meanwhile, this one is refused as `denied`.
    pub async fn change_password(
        &self,
        user: &str,
        old: Password,
        new: Password,
        source: Source<'_>,
    ) -> Result<Done, WireError> {
        self.settings()
            .rules
            .new_password(&new, &user.to_lowercase())
            .map_err(rule_failed)?;
        let (name, checked) = self.check_password(user, old, source).await?;
        let hash = self.hasher.hash(new).await.map_err(hash_failed)?;
        let mut changed = checked.record.clone();
        changed.set_hash(hash);
        if !self
            .store
            .replace(&name, &checked.record, &changed)
            .await
            .map_err(store_failed)?
        {
            tracing::info!(user = %name, "password change refused: the account changed meanwhile");
            return Err(denied());
        }
        self.forget_reset(&name).await;
        self.events.publish(EventKind::Password, &name, Vec::new());
        tracing::info!(user = %name, "password changed by its user");
        Ok(Done {})
    }

    /// The shared part of verify and change_password: look up, reserve the attempt with the
    /// throttle (existing accounts only: a name qam does not know is never throttled, so
    /// pam_qam never turns a unix-only login into "too many tries"), hash, count.
    async fn check_password(
        &self,
        user: &str,
        password: Password,
        source: Source<'_>,
    ) -> Result<(String, Checked), WireError> {
        let settings = self.settings();
        let name = settings.rules.username(user).ok();
        let record = match &name {
            Some(name) => self.store.get(name).map_err(store_failed)?,
            None => None,
        };
        let reservation = match (&name, &record) {
            (Some(name), Some(_)) => {
                Some(self.throttle.reserve(name, source).await.map_err(|_| {
                    self.counters.throttled.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(user = %name, "verify throttled");
                    throttled()
                })?)
            }
            _ => None,
        };
        let outcome = self
            .hasher
            .verify(password.clone(), record.as_ref().map(|r| r.hash.clone()))
            .await
            .map_err(|err| {
                let counter = match err {
                    HashError::UnknownNamesThrottled => &self.counters.throttled,
                    _ => &self.counters.busy,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                hash_failed(err)
            })?;
        match (name, record) {
            (Some(name), Some(record)) if outcome.matches && !record.locked => {
                if let Some(reservation) = reservation {
                    reservation.accepted();
                }
                self.counters.accepted.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(user = %name, "verify accepted");
                Ok((
                    name,
                    Checked {
                        record,
                        password,
                        needs_rehash: outcome.needs_rehash,
                    },
                ))
            }
            (name, record) => {
                if let Some(reservation) = reservation {
                    reservation.denied();
                }
                self.counters.denied.fetch_add(1, Ordering::Relaxed);
                // Only an existing account's name is logged: a name that matches no account
                // may be a password typed into the name field.
                match name.filter(|_| record.is_some()) {
                    Some(name) => tracing::debug!(user = %name, "verify denied"),
                    None => tracing::debug!("verify denied: no such account"),
                }
                Err(denied())
            }
        }
    }

    /// Stores a hash with the current parameters; failures only cost the upgrade.
    async fn rehash(&self, name: &str, checked: Checked) {
        let hash = match self.hasher.hash(checked.password).await {
            Ok(hash) => hash,
            Err(err) => {
                tracing::debug!(user = %name, error = %err, "rehash postponed");
                return;
            }
        };
        let mut upgraded = checked.record.clone();
        upgraded.set_hash(hash);
        match self.store.replace(name, &checked.record, &upgraded).await {
            Ok(true) => tracing::info!(user = %name, "hash upgraded to current parameters"),
            Ok(false) => tracing::debug!(user = %name, "rehash skipped: record changed meanwhile"),
            Err(err) => tracing::warn!(user = %name, error = %err, "rehash not stored"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{cheap_hashing, password, verifies, with_alice, SOURCE};
    use qam_client::ErrorCode;

    #[tokio::test]
    async fn verify_accepts_the_password_under_any_case_of_the_name() {
        let (_dir, accounts) = with_alice().await;
        let answer = accounts
            .verify("ALICE", password("alice-password"), SOURCE)
            .await;
        assert_eq!(answer.unwrap().name, "alice");
    }

    #[tokio::test]
    async fn wrong_password_unknown_and_locked_users_are_all_denied() {
        let (_dir, accounts) = with_alice().await;
        accounts.set_locked("alice", true).await.unwrap();
        for (user, pw) in [
            ("alice", "alice-password"),
            ("alice", "wrong-password"),
            ("nobody-here", "alice-password"),
            ("Bad Name!", "alice-password"),
        ] {
            let err = accounts
                .verify(user, password(pw), SOURCE)
                .await
                .unwrap_err();
            assert_eq!(err.code, ErrorCode::Denied, "{user}");
        }
    }

    #[tokio::test]
    async fn failures_beyond_the_free_ones_are_throttled() {
        let (_dir, accounts) = with_alice().await;
        let mut codes = Vec::new();
        for _ in 0..8 {
            let err = accounts
                .verify("alice", password("wrong-password"), SOURCE)
                .await
                .unwrap_err();
            codes.push(err.code);
        }
        assert_eq!(codes.first(), Some(&ErrorCode::Denied));
        assert_eq!(codes.last(), Some(&ErrorCode::Throttled));
    }

    #[tokio::test]
    async fn change_password_needs_the_old_one_and_replaces_it() {
        let (_dir, accounts) = with_alice().await;
        let err = accounts
            .change_password(
                "alice",
                password("wrong-password"),
                password("new-password"),
                SOURCE,
            )
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Denied);
        accounts
            .change_password(
                "alice",
                password("alice-password"),
                password("new-password"),
                SOURCE,
            )
            .await
            .unwrap();
        assert!(!verifies(&accounts, "alice", "alice-password").await);
        assert!(verifies(&accounts, "alice", "new-password").await);
    }

    #[tokio::test]
    async fn a_hash_with_old_parameters_is_upgraded_at_login() {
        let (_dir, accounts) = with_alice().await;
        let before = accounts.store.get("alice").unwrap().unwrap().hash;
        accounts
            .hasher
            .set_params(&cheap_hashing(128))
            .await
            .unwrap();
        assert!(verifies(&accounts, "alice", "alice-password").await);
        let after = accounts.store.get("alice").unwrap().unwrap().hash;
        assert_ne!(before, after);
        assert!(after.contains("m=128"), "{after}");
    }
}
