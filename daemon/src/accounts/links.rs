//! Invite and reset links: admins make them, the self-service page redeems them. A token is
//! 18 random bytes (144 bits) in base64url; qamd keeps only its hash, expiry and uses left.

use super::admin::taken;
use super::{hash_failed, rule_failed, store_failed, Accounts};
use crate::store::{rfc3339, unix_now, Invite, Redeemed, TokenHash};
use base64ct::{Base64UrlUnpadded, Encoding};
use blake2::{Blake2s256, Digest};
use qam_client::wire::{Done, EventKind, InviteInfo, InviteList, LinkInfo, NameInfo};
use qam_client::{ErrorCode, Password, WireError};
use zeroize::Zeroizing;

/// Random bytes in a token.
const TOKEN_BYTES: usize = 18;

/// Lifetimes when the admin names none, and the longest allowed.
const INVITE_LIFETIME: u64 = 7 * 24 * 3600;
const INVITE_MAX_LIFETIME: u64 = 90 * 24 * 3600;
const RESET_LIFETIME: u64 = 24 * 3600;
const RESET_MAX_LIFETIME: u64 = 7 * 24 * 3600;

/// Most accounts one invite may make.
const INVITE_MAX_USES: u32 = 1000;

/// Longest note kept with an invite, in characters.
const NOTE_MAX_CHARS: usize = 200;

/// The one answer for every token that does not work, whatever the reason.
fn invalid_token() -> WireError {
    WireError::new(
        ErrorCode::InvalidToken,
        "this link is not valid: unknown, used, expired or revoked",
    )
}

fn bad_request(message: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::BadRequest, message)
}

fn random_bytes<const N: usize>() -> Result<[u8; N], WireError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|err| {
        tracing::error!(error = %err, "no randomness for a token");
        WireError::new(
            ErrorCode::Internal,
            "no randomness available; see qamd's log",
        )
    })?;
    Ok(bytes)
}

/// A fresh token and the hash it is stored under.
fn new_token() -> Result<(Password, TokenHash), WireError> {
    let bytes = Zeroizing::new(random_bytes::<TOKEN_BYTES>()?);
    let token = Password::new(Base64UrlUnpadded::encode_string(bytes.as_slice()));
    let hash = token_hash(&token);
    Ok((token, hash))
}

/// The stored form of a token.
fn token_hash(token: &Password) -> TokenHash {
    Blake2s256::digest(token.expose().as_bytes()).into()
}

/// A requested lifetime checked against its bounds.
fn lifetime(asked: Option<u64>, default: u64, max: u64) -> Result<u64, WireError> {
    match asked.unwrap_or(default) {
        0 => Err(bad_request("expires_seconds must be at least 1")),
        seconds if seconds > max => Err(bad_request(format!(
            "expires_seconds may be at most {max} ({} days)",
            max / 86400
        ))),
        seconds => Ok(seconds),
    }
}

impl Accounts {
    /// `<web_url><path><token>`, or just the path when no `web_url` is configured.
    fn link(&self, path: &str, token: &Password) -> Password {
        let base = self.settings().web_url.trim_end_matches('/').to_owned();
        Password::new(format!("{base}{path}{}", token.expose()))
    }

    /// Makes an invite; the token is in the answer only.
    pub async fn invite_create(
        &self,
        expires_seconds: Option<u64>,
        uses: Option<u32>,
        note: Option<String>,
    ) -> Result<LinkInfo, WireError> {
        let lifetime = lifetime(expires_seconds, INVITE_LIFETIME, INVITE_MAX_LIFETIME)?;
        let uses = uses.unwrap_or(1);
        if uses == 0 || uses > INVITE_MAX_USES {
            return Err(bad_request(format!("uses must be 1 to {INVITE_MAX_USES}")));
        }
        let note = note.unwrap_or_default();
        if note.chars().count() > NOTE_MAX_CHARS || note.chars().any(char::is_control) {
            return Err(bad_request(format!(
                "note must be at most {NOTE_MAX_CHARS} characters, without control characters"
            )));
        }
        let now = unix_now();
        self.store.prune_tokens(now).await.map_err(store_failed)?;
        let (token, hash) = new_token()?;
        let id = Base64UrlUnpadded::encode_string(&random_bytes::<6>()?);
        let invite = Invite {
            id: id.clone(),
            expires: now + lifetime,
            uses_left: uses,
            note,
        };
        self.store
            .put_invite(&hash, &invite)
            .await
            .map_err(store_failed)?;
        tracing::info!(invite = %id, uses, "invite created");
        Ok(LinkInfo {
            invite: Some(id),
            url: self.link("/join/", &token),
            token,
            expires: rfc3339(invite.expires),
        })
    }

    /// Every live invite (never their tokens).
    pub async fn invite_list(&self) -> Result<InviteList, WireError> {
        let now = unix_now();
        let invites = self.store.invites(now).map_err(store_failed)?;
        Ok(InviteList {
            invites: invites
                .into_iter()
                .map(|invite| InviteInfo {
                    id: invite.id,
                    expires: rfc3339(invite.expires),
                    uses_left: invite.uses_left,
                    note: invite.note,
                })
                .collect(),
        })
    }

    /// Withdraws an invite by its id.
    pub async fn invite_revoke(&self, id: &str) -> Result<Done, WireError> {
        if !self.store.revoke_invite(id).await.map_err(store_failed)? {
            return Err(WireError::new(
                ErrorCode::NotFound,
                format!("no live invite with id `{id}`"),
            ));
        }
        tracing::info!(invite = %id, "invite revoked");
        Ok(Done {})
    }

    /// Makes a reset link for an existing account, replacing its earlier one.
    pub async fn reset_create(
        &self,
        user: &str,
        expires_seconds: Option<u64>,
    ) -> Result<LinkInfo, WireError> {
        let lifetime = lifetime(expires_seconds, RESET_LIFETIME, RESET_MAX_LIFETIME)?;
        let name = self.settings().rules.username(user).map_err(rule_failed)?;
        self.not_deleting(&name)?;
        let now = unix_now();
        self.store.prune_tokens(now).await.map_err(store_failed)?;
        let (token, hash) = new_token()?;
        let expires = now + lifetime;
        self.store
            .put_reset(&hash, &name, expires)
            .await
            .map_err(store_failed)?;
        tracing::info!(user = %name, "reset link created");
        Ok(LinkInfo {
            invite: None,
            url: self.link("/reset/", &token),
            token,
            expires: rfc3339(expires),
        })
    }

    /// Makes an account with one use of an invite. The name and password pass the same rules
    /// as `register`; registration need not be open.
    pub async fn register_invite(
        &self,
        token: &Password,
        user: &str,
        password: Password,
    ) -> Result<NameInfo, WireError> {
        self.invite_info(token)?;
        let hash_of_token = token_hash(token);
        let now = unix_now();
        let (name, record) = self.new_account(user, password, false, false).await?;
        match self
            .store
            .redeem_invite(&hash_of_token, now, &name, &record)
            .await
            .map_err(store_failed)?
        {
            Redeemed::Made => {
                if let Some(uid) = record.uid {
                    self.uids.note(uid, &name);
                }
                tracing::info!(user = %name, uid = record.uid, "account created with an invite");
                Ok(NameInfo { name })
            }
            Redeemed::Taken => Err(taken(&name)),
            Redeemed::NoToken => Err(invalid_token()),
        }
    }

    /// Whether an invite token still works (the page says so before anyone types a password).
    pub fn invite_info(&self, token: &Password) -> Result<Done, WireError> {
        if self
            .store
            .invites_contain(&token_hash(token), unix_now())
            .map_err(store_failed)?
        {
            Ok(Done {})
        } else {
            Err(invalid_token())
        }
    }

    /// The account a reset token is for (the page shows it).
    pub fn reset_info(&self, token: &Password) -> Result<NameInfo, WireError> {
        match self
            .store
            .reset(&token_hash(token), unix_now())
            .map_err(store_failed)?
        {
            Some(name) => Ok(NameInfo { name }),
            None => Err(invalid_token()),
        }
    }

    /// Sets a new password with a reset token, which is used up by it.
    pub async fn reset_password(
        &self,
        token: &Password,
        password: Password,
    ) -> Result<NameInfo, WireError> {
        let hash_of_token = token_hash(token);
        let name = self.reset_info(token)?.name;
        self.settings()
            .rules
            .new_password(&password, &name)
            .map_err(rule_failed)?;
        let hash = self.hasher.hash(password).await.map_err(hash_failed)?;
        match self
            .store
            .redeem_reset(&hash_of_token, unix_now(), &hash)
            .await
            .map_err(store_failed)?
        {
            Some(name) => {
                self.throttle.forget(&name);
                self.events.publish(EventKind::Password, &name, Vec::new());
                tracing::info!(user = %name, "password set with a reset link");
                Ok(NameInfo { name })
            }
            None => Err(invalid_token()),
        }
    }

    /// Drops the account's reset link after its password changed another way.
    pub(super) async fn forget_reset(&self, name: &str) {
        if let Err(err) = self.store.drop_reset_of(name).await {
            tracing::error!(error = %err, user = %name, "a reset link may outlive a password change");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_stored_hashed() {
        let (first, first_hash) = new_token().unwrap();
        let (second, _) = new_token().unwrap();
        assert_eq!(first.expose().len(), 24);
        assert_ne!(first.expose(), second.expose());
        assert_eq!(token_hash(&first), first_hash);
        assert!(first
            .expose()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }

    #[test]
    fn lifetimes_are_bounded() {
        assert_eq!(lifetime(None, 10, 20).unwrap(), 10);
        assert!(lifetime(Some(0), 10, 20).is_err());
        assert!(lifetime(Some(21), 10, 20).is_err());
    }
}
