//! Invite and reset tokens in the store's own `tokens` tree: only a hash of each token, its
//! expiry and uses left. Redeeming a token and writing the account it makes or changes is one
//! sled transaction, durable before it returns, so two racing redeemers get one outcome.

use super::{count_write, transaction_failed, Record, Store, StoreError};
use serde::{Deserialize, Serialize};
use sled::Transactional;

/// The tree holding invites, resets and the reset-by-account index.
pub(super) const TOKENS_TREE: &str = "tokens";

/// Key prefixes in the tokens tree: an invite by token hash, a reset by token hash, and the
/// live reset of an account by its name.
const INVITE_PREFIX: &[u8] = b"i:";
const RESET_PREFIX: &[u8] = b"r:";
const RESET_OF_PREFIX: &[u8] = b"u:";

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

/// A live password reset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reset {
    /// The account whose password it sets.
    pub user: String,
    /// Unix time after which it is refused.
    pub expires: u64,
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

fn corrupt(key: &[u8], err: &serde_json::Error) -> StoreError {
    StoreError::Corrupt {
        name: String::from_utf8_lossy(key).into_owned(),
        reason: err.to_string(),
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|err| corrupt(key, &err))
}

/// Encodes a token record (structs of strings and numbers always serialize).
fn encode(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// Whether a token entry is past its expiry at `now` (entries that cannot be read count as
/// expired, so pruning removes them).
pub(super) fn is_expired(key: &[u8], value: &[u8], now: u64) -> bool {
    let expires = if key.starts_with(INVITE_PREFIX) {
        decode::<Invite>(key, value).map(|invite| invite.expires)
    } else if key.starts_with(RESET_PREFIX) {
        decode::<Reset>(key, value).map(|reset| reset.expires)
    } else {
        return false;
    };
    expires.map_or(true, |expires| expires <= now)
}

/// A transaction's own failure, carried out through sled's abort.
type Abort = sled::transaction::ConflictableTransactionError<StoreError>;

fn read<T: serde::de::DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, Abort> {
    decode(key, bytes).map_err(Abort::Abort)
}

fn aborted(err: sled::transaction::TransactionError<StoreError>) -> StoreError {
    match err {
        sled::transaction::TransactionError::Abort(inner) => inner,
        other => transaction_failed(other),
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
        .await
    }

    /// Every stored invite not expired at `now`, soonest expiry first.
    pub fn invites(&self, now: u64) -> Result<Vec<Invite>, StoreError> {
        let generation = self.generation();
        let mut invites = Vec::new();
        for entry in generation.tokens.scan_prefix(INVITE_PREFIX) {
            let (key, value) = entry?;
            let invite: Invite = decode(&key, &value)?;
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
        match self.generation().tokens.get(&invite_key)? {
            Some(bytes) => {
                let invite: Invite = decode(&invite_key, &bytes)?;
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
            let (key, value) = entry?;
            if decode::<Invite>(&key, &value)?.id == id {
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
        let invite_key = key(INVITE_PREFIX, token);
        let account = record.encode();
        let outcome = (&generation.users, &generation.meta, &generation.tokens)
            .transaction(|(users, meta, tokens)| {
                let Some(bytes) = tokens.get(&invite_key)? else {
                    return Ok((Redeemed::NoToken, 0));
                };
                let mut invite: Invite = read(&invite_key, &bytes)?;
                if invite.expires <= now || invite.uses_left == 0 {
                    tokens.remove(invite_key.as_slice())?;
                    return Ok((Redeemed::NoToken, count_write(meta)?));
                }
                if users.get(name)?.is_some() {
                    return Ok((Redeemed::Taken, 0));
                }
                users.insert(name.as_bytes(), account.as_slice())?;
                invite.uses_left -= 1;
                if invite.uses_left == 0 {
                    tokens.remove(invite_key.as_slice())?;
                } else {
                    tokens.insert(invite_key.as_slice(), encode(&invite))?;
                }
                Ok((Redeemed::Made, count_write(meta)?))
            })
            .map_err(aborted)?;
        let (redeemed, number) = outcome;
        if number > 0 {
            self.acknowledge(&generation, number).await?;
        }
        Ok(redeemed)
    }

    /// Stores a reset for `reset.user`, replacing that account's earlier one; durable.
    pub async fn put_reset(&self, token: &TokenHash, reset: &Reset) -> Result<(), StoreError> {
        let bytes = encode(reset);
        let index = key(RESET_OF_PREFIX, reset.user.as_bytes());
        self.write_tokens(|tokens| {
            if let Some(old) = tokens.get(&index)? {
                tokens.remove(key(RESET_PREFIX, &old))?;
            }
            tokens.insert(index.as_slice(), token.as_slice())?;
            tokens.insert(key(RESET_PREFIX, token), bytes.as_slice())?;
            Ok(())
        })
        .await
    }

    /// The account a live reset token is for.
    pub fn reset(&self, token: &TokenHash, now: u64) -> Result<Option<String>, StoreError> {
        let reset_key = key(RESET_PREFIX, token);
        match self.generation().tokens.get(&reset_key)? {
            Some(bytes) => {
                let reset: Reset = decode(&reset_key, &bytes)?;
                Ok((reset.expires > now).then_some(reset.user))
            }
            None => Ok(None),
        }
    }

    /// Sets the account's hash with the reset `token` and removes the token, in one durable
    /// transaction. `None` when no live reset has this token (or its account is gone).
    pub async fn redeem_reset(
        &self,
        token: &TokenHash,
        now: u64,
        hash: &str,
    ) -> Result<Option<String>, StoreError> {
        let _writing = self.shared.writes.read().await;
        let generation = self.generation();
        let reset_key = key(RESET_PREFIX, token);
        let outcome = (&generation.users, &generation.meta, &generation.tokens)
            .transaction(|(users, meta, tokens)| {
                let Some(bytes) = tokens.get(&reset_key)? else {
                    return Ok(None);
                };
                let reset: Reset = read(&reset_key, &bytes)?;
                tokens.remove(reset_key.as_slice())?;
                tokens.remove(key(RESET_OF_PREFIX, reset.user.as_bytes()))?;
                let account = match users.get(reset.user.as_bytes())? {
                    Some(bytes) if reset.expires > now => bytes,
                    _ => return Ok(Some((None, count_write(meta)?))),
                };
                let mut record =
                    Record::decode(reset.user.as_bytes(), &account).map_err(Abort::Abort)?;
                record.hash = hash.to_owned();
                users.insert(reset.user.as_bytes(), record.encode())?;
                Ok(Some((Some(reset.user), count_write(meta)?)))
            })
            .map_err(aborted)?;
        let Some((user, number)) = outcome else {
            return Ok(None);
        };
        self.acknowledge(&generation, number).await?;
        Ok(user)
    }

    /// Removes the live reset of account `name`, if any (its password changed, or it is
    /// being deleted); durable.
    pub async fn drop_reset_of(&self, name: &str) -> Result<(), StoreError> {
        let index = key(RESET_OF_PREFIX, name.as_bytes());
        if !self.generation().tokens.contains_key(&index)? {
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

    /// Removes every token entry expired at `now`, and the index of resets removed; durable.
    pub async fn prune_tokens(&self, now: u64) -> Result<(), StoreError> {
        let generation = self.generation();
        let mut expired = Vec::new();
        for entry in generation.tokens.iter() {
            let (key, value) = entry?;
            if is_expired(&key, &value, now) {
                expired.push(key);
            }
        }
        if expired.is_empty() {
            return Ok(());
        }
        self.write_tokens(|tokens| {
            for key in &expired {
                if let Some(bytes) = tokens.remove(key)? {
                    if key.starts_with(RESET_PREFIX) {
                        if let Ok(reset) = serde_json::from_slice::<Reset>(&bytes) {
                            tokens.remove(self::key(RESET_OF_PREFIX, reset.user.as_bytes()))?;
                        }
                    }
                }
            }
            Ok(())
        })
        .await
    }

    /// Runs `change` on the tokens tree in a transaction that counts one write; durable.
    async fn write_tokens(
        &self,
        change: impl Fn(&sled::transaction::TransactionalTree) -> Result<(), Abort>,
    ) -> Result<(), StoreError> {
        let _writing = self.shared.writes.read().await;
        let generation = self.generation();
        let number = (&generation.meta, &generation.tokens)
            .transaction(|(meta, tokens)| {
                change(tokens)?;
                count_write(meta)
            })
            .map_err(aborted)?;
        self.acknowledge(&generation, number).await
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
