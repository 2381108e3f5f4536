//! Accounts in bulk: `list` pages through public facts, `export` through whole records, and
//! `import` writes a checked batch of whole records, all or nothing.

use super::deletion::deletion_info;
use super::{account, store_failed, system_ids, Accounts};
use crate::hasher::StoredBounds;
use crate::legacy::{Legacy, LegacyKind};
use crate::store::{ImportOutcome, Record};
use crate::system_names::known_to_system;
use argon2::PasswordHash;
use qam_client::wire::{
    Account, ExportPage, ExportRecord, ImportInfo, ListPage, RefusedRecord, DEFAULT_PAGE, MAX_PAGE,
};
use qam_client::{ErrorCode, WireError};
use std::collections::{BTreeMap, HashSet};

/// One page of records and the `after` of the next page.
type Page = (Vec<(String, Record)>, Option<String>);

impl Accounts {
    pub fn list(&self, after: Option<&str>, limit: Option<u32>) -> Result<ListPage, WireError> {
        let settings = self.settings();
        let (page, next) = self.page(after, limit)?;
        Ok(ListPage {
            users: page
                .into_iter()
                .map(|(name, record)| {
                    let legacy = LegacyKind::of(record.origin.as_deref(), &record.hash);
                    Account {
                        legacy: legacy.map(|kind| kind.to_string()),
                        deleting: record.deletion.is_some(),
                        deletion: record.deletion.as_ref().map(deletion_info),
                        ..account(&settings, name, record.created, record.locked)
                    }
                })
                .collect(),
            next,
        })
    }

    pub fn export(&self, after: Option<&str>, limit: Option<u32>) -> Result<ExportPage, WireError> {
        let (page, next) = self.page(after, limit)?;
        tracing::info!(records = page.len(), "export page read");
        Ok(ExportPage {
            records: page
                .into_iter()
                .map(|(name, record)| record.export(name))
                .collect(),
            next,
        })
    }

    fn page(&self, after: Option<&str>, limit: Option<u32>) -> Result<Page, WireError> {
        let limit = limit.unwrap_or(DEFAULT_PAGE);
        if limit == 0 || limit > MAX_PAGE {
            return Err(WireError::new(
                ErrorCode::BadRequest,
                format!("`limit` must be between 1 and {MAX_PAGE}"),
            ));
        }
        let page = self
            .store
            .page(after, limit as usize)
            .map_err(store_failed)?;
        let next = (page.len() == limit as usize)
            .then(|| page.last().map(|(name, _)| name.clone()))
            .flatten();
        Ok((page, next))
    }

    /// Writes a batch of whole records (backup restore, or accounts moved in from another
    /// store); all or nothing. A dry run answers every refusal instead of the first.
    pub async fn import(&self, batch: ImportBatch) -> Result<ImportInfo, WireError> {
        let ImportBatch {
            records,
            replace,
            dry_run,
            ..
        } = batch;
        let settings = self.settings();
        let mut schemes = BTreeMap::new();
        let mut refused = Vec::new();
        let mut checked = Vec::with_capacity(records.len());
        let mut seen = HashSet::new();
        for (index, record) in records.into_iter().enumerate() {
            let outcome = self
                .check_record(&settings, &record, batch.allow_weak, batch.system_users)
                .and_then(|scheme| {
                    if seen.insert(record.name.clone()) {
                        Ok(scheme)
                    } else {
                        Err(WireError::new(
                            ErrorCode::BadRequest,
                            format!("`{}` appears twice in the batch", record.name),
                        ))
                    }
                })
                .and_then(|scheme| {
                    let exists = self.store.contains(&record.name).map_err(store_failed)?;
                    if exists && !replace {
                        return Err(WireError::new(
                            ErrorCode::Exists,
                            format!(
                                "`{}` exists (import with --replace to overwrite)",
                                record.name
                            ),
                        ));
                    }
                    Ok(scheme)
                });
            match outcome {
                Ok(scheme) => {
                    *schemes.entry(scheme.to_owned()).or_insert(0) += 1;
                    checked.push(record);
                }
                Err(err) if dry_run => refused.push(RefusedRecord {
                    index,
                    code: err.code,
                    message: err.message,
                }),
                Err(err) => {
                    return Err(WireError::new(
                        err.code,
                        format!("record {index}: {}", err.message),
                    ))
                }
            }
        }
        if dry_run {
            let replaced = checked
                .iter()
                .filter(|record| self.store.contains(&record.name).unwrap_or(false))
                .count() as u64;
            return Ok(ImportInfo {
                imported: checked.len() as u64,
                replaced,
                schemes,
                refused,
            });
        }
        let mut batch = Vec::with_capacity(checked.len());
        for record in checked {
            batch.push((record.name.clone(), self.stored_record(record).await?));
        }
        self.give_import_uids(&mut batch).await?;
        match self
            .store
            .import(&batch, replace)
            .await
            .map_err(store_failed)?
        {
            ImportOutcome::Written { imported, replaced } => {
                for (name, record) in &batch {
                    if let Some(uid) = record.uid {
                        self.uids.note(uid, name);
                    }
                }
                tracing::info!(imported, replaced, "records imported");
                Ok(ImportInfo {
                    imported,
                    replaced,
                    schemes,
                    refused,
                })
            }
            ImportOutcome::Exists { index } => Err(WireError::new(
                ErrorCode::Exists,
                format!(
                    "record {index}: `{}` exists (import with --replace to overwrite)",
                    batch[index].0
                ),
            )),
        }
    }

    /// A replaced account keeps its own uid; a record keeps the uid of its backup when that uid
    /// was never given here and no system user or group has it (the high-water mark then
    /// moves above it); every other record gets a new uid.
    async fn give_import_uids(&self, batch: &mut [(String, Record)]) -> Result<(), WireError> {
        let system = system_ids().await?;
        let mut needing = Vec::new();
        let mut kept = std::collections::HashSet::new();
        for (index, (name, record)) in batch.iter_mut().enumerate() {
            let existing = self
                .store
                .get(name)
                .map_err(store_failed)?
                .and_then(|r| r.uid);
            let backup = record.uid.filter(|uid| {
                self.uids.never_given(*uid) && !system.ids.contains(uid) && kept.insert(*uid)
            });
            record.uid = existing.or(backup);
            if record.uid.is_none() {
                needing.push(index);
            }
        }
        if let Some(highest) = batch.iter().filter_map(|(_, record)| record.uid).max() {
            self.reserve_uids_through(highest).await?;
        }
        let uids = self.allocate_uids(needing.len()).await?;
        for (index, uid) in needing.into_iter().zip(uids) {
            batch[index].1.uid = Some(uid);
        }
        Ok(())
    }

    /// Checks one record; answers the name of its verifier's scheme.
    fn check_record(
        &self,
        settings: &super::Settings,
        record: &ExportRecord,
        allow_weak: bool,
        system_users: bool,
    ) -> Result<&'static str, WireError> {
        let bad = |why: String| WireError::new(ErrorCode::BadRequest, why);
        let moved_in = record.origin.is_some();
        // A backup holds names qam accepted once; names moved in from another store are
        // checked as a registration would check them.
        let name = if moved_in {
            settings.rules.new_username(&record.name)
        } else {
            settings.rules.username(&record.name)
        };
        match name {
            Ok(name) if name == record.name => {}
            Ok(name) => {
                return Err(WireError::new(
                    ErrorCode::InvalidUsername,
                    format!(
                        "`{}` is not normalized (qam would store `{name}`)",
                        record.name
                    ),
                ))
            }
            Err(err) if moved_in => return Err(super::rule_failed(err)),
            Err(_) => {
                return Err(bad(format!(
                    "`{}` is not a valid stored username",
                    record.name
                )))
            }
        }
        if moved_in && !system_users && known_to_system(&record.name) {
            return Err(WireError::new(
                ErrorCode::InvalidUsername,
                format!("`{}` names a user of this system", record.name),
            ));
        }
        let format = time::macros::format_description!("[year]-[month]-[day]");
        if time::Date::parse(&record.created, &format).is_err() {
            return Err(bad(format!(
                "created `{}` is not YYYY-MM-DD",
                record.created
            )));
        }
        match (&record.password, record.hash.as_str()) {
            // The user's existing password, moved in as its verifiers are: not judged anew.
            (Some(_), "") => Ok("plain"),
            (Some(_), _) => Err(bad("a record has a `hash` or a `password`, not both".into())),
            (None, hash) if hash.starts_with("$argon2") => {
                let argon2id = PasswordHash::new(hash)
                    .map(|parsed| parsed.algorithm.as_str() == argon2::ARGON2ID_IDENT.as_str())
                    .unwrap_or(false);
                if argon2id {
                    StoredBounds::around(&self.hasher.params())
                        .check(hash)
                        .map_err(bad)?;
                    Ok("argon2id")
                } else {
                    Err(bad("hash is not an argon2id PHC string".into()))
                }
            }
            (None, _) if !moved_in => Err(bad(
                "hash is not an argon2id PHC string (legacy verifiers need an `origin`)".into(),
            )),
            (None, verifier) => {
                let scheme = Legacy::parse(verifier)
                    .map_err(|err| bad(err.to_string()))?
                    .scheme();
                if scheme.is_weak() && !allow_weak {
                    return Err(bad(format!(
                        "{scheme} is a weak scheme: refused unless weak schemes are allowed"
                    )));
                }
                Ok(scheme.name())
            }
        }
    }

    /// The stored form of a checked record: a plaintext password is hashed here, the only
    /// moment qamd holds it.
    async fn stored_record(&self, record: ExportRecord) -> Result<Record, WireError> {
        let hash = match record.password {
            Some(password) => self
                .hasher
                .hash(password)
                .await
                .map_err(super::hash_failed)?,
            None => record.hash,
        };
        let legacy = !hash.starts_with("$argon2");
        Ok(Record {
            hash,
            created: record.created,
            locked: record.locked,
            uid: record.uid,
            origin: record.origin.filter(|_| legacy),
            deletion: None,
        })
    }
}

impl ImportBatch {
    /// A restore of qam's own records: no weak schemes, no system users' names.
    #[cfg(test)]
    fn restore(records: Vec<ExportRecord>, replace: bool, dry_run: bool) -> ImportBatch {
        ImportBatch {
            records,
            replace,
            dry_run,
            allow_weak: false,
            system_users: false,
        }
    }
}

/// An `import` request's batch and flags, as the dispatcher hands them over.
pub struct ImportBatch {
    /// The records, in the request's order (refusals name their index).
    pub records: Vec<ExportRecord>,
    /// Overwrite existing accounts.
    pub replace: bool,
    /// Check only.
    pub dry_run: bool,
    /// Accept weak legacy schemes.
    pub allow_weak: bool,
    /// Accept moved-in names the system user database knows.
    pub system_users: bool,
}

#[cfg(test)]
mod tests {
    use super::super::testing::{password, verifies, with_alice};
    use super::ImportBatch;
    use qam_client::ErrorCode;

    #[tokio::test]
    async fn pages_follow_each_other_in_name_order() {
        let (_dir, accounts) = with_alice().await;
        for name in ["carol", "bob"] {
            accounts
                .register(name, password("long-enough-password"), true, false, false)
                .await
                .unwrap();
        }
        let first = accounts.list(None, Some(2)).unwrap();
        let names: Vec<_> = first.users.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["alice", "bob"]);
        let second = accounts.list(first.next.as_deref(), Some(2)).unwrap();
        assert_eq!(second.users.len(), 1);
        assert_eq!(second.users[0].name, "carol");
        assert_eq!(second.next, None);
        for limit in [0, qam_client::wire::MAX_PAGE + 1] {
            let err = accounts.list(None, Some(limit)).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadRequest);
        }
    }

    #[tokio::test]
    async fn an_export_imports_back_and_verifies() {
        let (_dir, accounts) = with_alice().await;
        let records = accounts.export(None, None).unwrap().records;
        let (_other_dir, other) = super::super::testing::accounts(Default::default());
        let dry = other
            .import(ImportBatch::restore(records.clone(), false, true))
            .await
            .unwrap();
        assert_eq!((dry.imported, dry.replaced), (1, 0));
        assert!(!other.exists("alice").unwrap().exists);
        let done = other
            .import(ImportBatch::restore(records.clone(), false, false))
            .await
            .unwrap();
        assert_eq!((done.imported, done.replaced), (1, 0));
        assert!(verifies(&other, "alice", "alice-password").await);
        let err = other
            .import(ImportBatch::restore(records.clone(), false, false))
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Exists);
        let again = other
            .import(ImportBatch::restore(records, true, false))
            .await
            .unwrap();
        assert_eq!(again.replaced, 1);
    }

    #[tokio::test]
    async fn import_refuses_a_bad_record_and_writes_nothing() {
        let (_dir, accounts) = with_alice().await;
        let good = accounts.export(None, None).unwrap().records.remove(0);
        let renamed = |name: &str| qam_client::wire::ExportRecord {
            name: name.into(),
            ..good.clone()
        };
        let bad_batches = [
            vec![renamed("bob"), renamed("Bad Name!")],
            vec![renamed("bob"), renamed("bob")],
            vec![qam_client::wire::ExportRecord {
                hash: "$2b$10$not-argon2".into(),
                ..renamed("bob")
            }],
            vec![qam_client::wire::ExportRecord {
                created: "yesterday".into(),
                ..renamed("bob")
            }],
        ];
        for batch in bad_batches {
            let err = accounts
                .import(ImportBatch::restore(batch, false, false))
                .await
                .unwrap_err();
            assert_eq!(err.code, ErrorCode::BadRequest);
            assert!(!accounts.exists("bob").unwrap().exists);
        }
    }
}
