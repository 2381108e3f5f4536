//! The account logic behind every operation: rules, throttling, hashing and the store, turned
//! into typed answers or wire errors. Authorization happens before (see `handler`).

use crate::config::Config;
use crate::hasher::{HashError, Hasher};
use crate::policy::Policy;
use crate::rules::{RuleError, Rules};
use crate::store::{ImportOutcome, Record, Store, StoreError};
use crate::throttle::Throttle;
use argon2::PasswordHash;
use qam_client::wire::{
    Account, Done, ExistsInfo, ExportPage, ExportRecord, HashingStatus, ImportInfo, ListPage,
    LookupInfo, NameInfo, StatusInfo, VerifyCounts, DEFAULT_PAGE, MAX_PAGE,
};
use qam_client::{ErrorCode, Password, WireError};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// Settings that a config reload may change while connections stay open.
#[derive(Debug, Clone)]
pub struct Live {
    pub registration_open: bool,
    pub mail_domain: String,
    pub policy: Policy,
    pub rules: Rules,
}

impl Live {
    /// The live part of a validated config.
    pub fn from_config(config: &Config) -> Result<Live, regex::Error> {
        Ok(Live {
            registration_open: config.registration_open,
            mail_domain: config.mail_domain.clone(),
            policy: Policy::new(&config.permissions, &config.admin_group),
            rules: Rules::new(&config.username, &config.password)?,
        })
    }
}

/// Verify outcomes since start, for `status`.
#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    denied: AtomicU64,
    throttled: AtomicU64,
    busy: AtomicU64,
}

/// The account service shared by every connection.
pub struct Accounts {
    store: Store,
    hasher: Hasher,
    throttle: Throttle,
    live: RwLock<Arc<Live>>,
    counters: Counters,
    /// Open client connections (kept by the server, shown by `status`).
    pub connections: AtomicUsize,
    started: Instant,
}

const DENIED: &str = "wrong user name or password";

fn denied() -> WireError {
    WireError::new(ErrorCode::Denied, DENIED)
}

fn store_failed(err: StoreError) -> WireError {
    tracing::error!(error = %err, "store operation failed");
    WireError::new(
        ErrorCode::Internal,
        "the account store failed; see qamd's log",
    )
}

fn hash_failed(err: HashError) -> WireError {
    match err {
        HashError::Busy => WireError::new(
            ErrorCode::Busy,
            "every password hashing worker is busy; retry shortly",
        ),
        other => {
            tracing::error!(error = %other, "hashing failed");
            WireError::new(
                ErrorCode::Internal,
                "password hashing failed; see qamd's log",
            )
        }
    }
}

fn rule_failed(err: RuleError) -> WireError {
    let code = match err {
        RuleError::BadUsername | RuleError::Reserved(_) => ErrorCode::InvalidUsername,
        _ => ErrorCode::InvalidPassword,
    };
    WireError::new(code, err.to_string())
}

fn not_found(name: &str) -> WireError {
    WireError::new(ErrorCode::NotFound, format!("no account named `{name}`"))
}

/// The key a failed attempt counts against: the name as normalized, bounded in length.
fn throttle_key(user: &str) -> String {
    user.chars().take(64).collect::<String>().to_lowercase()
}

impl Accounts {
    pub fn new(store: Store, hasher: Hasher, config: &Config, live: Live) -> Accounts {
        Accounts {
            store,
            hasher,
            throttle: Throttle::new(&config.throttle),
            live: RwLock::new(Arc::new(live)),
            counters: Counters::default(),
            connections: AtomicUsize::new(0),
            started: Instant::now(),
        }
    }

    /// The settings in force now.
    pub fn live(&self) -> Arc<Live> {
        Arc::clone(
            &self
                .live
                .read()
                .unwrap_or_else(|poison| poison.into_inner()),
        )
    }

    /// Replaces the live settings (config reload).
    pub fn set_live(&self, live: Live) {
        *self
            .live
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = Arc::new(live);
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    /// Checks a password. Unknown, invalid and locked names cost the same argon2 work as a
    /// wrong password and answer the same `denied`.
    pub async fn verify(&self, user: &str, password: Password) -> Result<NameInfo, WireError> {
        let (name, checked) = self.check_password(user, password).await?;
        if checked.needs_rehash {
            self.rehash(&name, checked).await;
        }
        Ok(NameInfo { name })
    }

    /// The shared part of verify and change_password: throttle, look up, hash, count.
    async fn check_password(
        &self,
        user: &str,
        password: Password,
    ) -> Result<(String, Checked), WireError> {
        let key = throttle_key(user);
        if let Err(remaining) = self.throttle.check(&key, Instant::now()) {
            self.counters.throttled.fetch_add(1, Ordering::Relaxed);
            // The attempted name is not logged: users type passwords into name fields.
            tracing::debug!("verify throttled");
            return Err(WireError::new(
                ErrorCode::Throttled,
                format!(
                    "too many failed attempts for this user; retry in {} s",
                    remaining.as_secs().max(1)
                ),
            ));
        }
        let live = self.live();
        let name = live.rules.username(user).ok();
        let record = match &name {
            Some(name) => self.store.get(name).map_err(store_failed)?,
            None => None,
        };
        let outcome = self
            .hasher
            .verify(password.clone(), record.as_ref().map(|r| r.hash.clone()))
            .await
            .map_err(|err| {
                self.counters.busy.fetch_add(1, Ordering::Relaxed);
                hash_failed(err)
            })?;
        match (name, record) {
            (Some(name), Some(record)) if outcome.matches && !record.locked => {
                self.throttle.success(&key);
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
                self.throttle.failure(&key, Instant::now());
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
        let upgraded = Record {
            hash,
            ..checked.record.clone()
        };
        match self.store.replace(name, &checked.record, &upgraded).await {
            Ok(true) => tracing::info!(user = %name, "hash upgraded to current parameters"),
            Ok(false) => tracing::debug!(user = %name, "rehash skipped: record changed meanwhile"),
            Err(err) => tracing::warn!(user = %name, error = %err, "rehash not stored"),
        }
    }

    pub fn exists(&self, user: &str) -> Result<ExistsInfo, WireError> {
        let exists = match self.live().rules.username(user) {
            Ok(name) => self.store.contains(&name).map_err(store_failed)?,
            Err(_) => false,
        };
        Ok(ExistsInfo { exists })
    }

    pub fn lookup(&self, user: &str) -> Result<LookupInfo, WireError> {
        let live = self.live();
        let Ok(name) = live.rules.username(user) else {
            return Ok(LookupInfo { account: None });
        };
        let record = self.store.get(&name).map_err(store_failed)?;
        Ok(LookupInfo {
            account: record.map(|record| account(&live, name, &record)),
        })
    }

    /// Creates an account. `admin` bypasses `registration_open`.
    pub async fn register(
        &self,
        user: &str,
        password: Password,
        admin: bool,
    ) -> Result<NameInfo, WireError> {
        let live = self.live();
        if !admin && !live.registration_open {
            return Err(WireError::new(
                ErrorCode::RegistrationClosed,
                "registration is closed on this host",
            ));
        }
        let name = live.rules.new_username(user).map_err(rule_failed)?;
        live.rules.new_password(&password).map_err(rule_failed)?;
        let taken = || WireError::new(ErrorCode::Exists, format!("`{name}` is taken"));
        if self.store.contains(&name).map_err(store_failed)? {
            return Err(taken());
        }
        let hash = self.hasher.hash(password).await.map_err(hash_failed)?;
        if !self
            .store
            .insert_new(&name, &Record::new(hash))
            .await
            .map_err(store_failed)?
        {
            return Err(taken());
        }
        tracing::info!(user = %name, "account created");
        Ok(NameInfo { name })
    }

    /// A user changes their own password, proving the old one.
    pub async fn change_password(
        &self,
        user: &str,
        old: Password,
        new: Password,
    ) -> Result<Done, WireError> {
        self.live().rules.new_password(&new).map_err(rule_failed)?;
        let (name, _) = self.check_password(user, old).await?;
        let hash = self.hasher.hash(new).await.map_err(hash_failed)?;
        self.store
            .update(&name, |record| record.hash = hash.clone())
            .await
            .map_err(store_failed)?
            .ok_or_else(denied)?;
        tracing::info!(user = %name, "password changed by its user");
        Ok(Done {})
    }

    /// An admin sets a password without knowing the old one.
    pub async fn set_password(&self, user: &str, password: Password) -> Result<Done, WireError> {
        let live = self.live();
        let name = live.rules.username(user).map_err(rule_failed)?;
        live.rules.new_password(&password).map_err(rule_failed)?;
        if !self.store.contains(&name).map_err(store_failed)? {
            return Err(not_found(&name));
        }
        let hash = self.hasher.hash(password).await.map_err(hash_failed)?;
        self.store
            .update(&name, |record| record.hash = hash.clone())
            .await
            .map_err(store_failed)?
            .ok_or_else(|| not_found(&name))?;
        self.throttle.success(&name);
        tracing::info!(user = %name, "password set by admin");
        Ok(Done {})
    }

    /// Removes every byte of an account from the store's current state.
    pub async fn delete(&self, user: &str) -> Result<Done, WireError> {
        let name = self.live().rules.username(user).map_err(rule_failed)?;
        if !self.store.remove(&name).await.map_err(store_failed)? {
            return Err(not_found(&name));
        }
        self.throttle.success(&name);
        tracing::info!(user = %name, "account deleted");
        Ok(Done {})
    }

    /// Locks or unlocks an account.
    pub async fn set_locked(&self, user: &str, locked: bool) -> Result<Done, WireError> {
        let name = self.live().rules.username(user).map_err(rule_failed)?;
        self.store
            .update(&name, |record| record.locked = locked)
            .await
            .map_err(store_failed)?
            .ok_or_else(|| not_found(&name))?;
        tracing::info!(user = %name, locked, "account lock changed");
        Ok(Done {})
    }

    pub fn list(&self, after: Option<&str>, limit: Option<u32>) -> Result<ListPage, WireError> {
        let live = self.live();
        let (page, next) = self.page(after, limit)?;
        Ok(ListPage {
            users: page
                .into_iter()
                .map(|(name, record)| account(&live, name, &record))
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
        let batch = self.check_import(records)?;
        let exists_error = |index: usize| {
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
                    return Err(exists_error(index));
                }
            }
            return Ok(ImportInfo {
                imported: batch.len() as u64,
                replaced: existing,
            });
        }
        match self
            .store
            .import(&batch, replace)
            .await
            .map_err(store_failed)?
        {
            ImportOutcome::Written { imported, replaced } => {
                tracing::info!(imported, replaced, "records imported");
                Ok(ImportInfo { imported, replaced })
            }
            ImportOutcome::Exists { index } => Err(exists_error(index)),
        }
    }

    fn check_import(&self, records: Vec<ExportRecord>) -> Result<Vec<(String, Record)>, WireError> {
        let live = self.live();
        let mut seen = std::collections::HashSet::new();
        let mut batch = Vec::with_capacity(records.len());
        for (index, record) in records.into_iter().enumerate() {
            let bad = |why: String| {
                WireError::new(ErrorCode::BadRequest, format!("record {index}: {why}"))
            };
            match live.rules.username(&record.name) {
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
                },
            ));
        }
        Ok(batch)
    }

    pub async fn status(&self) -> Result<StatusInfo, WireError> {
        let store = self.store.clone();
        let counts = tokio::task::spawn_blocking(move || store.counts())
            .await
            .map_err(|_| WireError::new(ErrorCode::Internal, "counting users failed"))?
            .map_err(store_failed)?;
        let params = self.hasher.params();
        Ok(StatusInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: self.started.elapsed().as_secs(),
            users: counts.users,
            locked: counts.locked,
            connections: self.connections.load(Ordering::Relaxed),
            registration_open: self.live().registration_open,
            hashing: HashingStatus {
                workers: self.hasher.workers(),
                queued: self.hasher.queued(),
                queue_limit: self.hasher.queue_limit(),
                m_cost: params.m_cost(),
                t_cost: params.t_cost(),
                p_cost: params.p_cost(),
            },
            verify: VerifyCounts {
                accepted: self.counters.accepted.load(Ordering::Relaxed),
                denied: self.counters.denied.load(Ordering::Relaxed),
                throttled: self.counters.throttled.load(Ordering::Relaxed),
                busy: self.counters.busy.load(Ordering::Relaxed),
            },
        })
    }
}

/// One page of records and the `after` of the next page.
type Page = (Vec<(String, Record)>, Option<String>);

/// A successful password check.
struct Checked {
    record: Record,
    password: Password,
    needs_rehash: bool,
}

fn account(live: &Live, name: String, record: &Record) -> Account {
    Account {
        email: format!("{name}@{}", live.mail_domain),
        name,
        created: record.created.clone(),
        locked: record.locked,
    }
}
