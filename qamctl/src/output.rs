//! How qamctl prints results: borderless aligned tables for people, one JSON document for
//! scripts (`--json`). Everything goes through [`emit`] so a closed pipe is an error, not a panic.

use crate::error::CtlError;
use comfy_table::{presets, Table};
use qam_client::wire::{Account, DeletionInfo, InviteList, LinkInfo, StatusInfo};
use serde::Serialize;
use std::io::{self, Write};

/// Writes `text` and a newline to standard output.
pub fn emit(text: &str) -> Result<(), CtlError> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{text}")
        .and_then(|()| stdout.flush())
        .map_err(CtlError::io("writing to standard output"))
}

/// One pretty-printed JSON document.
pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<String, CtlError> {
    serde_json::to_string_pretty(value)
        .map_err(|err| CtlError::Protocol(format!("cannot print the answer as JSON: {err}")))
}

fn plain_table() -> Table {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    table
}

/// Renders a table and trims the padding the preset leaves at line ends.
fn render(table: &Table) -> String {
    table
        .lines()
        .map(|line| line.trim().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

fn yes_no(flag: bool) -> &'static str {
    if flag {
        "yes"
    } else {
        "no"
    }
}

/// A `field  value` table.
fn fields(rows: &[(&str, String)]) -> String {
    let mut table = plain_table();
    for (field, value) in rows {
        table.add_row(vec![(*field).to_owned(), value.clone()]);
    }
    render(&table)
}

/// One account as `field  value` lines.
pub fn account(account: &Account) -> String {
    let mut lines = vec![
        ("name", account.name.clone()),
        ("email", account.email.clone()),
        ("created", account.created.clone()),
        ("locked", yes_no(account.locked).to_owned()),
    ];
    if let Some(legacy) = &account.legacy {
        lines.push((
            "verifier",
            format!("legacy ({legacy}): upgraded at next login"),
        ));
    }
    if let Some(deletion) = &account.deletion {
        lines.push(("deletion", deletion_state(deletion)));
    }
    fields(&lines)
}

/// `pending: hooks running (2 done)` or `pending: delete.d/52-dovecot failed (retry ...)`.
fn deletion_state(deletion: &DeletionInfo) -> String {
    let done = deletion.done.len();
    if deletion.failed.is_empty() {
        return format!("pending: hooks running ({done} done)");
    }
    let failed: Vec<String> = deletion
        .failed
        .iter()
        .map(|(hook, detail)| format!("{hook} failed: {}", detail.trim()))
        .collect();
    format!(
        "pending: {} ({done} done; `qamctl user del` retries)",
        failed.join("; ")
    )
}

/// A new invite or reset link: the link alone on the first line (to copy), then its expiry.
pub fn link(link: &LinkInfo) -> String {
    let mut text = format!("{}\nexpires {}", link.url.expose(), link.expires);
    if let Some(id) = &link.invite {
        text.push_str(&format!(" (invite {id})"));
    }
    text
}

/// Live invites as a table.
pub fn invites(list: &InviteList) -> String {
    if list.invites.is_empty() {
        return "no invites".to_owned();
    }
    let mut table = plain_table();
    table.set_header(vec!["ID", "EXPIRES", "USES LEFT", "NOTE"]);
    for invite in &list.invites {
        table.add_row(vec![
            invite.id.clone(),
            invite.expires.clone(),
            invite.uses_left.to_string(),
            invite.note.clone(),
        ]);
    }
    render(&table)
}

/// Accounts as a table with a header row, one account per line.
pub fn accounts(accounts: &[Account]) -> String {
    if accounts.is_empty() {
        return "no users".to_owned();
    }
    // The verifier column appears only while some account is still on a legacy one.
    let any_legacy = accounts.iter().any(|account| account.legacy.is_some());
    let mut table = plain_table();
    let mut header = vec!["NAME", "EMAIL", "CREATED", "LOCKED"];
    if any_legacy {
        header.push("VERIFIER");
    }
    table.set_header(header);
    for account in accounts {
        let mut row = vec![
            account.name.as_str(),
            account.email.as_str(),
            account.created.as_str(),
            if account.deleting {
                "deleting"
            } else {
                yes_no(account.locked)
            },
        ];
        if any_legacy {
            row.push(account.legacy.as_deref().unwrap_or("argon2id"));
        }
        table.add_row(row);
    }
    render(&table)
}

/// The daemon's status as `field  value` lines.
pub fn status(status: &StatusInfo) -> String {
    let hashing = &status.hashing;
    let verify = &status.verify;
    fields(&[
        ("version", status.version.clone()),
        ("uptime", uptime(status.uptime_seconds)),
        ("users", status.users.to_string()),
        ("locked", status.locked.to_string()),
        ("connections", status.connections.to_string()),
        ("deletions pending", status.deleting.to_string()),
        (
            "debug logging",
            match &status.debug_until {
                Some(until) => format!("on until {until}"),
                None => "off".to_owned(),
            },
        ),
        (
            "registration",
            if status.registration_open {
                "open"
            } else {
                "closed"
            }
            .to_owned(),
        ),
        ("hash workers", hashing.workers.to_string()),
        (
            "hash queue",
            format!("{} of {}", hashing.queued, hashing.queue_limit),
        ),
        (
            "hash parameters",
            format!(
                "m={} KiB, t={}, p={}",
                hashing.m_cost, hashing.t_cost, hashing.p_cost
            ),
        ),
        ("verify accepted", verify.accepted.to_string()),
        ("verify denied", verify.denied.to_string()),
        ("verify throttled", verify.throttled.to_string()),
        ("verify busy", verify.busy.to_string()),
        (
            "legacy verifiers",
            if status.legacy.is_empty() {
                "none".to_owned()
            } else {
                status
                    .legacy
                    .iter()
                    .map(|(kind, count)| format!("{kind}: {count}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ),
    ])
}

/// `3d 4h 5m 6s`, leaving out leading zero units.
fn uptime(seconds: u64) -> String {
    let units = [
        (seconds / 86_400, "d"),
        (seconds / 3600 % 24, "h"),
        (seconds / 60 % 60, "m"),
        (seconds % 60, "s"),
    ];
    let first = units
        .iter()
        .position(|(value, _)| *value > 0)
        .unwrap_or(units.len() - 1);
    units[first..]
        .iter()
        .map(|(value, unit)| format!("{value}{unit}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Account {
        Account {
            name: "alice".into(),
            email: "alice@localhost".into(),
            created: "2026-11-25".into(),
            locked: false,
            legacy: None,
            deleting: false,
            deletion: None,
        }
    }

    #[test]
    fn account_table_aligns_columns_without_borders() {
        let mut bob = alice();
        bob.name = "bo".into();
        bob.email = "bo@localhost".into();
        bob.locked = true;
        let text = accounts(&[alice(), bob]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("NAME"), "{text}");
        let column = lines[0].find("EMAIL").unwrap();
        assert_eq!(lines[1].find("alice@"), Some(column), "{text}");
        assert_eq!(lines[2].find("bo@"), Some(column), "{text}");
        assert!(lines[2].ends_with("yes"), "{text}");
        assert!(!text.contains('|') && !text.contains('+'), "{text}");
    }

    #[test]
    fn one_account_is_field_value_lines() {
        let text = account(&alice());
        assert!(text
            .lines()
            .any(|l| l.starts_with("email") && l.ends_with("alice@localhost")));
        assert!(text
            .lines()
            .any(|l| l.starts_with("locked") && l.ends_with("no")));
    }

    #[test]
    fn empty_list_says_so() {
        assert_eq!(accounts(&[]), "no users");
    }

    #[test]
    fn uptime_skips_leading_zero_units() {
        assert_eq!(uptime(0), "0s");
        assert_eq!(uptime(59), "59s");
        assert_eq!(uptime(3600), "1h 0m 0s");
        assert_eq!(uptime(90_061), "1d 1h 1m 1s");
    }
}
