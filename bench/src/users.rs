//! The benchmark's accounts and request lines: names, the one pre-computed PHC hash every
//! imported user shares (no argon2 per user), and loading through qamd's `import` op.

use base64ct::{Base64, Encoding};
use hmac::{Hmac, KeyInit, Mac};
use qam_client::wire::{ExportRecord, ImportInfo, LinkInfo, MAX_REQUEST_LINE};
use qam_client::{AsyncClient, ClientError, ClientOptions, Request};
use sha1::{Digest, Sha1};
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// The password of every imported user.
pub const PASSWORD: &str = "bench-password-1";
/// The password change_password alternates with.
pub const OTHER_PASSWORD: &str = "bench-password-2";

/// Bytes of records per import request, safely under the 64 KiB request line.
const BATCH_BYTES: usize = MAX_REQUEST_LINE - 4096;

/// The `index`-th bulk user.
pub fn user(index: u64) -> String {
    format!("u{index:07}")
}

/// A spread-out index below `count` for a connection's `seq`-th request (splitmix64).
pub fn pick(conn: usize, seq: u64, count: u64) -> u64 {
    let mut z = (conn as u64) << 40 ^ seq ^ 0x9E37_79B9_7F4A_7C15;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) % count.max(1)
}

/// `{"op":"<op>","<field>":"<value>",...}` and a newline. Values go in as they are: the
/// benchmark's names, tokens and passwords need no JSON escaping.
pub fn request_line(out: &mut Vec<u8>, op: &str, fields: &[(&str, &str)]) {
    let _ = write!(out, r#"{{"op":"{op}""#);
    for (field, value) in fields {
        let _ = write!(out, r#","{field}":"{value}""#);
    }
    out.extend_from_slice(b"}\n");
}

/// `{"op":"<op>","user":"<name>"}` and a newline.
pub fn user_line(out: &mut Vec<u8>, op: &str, name: &str) {
    request_line(out, op, &[("user", name)]);
}

/// A verify line with `password` (benchmark passwords are not secrets).
pub fn verify_line(out: &mut Vec<u8>, name: &str, password: &str) {
    request_line(out, "verify", &[("user", name), ("password", password)]);
}

/// A registration of `name` with [`PASSWORD`].
pub fn register_line(out: &mut Vec<u8>, name: &str) {
    request_line(out, "register", &[("user", name), ("password", PASSWORD)]);
}

/// A redemption of invite `token` for a new account `name`.
pub fn register_invite_line(out: &mut Vec<u8>, token: &str, name: &str) {
    let fields = [("token", token), ("user", name), ("password", PASSWORD)];
    request_line(out, "register_invite", &fields);
}

/// A password reset with `token`, to [`PASSWORD`] (the account keeps its password).
pub fn reset_password_line(out: &mut Vec<u8>, token: &str) {
    request_line(
        out,
        "reset_password",
        &[("token", token), ("password", PASSWORD)],
    );
}

/// An admin's `set_password` of `name` to [`PASSWORD`].
pub fn set_password_line(out: &mut Vec<u8>, name: &str) {
    request_line(
        out,
        "set_password",
        &[("user", name), ("password", PASSWORD)],
    );
}

/// Prosody's SCRAM iteration count, which its stored verifiers carry.
const PROSODY_ITERATIONS: u32 = 4096;

/// A SCRAM-SHA-1 verifier of [`PASSWORD`] as Prosody stores it, in the form `qamctl import
/// --from prosody` hands to qamd: `{SCRAM-SHA-1}iterations,salt,stored_key,server_key`.
pub fn scram_sha1_verifier() -> Option<String> {
    let salt = b"qam-bench-salt";
    let mut salted = [0u8; 20];
    pbkdf2::pbkdf2::<Hmac<Sha1>>(PASSWORD.as_bytes(), salt, PROSODY_ITERATIONS, &mut salted)
        .ok()?;
    let keyed = |label: &[u8]| -> Option<Vec<u8>> {
        let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(&salted).ok()?;
        mac.update(label);
        Some(mac.finalize().into_bytes().to_vec())
    };
    let stored_key = Sha1::digest(keyed(b"Client Key")?);
    let server_key = keyed(b"Server Key")?;
    Some(format!(
        "{{SCRAM-SHA-1}}{PROSODY_ITERATIONS},{},{},{}",
        Base64::encode_string(salt),
        Base64::encode_string(&stored_key),
        Base64::encode_string(&server_key)
    ))
}

/// Alternates between the two passwords so every change proves the current one; `changed`
/// says whether the user's current password is [`OTHER_PASSWORD`] (flipped here).
pub fn change_password_line(out: &mut Vec<u8>, name: &str, changed: &AtomicBool) {
    let (old, new) = if changed.fetch_xor(true, Ordering::Relaxed) {
        (OTHER_PASSWORD, PASSWORD)
    } else {
        (PASSWORD, OTHER_PASSWORD)
    };
    let fields = [("user", name), ("old_password", old), ("new_password", new)];
    request_line(out, "change_password", &fields);
}

/// Sends each of `requests` (`invite_create`, `reset_create`) over `connections` parallel
/// connections; the tokens of the links made, in no particular order.
pub async fn link_tokens(
    socket: &Path,
    requests: Vec<Request>,
    connections: usize,
) -> Result<Vec<String>, ClientError> {
    let options = ClientOptions::new(socket).with_timeout(std::time::Duration::from_secs(120));
    let chunk = requests.len().div_ceil(connections.max(1)).max(1);
    let mut tasks = Vec::new();
    for part in requests.chunks(chunk) {
        let part = part.to_vec();
        let options = options.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = AsyncClient::connect(&options).await?;
            let mut tokens = Vec::with_capacity(part.len());
            for request in part {
                let link: LinkInfo = client.call(&request).await?;
                tokens.push(link.token.expose().to_owned());
            }
            Ok::<Vec<String>, ClientError>(tokens)
        }));
    }
    let mut tokens = Vec::new();
    for task in tasks {
        tokens.extend(task.await.map_err(|_| ClientError::Closed)??);
    }
    Ok(tokens)
}

/// Imports `names` with the shared `hash` over `connections` parallel connections, in
/// batches that fit one request line; returns how many records were written. `origin` names
/// the store a legacy verifier was moved in from (`None` for argon2id hashes).
pub async fn import(
    socket: &Path,
    names: Vec<String>,
    hash: &str,
    origin: Option<&str>,
    connections: usize,
) -> Result<u64, ClientError> {
    let options = ClientOptions::new(socket).with_timeout(std::time::Duration::from_secs(120));
    let chunk = names.len().div_ceil(connections.max(1)).max(1);
    let mut tasks = Vec::new();
    for part in names.chunks(chunk) {
        let part = part.to_vec();
        let options = options.clone();
        let hash = hash.to_owned();
        let origin = origin.map(str::to_owned);
        tasks.push(tokio::spawn(async move {
            let mut client = AsyncClient::connect(&options).await?;
            let mut written = 0;
            for batch in batches(part, &hash, origin.as_deref()) {
                let request = Request::Import {
                    records: batch,
                    replace: false,
                    dry_run: false,
                    allow_weak: false,
                    system_users: false,
                };
                written += client.call::<ImportInfo>(&request).await?.imported;
            }
            Ok::<u64, ClientError>(written)
        }));
    }
    let mut written = 0;
    for task in tasks {
        written += task.await.map_err(|_| ClientError::Closed)??;
    }
    Ok(written)
}

/// Groups records so each batch's JSON stays under [`BATCH_BYTES`].
fn batches(names: Vec<String>, hash: &str, origin: Option<&str>) -> Vec<Vec<ExportRecord>> {
    let mut batches = Vec::new();
    let mut batch = Vec::new();
    let mut bytes = 0;
    for name in names {
        let record = ExportRecord {
            name,
            hash: hash.to_owned(),
            created: "2026-01-01".into(),
            locked: false,
            uid: None,
            origin: origin.map(str::to_owned),
            password: None,
        };
        let size = serde_json::to_vec(&record).map_or(BATCH_BYTES, |json| json.len() + 1);
        if bytes + size > BATCH_BYTES && !batch.is_empty() {
            batches.push(std::mem::take(&mut batch));
            bytes = 0;
        }
        bytes += size;
        batch.push(record);
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_batches_fit_one_request_line() {
        let hash = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$\
                    iWh06vD8Fy27wf9npn6FXWiCX4K6pW6Ue1Bnzz07Z8A";
        let names: Vec<String> = (0..5000).map(user).collect();
        let batches = batches(names, hash, None);
        assert!(batches.len() > 1);
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 5000);
        for batch in batches {
            let line = qam_client::wire::encode_request(
                Some(u64::MAX),
                &Request::Import {
                    records: batch,
                    replace: false,
                    dry_run: false,
                    allow_weak: false,
                    system_users: false,
                },
            );
            assert!(line.len() <= MAX_REQUEST_LINE, "{}", line.len());
        }
    }

    #[test]
    fn request_lines_decode_as_the_requests_they_name() {
        let mut out = Vec::new();
        register_invite_line(&mut out, "tok", "i1");
        let changed = AtomicBool::new(false);
        change_password_line(&mut out, "u1", &changed);
        let lines: Vec<&[u8]> = out.split(|byte| *byte == b'\n').collect();
        assert_eq!(lines.len(), 3, "two lines, each ended by a newline");
        let decode = |line: &[u8]| qam_client::wire::decode_request(line).map(|(_, r)| r);
        assert_eq!(
            decode(lines[0]).unwrap(),
            Request::RegisterInvite {
                token: "tok".into(),
                user: "i1".into(),
                password: PASSWORD.into(),
            }
        );
        assert_eq!(
            decode(lines[1]).unwrap(),
            Request::ChangePassword {
                user: "u1".into(),
                old_password: PASSWORD.into(),
                new_password: OTHER_PASSWORD.into(),
            }
        );
    }

    #[test]
    fn picks_stay_in_range_and_spread() {
        let picks: std::collections::HashSet<u64> =
            (0..1000).map(|seq| pick(3, seq, 100)).collect();
        assert!(picks.iter().all(|&p| p < 100));
        assert!(picks.len() > 80, "{}", picks.len());
    }
}
