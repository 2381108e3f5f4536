//! Accounts in bulk: `list` pages through public facts, `export` through whole records, and
//! `import` writes a checked batch of whole records, all or nothing.

use super::{account, store_failed, system_ids, Accounts};
use crate::hasher::StoredBounds;
use crate::store::{ImportOutcome, Record};
use argon2::PasswordHash;
use qam_client::wire::{ExportPage, ExportRecord, ImportInfo, ListPage, DEFAULT_PAGE, MAX_PAGE};
use qam_client::{ErrorCode, WireError};

/// One page of records and the `after` of the next page.
type Page = (Vec<(String, Record)>, Option<String>);

impl Accounts {
    pub fn list(&self, after: Option<&str>, limit: Option<u32>) -> Result<ListPage, WireError> {
        let settings = self.settings();
        let (page, next) = self.page(after, limit)?;
        Ok(ListPage {
            users: page
                .into_iter()
                .map(|(name, record)| account(&settings, name, record.created, record.locked))
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

    /// Writes a batch of whole records (backup restore); all or nothing.
    pub async fn import(
        &self,
        records: Vec<ExportRecord>,
        replace: bool,
        dry_run: bool,
    ) -> Result<ImportInfo, WireError> {
        let mut batch = self.check_import(records)?;
        let exists_error = |index: usize, batch: &[(String, Record)]| {
            WireError::new(
                ErrorCode::Exists,
                format!(
                    "record {index}: `{}` exists (import with --replace to overwrite)",
                    batch[index].0
                ),
            )
        };
        if dry_run {
            let existing = batch
                .iter()
                .filter(|(name, _)| self.store.contains(name).unwrap_or(false))
                .count() as u64;
            if !replace {
                if let Some(index) = self
                    .store
                    .first_existing(batch.iter().map(|(name, _)| name))
                    .map_err(store_failed)?
                {
                    return Err(exists_error(index, &batch));
                }
            }
            return Ok(ImportInfo {
                imported: batch.len() as u64,
                replaced: existing,
            });
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
                Ok(ImportInfo { imported, replaced })
            }
            ImportOutcome::Exists { index } => Err(exists_error(index, &batch)),
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

    fn check_import(&self, records: Vec<ExportRecord>) -> Result<Vec<(String, Record)>, WireError> {
        let settings = self.settings();
        let bounds = StoredBounds::around(&self.hasher.params());
        let mut seen = std::collections::HashSet::new();
        let mut batch = Vec::with_capacity(records.len());
        for (index, record) in records.into_iter().enumerate() {
            let bad = |why: String| {
                WireError::new(ErrorCode::BadRequest, format!("record {index}: {why}"))
            };
            match settings.rules.username(&record.name) {
                Ok(name) if name == record.name => {}
                _ => {
                    return Err(bad(format!(
                        "`{}` is not a valid stored username",
                        record.name
                    )))
                }
            }
            let phc_ok = PasswordHash::new(&record.hash)
                .map(|hash| hash.algorithm.as_str() == argon2::ARGON2ID_IDENT.as_str())
                .unwrap_or(false);
            if !phc_ok {
                return Err(bad("hash is not an argon2id PHC string".into()));
            }
            bounds.check(&record.hash).map_err(bad)?;
            let format = time::macros::format_description!("[year]-[month]-[day]");
            if time::Date::parse(&record.created, &format).is_err() {
                return Err(bad(format!(
                    "created `{}` is not YYYY-MM-DD",
                    record.created
                )));
            }
            if !seen.insert(record.name.clone()) {
                return Err(bad(format!("`{}` appears twice in the batch", record.name)));
            }
            batch.push((
                record.name,
                Record {
                    hash: record.hash,
                    created: record.created,
                    locked: record.locked,
                    uid: record.uid,
                },
            ));
        }
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{password, verifies, with_alice};
    use qam_client::ErrorCode;

    #[tokio::test]
    async fn pages_follow_each_other_in_name_order() {
        let (_dir, accounts) = with_alice().await;
        for name in ["carol", "bob"] {
            accounts
                .register(name, password("long-enough-password"), true, false)
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
        let dry = other.import(records.clone(), false, true).await.unwrap();
        assert_eq!((dry.imported, dry.replaced), (1, 0));
        assert!(!other.exists("alice").unwrap().exists);
        let done = other.import(records.clone(), false, false).await.unwrap();
        assert_eq!((done.imported, done.replaced), (1, 0));
        assert!(verifies(&other, "alice", "alice-password").await);
        let err = other
            .import(records.clone(), false, false)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Exists);
        let again = other.import(records, true, false).await.unwrap();
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
            let err = accounts.import(batch, false, false).await.unwrap_err();
            assert_eq!(err.code, ErrorCode::BadRequest);
            assert!(!accounts.exists("bob").unwrap().exists);
        }
    }
}
