//! `qamctl import --from SOURCE`: reads another server's password store into qam records whose
//! verifiers qamd checks until each user's first login replaces them with argon2id.

mod dovecot;
pub mod ejabberd;
mod htpasswd;
pub mod lua;
mod prosody;
mod shadow;

use qam_client::Password;
use std::fmt;
use std::path::{Path, PathBuf};

pub use shadow::{LockedEntries, UidRange};

/// One account read from a source, not yet checked by qamd.
#[derive(Debug)]
pub struct Moved {
    /// Where in the source it came from (`line 12`, `alice.dat`), for the admin's error list.
    pub place: String,
    /// The name as the source spells it; qamd normalizes and checks it.
    pub name: String,
    /// What checks the password until the first login: sent to `import` as the record's
    /// verifier, or as a plaintext password qamd hashes at once.
    pub credential: Credential,
    /// The source had the account disabled (shadow's `!`); it stays locked in qam.
    pub locked: bool,
}

/// What a source keeps to check the user's password.
pub enum Credential {
    /// A verifier string qamd's legacy module reads (`{SCRAM-SHA-1}…`, `$6$…`, `$argon2id$…`).
    Verifier(String),
    /// A stored plaintext password (Prosody's internal_plain, ejabberd's plain format,
    /// Dovecot's `{PLAIN}`): hashed with argon2id by qamd at import, never stored as is.
    Plain(Password),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Verifiers are as sensitive as hashes, plain passwords more: neither is printed.
        f.write_str(match self {
            Credential::Verifier(_) => "Verifier(..)",
            Credential::Plain(_) => "Plain(..)",
        })
    }
}

/// A part of the source that cannot become an account, with where it is and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// Where in the source the entry is (`line 12`, `alice.dat`), so the admin can find it.
    pub place: String,
    /// Why it cannot become an account, shown beside `place` in the report.
    pub reason: String,
}

/// Everything read from one source: accounts and the entries that are not.
#[derive(Debug, Default)]
pub struct Reading {
    /// The accounts read, in source order, to be sent to qamd's `import`.
    pub accounts: Vec<Moved>,
    /// Entries that could not be read, reported as refused without asking qamd.
    pub unreadable: Vec<Unreadable>,
}

impl Reading {
    fn refuse(&mut self, place: impl Into<String>, reason: impl Into<String>) {
        self.unreadable.push(Unreadable {
            place: place.into(),
            reason: reason.into(),
        });
    }
}

/// The hash function Prosody's `password_hash` option chose (not stored per account).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScramHash {
    #[value(name = "sha-1")]
    Sha1,
    #[value(name = "sha-256")]
    Sha256,
}

/// A store to move accounts in from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Prosody's data directory and the virtual host whose accounts to read.
    Prosody {
        dir: PathBuf,
        host: String,
        hash: ScramHash,
    },
    /// A XEP-0227 file from `ejabberdctl export_piefxis`.
    Ejabberd { file: PathBuf },
    /// A Dovecot passwd-file.
    Dovecot { file: PathBuf },
    /// A shadow file, its passwd file for the uids, and which uids are people.
    Shadow {
        file: PathBuf,
        passwd: PathBuf,
        uids: UidRange,
        locked: LockedEntries,
    },
    /// An Apache htpasswd file (bcrypt entries).
    Htpasswd { file: PathBuf },
}

impl Source {
    /// The source's kind as records name their origin (`prosody`, `shadow`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Prosody { .. } => "prosody",
            Source::Ejabberd { .. } => "ejabberd",
            Source::Dovecot { .. } => "dovecot",
            Source::Shadow { .. } => "shadow",
            Source::Htpasswd { .. } => "htpasswd",
        }
    }
}

/// Why a source could not be read at all.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct SourceError {
    /// The file or directory that could not be read, named in the message.
    pub path: PathBuf,
    /// What the system said, also the error's `source()`.
    pub source: std::io::Error,
}

fn read_file(path: &Path) -> Result<Vec<u8>, SourceError> {
    std::fs::read(path).map_err(|source| SourceError {
        path: path.to_owned(),
        source,
    })
}

/// Reads every account of `source`.
pub fn read(source: &Source) -> Result<Reading, SourceError> {
    match source {
        Source::Prosody { dir, host, hash } => prosody::read(dir, host, *hash),
        Source::Ejabberd { file } => ejabberd::read_export(file),
        Source::Dovecot { file } => Ok(dovecot::read(&read_file(file)?)),
        Source::Shadow {
            file,
            passwd,
            uids,
            locked,
        } => Ok(shadow::read(
            &read_file(file)?,
            &read_file(passwd)?,
            *uids,
            *locked,
        )),
        Source::Htpasswd { file } => Ok(htpasswd::read(&read_file(file)?)),
    }
}

/// The lines of a text source with their 1-based numbers, blank lines and `#` comments skipped.
fn text_lines(text: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    text.split(|&b| b == b'\n')
        .enumerate()
        .map(|(index, line)| (index + 1, line.strip_suffix(b"\r").unwrap_or(line)))
        .filter(|(_, line)| {
            let trimmed = line.trim_ascii();
            !trimmed.is_empty() && !trimmed.starts_with(b"#")
        })
}

/// Reads `user:secret[:…]` lines (Dovecot's passwd-file, htpasswd): each secret becomes a
/// credential through `credential`, or a refusal with its line number.
fn read_user_lines(
    file: &[u8],
    credential: impl Fn(&str) -> Result<Credential, String>,
) -> Reading {
    let mut reading = Reading::default();
    for (number, line) in text_lines(file) {
        let place = format!("line {number}");
        let entry = text(line).map_err(str::to_owned).and_then(|line| {
            let mut fields = line.splitn(3, ':');
            match (fields.next(), fields.next()) {
                (Some(name), Some(secret)) => Ok((name, credential(secret)?)),
                _ => Err("expected user:password[:…]".to_owned()),
            }
        });
        match entry {
            Ok((name, credential)) => reading.accounts.push(Moved {
                place,
                name: name.to_owned(),
                credential,
                locked: false,
            }),
            Err(reason) => reading.refuse(place, reason),
        }
    }
    reading
}

/// A source's field as UTF-8 text, or the reason it is not.
fn text(field: &[u8]) -> Result<&str, &'static str> {
    std::str::from_utf8(field).map_err(|_| "not UTF-8")
}

/// Base64 (standard, padded) of raw bytes: the form qam's SCRAM verifier keeps.
fn base64(bytes: &[u8]) -> String {
    use base64ct::{Base64, Encoding};
    Base64::encode_string(bytes)
}

/// qam's SCRAM verifier string (Dovecot's form): `{SCRAM-SHA-1}iter,salt,stored,server`.
fn scram_verifier(
    mechanism: &str,
    iterations: u64,
    salt: &[u8],
    stored_key: &[u8],
    server_key: &[u8],
) -> String {
    format!(
        "{{{mechanism}}}{iterations},{},{},{}",
        base64(salt),
        base64(stored_key),
        base64(server_key)
    )
}
