//! `qamctl user del`: starts the deletion, then follows it hook by hook until the account is
//! erased, a round of hooks ended with failures, or the wait is over.

use crate::error::CtlError;
use crate::output;
use qam_client::wire::{DeleteInfo, DeletionInfo, LookupInfo};
use qam_client::{Client, Request};
use std::time::{Duration, Instant};

/// How often the deletion's state is read while hooks run.
const POLL: Duration = Duration::from_millis(100);

/// Deletes `name`, printing each hook's result; `DeletionPending` unless it was erased.
pub fn delete(client: &mut Client, name: &str, wait: Duration) -> Result<(), CtlError> {
    let started: DeleteInfo = client.call(&Request::Delete {
        user: name.to_owned(),
    })?;
    if started.erased {
        return output::emit(&format!("deleted user {name}"));
    }
    let deadline = Instant::now() + wait;
    let mut seen = DeletionInfo::default();
    loop {
        let info: LookupInfo = client.call(&Request::Lookup {
            user: name.to_owned(),
        })?;
        let Some(account) = info.account else {
            show_results(&seen)?;
            return output::emit(&format!("deleted user {name}: every hook succeeded"));
        };
        if let Some(deletion) = account.deletion {
            seen = deletion;
        }
        if !seen.running {
            show_results(&seen)?;
            let failed: Vec<&str> = seen.failed.keys().map(String::as_str).collect();
            return Err(CtlError::DeletionPending {
                name: name.to_owned(),
                reason: format!(
                    "{} failed; the account stays locked. Fix the cause and run `qamctl user del {name}` again: only what is left runs",
                    failed.join(", ")
                ),
            });
        }
        if Instant::now() >= deadline {
            show_results(&seen)?;
            return Err(CtlError::DeletionPending {
                name: name.to_owned(),
                reason: "waiting for qam-hooks to run the hooks (is qam-hooks.service running? `qamctl user show` follows it)".to_owned(),
            });
        }
        std::thread::sleep(POLL);
    }
}

/// Prints the hooks' results, if any hook reported yet.
fn show_results(deletion: &DeletionInfo) -> Result<(), CtlError> {
    let text = results(deletion);
    if text.is_empty() {
        return Ok(());
    }
    output::emit(&text)
}

/// One line per hook: `  delete.d/50-prosody: ok` or `...: failed: <detail>`.
fn results(deletion: &DeletionInfo) -> String {
    let done = deletion.done.iter().map(|hook| format!("  {hook}: ok"));
    let failed = deletion
        .failed
        .iter()
        .map(|(hook, detail)| format!("  {hook}: failed: {}", detail.trim()));
    done.chain(failed).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_name_every_hook_and_its_outcome() {
        let deletion = DeletionInfo {
            done: vec!["lock.d/50-prosody".into()],
            failed: [(
                "delete.d/52-dovecot".to_owned(),
                "exit status 1: no such home\n".to_owned(),
            )]
            .into(),
            running: false,
        };
        assert_eq!(
            results(&deletion),
            "  lock.d/50-prosody: ok\n  delete.d/52-dovecot: failed: exit status 1: no such home"
        );
    }
}
