//! `qamctl import --from SOURCE`: the accounts a source holds become records, qamd dry-runs
//! every batch (names, schemes, conflicts), and only a clean or `--skip-bad` run writes.

use crate::error::CtlError;
use crate::migrate::{self, Credential, Moved, Source, Unreadable};
use crate::transfer::{batches, request_overhead};
use qam_client::wire::{ExportRecord, ImportInfo};
use qam_client::{Client, Request};
use serde::Serialize;
use std::collections::BTreeMap;

/// How `import --from` treats what it cannot take.
#[derive(Debug, Clone, Copy, Default)]
pub struct MoveInOptions {
    /// Check and report only.
    pub dry_run: bool,
    /// Write the accounts that can be taken and leave out the rest (they are listed).
    pub skip_bad: bool,
    /// Accept weak schemes (MD5-crypt).
    pub allow_weak: bool,
    /// Overwrite existing qam accounts of the same name.
    pub replace: bool,
}

/// A source entry qam will not take, with where it is and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Refusal {
    /// Where in the source (`line 12`, `alice.dat`).
    pub place: String,
    /// The name as the source spells it, when one was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Why, with qamd's error code first when qamd refused it.
    pub reason: String,
}

/// What an `import --from` did or, for a dry run, would do.
#[derive(Debug, Clone, Serialize, Default)]
pub struct MoveInReport {
    /// The source kind (`prosody`, `shadow`, …).
    pub source: &'static str,
    /// Accounts written (or that a dry run would write).
    pub imported: u64,
    /// Of those, how many replaced an existing qam account.
    pub replaced: u64,
    /// Accounts to write, by verifier scheme.
    pub schemes: BTreeMap<String, u64>,
    /// Entries not taken: unreadable in the source, or refused by qamd.
    pub refused: Vec<Refusal>,
    /// Whether anything was written.
    pub written: bool,
}

/// The record `import` takes for one account read from `source`.
fn record(moved: &Moved, origin: &str) -> ExportRecord {
    let (hash, password) = match &moved.credential {
        Credential::Verifier(verifier) => (verifier.clone(), None),
        Credential::Plain(password) => (String::new(), Some(password.clone())),
    };
    ExportRecord {
        name: moved.name.clone(),
        hash,
        created: time::OffsetDateTime::now_utc().date().to_string(),
        locked: moved.locked,
        uid: None,
        origin: Some(origin.to_owned()),
        password,
    }
}

fn unreadable(entry: Unreadable) -> Refusal {
    Refusal {
        place: entry.place,
        name: None,
        reason: entry.reason,
    }
}

/// A batch of placed records as one `import` request.
fn call(
    client: &mut Client,
    records: Vec<ExportRecord>,
    options: MoveInOptions,
    system_users: bool,
    dry_run: bool,
) -> Result<ImportInfo, CtlError> {
    Ok(client.call::<ImportInfo>(&Request::Import {
        records,
        replace: options.replace,
        dry_run,
        allow_weak: options.allow_weak,
        system_users,
    })?)
}

/// Reads `source`, dry-runs every batch, and writes unless the run is dry or has refusals
/// that `--skip-bad` does not allow to leave out.
pub fn import_from(
    client: &mut Client,
    source: &Source,
    options: MoveInOptions,
) -> Result<MoveInReport, CtlError> {
    let reading = migrate::read(source).map_err(|err| CtlError::Usage(err.to_string()))?;
    let origin = source.kind();
    // Moving shadow users in means moving in names the system user database knows.
    let system_users = matches!(source, Source::Shadow { .. });
    let mut report = MoveInReport {
        source: origin,
        refused: reading.unreadable.into_iter().map(unreadable).collect(),
        ..MoveInReport::default()
    };
    let accounts = reading.accounts;
    let records: Vec<ExportRecord> = accounts.iter().map(|m| record(m, origin)).collect();
    let overhead = request_overhead();
    let mut accepted = Vec::with_capacity(records.len());
    for range in batches(&records, overhead) {
        let info = call(
            client,
            records[range.clone()].to_vec(),
            options,
            system_users,
            true,
        )?;
        let refused: BTreeMap<usize, String> = info
            .refused
            .into_iter()
            .map(|refusal| {
                (
                    refusal.index,
                    format!("{}: {}", refusal.code, refusal.message),
                )
            })
            .collect();
        for (offset, index) in range.enumerate() {
            match refused.get(&offset) {
                Some(reason) => report.refused.push(Refusal {
                    place: accounts[index].place.clone(),
                    name: Some(accounts[index].name.clone()),
                    reason: reason.clone(),
                }),
                None => accepted.push(index),
            }
        }
        for (scheme, count) in info.schemes {
            *report.schemes.entry(scheme).or_default() += count;
        }
        report.replaced += info.replaced;
    }
    report.imported = accepted.len() as u64;
    if options.dry_run || (!report.refused.is_empty() && !options.skip_bad) {
        return Ok(report);
    }
    let chosen: Vec<ExportRecord> = accepted.iter().map(|&i| records[i].clone()).collect();
    let mut written = 0u64;
    for range in batches(&chosen, overhead) {
        let info =
            call(client, chosen[range].to_vec(), options, system_users, false).map_err(|err| {
                match err {
                    CtlError::Client(source) => CtlError::ImportStopped {
                        source,
                        place: format!("{origin} import"),
                        written,
                    },
                    other => other,
                }
            })?;
        written += info.imported;
    }
    report.written = true;
    Ok(report)
}

/// The report as the admin reads it.
pub fn describe(report: &MoveInReport) -> String {
    let mut text = String::new();
    let verb = if report.written {
        "imported"
    } else {
        "would import"
    };
    text.push_str(&format!(
        "{}: {verb} {} account(s), {} of them replacing qam accounts\n",
        report.source, report.imported, report.replaced
    ));
    for (scheme, count) in &report.schemes {
        text.push_str(&format!("  {scheme}: {count}\n"));
    }
    if !report.refused.is_empty() {
        text.push_str(&format!("refused ({}):\n", report.refused.len()));
        for refusal in &report.refused {
            match &refusal.name {
                Some(name) => text.push_str(&format!(
                    "  {} ({name}): {}\n",
                    refusal.place, refusal.reason
                )),
                None => text.push_str(&format!("  {}: {}\n", refusal.place, refusal.reason)),
            }
        }
    }
    if !report.written {
        text.push_str(if report.refused.is_empty() {
            "dry run: nothing written\n"
        } else {
            "nothing written (fix the source, or --skip-bad to leave the refused out)\n"
        });
    }
    text.trim_end().to_owned()
}
