//! The qam wire protocol as Rust types: requests, answers, error codes and the JSON-lines codec.
//! `protocol.md` is the normative text; this module and that file change together.

use crate::ops::{typed_request, RequestFields};
use crate::secret::Password;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use zeroize::Zeroizing;

/// Version of the protocol described in `protocol.md`, answered by `hello`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest request line the daemon reads, newline excluded; longer ones get `too_large`.
pub const MAX_REQUEST_LINE: usize = 64 * 1024;

/// Largest `limit` a `list` or `export` page may ask for.
pub const MAX_PAGE: u32 = 1000;

/// Longest `wait_seconds` an `events` call may ask for (below the idle timeout's default).
pub const MAX_EVENT_WAIT_SECONDS: u64 = 25;

/// Longest debug window `debug` opens: a day.
pub const MAX_DEBUG_SECONDS: u64 = 24 * 60 * 60;

/// Page size used when `limit` is absent.
pub const DEFAULT_PAGE: u32 = 100;

pub use crate::ops::{Answer, Grant, Op, Request, Serve};

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name given is not an operation of this protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown operation `{0}`")]
pub struct UnknownOp(pub String);

impl FromStr for Op {
    type Err = UnknownOp;
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Op::ALL
            .into_iter()
            .find(|op| op.as_str() == name)
            .ok_or_else(|| UnknownOp(name.to_owned()))
    }
}

/// One record of a user as `export` gives it and `import` takes it: the whole account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRecord {
    /// The normalized username, the key the account is stored under.
    pub name: String,
    /// The argon2id PHC string, or until the user's first login a verifier moved in from
    /// another store (`{SCRAM-SHA-1}…`, `$y$…`, `$6$…`, `$2y$…`; see protocol.md).
    #[serde(default)]
    pub hash: String,
    /// Creation date, `YYYY-MM-DD`.
    pub created: String,
    /// A locked account keeps its data but no longer verifies.
    pub locked: bool,
    /// The account's system uid, so a restore keeps file ownership; absent in exports made
    /// before uids (the import then gives a new one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The store a legacy verifier came from (`prosody`, `shadow`, …), shown to admins until
    /// the first login replaces it; absent for argon2id hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// A plaintext password found in a legacy store, given to `import` instead of `hash`:
    /// qamd hashes it with argon2id before writing. Never part of an export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Password>,
}

/// Writes `ErrorCode`, its wire strings and `ErrorCode::ALL` from one list.
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal,)*) => {
        /// Stable error codes; each one is documented in protocol.md.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum ErrorCode {
            $($(#[doc = $doc])* #[serde(rename = $name)] $variant,)*
            /// A code this client does not know (sent by a newer daemon).
            #[serde(other, rename = "unrecognized")]
            Unrecognized,
        }

        impl ErrorCode {
            /// Every code a daemon sends, in protocol.md's order (`Unrecognized` is not sent).
            pub const ALL: [ErrorCode; [$(ErrorCode::$variant),*].len()] =
                [$(ErrorCode::$variant),*];

            /// The wire string, e.g. `invalid_username`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)*
                    ErrorCode::Unrecognized => "unrecognized",
                }
            }
        }
    };
}

error_codes! {
    BadRequest = "bad_request",
    UnknownOp = "unknown_op",
    TooLarge = "too_large",
    Denied = "denied",
    Throttled = "throttled",
    Exists = "exists",
    NotFound = "not_found",
    Forbidden = "forbidden",
    InvalidUsername = "invalid_username",
    InvalidPassword = "invalid_password",
    WeakPassword = "weak_password",
    RegistrationClosed = "registration_closed",
    InvalidToken = "invalid_token",
    NameQuarantined = "name_quarantined",
    DeletionPending = "deletion_pending",
    Busy = "busy",
    Internal = "internal",
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `error` object of a failed answer: a stable code and a human message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct WireError {
    /// What went wrong, as a stable string clients branch on.
    pub code: ErrorCode,
    /// For people reading logs; wording may change between releases.
    pub message: String,
}

impl WireError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        WireError {
            code,
            message: message.into(),
        }
    }
}

/// Answer to `hello`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloInfo {
    /// [`PROTOCOL_VERSION`], so a client can tell what it may send.
    pub protocol: u32,
    /// `qamd` and its version, for support questions.
    pub server: String,
}

/// Answer to `verify` and `register`: the normalized name the account is stored under.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameInfo {
    /// The name as stored, which may differ from the one typed (case).
    pub name: String,
}

/// Answer to `exists`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExistsInfo {
    /// Whether an account of that name is stored.
    pub exists: bool,
}

/// The public facts about an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The normalized username.
    pub name: String,
    /// `name@<mail domain>`, computed, never stored.
    pub email: String,
    /// Creation date, `YYYY-MM-DD`.
    pub created: String,
    /// A locked account no longer verifies.
    pub locked: bool,
    /// An admin's `list` and `lookup` only: where a legacy verifier came from and its scheme
    /// (`prosody SCRAM-SHA-1`) while the account still has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy: Option<String>,
    /// An admin started deleting the account: it is locked until every delete hook has run.
    /// Services' adapters let their server purge such an account (and no other).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleting: bool,
    /// An admin's `list` and `lookup` only: where the deletion stands, hook by hook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion: Option<DeletionInfo>,
}

/// Where an account's deletion stands: the hooks that succeeded, those that failed and why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionInfo {
    /// Hooks that succeeded (`delete.d/50-prosody`); a retry does not run them again.
    pub done: Vec<String>,
    /// Hooks that failed in the last round, with the end of their output.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed: BTreeMap<String, String>,
    /// Hooks are being run now (false once a round ended with failures: waiting for a retry).
    pub running: bool,
}

/// Answer to `delete` and `deletion_finish`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteInfo {
    /// The record is erased. False: hooks are installed and the deletion is pending until
    /// qam-hooks has run them all (see `lookup`'s `deletion`).
    pub erased: bool,
}

/// What happened to an account, as `events` tells qam-hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// An admin started (or retried) deleting the account.
    Delete,
    /// The account was locked.
    Lock,
    /// The account was unlocked.
    Unlock,
    /// The account's password changed (its other sessions may be ended).
    Password,
}

impl EventKind {
    /// The event's name, also the name of its hooks' directory (`<name>.d`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Delete => "delete",
            EventKind::Lock => "lock",
            EventKind::Unlock => "unlock",
            EventKind::Password => "password",
        }
    }
}

/// One account event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountEvent {
    /// What happened.
    pub event: EventKind,
    /// The account's normalized name.
    pub user: String,
    /// `delete` only: hooks already done, not to be run again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub done: Vec<String>,
}

/// Answer to `events`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventPage {
    /// Changes at every start of qamd: a `since` from another epoch is not this qamd's.
    pub epoch: String,
    /// The `since` of the next call.
    pub next: u64,
    /// Events after `since`; on a call without this epoch, every pending deletion instead.
    pub events: Vec<AccountEvent>,
}

/// Answer to `debug`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebugInfo {
    /// When the debug window ends, RFC 3339 UTC; `None`: qamd logs at its configured level.
    pub until: Option<String>,
}

/// Answer to `lookup`: `account` is null for an unknown user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupInfo {
    /// The account's public facts, `None` when there is no such account.
    pub account: Option<Account>,
}

/// Answer to `list`: one page sorted by name; `next` is the `after` for the following page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPage {
    /// This page's accounts, in name order.
    pub users: Vec<Account>,
    /// The `after` of the following page; `None` on the last page.
    pub next: Option<String>,
}

/// Answer to `export`: one page of whole records sorted by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportPage {
    /// This page's whole records, in name order.
    pub records: Vec<ExportRecord>,
    /// The `after` of the following page; `None` on the last page.
    pub next: Option<String>,
}

/// Answer to `import`: how many records were (or, for a dry run, would be) written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportInfo {
    /// Records written (or, for a dry run, that would be).
    pub imported: u64,
    /// Of those, how many overwrote an existing account.
    pub replaced: u64,
    /// How many of the batch's records use each verifier scheme (`argon2id`, `plain`,
    /// `SCRAM-SHA-1`, `SHA512-CRYPT`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub schemes: BTreeMap<String, u64>,
    /// A dry run's refused records, each with its index, code and reason (a write refuses the
    /// whole batch at its first one instead).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<RefusedRecord>,
}

/// A record a dry-run `import` would refuse.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedRecord {
    /// Its position in the batch, from 0.
    pub index: usize,
    /// What kind of refusal (`bad_request`, `invalid_username`, `exists`).
    pub code: ErrorCode,
    /// Why, worded for the admin.
    pub message: String,
}

/// Hashing pool figures in `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashingStatus {
    /// Hashing threads.
    pub workers: usize,
    /// Hash jobs waiting now; near `queue_limit` means `busy` answers soon.
    pub queued: usize,
    /// Waiting jobs beyond which requests are answered `busy`.
    pub queue_limit: usize,
    /// argon2 memory cost in KiB of new hashes.
    pub m_cost: u32,
    /// argon2 iterations of new hashes.
    pub t_cost: u32,
    /// argon2 lanes of new hashes.
    pub p_cost: u32,
}

/// Verify outcomes counted since start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyCounts {
    /// Right password, account not locked.
    pub accepted: u64,
    /// Wrong password, unknown or locked account.
    pub denied: u64,
    /// Refused before hashing after too many failures for the name.
    pub throttled: u64,
    /// Refused because every hashing worker was busy.
    pub busy: u64,
}

/// Answer to `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusInfo {
    /// qamd's release.
    pub version: String,
    /// Seconds since qamd started.
    pub uptime_seconds: u64,
    /// Stored accounts.
    pub users: u64,
    /// Of those, how many are locked.
    pub locked: u64,
    /// Client connections open on the main socket now.
    pub connections: usize,
    /// Whether non-admins granted `register` may create accounts.
    pub registration_open: bool,
    /// How busy the hashing pool is and the parameters of new hashes.
    pub hashing: HashingStatus,
    /// Verify outcomes since start.
    pub verify: VerifyCounts,
    /// Accounts still on a verifier moved in from another store, by origin and scheme
    /// (`prosody SCRAM-SHA-1`); each is replaced by argon2id at its user's next login.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub legacy: BTreeMap<String, u64>,
    /// Accounts whose deletion an admin started and whose hooks have not all succeeded.
    #[serde(default)]
    pub deleting: u64,
    /// When the debug window opened by `debug` ends, RFC 3339 UTC; absent when none is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_until: Option<String>,
}

/// Answer to `invite_create` and `reset_create`: the link to hand over, shown only once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkInfo {
    /// The invite's id (for `invite_revoke`); absent for a reset. (Not `id`: that name is
    /// the answer's echo of the request id.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite: Option<String>,
    /// The secret part of the link.
    pub token: Password,
    /// `<web_url>/join/<token>` or `<web_url>/reset/<token>`.
    pub url: Password,
    /// Expiry, RFC 3339 UTC.
    pub expires: String,
}

/// One live invite as `invite_list` shows it (never its token).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteInfo {
    /// The handle `invite_revoke` takes.
    pub id: String,
    /// Expiry, RFC 3339 UTC.
    pub expires: String,
    /// Accounts it may still make.
    pub uses_left: u32,
    /// The admin's words about whom it is for.
    #[serde(default)]
    pub note: String,
}

/// Answer to `invite_list`: every live invite, soonest expiry first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteList {
    /// The live invites.
    pub invites: Vec<InviteInfo>,
}

/// The answer of an operation that returns nothing but success.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {}

/// Everything the daemon can find wrong with a request line before it is executed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The request's `id`, when it could be read, so the error answer can echo it.
    pub id: Option<Value>,
    /// The `bad_request` or `unknown_op` answer to send.
    pub error: WireError,
}

/// Only the `id` of a line that failed to decode as a whole.
#[derive(Deserialize)]
struct IdOnly {
    /// The request's `id`, echoed in the error answer.
    id: Option<Value>,
}

fn bad_request(id: &Option<Value>, message: impl Into<String>) -> DecodeError {
    DecodeError {
        id: id.clone(),
        error: WireError::new(ErrorCode::BadRequest, message),
    }
}

/// Decodes one request line (without its newline).
///
/// Errors are `bad_request` (not UTF-8, not a JSON object, missing or mistyped fields, an `id`
/// that is neither a number nor a string) or `unknown_op`.
pub fn decode_request(line: &[u8]) -> Result<(Option<Value>, Request), DecodeError> {
    let text =
        std::str::from_utf8(line).map_err(|_| bad_request(&None, "request is not valid UTF-8"))?;
    let fields: RequestFields = serde_json::from_str(text).map_err(|err| {
        let id = serde_json::from_str::<IdOnly>(text)
            .ok()
            .and_then(|only| only.id)
            .filter(id_is_valid);
        bad_request(
            &id,
            format!("malformed request: {}", describe_json_error(&err)),
        )
    })?;
    let id = fields.id.clone();
    if let Some(id_value) = &id {
        if !id_is_valid(id_value) {
            return Err(bad_request(&None, "`id` must be a number or a string"));
        }
    }
    let op_name = fields
        .op
        .as_deref()
        .ok_or_else(|| bad_request(&id, "request has no `op`"))?;
    let op = Op::from_str(op_name).map_err(|unknown| DecodeError {
        id: id.clone(),
        error: WireError::new(ErrorCode::UnknownOp, unknown.to_string()),
    })?;
    let request = typed_request(op, fields).map_err(|message| bad_request(&id, message))?;
    Ok((id, request))
}

fn id_is_valid(id: &Value) -> bool {
    id.is_number() || id.is_string()
}

/// serde_json's message, without echoing any part of the input (it may hold a password).
fn describe_json_error(err: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match err.classify() {
        Category::Data => {
            // serde's data errors can quote the offending value: keep only our own words.
            let text = err.to_string();
            let text = text.split(" at line ").next().unwrap_or_default();
            let summary =
                if text.starts_with("missing field") || text.starts_with("duplicate field") {
                    text.to_owned()
                } else if let Some((_, expected)) = text.split_once(", expected ") {
                    format!("wrong type or value, expected {expected}")
                } else {
                    "wrong type or value".to_owned()
                };
            format!("{summary} at column {}", err.column())
        }
        Category::Syntax => format!("invalid JSON at column {}", err.column()),
        Category::Eof => "incomplete JSON".to_owned(),
        Category::Io => "unreadable input".to_owned(),
    }
}

#[derive(Serialize)]
struct RequestEnvelope<'a> {
    /// Echoed back, so a client can match answers to requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    /// The `op` and its fields, flattened beside `id`.
    #[serde(flatten)]
    request: &'a Request,
}

/// Encodes a request as one line, newline included, in a buffer wiped on drop.
pub fn encode_request(id: Option<u64>, request: &Request) -> Zeroizing<Vec<u8>> {
    let mut line = Zeroizing::new(Vec::with_capacity(128));
    // Serializing these types into a Vec cannot fail: no maps with non-string keys, no I/O.
    if serde_json::to_writer(&mut *line, &RequestEnvelope { id, request }).is_err() {
        line.clear();
    }
    line.push(b'\n');
    line
}

#[derive(Serialize)]
struct SuccessEnvelope<'a, T: Serialize> {
    /// The request's `id`, echoed.
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Value>,
    /// Always `true` here.
    ok: bool,
    /// The answer's fields, flattened beside `ok`.
    #[serde(flatten)]
    body: &'a T,
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    /// The request's `id`, echoed when it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Value>,
    /// Always `false` here.
    ok: bool,
    /// The code and message.
    error: &'a WireError,
}

/// Encodes a successful answer as one line, newline included.
pub fn encode_success<T: Serialize>(id: Option<&Value>, body: &T) -> Vec<u8> {
    let envelope = SuccessEnvelope { id, ok: true, body };
    let mut line = serde_json::to_vec(&envelope).unwrap_or_else(|_| {
        encode_error_body(
            id,
            &WireError::new(ErrorCode::Internal, "answer could not be encoded"),
        )
    });
    line.push(b'\n');
    line
}

/// Encodes an error answer as one line, newline included.
pub fn encode_error(id: Option<&Value>, error: &WireError) -> Vec<u8> {
    let mut line = encode_error_body(id, error);
    line.push(b'\n');
    line
}

fn encode_error_body(id: Option<&Value>, error: &WireError) -> Vec<u8> {
    serde_json::to_vec(&ErrorEnvelope {
        id,
        ok: false,
        error,
    })
    .unwrap_or_else(|_| {
        br#"{"ok":false,"error":{"code":"internal","message":"encoding failed"}}"#.to_vec()
    })
}

/// An answer line as a client first sees it.
#[derive(Deserialize)]
struct ReplyEnvelope {
    /// The echoed `id`, to check answers stay in order.
    #[serde(default)]
    id: Option<Value>,
    /// Whether `body` or `error` holds the answer.
    ok: bool,
    /// Present when `ok` is false.
    #[serde(default)]
    error: Option<WireError>,
    /// Every other field: the success body, decoded into its type later.
    #[serde(flatten)]
    body: Map<String, Value>,
}

/// What went wrong reading an answer line.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    #[error("the daemon answered: {0}")]
    Server(WireError),
    #[error("the daemon's answer is not valid: {0}")]
    Malformed(String),
}

/// Decodes an answer line into the success body `T`, or the daemon's error.
/// Returns the echoed `id` alongside so callers can check answers stay in order.
pub fn decode_reply<T: DeserializeOwned>(line: &[u8]) -> Result<(Option<Value>, T), ReplyError> {
    let envelope: ReplyEnvelope =
        serde_json::from_slice(line).map_err(|err| ReplyError::Malformed(err.to_string()))?;
    if !envelope.ok {
        let error = envelope
            .error
            .unwrap_or_else(|| WireError::new(ErrorCode::Unrecognized, "no error object"));
        return Err(ReplyError::Server(error));
    }
    let body = serde_json::from_value(Value::Object(envelope.body))
        .map_err(|err| ReplyError::Malformed(err.to_string()))?;
    Ok((envelope.id, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(text: &str) -> Result<(Option<Value>, Request), DecodeError> {
        decode_request(text.as_bytes())
    }

    #[test]
    fn every_request_round_trips_through_the_codec() {
        let requests = vec![
            Request::Hello,
            Request::Verify {
                user: "a".into(),
                password: "p:w\"x".into(),
                client: None,
            },
            Request::Verify {
                user: "a".into(),
                password: "pw".into(),
                client: Some("client 7".into()),
            },
            Request::Exists { user: "a".into() },
            Request::Lookup { user: "a".into() },
            Request::Register {
                user: "a".into(),
                password: "pw".into(),
                force: false,
                reuse_name: false,
            },
            Request::Register {
                user: "a".into(),
                password: "pw".into(),
                force: true,
                reuse_name: true,
            },
            Request::Events {
                epoch: Some("e".into()),
                since: Some(3),
                wait_seconds: Some(25),
            },
            Request::DeletionStep {
                user: "a".into(),
                hook: "delete.d/50-x".into(),
                ok: false,
                detail: Some("exit 1".into()),
            },
            Request::DeletionFinish { user: "a".into() },
            Request::Debug { seconds: Some(60) },
            Request::ChangePassword {
                user: "a".into(),
                old_password: "o".into(),
                new_password: "n".into(),
            },
            Request::SetPassword {
                user: "a".into(),
                password: "pw".into(),
            },
            Request::Delete { user: "a".into() },
            Request::Lock { user: "a".into() },
            Request::Unlock { user: "a".into() },
            Request::List {
                after: Some("b".into()),
                limit: Some(3),
            },
            Request::List {
                after: None,
                limit: None,
            },
            Request::Status,
            Request::Export {
                after: None,
                limit: Some(10),
            },
            Request::Import {
                records: vec![ExportRecord {
                    name: "a".into(),
                    hash: "$argon2id$x".into(),
                    created: "2026-01-01".into(),
                    locked: true,
                    uid: Some(70_000),
                    origin: None,
                    password: None,
                }],
                replace: true,
                dry_run: false,
                allow_weak: false,
                system_users: false,
            },
        ];
        for (n, request) in requests.into_iter().enumerate() {
            let line = encode_request(Some(n as u64), &request);
            assert_eq!(line.last(), Some(&b'\n'));
            let (id, back) = decode_request(&line[..line.len() - 1]).unwrap();
            assert_eq!(id, Some(Value::from(n as u64)));
            assert_eq!(back, request);
        }
    }

    #[test]
    fn op_names_round_trip() {
        for op in Op::ALL {
            assert_eq!(op.as_str().parse::<Op>(), Ok(op));
            // serde names the `op` tag of an encoded request; it must be the wire name too.
            assert_eq!(serde_json::to_value(op).unwrap(), op.as_str());
        }
    }

    #[test]
    fn the_user_of_a_request_is_its_user_field() {
        let verify = Request::Verify {
            user: "alice".into(),
            password: "alice".into(),
            client: Some("host".into()),
        };
        assert_eq!(verify.user(), Some("alice"));
        let list = Request::List {
            after: Some("bob".into()),
            limit: None,
        };
        assert_eq!(list.user(), None);
        assert_eq!(Request::Hello.user(), None);
    }

    #[test]
    fn error_codes_round_trip() {
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
            let back: ErrorCode = serde_json::from_value(code.as_str().into()).unwrap();
            assert_eq!(back, code);
        }
    }

    #[test]
    fn malformed_json_is_bad_request_without_id() {
        let err = decode("{\"op\":").unwrap_err();
        assert_eq!(err.error.code, ErrorCode::BadRequest);
        assert_eq!(err.id, None);
    }

    #[test]
    fn wrong_type_keeps_the_id() {
        let err = decode(r#"{"id":9,"op":"exists","user":5}"#).unwrap_err();
        assert_eq!(err.error.code, ErrorCode::BadRequest);
        assert_eq!(err.id, Some(Value::from(9)));
    }

    #[test]
    fn missing_field_is_named() {
        let err = decode(r#"{"id":"x","op":"verify","user":"a"}"#).unwrap_err();
        assert_eq!(err.error.code, ErrorCode::BadRequest);
        assert!(err.error.message.contains("password"));
        assert_eq!(err.id, Some(Value::from("x")));
    }

    #[test]
    fn unknown_op_is_its_own_code() {
        let err = decode(r#"{"op":"fly"}"#).unwrap_err();
        assert_eq!(err.error.code, ErrorCode::UnknownOp);
        let err = decode(r#"{"user":"a"}"#).unwrap_err();
        assert_eq!(err.error.code, ErrorCode::BadRequest);
    }

    #[test]
    fn non_object_and_non_utf8_are_bad_requests() {
        for line in [&b"[1,2]"[..], b"42", b"\xff\xfe", b""] {
            assert_eq!(
                decode_request(line).unwrap_err().error.code,
                ErrorCode::BadRequest
            );
        }
    }

    #[test]
    fn object_id_is_refused() {
        let err = decode(r#"{"id":{"a":1},"op":"hello"}"#).unwrap_err();
        assert_eq!(err.error.code, ErrorCode::BadRequest);
    }

    #[test]
    fn decode_errors_never_echo_a_password() {
        for line in [
            r#"{"op":"verify","user":"a","password":"sekrit-value", "x":}"#,
            r#"{"op":"verify","user":["sekrit-value"],"password":"sekrit-value"}"#,
            r#"{"op":"verify","user":"a","password":"sekrit-value","limit":"sekrit-value"}"#,
        ] {
            let err = decode(line).unwrap_err();
            assert!(
                !err.error.message.contains("sekrit"),
                "{}",
                err.error.message
            );
        }
    }

    #[test]
    fn replies_decode_to_bodies_and_errors() {
        let line = encode_success(Some(&Value::from(3)), &ExistsInfo { exists: true });
        let (id, info): (_, ExistsInfo) = decode_reply(&line).unwrap();
        assert_eq!(id, Some(Value::from(3)));
        assert!(info.exists);
        let line = encode_error(None, &WireError::new(ErrorCode::Denied, "no"));
        match decode_reply::<Done>(&line) {
            Err(ReplyError::Server(err)) => assert_eq!(err.code, ErrorCode::Denied),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_error_codes_from_newer_daemons_are_tolerated() {
        let line = br#"{"ok":false,"error":{"code":"quota","message":"m"}}"#;
        match decode_reply::<Done>(line) {
            Err(ReplyError::Server(err)) => assert_eq!(err.code, ErrorCode::Unrecognized),
            other => panic!("{other:?}"),
        }
    }
}
