//! The public facts userdb serves, read from the store: a user record per account, its private
//! group, and the optional shared group's memberships.
//!
//! The private group has gid = uid and the same name. Nothing else leaves: no hash, no e-mail,
//! no creation date.

use crate::accounts::Accounts;
use crate::config::NssConfig;
use crate::state::State;
use crate::store::{Record, StoreError};
use serde_json::{json, Value};
use std::sync::Arc;

/// Accounts per store read while enumerating.
pub const PAGE: usize = 500;

/// Which of the three lists an enumeration walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    Users,
    Groups,
    /// Every account's membership in the shared group.
    Memberships,
}

/// Reads accounts as userdb records.
pub struct Directory {
    /// The accounts (store and uid index) the records come from.
    state: Arc<State>,
    /// Home, shell and shared group of every account.
    nss: NssConfig,
    /// The socket's name, carried by every record (nss-systemd refuses records without it).
    service: String,
}

impl Directory {
    pub fn new(state: Arc<State>, nss: NssConfig, service: String) -> Directory {
        Directory {
            state,
            nss,
            service,
        }
    }

    fn accounts(&self) -> &Accounts {
        &self.state.accounts
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// The shared group's name, if one is configured.
    pub fn shared_group(&self) -> Option<&str> {
        self.nss.group.as_deref()
    }

    /// The account whose uid is `uid`: the index's name, confirmed by the store.
    pub fn account_of(&self, uid: u32) -> Result<Option<(String, Record)>, StoreError> {
        let Some(name) = self.accounts().uids().name_of(uid) else {
            return Ok(None);
        };
        Ok(self
            .accounts()
            .store()
            .get(&name)?
            .filter(|record| record.uid == Some(uid))
            .map(|record| (name, record)))
    }

    /// The record of `name` with its uid, if the account exists.
    pub fn account(&self, name: &str) -> Result<Option<(String, Record)>, StoreError> {
        if name.is_empty() || name.len() > 255 {
            return Ok(None);
        }
        Ok(self
            .accounts()
            .store()
            .get(name)?
            .filter(|record| record.uid.is_some())
            .map(|record| (name.to_owned(), record)))
    }

    /// Up to `PAGE` entries of `listing` after the account `after`, and the last account's
    /// name (where the next page starts); no name when the store has no more accounts.
    pub fn page(
        &self,
        listing: Listing,
        after: Option<&str>,
    ) -> Result<(Vec<Value>, Option<String>), StoreError> {
        let page = self.accounts().store().page(after, PAGE)?;
        let last = page.last().map(|(name, _)| name.clone());
        let entries = page
            .iter()
            .filter(|(_, record)| record.uid.is_some())
            .filter_map(|(name, record)| match listing {
                Listing::Users => Some(self.user_record(name, record)),
                Listing::Groups => Some(self.group_record(name, record)),
                Listing::Memberships => self.membership(name),
            })
            .collect();
        Ok((entries, last))
    }

    /// `GetUserRecord`'s reply parameters for one account.
    pub fn user_record(&self, name: &str, record: &Record) -> Value {
        let uid = record.uid.unwrap_or_default();
        let mut user = json!({
            "userName": name,
            "uid": uid,
            "gid": uid,
            "homeDirectory": self.nss.home_of(name),
            "shell": self.nss.shell,
            "disposition": "regular",
            "service": self.service,
        });
        if record.locked {
            user["locked"] = Value::Bool(true);
        }
        json!({ "record": user, "incomplete": false })
    }

    /// `GetGroupRecord`'s reply parameters for an account's private group.
    pub fn group_record(&self, name: &str, record: &Record) -> Value {
        let group = json!({
            "groupName": name,
            "gid": record.uid.unwrap_or_default(),
            "service": self.service,
        });
        json!({ "record": group, "incomplete": false })
    }

    /// `GetMemberships`'s reply parameters: `user` in the shared group, if one is set.
    pub fn membership(&self, user: &str) -> Option<Value> {
        let group = self.shared_group()?;
        Some(json!({ "userName": user, "groupName": group }))
    }
}
