//! Deleting an account: at once when no hook is installed; otherwise locked and marked
//! deleting until qam-hooks has run every hook (each step durable), then erased.

use super::{not_found, rule_failed, store_failed, Accounts};
use crate::store::{unix_now, Deletion};
use qam_client::wire::{
    AccountEvent, DeleteInfo, DeletionInfo, Done, EventKind, EventPage, MAX_EVENT_WAIT_SECONDS,
};
use qam_client::{ErrorCode, WireError};
use std::path::Path;
use std::time::Duration;

/// The hook directories whose entries make a deletion wait for qam-hooks.
const DELETION_HOOK_DIRS: [&str; 2] = ["lock.d", "delete.d"];

/// Longest hook name `deletion_step` accepts.
const MAX_HOOK_NAME: usize = 200;

/// Characters of a failed hook's output kept for admins.
const MAX_DETAIL_CHARS: usize = 500;

const DAY_SECONDS: u64 = 24 * 60 * 60;

/// Where a deletion stands, as admins see it.
pub(super) fn deletion_info(deletion: &Deletion) -> DeletionInfo {
    DeletionInfo {
        done: deletion.done.clone(),
        failed: deletion.failed.clone(),
        running: deletion.running,
    }
}

/// A name run-parts would run (and qam-hooks does): letters, digits, `_` and `-`.
fn is_hook_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
}

/// Whether `dir`'s `lock.d` or `delete.d` holds a hook. A directory that cannot be read
/// (other than missing) counts as holding one: a deletion then waits instead of skipping
/// hooks.
fn hooks_installed(dir: &Path) -> bool {
    DELETION_HOOK_DIRS.iter().any(|sub| {
        let path = dir.join(sub);
        match std::fs::read_dir(&path) {
            Ok(entries) => entries.flatten().any(|entry| {
                entry.file_name().to_str().is_some_and(is_hook_name)
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => false,
            Err(err) => {
                tracing::warn!(dir = %path.display(), error = %err, "cannot read the hook directory; deletions wait for qam-hooks");
                true
            }
        }
    })
}

/// The end of a hook's output, at most `MAX_DETAIL_CHARS`, without control characters but
/// line breaks.
fn detail_kept(detail: Option<String>) -> String {
    let text = detail.unwrap_or_default();
    let chars: Vec<char> = text.chars().collect();
    let start = chars.len().saturating_sub(MAX_DETAIL_CHARS);
    chars[start..]
        .iter()
        .map(|&c| if c.is_control() && c != '\n' { ' ' } else { c })
        .collect()
}

fn not_being_deleted(name: &str) -> WireError {
    WireError::new(
        ErrorCode::NotFound,
        format!("no account named `{name}` is being deleted"),
    )
}

impl Accounts {
    /// Deletes an account: erased now without hooks; with hooks, locked, marked deleting (its
    /// failures of an earlier round cleared) and announced to qam-hooks. Its reset link goes
    /// at once.
    pub async fn delete(&self, user: &str) -> Result<DeleteInfo, WireError> {
        let settings = self.settings();
        let name = settings.rules.username(user).map_err(rule_failed)?;
        let dir = settings.hooks_dir.clone();
        let installed = tokio::task::spawn_blocking(move || hooks_installed(&dir))
            .await
            .unwrap_or(true);
        if !installed {
            return self.erase(&name).await;
        }
        self.store
            .drop_reset_of(&name)
            .await
            .map_err(store_failed)?;
        let record = self
            .store
            .update(&name, |record| {
                let deletion = record.deletion.get_or_insert_with(Deletion::default);
                deletion.failed.clear();
                deletion.running = true;
                record.locked = true;
            })
            .await
            .map_err(store_failed)?
            .ok_or_else(|| not_found(&name))?;
        let done = record.deletion.map(|deletion| deletion.done);
        self.events
            .publish(EventKind::Delete, &name, done.unwrap_or_default());
        tracing::info!(user = %name, "account deletion started: waiting for its hooks");
        Ok(DeleteInfo { erased: false })
    }

    /// Erases the record (its key slot zeroed, durable) and keeps the name in quarantine.
    async fn erase(&self, name: &str) -> Result<DeleteInfo, WireError> {
        self.store.drop_reset_of(name).await.map_err(store_failed)?;
        let Some(record) = self.store.get(name).map_err(store_failed)? else {
            return Err(not_found(name));
        };
        let days = u64::from(self.settings().name_quarantine_days);
        if days > 0 {
            let today = unix_now() / DAY_SECONDS * DAY_SECONDS;
            self.store
                .quarantine(name, today + days * DAY_SECONDS)
                .await
                .map_err(store_failed)?;
        }
        if !self.store.remove(name).await.map_err(store_failed)? {
            return Err(not_found(name));
        }
        if let Some(uid) = record.uid {
            self.uids.forget(uid);
        }
        self.throttle.forget(name);
        tracing::info!(user = %name, "account deleted");
        Ok(DeleteInfo { erased: true })
    }

    /// qam-hooks reports one hook of a deletion: done (not run again), or failed and why.
    pub async fn deletion_step(
        &self,
        user: &str,
        hook: &str,
        ok: bool,
        detail: Option<String>,
    ) -> Result<Done, WireError> {
        let well_formed = hook.len() <= MAX_HOOK_NAME
            && hook.split_once('/').is_some_and(|(dir, file)| {
                dir.strip_suffix(".d").is_some_and(is_hook_name) && is_hook_name(file)
            });
        if !well_formed {
            return Err(WireError::new(
                ErrorCode::BadRequest,
                "`hook` must be `<event>.d/<file>` with a run-parts file name",
            ));
        }
        let name = self.settings().rules.username(user).map_err(rule_failed)?;
        let detail = detail_kept(detail);
        let updated = self
            .store
            .update(&name, |record| {
                if let Some(deletion) = &mut record.deletion {
                    if ok {
                        deletion.failed.remove(hook);
                        if !deletion.done.iter().any(|done| done == hook) {
                            deletion.done.push(hook.to_owned());
                        }
                    } else {
                        deletion.failed.insert(hook.to_owned(), detail.clone());
                    }
                }
            })
            .await
            .map_err(store_failed)?;
        if updated.is_none_or(|record| record.deletion.is_none()) {
            return Err(not_being_deleted(&name));
        }
        if ok {
            tracing::info!(user = %name, hook, "deletion hook done");
        } else {
            tracing::warn!(user = %name, hook, "deletion hook failed");
        }
        Ok(Done {})
    }

    /// qam-hooks ended a round of hooks: the account is erased if none failed, else it stays
    /// locked and deleting until an admin retries.
    pub async fn deletion_finish(&self, user: &str) -> Result<DeleteInfo, WireError> {
        let name = self.settings().rules.username(user).map_err(rule_failed)?;
        let deletion = self
            .store
            .get(&name)
            .map_err(store_failed)?
            .and_then(|record| record.deletion)
            .ok_or_else(|| not_being_deleted(&name))?;
        if deletion.failed.is_empty() {
            return self.erase(&name).await;
        }
        self.store
            .update(&name, |record| {
                if let Some(deletion) = &mut record.deletion {
                    deletion.running = false;
                }
            })
            .await
            .map_err(store_failed)?;
        let failed: Vec<&String> = deletion.failed.keys().collect();
        tracing::warn!(user = %name, ?failed, "account deletion pending: hooks failed");
        Ok(DeleteInfo { erased: false })
    }

    /// The events after `since` of this epoch, waiting up to `wait_seconds` for one; for
    /// another epoch (or none), every pending deletion.
    pub async fn events(
        &self,
        epoch: Option<String>,
        since: Option<u64>,
        wait_seconds: Option<u64>,
    ) -> Result<EventPage, WireError> {
        let wait = wait_seconds.unwrap_or(0);
        if wait > MAX_EVENT_WAIT_SECONDS {
            return Err(WireError::new(
                ErrorCode::BadRequest,
                format!("`wait_seconds` is at most {MAX_EVENT_WAIT_SECONDS}"),
            ));
        }
        let this_epoch = self.events.epoch().to_owned();
        let (events, next) = match since.filter(|_| epoch.as_deref() == Some(&this_epoch)) {
            Some(since) => self.events.after(since, Duration::from_secs(wait)).await,
            None => {
                let next = self.events.next();
                (self.pending_deletions().await?, next)
            }
        };
        Ok(EventPage {
            epoch: this_epoch,
            next,
            events,
        })
    }

    /// A `delete` event for every account being deleted, with the hooks it has done.
    async fn pending_deletions(&self) -> Result<Vec<AccountEvent>, WireError> {
        let store = self.store.clone();
        let names = tokio::task::spawn_blocking(move || store.deleting())
            .await
            .map_err(|_| WireError::new(ErrorCode::Internal, "listing deletions failed"))?
            .map_err(store_failed)?;
        let mut events = Vec::with_capacity(names.len());
        for name in names {
            let record = self.store.get(&name).map_err(store_failed)?;
            if let Some(deletion) = record.and_then(|record| record.deletion) {
                events.push(AccountEvent {
                    event: EventKind::Delete,
                    user: name,
                    done: deletion.done,
                });
            }
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{accounts, password, verifies, with_alice};
    use super::*;
    use crate::config::Config;

    /// Accounts whose hook directory holds one delete hook, with `alice` registered.
    async fn with_a_hook() -> (tempfile::TempDir, tempfile::TempDir, Accounts) {
        let hooks = tempfile::tempdir().unwrap();
        std::fs::create_dir(hooks.path().join("delete.d")).unwrap();
        std::fs::write(hooks.path().join("delete.d/50-service"), "").unwrap();
        let mut config = Config::default();
        config.hooks.dir = hooks.path().to_owned();
        let (dir, accounts) = accounts(config);
        accounts
            .register("alice", password("alice-password"), true, false, false)
            .await
            .unwrap();
        (dir, hooks, accounts)
    }

    #[tokio::test]
    async fn without_hooks_a_deletion_erases_at_once_and_quarantines_the_name() {
        let (_dir, accounts) = with_alice().await;
        assert!(accounts.delete("alice").await.unwrap().erased);
        assert!(!accounts.exists("alice").unwrap().exists);
        let again = accounts
            .register("alice", password("alice-password"), true, false, false)
            .await;
        assert_eq!(again.unwrap_err().code, ErrorCode::NameQuarantined);
        let stranger = accounts
            .register("alice", password("alice-password"), false, false, true)
            .await;
        assert_eq!(stranger.unwrap_err().code, ErrorCode::Forbidden);
        accounts
            .register("alice", password("alice-password"), true, false, true)
            .await
            .unwrap();
        // Reused once, the name is an ordinary account's again.
        assert!(accounts.delete("alice").await.unwrap().erased);
        assert_eq!(
            accounts.delete("alice").await.unwrap_err().code,
            ErrorCode::NotFound
        );
    }

    #[tokio::test]
    async fn a_zero_day_quarantine_frees_the_name_at_once() {
        let mut config = Config::default();
        config.accounts.name_quarantine_days = 0;
        let (_dir, accounts) = accounts(config);
        let register = || accounts.register("bob", password("bob-password"), true, false, false);
        register().await.unwrap();
        accounts.delete("bob").await.unwrap();
        register().await.unwrap();
    }

    #[tokio::test]
    async fn with_hooks_a_deletion_locks_waits_for_every_step_and_is_retried() {
        let (_dir, _hooks, accounts) = with_a_hook().await;
        let first = accounts.events(None, None, None).await.unwrap();
        assert!(first.events.is_empty());
        assert!(!accounts.delete("alice").await.unwrap().erased);
        assert!(!verifies(&accounts, "alice", "alice-password").await);
        let refused = accounts.set_locked("alice", false).await.unwrap_err();
        assert_eq!(refused.code, ErrorCode::DeletionPending);
        let refused = accounts
            .set_password("alice", password("new-password"))
            .await
            .unwrap_err();
        assert_eq!(refused.code, ErrorCode::DeletionPending);
        let page = accounts
            .events(Some(first.epoch.clone()), Some(first.next), Some(1))
            .await
            .unwrap();
        assert_eq!(page.events.len(), 1);
        assert_eq!(page.events[0].event, EventKind::Delete);
        accounts
            .deletion_step("alice", "delete.d/40-one", true, None)
            .await
            .unwrap();
        accounts
            .deletion_step(
                "alice",
                "delete.d/50-service",
                false,
                Some("exit status 1".into()),
            )
            .await
            .unwrap();
        assert!(!accounts.deletion_finish("alice").await.unwrap().erased);
        let seen = accounts.lookup("alice", true).unwrap().account.unwrap();
        assert!(seen.locked && seen.deleting);
        let deletion = seen.deletion.unwrap();
        assert_eq!(deletion.done, ["delete.d/40-one"]);
        assert_eq!(deletion.failed["delete.d/50-service"], "exit status 1");
        assert!(!deletion.running);
        // What a service's adapter sees: deleting, not the details.
        let public = accounts.lookup("alice", false).unwrap().account.unwrap();
        assert!(public.deleting && public.deletion.is_none());
        // A restarted qam-hooks (another epoch) learns of the pending deletion.
        let restarted = accounts.events(None, None, None).await.unwrap();
        assert_eq!(restarted.events[0].done, ["delete.d/40-one"]);
        // The admin's retry announces only what is left.
        assert!(!accounts.delete("alice").await.unwrap().erased);
        let retry = accounts
            .events(Some(page.epoch), Some(page.next), Some(1))
            .await
            .unwrap();
        assert_eq!(retry.events[0].done, ["delete.d/40-one"]);
        accounts
            .deletion_step("alice", "delete.d/50-service", true, None)
            .await
            .unwrap();
        assert!(accounts.deletion_finish("alice").await.unwrap().erased);
        assert_eq!(accounts.lookup("alice", true).unwrap().account, None);
        let after = accounts.deletion_finish("alice").await.unwrap_err();
        assert_eq!(after.code, ErrorCode::NotFound);
    }

    #[tokio::test]
    async fn steps_need_an_account_being_deleted_and_a_hook_name() {
        let (_dir, _hooks, accounts) = with_a_hook().await;
        let step = |hook: &'static str| accounts.deletion_step("alice", hook, true, None);
        assert_eq!(
            step("delete.d/50-service").await.unwrap_err().code,
            ErrorCode::NotFound
        );
        accounts.delete("alice").await.unwrap();
        for bad in ["", "50-service", "delete.d/../x", "delete.d/a b", "x/y"] {
            assert_eq!(
                step(bad).await.unwrap_err().code,
                ErrorCode::BadRequest,
                "{bad}"
            );
        }
        step("delete.d/50-service").await.unwrap();
        let long_output = "x".repeat(10_000) + "\u{1b}[31mthe end";
        accounts
            .deletion_step("alice", "lock.d/50-service", false, Some(long_output))
            .await
            .unwrap();
        let seen = accounts.lookup("alice", true).unwrap().account.unwrap();
        let detail = &seen.deletion.unwrap().failed["lock.d/50-service"];
        assert_eq!(detail.chars().count(), MAX_DETAIL_CHARS);
        assert!(detail.ends_with(" [31mthe end"), "{detail}");
    }

    #[test]
    fn only_run_parts_names_count_as_hooks() {
        let hooks = tempfile::tempdir().unwrap();
        assert!(!hooks_installed(hooks.path()));
        std::fs::create_dir(hooks.path().join("lock.d")).unwrap();
        std::fs::write(hooks.path().join("lock.d/README.txt"), "").unwrap();
        std::fs::write(hooks.path().join("lock.d/50-x.dpkg-old"), "").unwrap();
        assert!(!hooks_installed(hooks.path()));
        std::fs::write(hooks.path().join("lock.d/50-x"), "").unwrap();
        assert!(hooks_installed(hooks.path()));
    }
}
