//! Every operation of the protocol, each defined once: its wire name, request fields, answer,
//! the grant it needs and whether it is audited. `Op`, `Request`, decoding and `Serve` follow.

use crate::ops_macro::{operations, user_field};
use crate::secret::{ClientKey, Password};
use crate::wire::{
    DebugInfo, DeleteInfo, Done, EventPage, ExistsInfo, ExportPage, ExportRecord, HelloInfo,
    ImportInfo, InviteList, LinkInfo, ListPage, LookupInfo, NameInfo, StatusInfo, WireError,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::future::Future;

/// Which peers may call an operation before `[permissions]` in qamd's config names them.
/// Admins (root, qamd's own uid, the admin group) may call every operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    /// Every peer, whatever the config says.
    Everyone,
    /// Peers in the default `[permissions] default` list, which a config may change.
    Default,
    /// Only peers the config names.
    Named,
}

operations! {
    /// The protocol version and the server's name.
    Hello hello -> HelloInfo, grant: Everyone, audited: false;
    /// Checks a password; answers the normalized name.
    Verify verify {
        /// The account's name as typed; qamd normalizes it.
        user: String,
        /// The password to check.
        password: Password,
        /// What the adapter knows about its own client (e.g. its address): attempts with
        /// another key are throttled apart. Opaque to qamd, never stored or logged.
        #[serde(skip_serializing_if = "Option::is_none")]
        client: Option<ClientKey>,
    } -> NameInfo, grant: Default, audited: false;
    /// Whether an account exists.
    Exists exists {
        /// The account's name as typed; qamd normalizes it.
        user: String,
    } -> ExistsInfo, grant: Default, audited: false;
    /// The public facts about an account.
    Lookup lookup {
        /// The account's name as typed; qamd normalizes it.
        user: String,
    } -> LookupInfo, grant: Default, audited: false;
    /// Creates an account.
    Register register {
        /// The account's name as typed; qamd normalizes it.
        user: String,
        /// The new account's password.
        password: Password,
        /// Admins only: take a name the system's user or group database knows.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        force: bool,
        /// Admins only: take a deleted account's name before its quarantine ends.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        reuse_name: bool,
    } -> NameInfo, grant: Named, audited: false;
    /// A user changes their own password, proving the old one.
    ChangePassword change_password {
        /// The account's name as typed; qamd normalizes it.
        user: String,
        /// Proves the user knows the current password.
        old_password: Password,
        /// The password replacing it.
        new_password: Password,
    } -> Done, grant: Default, audited: false;
    /// Creates an account with one use of an invite (registration need not be open).
    RegisterInvite register_invite {
        /// The invite's secret, from its link.
        token: Password,
        /// The account's name as typed; qamd normalizes it.
        user: String,
        /// The new account's password.
        password: Password,
    } -> NameInfo, grant: Named, audited: false;
    /// Whether an invite token still works.
    InviteInfo invite_info {
        /// The invite's secret, from its link.
        token: Password,
    } -> Done, grant: Named, audited: false;
    /// The account a reset token is for.
    ResetInfo reset_info {
        /// The reset link's secret.
        token: Password,
    } -> NameInfo, grant: Named, audited: false;
    /// Sets a new password with a reset token, which it uses up.
    ResetPassword reset_password {
        /// The reset link's secret.
        token: Password,
        /// The new password.
        password: Password,
    } -> NameInfo, grant: Named, audited: false;
    /// Makes an invite link.
    InviteCreate invite_create {
        /// Lifetime in seconds; 7 days when absent.
        #[serde(skip_serializing_if = "Option::is_none")]
        expires_seconds: Option<u64>,
        /// Accounts it may make; 1 when absent.
        #[serde(skip_serializing_if = "Option::is_none")]
        uses: Option<u32>,
        /// The admin's words about whom it is for.
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    } -> LinkInfo, grant: Named, audited: true;
    /// Every live invite, never their tokens.
    InviteList invite_list -> InviteList, grant: Named, audited: false;
    /// Withdraws an invite.
    InviteRevoke invite_revoke {
        /// The invite's id, as `invite_list` shows it.
        invite: String,
    } -> Done, grant: Named, audited: true;
    /// Makes a reset link for an account, replacing its earlier one.
    ResetCreate reset_create {
        /// The account's name as typed; qamd normalizes it.
        user: String,
        /// Lifetime in seconds; 24 hours when absent.
        #[serde(skip_serializing_if = "Option::is_none")]
        expires_seconds: Option<u64>,
    } -> LinkInfo, grant: Named, audited: true;
    /// An admin sets a password without knowing the old one.
    SetPassword set_password {
        /// The account's name as typed; qamd normalizes it.
        user: String,
        /// The new password.
        password: Password,
    } -> Done, grant: Named, audited: true;
    /// Removes an account: at once without hooks; with hooks, locks it and has qam-hooks run
    /// them first (a retry of a pending deletion runs only the hooks not yet done).
    Delete delete {
        /// The account's name as typed; qamd normalizes it.
        user: String,
    } -> DeleteInfo, grant: Named, audited: true;
    /// Locks an account: it no longer verifies.
    Lock lock {
        /// The account's name as typed; qamd normalizes it.
        user: String,
    } -> Done, grant: Named, audited: true;
    /// Unlocks an account.
    Unlock unlock {
        /// The account's name as typed; qamd normalizes it.
        user: String,
    } -> Done, grant: Named, audited: true;
    /// One page of accounts' public facts, sorted by name.
    List list {
        /// The `next` of the previous page.
        #[serde(skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        /// Page size, at most `MAX_PAGE`.
        #[serde(skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    } -> ListPage, grant: Named, audited: false;
    /// The daemon's figures.
    Status status -> StatusInfo, grant: Named, audited: false;
    /// One page of whole records, hashes included (backups).
    Export export {
        /// The `next` of the previous page.
        #[serde(skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        /// Page size, at most `MAX_PAGE`.
        #[serde(skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    } -> ExportPage, grant: Named, audited: true;
    /// qam-hooks: the account events after `since`, waiting up to `wait_seconds` for one.
    Events events {
        /// The `epoch` of the previous page; another (or none) asks for the pending deletions.
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<String>,
        /// The `next` of the previous page.
        #[serde(skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
        /// How long to wait for an event, at most `MAX_EVENT_WAIT_SECONDS`; 0 when absent.
        #[serde(skip_serializing_if = "Option::is_none")]
        wait_seconds: Option<u64>,
    } -> EventPage, grant: Named, audited: false;
    /// qam-hooks: one delete hook's outcome for an account being deleted.
    DeletionStep deletion_step {
        /// The account's name as the event gave it.
        user: String,
        /// The hook, as `<event>.d/<file>`.
        hook: String,
        /// Whether it succeeded.
        ok: bool,
        /// The end of its output, shown to admins when it failed.
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    } -> Done, grant: Named, audited: true;
    /// qam-hooks: a round of hooks ended; erases the account if none failed.
    DeletionFinish deletion_finish {
        /// The account's name as the event gave it.
        user: String,
    } -> DeleteInfo, grant: Named, audited: true;
    /// Opens a window of debug logging for `seconds` (at most a day), or closes it (0).
    Debug debug {
        /// Length of the window; 0 or absent closes it.
        #[serde(skip_serializing_if = "Option::is_none")]
        seconds: Option<u64>,
    } -> DebugInfo, grant: Named, audited: true;
    /// Writes a batch of whole records, all or nothing (backup restore).
    Import import {
        /// The batch, as `export` gave it.
        records: Vec<ExportRecord>,
        /// Overwrite existing accounts instead of refusing the batch.
        replace: bool,
        /// Check and count only; write nothing.
        dry_run: bool,
        /// Accept verifiers of weak schemes (MD5-crypt) moved in from another store.
        allow_weak: bool,
        /// Accept moved-in names the system's user database knows: the records are those very
        /// users, moving in from the system's shadow file.
        system_users: bool,
    } -> ImportInfo, grant: Named, audited: true;
}

/// All fields any request may carry, each once; `typed_request` picks an operation's own.
/// Passwords are decoded straight into zeroizing buffers (no intermediate `Value`).
#[derive(Deserialize)]
pub(crate) struct RequestFields {
    /// Echoed in the answer.
    pub(crate) id: Option<Value>,
    /// The operation's wire name.
    pub(crate) op: Option<String>,
    /// The account a request is about.
    user: Option<String>,
    /// The password to check or set.
    password: Option<Password>,
    /// `change_password`: proves the user knows the current one.
    old_password: Option<Password>,
    /// `change_password`: the password replacing it.
    new_password: Option<Password>,
    /// Paging: the last name of the previous page.
    after: Option<String>,
    /// Paging: the page size.
    limit: Option<u32>,
    /// `import`: the batch of whole records.
    records: Option<Vec<ExportRecord>>,
    /// `import`: overwrite existing accounts.
    replace: Option<bool>,
    /// `import`: check and count without writing.
    dry_run: Option<bool>,
    /// `verify`: the adapter's opaque key for its client.
    client: Option<ClientKey>,
    /// `register`: an admin takes a name the system knows.
    force: Option<bool>,
    /// `import`: accept weak legacy schemes.
    allow_weak: Option<bool>,
    /// `import`: accept moved-in names of system users.
    system_users: Option<bool>,
    /// Invites and resets: the secret from the link.
    token: Option<Password>,
    /// `invite_create`, `reset_create`: lifetime in seconds.
    expires_seconds: Option<u64>,
    /// `invite_create`: accounts the invite may make.
    uses: Option<u32>,
    /// `invite_create`: the admin's note.
    note: Option<String>,
    /// `invite_revoke`: the invite's id.
    invite: Option<String>,
    /// `register`: an admin takes a quarantined name.
    reuse_name: Option<bool>,
    /// `events`: the epoch of the previous page.
    epoch: Option<String>,
    /// `events`: the `next` of the previous page.
    since: Option<u64>,
    /// `events`: how long to wait for an event.
    wait_seconds: Option<u64>,
    /// `deletion_step`: the hook.
    hook: Option<String>,
    /// `deletion_step`: whether it succeeded.
    ok: Option<bool>,
    /// `deletion_step`: the end of its output.
    detail: Option<String>,
    /// `debug`: the window's length.
    seconds: Option<u64>,
}

/// How a field read from the line becomes a request's field; the request field's type says
/// what an absent field means: required, `None`, or `false`.
trait FromField<T>: Sized {
    fn from_field(value: Option<T>, field: &str, op: Op) -> Result<Self, String>;
}

/// Fields an operation cannot do without.
macro_rules! required_fields {
    ($($ty:ty),*) => {$(
        impl FromField<$ty> for $ty {
            fn from_field(value: Option<$ty>, field: &str, op: Op) -> Result<Self, String> {
                value.ok_or_else(|| format!("`{op}` needs the field `{field}`"))
            }
        }
    )*};
}

required_fields!(String, Password, Vec<ExportRecord>);

impl<T> FromField<T> for Option<T> {
    fn from_field(value: Option<T>, _: &str, _: Op) -> Result<Self, String> {
        Ok(value)
    }
}

impl FromField<bool> for bool {
    fn from_field(value: Option<bool>, _: &str, _: Op) -> Result<Self, String> {
        Ok(value.unwrap_or(false))
    }
}
