//! Invite and reset tokens and the quarantine of deleted names, in the store's own `tokens`
//! tree; redeeming a token and writing the account it makes or changes is one sled transaction.
//!
//! Only a hash of each token is kept, with its expiry and uses left; a quarantined name is a
//! keyed hash and a date. The redeeming transaction is durable before it returns, so two
//! racing redeemers get one outcome.

use super::erasure::NameKey;
use super::error::EngineResult;
use super::generation::{
    count_write, cover_slot, ConflictableTransactionError, TransactionError, Transactional,
    TransactionalTree,
};
use super::{facts_of, seal_record, slot_of, Record, Store, StoreError};
use serde::{Deserialize, Serialize};

/// Key prefixes in the tokens tree: an invite by token hash, a reset by token hash, and the
/// live reset of an account by the keyed hash of its name.
const INVITE_PREFIX: &[u8] = b"i:";
const RESET_PREFIX: &[u8] = b"r:";
const RESET_OF_PREFIX: &[u8] = b"u:";
/// The quarantine of a deleted account's name, by the keyed hash of the name.
const QUARANTINE_PREFIX: &[u8] = b"q:";

/// The hash a token is stored under (a fast hash suffices: tokens have ≥ 128 random bits).
pub type TokenHash = [u8; 32];

/// A live invite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invite {
    /// Short public handle for listing and revoking (not derived from the token).
    pub id: String,
    /// Unix time after which it is refused.
    pub expires: u64,
    /// Accounts it may still make.
    pub uses_left: u32,
    /// The admin's own words about whom it is for.
    pub note: String,
}

/// A live password reset, stored without the name: the account's name is only ever inside
/// its sealed record, so a reset leaves nothing readable once the account is erased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reset {
    /// The keyed hash of the account's name: its key in the users tree.
    account: NameKey,
    /// Unix time after which it is refused.
    expires: u64,
}

/// A deleted account's name, kept from being registered again until `until`: the other users'
/// rosters and mail still point at it. Nothing else of the account is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Quarantine {
    /// Unix time (a day's start) from which the name is free again.
    until: u64,
}

/// The outcome of redeeming an invite for a new account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redeemed {
    /// The account exists now and the invite lost one use.
    Made,
    /// No live invite has this token (unknown, used up, expired or revoked).
    NoToken,
    /// The name is taken; the invite keeps its use.
    Taken,
}

fn key(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    [prefix, rest].concat()
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|err| StoreError::Corrupt(format!("a token entry is unreadable: {err}")))
}

/// Encodes a token record (structs of strings and numbers always serialize).
fn encode(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// When a token entry expires: `None` for the index of resets (it goes with its reset), 0
/// for an entry that cannot be read (so pruning removes it).
fn expiry(key: &[u8], value: &[u8]) -> Option<u64> {
    let expires = if key.starts_with(INVITE_PREFIX) {
        decode::<Invite>(value).map(|invite| invite.expires)
    } else if key.starts_with(RESET_PREFIX) {
        decode::<Reset>(value).map(|reset| reset.expires)
    } else if key.starts_with(QUARANTINE_PREFIX) {
        decode::<Quarantine>(value).map(|quarantine| quarantine.until)
    } else {
        return None;
    };
    Some(expires.unwrap_or(0))
}

/// What is known of the stored tokens' expiries, so making a link scans every token only
/// when one may have expired (a scan per link made making many links quadratic).
#[derive(Debug, Default)]
pub(super) struct PruneHint {
    /// No stored token expires before this unix time; 0 (after open) means unknown.
    soonest: u64,
    /// Tokens stored since open: a scan that raced a new one leaves `soonest` as it was.
    stored: u64,
    /// Scans made since open, for tests.
    scans: u64,
}

/// A transaction's own failure, carried out through the engine's abort.
type Abort = ConflictableTransactionError<StoreError>;

fn read<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Abort> {
    decode(bytes).map_err(Abort::Abort)
}

fn aborted(err: TransactionError<StoreError>) -> StoreError {
    match err {
        TransactionError::Abort(inner) => inner,
        TransactionError::Storage(err) => StoreError::Engine(err.to_string()),
    }
}

impl Store {
    /// Stores a new invite; durable before it returns.
    pub async fn put_invite(&self, token: &TokenHash, invite: &Invite) -> Result<(), StoreError> {
        let bytes = encode(invite);
        self.write_tokens(|tokens| {
            tokens.insert(key(INVITE_PREFIX, token), bytes.as_slice())?;
            Ok(())
        })
        .await?;
        self.stored_token(invite.expires);
        Ok(())
    }

    fn prune_hint(&self) -> std::sync::MutexGuard<'_, PruneHint> {
        self.shared
            .prune_hint
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Notes a token just written that expires at `expires` (after its write, so a scan
    /// that started before the note either saw the token or sees the note).
    fn stored_token(&self, expires: u64) {
        let mut hint = self.prune_hint();
        hint.soonest = hint.soonest.min(expires);
        hint.stored += 1;
    }

    /// How many times the tokens were scanned for expired ones since open.
    #[cfg(test)]
    pub(super) fn token_scans(&self) -> u64 {
        self.prune_hint().scans
    }

    /// Every stored invite not expired at `now`, soonest expiry first.
    pub fn invites(&self, now: u64) -> Result<Vec<Invite>, StoreError> {
        let generation = self.generation();
        let mut invites = Vec::new();
        for entry in generation.tokens.scan_prefix(INVITE_PREFIX) {
            let (_, value) = entry.engine()?;
            let invite: Invite = decode(&value)?;
            if invite.expires > now {
                invites.push(invite);
            }
        }
        invites.sort_by_key(|invite| invite.expires);
        Ok(invites)
    }

    /// Whether a live invite has this token at `now`.
    pub fn invites_contain(&self, token: &TokenHash, now: u64) -> Result<bool, StoreError> {
        let invite_key = key(INVITE_PREFIX, token);
        match self.generation().tokens.get(&invite_key).engine()? {
            Some(bytes) => {
                let invite: Invite = decode(&bytes)?;
                Ok(invite.expires > now && invite.uses_left > 0)
            }
            None => Ok(false),
        }
    }

    /// Removes the invite with public id `id`; false when there is none.
    pub async fn revoke_invite(&self, id: &str) -> Result<bool, StoreError> {
        let generation = self.generation();
        let mut found = None;
        for entry in generation.tokens.scan_prefix(INVITE_PREFIX) {
            let (key, value) = entry.engine()?;
            if decode::<Invite>(&value)?.id == id {
                found = Some(key);
            }
        }
        let Some(found) = found else {
            return Ok(false);
        };
        self.write_tokens(|tokens| {
            tokens.remove(&found)?;
            Ok(())
        })
        .await?;
        Ok(true)
    }

    /// Creates account `name` with `record` using one use of the invite `token`, in one
    /// durable transaction: the last use goes to exactly one of several racing redeemers.
    pub async fn redeem_invite(
        &self,
        token: &TokenHash,
        now: u64,
        name: &str,
        record: &Record,
    ) -> Result<Redeemed, StoreError> {
        let _writing = self.shared.writes.read().await;
        let generation = self.generation();
        let keys = self.keys()?;
        let invite_key = key(INVITE_PREFIX, token);
        let facts = facts_of(record)?;
        let sealed = seal_record(keys, name, record)?;
        let outcome = generation
            .token_trees()
            .transaction(|(users, meta, tokens)| {
                let Some(bytes) = tokens.get(&invite_key)? else {
                    return Ok((Redeemed::NoToken, 0));
                };
                let mut invite: Invite = read(&bytes)?;
                if invite.expires <= now || invite.uses_left == 0 {
                    tokens.remove(invite_key.as_slice())?;
                    return Ok((Redeemed::NoToken, count_write(meta)?));
                }
                if users.get(sealed.key)?.is_some() {
                    return Ok((Redeemed::Taken, 0));
                }
                users.insert(&sealed.key, sealed.value.as_slice())?;
                cover_slot(meta, sealed.slot)?;
                invite.uses_left -= 1;
                if invite.uses_left == 0 {
                    tokens.remove(invite_key.as_slice())?;
                } else {
                    tokens.insert(invite_key.as_slice(), encode(&invite))?;
                }
                Ok((Redeemed::Made, count_write(meta)?))
            });
        let (redeemed, number) = match outcome {
            Ok(outcome) => outcome,
            Err(err) => {
                keys.erase(sealed.slot)?;
                keys.release([sealed.slot]);
                return Err(aborted(err));
            }
        };
        if redeemed == Redeemed::Made {
            self.shared.index.set(name, Some(facts));
        } else {
            keys.erase(sealed.slot)?;
            keys.release([sealed.slot]);
        }
        if number > 0 {
            self.shared.committer.durable(number, Vec::new()).await?;
        }
        Ok(redeemed)
    }

    /// Stores a reset of account `name` until `expires`, replacing that account's earlier
    /// one; durable.
    pub async fn put_reset(
        &self,
        token: &TokenHash,
        name: &str,
        expires: u64,
    ) -> Result<(), StoreError> {
        let account = self.keys()?.name_key(name);
        let bytes = encode(&Reset { account, expires });
        let index = key(RESET_OF_PREFIX, &account);
        self.write_tokens(|tokens| {
            if let Some(old) = tokens.get(&index)? {
                tokens.remove(key(RESET_PREFIX, &old))?;
            }
            tokens.insert(index.as_slice(), token.as_slice())?;
            tokens.insert(key(RESET_PREFIX, token), bytes.as_slice())?;
            Ok(())
        })
        .await?;
        self.stored_token(expires);
        Ok(())
    }

    /// The account a live reset token is for.
    pub fn reset(&self, token: &TokenHash, now: u64) -> Result<Option<String>, StoreError> {
        let reset_key = key(RESET_PREFIX, token);
        let Some(bytes) = self.generation().tokens.get(&reset_key).engine()? else {
            return Ok(None);
        };
        let reset: Reset = decode(&bytes)?;
        if reset.expires <= now {
            return Ok(None);
        }
        Ok(self.read_sealed(&reset.account)?.map(|(_, name, _)| name))
    }

    /// Sets the account's hash with the reset `token` and removes the token, in one durable
    /// transaction that erases the replaced version (its key slot zeroed) before it returns.
    /// `None` when no live reset has this token (or its account is gone).
    pub async fn redeem_reset(
        &self,
        token: &TokenHash,
        now: u64,
        hash: &str,
    ) -> Result<Option<String>, StoreError> {
        let reset_key = key(RESET_PREFIX, token);
        loop {
            let Some(reset_bytes) = self.generation().tokens.get(&reset_key).engine()? else {
                return Ok(None);
            };
            let reset: Reset = decode(&reset_bytes)?;
            let index = key(RESET_OF_PREFIX, &reset.account);
            let account = match self.read_sealed(&reset.account)? {
                Some(account) if reset.expires > now => Some(account),
                _ => None,
            };
            let _writing = self.shared.writes.read().await;
            let keys = self.keys()?;
            let replacement = match &account {
                Some((_, name, current)) => {
                    let mut changed = current.clone();
                    changed.hash = hash.to_owned();
                    Some((
                        name.clone(),
                        facts_of(&changed)?,
                        seal_record(keys, name, &changed)?,
                    ))
                }
                None => None,
            };
            let name_key = reset.account;
            let outcome = self
                .generation()
                .token_trees()
                .transaction(|(users, meta, tokens)| {
                    if tokens.get(&reset_key)?.as_ref() != Some(&reset_bytes) {
                        return Ok(None);
                    }
                    if users.get(name_key)?.as_ref() != account.as_ref().map(|(bytes, ..)| bytes) {
                        return Ok(None);
                    }
                    tokens.remove(reset_key.as_slice())?;
                    tokens.remove(index.as_slice())?;
                    if let Some((_, _, sealed)) = &replacement {
                        users.insert(&sealed.key, sealed.value.as_slice())?;
                        cover_slot(meta, sealed.slot)?;
                    }
                    Ok(Some(count_write(meta)?))
                });
            let written = outcome.map_err(aborted);
            let number = match written {
                Ok(Some(number)) => number,
                lost_or_failed => {
                    if let Some((_, _, sealed)) = &replacement {
                        keys.erase(sealed.slot)?;
                        keys.release([sealed.slot]);
                    }
                    // Another write changed the reset or the account meanwhile: read again.
                    lost_or_failed?;
                    continue;
                }
            };
            let Some((name, facts, _)) = replacement else {
                self.shared.committer.durable(number, Vec::new()).await?;
                return Ok(None);
            };
            self.shared.index.set(&name, Some(facts));
            let erase = account
                .and_then(|(old, ..)| slot_of(&old))
                .into_iter()
                .collect();
            self.shared.committer.durable(number, erase).await?;
            return Ok(Some(name));
        }
    }

    /// Removes the live reset of account `name`, if any (its password changed, or it is
    /// being deleted); durable.
    pub async fn drop_reset_of(&self, name: &str) -> Result<(), StoreError> {
        let index = key(RESET_OF_PREFIX, &self.keys()?.name_key(name));
        if !self.generation().tokens.contains_key(&index).engine()? {
            return Ok(());
        }
        self.write_tokens(|tokens| {
            if let Some(token) = tokens.remove(index.as_slice())? {
                tokens.remove(key(RESET_PREFIX, &token))?;
            }
            Ok(())
        })
        .await
    }

    /// Keeps `name` from being registered until `until` (unix time); durable.
    pub async fn quarantine(&self, name: &str, until: u64) -> Result<(), StoreError> {
        let entry = key(QUARANTINE_PREFIX, &self.keys()?.name_key(name));
        let value = encode(&Quarantine { until });
        self.write_tokens(|tokens| {
            tokens.insert(entry.as_slice(), value.as_slice())?;
            Ok(())
        })
        .await?;
        self.stored_token(until);
        Ok(())
    }

    /// Whether `name` belonged to an account deleted whose quarantine lasts past `now`.
    pub fn quarantined(&self, name: &str, now: u64) -> Result<bool, StoreError> {
        let entry = key(QUARANTINE_PREFIX, &self.keys()?.name_key(name));
        match self.generation().tokens.get(entry).engine()? {
            Some(value) => Ok(decode::<Quarantine>(&value)?.until > now),
            None => Ok(false),
        }
    }

    /// Lifts the quarantine of `name` (an admin reuses it); durable.
    pub async fn release_name(&self, name: &str) -> Result<(), StoreError> {
        let entry = key(QUARANTINE_PREFIX, &self.keys()?.name_key(name));
        if !self.generation().tokens.contains_key(&entry).engine()? {
            return Ok(());
        }
        self.write_tokens(|tokens| {
            tokens.remove(entry.as_slice())?;
            Ok(())
        })
        .await
    }

    /// Removes every token entry expired at `now`, and the index of resets removed; durable.
    pub async fn prune_tokens(&self, now: u64) -> Result<(), StoreError> {
        let stored = {
            let mut hint = self.prune_hint();
            if hint.soonest > now {
                return Ok(());
            }
            hint.scans += 1;
            hint.stored
        };
        let generation = self.generation();
        let mut expired = Vec::new();
        let mut soonest_left = u64::MAX;
        for entry in generation.tokens.iter() {
            let (key, value) = entry.engine()?;
            let Some(expires) = expiry(&key, &value) else {
                continue;
            };
            if expires > now {
                soonest_left = soonest_left.min(expires);
            } else {
                let index = key
                    .starts_with(RESET_PREFIX)
                    .then(|| decode::<Reset>(&value).ok())
                    .flatten()
                    .map(|reset| self::key(RESET_OF_PREFIX, &reset.account));
                expired.push((key, index));
            }
        }
        if !expired.is_empty() {
            self.write_tokens(|tokens| {
                for (key, index) in &expired {
                    if tokens.remove(key)?.is_some() {
                        if let Some(index) = index {
                            // Only if it still points at this reset (not a newer one).
                            if tokens.get(index)?.as_deref() == key.get(RESET_PREFIX.len()..) {
                                tokens.remove(index.as_slice())?;
                            }
                        }
                    }
                }
                Ok(())
            })
            .await?;
        }
        let mut hint = self.prune_hint();
        if hint.stored == stored {
            hint.soonest = soonest_left;
        }
        Ok(())
    }

    /// Runs `change` on the tokens tree in a transaction that counts one write; durable.
    async fn write_tokens(
        &self,
        change: impl Fn(&TransactionalTree) -> Result<(), Abort>,
    ) -> Result<(), StoreError> {
        let _writing = self.shared.writes.read().await;
        let number = self
            .generation()
            .meta_and_tokens()
            .transaction(|(meta, tokens)| {
                change(tokens)?;
                count_write(meta)
            })
            .map_err(aborted)?;
        self.shared.committer.durable(number, Vec::new()).await
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// An RFC 3339 UTC time for answers.
pub fn rfc3339(unix: u64) -> String {
    let seconds = i64::try_from(unix).unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
