//! An account's life: `register` creates it, an admin sets its password, locks or unlocks it
//! (`deletion.rs` deletes it). Every change is durable before it is answered.

use super::{deletion_pending, hash_failed, not_found, rule_failed, store_failed, Accounts};
use crate::rules::RuleError;
use crate::store::{unix_now, Record};
use crate::system_names::known_to_system;
use qam_client::wire::{Done, EventKind, NameInfo};
use qam_client::{ErrorCode, Password, WireError};

/// The answer for a name that is already an account's.
pub(super) fn taken(name: &str) -> WireError {
    WireError::new(ErrorCode::Exists, format!("`{name}` is taken"))
}

impl Accounts {
    /// Creates an account. `admin` bypasses `registration_open`; `force` (admins only) lets a
    /// name the system's user or group database knows be taken, `reuse_name` (admins only) a
    /// deleted account's name still in quarantine.
    pub async fn register(
        &self,
        user: &str,
        password: Password,
        admin: bool,
        force: bool,
        reuse_name: bool,
    ) -> Result<NameInfo, WireError> {
        let settings = self.settings();
        if (force || reuse_name) && !admin {
            let flag = if force { "force" } else { "reuse_name" };
            return Err(WireError::new(
                ErrorCode::Forbidden,
                format!("only an admin may register with `{flag}`"),
            ));
        }
        if !admin && !settings.registration_open {
            return Err(WireError::new(
                ErrorCode::RegistrationClosed,
                "registration is closed on this host",
            ));
        }
        let (name, record) = self.new_account(user, password, force, reuse_name).await?;
        if !self
            .store
            .insert_new(&name, &record)
            .await
            .map_err(store_failed)?
        {
            return Err(taken(&name));
        }
        if let Some(uid) = record.uid {
            self.uids.note(uid, &name);
        }
        if reuse_name {
            self.store.release_name(&name).await.map_err(store_failed)?;
        }
        tracing::info!(user = %name, uid = record.uid, "account created");
        Ok(NameInfo { name })
    }

    /// The name and record of a new account: the name and password pass the rules, the name
    /// is not the system's (unless an admin `force`s it), not a recently deleted account's
    /// (unless an admin reuses it) and is free (for now: the write that creates it checks
    /// again), the password is hashed.
    pub(super) async fn new_account(
        &self,
        user: &str,
        password: Password,
        force: bool,
        reuse_name: bool,
    ) -> Result<(String, Record), WireError> {
        let settings = self.settings();
        let name = settings.rules.new_username(user).map_err(rule_failed)?;
        settings
            .rules
            .new_password(&password, &name)
            .map_err(rule_failed)?;
        // With NSS served, a name the system knows would shadow the account: no forcing it.
        if (!force || self.refuse_system_names) && self.system_knows(&name, user).await {
            return Err(rule_failed(RuleError::SystemName(name)));
        }
        if self.store.contains(&name).map_err(store_failed)? {
            return Err(taken(&name));
        }
        if !reuse_name
            && self
                .store
                .quarantined(&name, unix_now())
                .map_err(store_failed)?
        {
            return Err(WireError::new(
                ErrorCode::NameQuarantined,
                format!(
                    "`{name}` belonged to a deleted account and cannot be taken for {} days after its deletion",
                    settings.name_quarantine_days
                ),
            ));
        }
        let hash = self.hasher.hash(password).await.map_err(hash_failed)?;
        let uid = self.allocate_uids(1).await?.first().copied();
        Ok((
            name,
            Record {
                uid,
                ..Record::new(hash)
            },
        ))
    }

    /// The user or group database knows the new name, or the name as typed (NSS may block:
    /// asked off the async threads).
    async fn system_knows(&self, name: &str, typed: &str) -> bool {
        let names = [name.to_owned(), typed.to_owned()];
        tokio::task::spawn_blocking(move || names.iter().any(|name| known_to_system(name)))
            .await
            .unwrap_or(true)
    }

    /// An admin sets a password without knowing the old one: written over whatever the record
    /// holds when the new hash is ready (`update` compares and swaps until it lands), so a
    /// change in flight can never restore the password it replaced.
    pub async fn set_password(&self, user: &str, password: Password) -> Result<Done, WireError> {
        let settings = self.settings();
        let name = settings.rules.username(user).map_err(rule_failed)?;
        settings
            .rules
            .new_password(&password, &name)
            .map_err(rule_failed)?;
        self.not_deleting(&name)?;
        let hash = self.hasher.hash(password).await.map_err(hash_failed)?;
        self.store
            .update(&name, |record| record.set_hash(hash.clone()))
            .await
            .map_err(store_failed)?
            .ok_or_else(|| not_found(&name))?;
        self.throttle.forget(&name);
        self.forget_reset(&name).await;
        self.events.publish(EventKind::Password, &name, Vec::new());
        tracing::info!(user = %name, "password set by admin");
        Ok(Done {})
    }

    /// Locks or unlocks an account (an account being deleted stays locked).
    pub async fn set_locked(&self, user: &str, locked: bool) -> Result<Done, WireError> {
        let name = self.settings().rules.username(user).map_err(rule_failed)?;
        if !locked {
            self.not_deleting(&name)?;
        }
        let changed = self
            .store
            .update(&name, |record| {
                record.locked = locked || record.deletion.is_some();
            })
            .await
            .map_err(store_failed)?
            .ok_or_else(|| not_found(&name))?;
        if changed.locked != locked {
            return Err(deletion_pending(&name));
        }
        let event = if locked {
            EventKind::Lock
        } else {
            EventKind::Unlock
        };
        self.events.publish(event, &name, Vec::new());
        tracing::info!(user = %name, locked, "account lock changed");
        Ok(Done {})
    }

    /// `not_found` for no account, `deletion_pending` for one being deleted.
    pub(super) fn not_deleting(&self, name: &str) -> Result<(), WireError> {
        match self.store.facts(name).map_err(store_failed)? {
            None => Err(not_found(name)),
            Some(facts) if facts.deleting => Err(deletion_pending(name)),
            Some(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{accounts, password, verifies, with_alice};
    use crate::config::Config;
    use qam_client::ErrorCode;

    #[tokio::test]
    async fn register_refuses_taken_bad_and_reserved_names_and_short_passwords() {
        let (_dir, accounts) = with_alice().await;
        let long = || password("long-enough-password");
        let code = |result: Result<_, qam_client::WireError>| result.unwrap_err().code;
        assert_eq!(
            code(accounts.register("ALICE", long(), true, false, false).await),
            ErrorCode::Exists
        );
        assert_eq!(
            code(
                accounts
                    .register("Bad Name!", long(), true, false, false)
                    .await
            ),
            ErrorCode::InvalidUsername
        );
        assert_eq!(
            code(accounts.register("root", long(), true, false, false).await),
            ErrorCode::InvalidUsername
        );
        assert_eq!(
            code(
                accounts
                    .register("bob", password("short"), true, false, false)
                    .await
            ),
            ErrorCode::InvalidPassword
        );
        assert_eq!(
            accounts
                .register("Bob", long(), true, false, false)
                .await
                .unwrap()
                .name,
            "bob"
        );
    }

    #[tokio::test]
    async fn a_name_the_system_knows_needs_an_admin_and_force() {
        let (_dir, accounts) = accounts(Config::default());
        let long = || password("long-enough-password");
        // `disk` is a group of every Debian system (base-passwd) and not reserved.
        let refused = accounts.register("disk", long(), true, false, false).await;
        assert_eq!(refused.unwrap_err().code, ErrorCode::InvalidUsername);
        let stranger = accounts.register("disk", long(), false, true, false).await;
        assert_eq!(stranger.unwrap_err().code, ErrorCode::Forbidden);
        let forced = accounts.register("disk", long(), true, true, false).await;
        assert_eq!(forced.unwrap().name, "disk");
    }

    #[tokio::test]
    async fn closed_registration_stops_everyone_but_admins() {
        let (_dir, accounts) = accounts(Config::default());
        assert!(!accounts.settings().registration_open);
        let err = accounts
            .register("bob", password("long-enough-password"), false, false, false)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::RegistrationClosed);
        accounts
            .register("bob", password("long-enough-password"), true, false, false)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn set_password_lock_and_delete_change_what_verifies() {
        let (_dir, accounts) = with_alice().await;
        accounts
            .set_password("alice", password("admin-chosen"))
            .await
            .unwrap();
        assert!(verifies(&accounts, "alice", "admin-chosen").await);
        accounts.set_locked("alice", true).await.unwrap();
        assert!(
            accounts
                .lookup("alice", true)
                .unwrap()
                .account
                .unwrap()
                .locked
        );
        assert!(!verifies(&accounts, "alice", "admin-chosen").await);
        accounts.set_locked("alice", false).await.unwrap();
        assert!(verifies(&accounts, "alice", "admin-chosen").await);
        accounts.delete("alice").await.unwrap();
        assert!(!accounts.exists("alice").unwrap().exists);
        for err in [
            accounts.delete("alice").await.unwrap_err(),
            accounts.set_locked("alice", true).await.unwrap_err(),
            accounts
                .set_password("alice", password("admin-chosen"))
                .await
                .unwrap_err(),
        ] {
            assert_eq!(err.code, ErrorCode::NotFound);
        }
    }
}
