//! The account logic behind every operation: rules, throttling, hashing and the store, turned
//! into typed answers or wire errors. Authorization happens before (see `dispatch`).
//!
//! One file per family of requests: `login` (verify, change_password), `facts` (exists,
//! lookup), `admin` (register, set_password, lock), `deletion` (delete and the events and
//! steps of qam-hooks), `links` (invites and reset links), `transfer` (list, export, import)
//! and `status`.

mod admin;
mod deletion;
mod facts;
mod links;
mod login;
mod status;
mod transfer;

use crate::config::Config;
use crate::events::Events;
use crate::hasher::{HashError, Hasher};
use crate::reloadable::Reloadable;
use crate::rules::{RuleError, Rules};
use crate::store::{Store, StoreError};
use crate::throttle::Throttle;
use crate::uids::{SystemIds, UidError, Uids};
use qam_client::wire::Account;
use qam_client::{ErrorCode, WireError};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

pub use status::ServerFigures;
pub use transfer::ImportBatch;

/// The account settings a config reload may change while connections stay open.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Whether peers granted `register` (and not admins) may create accounts.
    pub registration_open: bool,
    /// The domain of the mock e-mail address in an account's public facts.
    pub mail_domain: String,
    /// The base of invite and reset links (`web_url`).
    pub web_url: String,
    /// What a username and a new password must look like.
    pub rules: Rules,
    /// Days a deleted name stays unavailable.
    pub name_quarantine_days: u32,
    /// Where qam-hooks looks for hooks: whether any is installed decides how `delete` goes.
    pub hooks_dir: PathBuf,
}

impl Settings {
    /// The account settings of a validated config.
    pub fn from_config(config: &Config) -> Result<Settings, regex::Error> {
        Ok(Settings {
            registration_open: config.registration_open,
            mail_domain: config.mail_domain.clone(),
            web_url: config.web_url.clone(),
            rules: Rules::new(&config.username, &config.password, &config.mail_domain)?,
            name_quarantine_days: config.accounts.name_quarantine_days,
            hooks_dir: config.hooks.dir.clone(),
        })
    }
}

/// Verify outcomes since start, for `status`.
#[derive(Debug, Default)]
struct Counters {
    /// Right password, account not locked.
    accepted: AtomicU64,
    /// Wrong password, unknown or locked account.
    denied: AtomicU64,
    /// Refused before hashing: too many recent failures for the name.
    throttled: AtomicU64,
    /// Refused because every hashing worker was busy.
    busy: AtomicU64,
}

/// The account service shared by every connection.
pub struct Accounts {
    /// Where the accounts live.
    store: Store,
    /// The bounded argon2 pool every password goes through.
    hasher: Hasher,
    /// Failed attempts per (name, source) and per name, slowing down guessing.
    throttle: Throttle,
    /// The settings in force; replaced whole on reload, so a request sees one version.
    settings: Reloadable<Settings>,
    /// Verify outcomes for `status`.
    counters: Counters,
    /// Gives each new account its uid; maps uids back to names for the userdb door.
    uids: Arc<Uids>,
    /// `[nss] enabled`: names the system knows are then refused at creation even when an
    /// admin forces it, since the system's own entry would shadow the account.
    refuse_system_names: bool,
    /// Tells qam-hooks what happened to accounts.
    events: Events,
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
        HashError::UnknownNamesThrottled => WireError::new(
            ErrorCode::Throttled,
            "too many attempts for names without an account; retry shortly",
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
        RuleError::BadUsername | RuleError::Reserved(_) | RuleError::SystemName(_) => {
            ErrorCode::InvalidUsername
        }
        RuleError::Weak(_) => ErrorCode::WeakPassword,
        _ => ErrorCode::InvalidPassword,
    };
    WireError::new(code, err.to_string())
}

fn uid_failed(err: UidError) -> WireError {
    tracing::error!(error = %err, "no uid for a new account");
    WireError::new(ErrorCode::Internal, "no uid could be given; see qamd's log")
}

/// Reads /etc/passwd and /etc/group off the async threads.
async fn system_ids() -> Result<SystemIds, WireError> {
    tokio::task::spawn_blocking(SystemIds::read)
        .await
        .map_err(|_| WireError::new(ErrorCode::Internal, "reading /etc/passwd failed"))?
        .map_err(uid_failed)
}

fn not_found(name: &str) -> WireError {
    WireError::new(ErrorCode::NotFound, format!("no account named `{name}`"))
}

fn deletion_pending(name: &str) -> WireError {
    WireError::new(
        ErrorCode::DeletionPending,
        format!("`{name}` is being deleted (see `qamctl user show {name}`)"),
    )
}

impl Accounts {
    pub fn new(
        store: Store,
        hasher: Hasher,
        config: &Config,
        settings: Settings,
        uids: Arc<Uids>,
    ) -> Accounts {
        Accounts {
            store,
            hasher,
            throttle: Throttle::new(&config.throttle),
            settings: Reloadable::new(settings),
            counters: Counters::default(),
            uids,
            refuse_system_names: config.nss.enabled,
            events: Events::new(),
        }
    }

    /// The settings in force now.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.get()
    }

    /// Answers every waiting `events` call at once, and later ones without waiting: qamd
    /// is stopping.
    pub fn end_event_waits(&self) {
        self.events.end_waits();
    }

    /// Replaces the settings (config reload).
    pub fn set_settings(&self, settings: Settings) {
        self.settings.replace(settings);
    }

    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    /// The store, for the userdb door's reads.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The uid allocator and index, for the userdb door.
    pub fn uids(&self) -> &Uids {
        &self.uids
    }

    /// Moves the high-water mark above `uid` (durably), off the async threads.
    async fn reserve_uids_through(&self, uid: u32) -> Result<(), WireError> {
        let uids = Arc::clone(&self.uids);
        tokio::task::spawn_blocking(move || uids.reserve_through(uid))
            .await
            .map_err(|_| WireError::new(ErrorCode::Internal, "uid allocation failed"))?
            .map_err(uid_failed)
    }

    /// Gives `count` new uids (durably recorded) off the async threads.
    async fn allocate_uids(&self, count: usize) -> Result<Vec<u32>, WireError> {
        let system = system_ids().await?;
        let uids = Arc::clone(&self.uids);
        tokio::task::spawn_blocking(move || uids.allocate(count, &system))
            .await
            .map_err(|_| WireError::new(ErrorCode::Internal, "uid allocation failed"))?
            .map_err(uid_failed)
    }
}

/// The public facts of a stored account.
fn account(settings: &Settings, name: String, created: String, locked: bool) -> Account {
    Account {
        email: format!("{name}@{}", settings.mail_domain),
        name,
        created,
        locked,
        legacy: None,
        deleting: false,
        deletion: None,
    }
}

/// What the unit tests of every family share: accounts on a temporary store, hashing cheap.
#[cfg(test)]
mod testing {
    use super::{Accounts, Settings};
    use crate::config::{Config, HashConfig};
    use crate::hasher::Hasher;
    use crate::store::Store;
    use crate::throttle::Source;
    use crate::uids::Uids;
    use qam_client::Password;
    use std::sync::Arc;

    /// Where the unit tests' attempts come from: one peer, no client key.
    pub const SOURCE: Source<'static> = Source::peer(0);

    /// Accounts on a fresh store in a temporary directory (kept alive by the caller).
    pub fn accounts(mut config: Config) -> (tempfile::TempDir, Accounts) {
        // Unit tests of other rules use short memorable passwords.
        config.password.min_strength = 0;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let hasher = Hasher::start(&cheap_hashing(64), &config.peers).unwrap();
        let settings = Settings::from_config(&config).unwrap();
        let uids = Arc::new(Uids::open(dir.path(), &config.nss).unwrap());
        (dir, Accounts::new(store, hasher, &config, settings, uids))
    }

    /// Accounts with the default config and `alice` (password `alice-password`) registered.
    pub async fn with_alice() -> (tempfile::TempDir, Accounts) {
        let (dir, accounts) = accounts(Config::default());
        accounts
            .register("alice", password("alice-password"), true, false, false)
            .await
            .unwrap();
        (dir, accounts)
    }

    pub fn password(text: &str) -> Password {
        Password::from(text)
    }

    /// Whether `user` logs in with `text`.
    pub async fn verifies(accounts: &Accounts, user: &str, text: &str) -> bool {
        accounts.verify(user, password(text), SOURCE).await.is_ok()
    }

    /// argon2 parameters far below any real use: unit tests hash in microseconds.
    pub fn cheap_hashing(m_cost: u32) -> HashConfig {
        HashConfig {
            m_cost,
            t_cost: 1,
            p_cost: 1,
            workers: 1,
            queue_limit: 8,
            niceness: 0,
        }
    }
}
