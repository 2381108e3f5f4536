//! The event loop: asks qamd for account events and runs each one's hooks; for a deletion,
//! reports every hook's outcome and then finishes the round, which lets qamd erase the account.

use crate::parts::{self, Hook};
use crate::qamd::Qamd;
use crate::run::{self, Limits, Outcome};
use qam_client::wire::{AccountEvent, EventKind};
use qam_client::{ClientError, ErrorCode};
use std::convert::Infallible;
use std::path::PathBuf;

/// Why qam-hooks stops (systemd starts it again; a restart replays the pending deletions).
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// qamd refused a request for another reason than the account being gone.
    #[error("qamd refused {what}: {source}")]
    Qamd {
        /// The request, for the message.
        what: &'static str,
        /// qamd's answer.
        source: ClientError,
    },
}

/// Runs the hooks of `<dir>/<event>.d` for each event.
pub struct Runner {
    /// The directory holding `delete.d`, `lock.d`, `unlock.d` and `password.d`.
    pub dir: PathBuf,
    /// Timeout, kill grace and output bound of each hook run.
    pub limits: Limits,
}

/// Whether qamd answered that the account is not (or no longer) being deleted.
fn gone(err: &ClientError) -> bool {
    err.code() == Some(ErrorCode::NotFound)
}

fn log_outcome(hook: &Hook, user: &str, outcome: &Outcome) {
    let output = outcome.output.text();
    if outcome.ok {
        tracing::info!(hook = %hook.id, user, "hook ok");
        if !output.is_empty() {
            tracing::debug!(hook = %hook.id, user, "hook output:\n{output}");
        }
    } else {
        tracing::warn!(
            hook = %hook.id,
            user,
            "hook failed: {}; output{}:\n{output}",
            outcome.status,
            if outcome.output.dropped > 0 {
                format!(" (first {} bytes not kept)", outcome.output.dropped)
            } else {
                String::new()
            }
        );
    }
}

impl Runner {
    /// The hooks of one directory; a directory that cannot be read counts as an error.
    fn hooks(&self, subdir: &str) -> std::io::Result<Vec<Hook>> {
        parts::list(&self.dir, subdir)
    }

    /// Handles one event.
    pub fn handle(&self, qamd: &mut impl Qamd, event: &AccountEvent) -> Result<(), LoopError> {
        match event.event {
            EventKind::Delete => self.delete(qamd, &event.user, &event.done),
            kind => {
                self.notify(kind, &event.user);
                Ok(())
            }
        }
    }

    /// `lock`, `unlock`, `password`: runs `<event>.d/*`, logs, reports nothing.
    fn notify(&self, kind: EventKind, user: &str) {
        let name = kind.as_str();
        let hooks = match self.hooks(&format!("{name}.d")) {
            Ok(hooks) => hooks,
            Err(err) => {
                tracing::error!(
                    user,
                    "cannot list {name}.d in {}: {err}",
                    self.dir.display()
                );
                return;
            }
        };
        for hook in hooks {
            let outcome = run::run(&hook, name, user, self.limits);
            log_outcome(&hook, user, &outcome);
        }
    }

    /// `delete`: runs `lock.d/*` then `delete.d/*` except the hooks done, reports each, then
    /// finishes the round. qamd is asked first where the deletion stands: an event can be older
    /// than the state (the first page lists the pending deletions, and a deletion started just
    /// then also comes as an event), and a round that ended with failures waits for an admin's
    /// retry, which sets it running again and sends its own event.
    fn delete(&self, qamd: &mut impl Qamd, user: &str, done: &[String]) -> Result<(), LoopError> {
        let deletion = match qamd.deletion(user) {
            Ok(Some(deletion)) => deletion,
            Ok(None) => {
                tracing::info!(user, "not being deleted (any more): nothing to do");
                return Ok(());
            }
            Err(source) => {
                return Err(LoopError::Qamd {
                    what: "lookup",
                    source,
                })
            }
        };
        if !deletion.running {
            tracing::info!(
                user,
                "its last round ended with failures: waiting for an admin's retry"
            );
            return Ok(());
        }
        let done: Vec<&String> = done.iter().chain(&deletion.done).collect();
        let mut hooks = Vec::new();
        for subdir in ["lock.d", "delete.d"] {
            match self.hooks(subdir) {
                Ok(found) => hooks.extend(found),
                Err(err) => {
                    // Finishing now would erase the account without its hooks; the deletion
                    // waits for the next start of qam-hooks (or an admin's retry).
                    tracing::error!(
                        user,
                        "cannot list {subdir} in {}: {err}; the deletion waits",
                        self.dir.display()
                    );
                    return Ok(());
                }
            }
        }
        tracing::info!(user, hooks = hooks.len(), done = done.len(), "deleting");
        for hook in hooks {
            if done.contains(&&hook.id) {
                tracing::debug!(hook = %hook.id, user, "done in an earlier round: skipped");
                continue;
            }
            let outcome = run::run(&hook, "delete", user, self.limits);
            log_outcome(&hook, user, &outcome);
            let detail = (!outcome.ok).then(|| outcome.detail());
            match qamd.step(user, &hook.id, outcome.ok, detail) {
                Ok(()) => {}
                Err(err) if gone(&err) => {
                    tracing::warn!(user, "no longer being deleted: the round stops");
                    return Ok(());
                }
                Err(source) => {
                    return Err(LoopError::Qamd {
                        what: "deletion_step",
                        source,
                    })
                }
            }
        }
        match qamd.finish(user) {
            Ok(true) => tracing::info!(user, "erased"),
            Ok(false) => tracing::warn!(
                user,
                "still pending: a hook failed; `qamctl user del {user}` retries the rest"
            ),
            Err(err) if gone(&err) => tracing::info!(user, "already erased"),
            Err(source) => {
                return Err(LoopError::Qamd {
                    what: "deletion_finish",
                    source,
                })
            }
        }
        Ok(())
    }

    /// Serves events until qamd refuses a request.
    pub fn serve(&self, qamd: &mut impl Qamd) -> Result<Infallible, LoopError> {
        let mut position: Option<(String, u64)> = None;
        loop {
            let page = qamd
                .events(
                    position.as_ref().map(|(epoch, _)| epoch.as_str()),
                    position.as_ref().map(|(_, next)| *next),
                )
                .map_err(|source| LoopError::Qamd {
                    what: "events",
                    source,
                })?;
            if position
                .as_ref()
                .is_some_and(|(epoch, _)| *epoch != page.epoch)
            {
                tracing::info!("qamd restarted: resuming its pending deletions");
            }
            for event in &page.events {
                self.handle(qamd, event)?;
            }
            tracing::debug!(epoch = %page.epoch, next = page.next, "waiting for events");
            position = Some((page.epoch, page.next));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::write_hook;
    use qam_client::wire::{DeletionInfo, EventPage, WireError};
    use std::collections::BTreeMap;
    use std::fs;
    use std::path::Path;
    use std::time::Duration;

    /// Records what qam-hooks reports; answers `not_found` for users in `gone`.
    #[derive(Default)]
    struct Recorder {
        steps: Vec<(String, String, bool, Option<String>)>,
        finished: Vec<String>,
        gone: Vec<String>,
        /// What `lookup` tells of a deletion; absent users are deleting, nothing done yet.
        states: BTreeMap<String, Option<DeletionInfo>>,
        pages: Vec<EventPage>,
        asked: Vec<(Option<String>, Option<u64>)>,
    }

    fn not_found() -> ClientError {
        ClientError::Server(WireError {
            code: ErrorCode::NotFound,
            message: "no such account being deleted".into(),
        })
    }

    impl Qamd for Recorder {
        fn events(
            &mut self,
            epoch: Option<&str>,
            since: Option<u64>,
        ) -> Result<EventPage, ClientError> {
            self.asked.push((epoch.map(str::to_owned), since));
            if self.pages.is_empty() {
                return Err(ClientError::Server(WireError {
                    code: ErrorCode::Forbidden,
                    message: "end of the test".into(),
                }));
            }
            Ok(self.pages.remove(0))
        }
        fn deletion(&mut self, user: &str) -> Result<Option<DeletionInfo>, ClientError> {
            Ok(self.states.get(user).cloned().unwrap_or(Some(DeletionInfo {
                done: Vec::new(),
                failed: BTreeMap::new(),
                running: true,
            })))
        }
        fn step(
            &mut self,
            user: &str,
            hook: &str,
            ok: bool,
            detail: Option<String>,
        ) -> Result<(), ClientError> {
            if self.gone.iter().any(|gone| gone == user) {
                return Err(not_found());
            }
            self.steps.push((user.into(), hook.into(), ok, detail));
            Ok(())
        }
        fn finish(&mut self, user: &str) -> Result<bool, ClientError> {
            self.finished.push(user.into());
            Ok(self.steps.iter().all(|(who, _, ok, _)| who != user || *ok))
        }
    }

    fn runner(dir: &Path) -> Runner {
        Runner {
            dir: dir.to_path_buf(),
            limits: Limits {
                timeout: Duration::from_millis(500),
                grace: Duration::from_millis(200),
                capture: run::CAPTURE_LIMIT,
            },
        }
    }

    fn delete(user: &str, done: &[&str]) -> AccountEvent {
        AccountEvent {
            event: EventKind::Delete,
            user: user.into(),
            done: done.iter().map(|hook| hook.to_string()).collect(),
        }
    }

    /// Hooks that append `<their id> <argv> <QAM_EVENT>` to `ran`.
    fn install(dir: &Path, ids: &[&str]) -> std::path::PathBuf {
        let ran = dir.join("ran");
        for id in ids {
            let (subdir, _) = id.split_once('/').expect("id");
            fs::create_dir_all(dir.join(subdir)).expect("mkdir");
            write_hook(
                &dir.join(id),
                &format!("echo \"{id} $1 $2 $QAM_EVENT\" >> {}", ran.display()),
            );
        }
        ran
    }

    #[test]
    fn delete_runs_lock_then_delete_hooks_skipping_done_ones_then_finishes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ran = install(
            dir.path(),
            &[
                "delete.d/60-dovecot",
                "delete.d/50-prosody",
                "lock.d/50-prosody",
                "lock.d/52-dovecot",
                "password.d/50-prosody",
            ],
        );
        let mut qamd = Recorder::default();
        runner(dir.path())
            .handle(
                &mut qamd,
                &delete("alice", &["lock.d/52-dovecot", "delete.d/50-prosody"]),
            )
            .expect("handle");
        assert_eq!(
            fs::read_to_string(&ran).expect("ran"),
            "lock.d/50-prosody delete alice delete\ndelete.d/60-dovecot delete alice delete\n"
        );
        let hooks: Vec<(&str, bool)> = qamd
            .steps
            .iter()
            .map(|(_, hook, ok, _)| (hook.as_str(), *ok))
            .collect();
        assert_eq!(
            hooks,
            [("lock.d/50-prosody", true), ("delete.d/60-dovecot", true)]
        );
        assert_eq!(qamd.finished, ["alice"]);
    }

    #[test]
    fn a_failing_or_hanging_hook_is_reported_and_the_round_goes_on() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ran = install(dir.path(), &["delete.d/70-last"]);
        fs::create_dir_all(dir.path().join("lock.d")).expect("mkdir");
        write_hook(
            &dir.path().join("lock.d/10-hang"),
            "echo 'kicking' >&2\nexec sleep 1000",
        );
        write_hook(
            &dir.path().join("delete.d/20-fail"),
            "echo 'home not removed' >&2\nexit 4",
        );
        let mut qamd = Recorder::default();
        runner(dir.path())
            .handle(&mut qamd, &delete("bob", &[]))
            .expect("handle");
        assert_eq!(
            qamd.steps,
            [
                (
                    "bob".into(),
                    "lock.d/10-hang".into(),
                    false,
                    Some("timed out after 0.5 s: kicking".into())
                ),
                (
                    "bob".into(),
                    "delete.d/20-fail".into(),
                    false,
                    Some("exit 4: home not removed".into())
                ),
                ("bob".into(), "delete.d/70-last".into(), true, None),
            ]
        );
        assert!(fs::read_to_string(&ran).is_ok());
        assert_eq!(qamd.finished, ["bob"]);
    }

    #[test]
    fn no_hooks_finish_at_once_and_a_vanished_deletion_stops_the_round() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut qamd = Recorder::default();
        runner(dir.path())
            .handle(&mut qamd, &delete("carol", &[]))
            .expect("handle");
        assert!(qamd.steps.is_empty());
        assert_eq!(qamd.finished, ["carol"]);

        let ran = install(dir.path(), &["delete.d/10-a", "delete.d/20-b"]);
        let mut qamd = Recorder {
            gone: vec!["dave".into()],
            ..Recorder::default()
        };
        runner(dir.path())
            .handle(&mut qamd, &delete("dave", &[]))
            .expect("handle");
        assert_eq!(
            fs::read_to_string(&ran).expect("ran"),
            "delete.d/10-a delete dave delete\n"
        );
        assert!(qamd.finished.is_empty());
    }

    #[test]
    fn a_stale_event_runs_nothing_and_hooks_qamd_has_as_done_are_skipped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ran = install(dir.path(), &["delete.d/10-a", "delete.d/20-b"]);
        let deletion = |done: &[&str], running| {
            Some(DeletionInfo {
                done: done.iter().map(|hook| hook.to_string()).collect(),
                failed: BTreeMap::new(),
                running,
            })
        };
        let mut qamd = Recorder {
            states: BTreeMap::from([
                ("gone".to_owned(), None),
                ("waiting".to_owned(), deletion(&[], false)),
                ("halfway".to_owned(), deletion(&["delete.d/10-a"], true)),
            ]),
            ..Recorder::default()
        };
        for user in ["gone", "waiting", "halfway"] {
            runner(dir.path())
                .handle(&mut qamd, &delete(user, &[]))
                .expect("handle");
        }
        assert_eq!(
            fs::read_to_string(&ran).expect("ran"),
            "delete.d/20-b delete halfway delete\n"
        );
        assert_eq!(qamd.finished, ["halfway"]);
    }

    #[test]
    fn lock_unlock_password_run_their_own_hooks_and_report_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ran = install(
            dir.path(),
            &[
                "lock.d/50-x",
                "unlock.d/50-x",
                "password.d/50-x",
                "delete.d/50-x",
            ],
        );
        let mut qamd = Recorder::default();
        for kind in [EventKind::Lock, EventKind::Unlock, EventKind::Password] {
            let event = AccountEvent {
                event: kind,
                user: "erin".into(),
                done: Vec::new(),
            };
            runner(dir.path())
                .handle(&mut qamd, &event)
                .expect("handle");
        }
        assert_eq!(
            fs::read_to_string(&ran).expect("ran"),
            "lock.d/50-x lock erin lock\nunlock.d/50-x unlock erin unlock\npassword.d/50-x password erin password\n"
        );
        assert!(qamd.steps.is_empty() && qamd.finished.is_empty());
    }

    #[test]
    fn serve_follows_epoch_and_next() {
        let dir = tempfile::tempdir().expect("temp dir");
        let page = |epoch: &str, next, events| EventPage {
            epoch: epoch.into(),
            next,
            events,
        };
        let mut qamd = Recorder {
            pages: vec![
                page("e1", 3, vec![delete("frank", &[])]),
                page("e1", 3, vec![]),
                page("e2", 0, vec![]),
            ],
            ..Recorder::default()
        };
        let result = runner(dir.path()).serve(&mut qamd);
        assert!(matches!(
            result,
            Err(LoopError::Qamd { what: "events", .. })
        ));
        assert_eq!(
            qamd.asked,
            [
                (None, None),
                (Some("e1".into()), Some(3)),
                (Some("e1".into()), Some(3)),
                (Some("e2".into()), Some(0)),
            ]
        );
        assert_eq!(qamd.finished, ["frank"]);
    }
}
