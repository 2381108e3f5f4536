//! Prosody's internal_hashed (and internal_plain) accounts: one Lua data file per user under
//! `<data dir>/<host, %-encoded>/accounts/`, SCRAM keys in hex, the salt as raw text.

use super::lua::{self, Value};
use super::{scram_verifier, Credential, Moved, Reading, ScramHash, SourceError};
use qam_client::Password;
use std::collections::BTreeMap;
use std::path::Path;

/// Prosody's datamanager encoding of a host or user name: every byte that is not an ASCII
/// letter or digit becomes `%xx` (lowercase hex).
fn encode(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02x}")
            }
        })
        .collect()
}

/// The inverse of [`encode`]; `None` when the `%` escapes are broken or not UTF-8.
fn decode(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = std::str::from_utf8(bytes.get(at + 1..at + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex(value: Option<&Value>) -> Option<Vec<u8>> {
    let Some(Value::Str(text)) = value else {
        return None;
    };
    let text = std::str::from_utf8(text).ok()?;
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The credential an account file holds: SCRAM keys, or a legacy plaintext `password`.
fn credential(table: &BTreeMap<String, Value>, hash: ScramHash) -> Result<Credential, String> {
    if let (Some(stored_key), Some(server_key)) =
        (hex(table.get("stored_key")), hex(table.get("server_key")))
    {
        let Some(Value::Str(salt)) = table.get("salt") else {
            return Err("stored_key without a salt".into());
        };
        let iterations = match table.get("iteration_count") {
            Some(Value::Number(n)) if n.fract() == 0.0 && *n >= 1.0 && *n <= 1e9 => *n as u64,
            _ => return Err("stored_key without a whole iteration_count".into()),
        };
        let mechanism = match hash {
            ScramHash::Sha1 => "SCRAM-SHA-1",
            ScramHash::Sha256 => "SCRAM-SHA-256",
        };
        return Ok(Credential::Verifier(scram_verifier(
            mechanism,
            iterations,
            salt,
            &stored_key,
            &server_key,
        )));
    }
    match table.get("password") {
        Some(Value::Str(password)) => Ok(Credential::Plain(Password::from(
            String::from_utf8(password.clone()).map_err(|_| "a password that is not UTF-8")?,
        ))),
        _ => Err("neither SCRAM keys (stored_key, server_key) nor a password".into()),
    }
}

/// Reads every `accounts/*.dat` of `host` under Prosody's data directory `dir`.
pub fn read(dir: &Path, host: &str, hash: ScramHash) -> Result<Reading, SourceError> {
    let accounts = dir.join(encode(host)).join("accounts");
    let entries = std::fs::read_dir(&accounts).map_err(|source| SourceError {
        path: accounts.clone(),
        source,
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| SourceError {
            path: accounts.clone(),
            source,
        })?;
        files.push(entry.path());
    }
    files.sort();
    let mut reading = Reading::default();
    for path in files {
        let place = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(stem) = place.strip_suffix(".dat") else {
            continue;
        };
        let Some(name) = decode(stem) else {
            reading.refuse(&place, "the file name is not a %-encoded user name");
            continue;
        };
        let text = std::fs::read(&path).map_err(|source| SourceError {
            path: path.clone(),
            source,
        })?;
        let outcome = lua::parse_data_file(&text)
            .map_err(|err| err.to_string())
            .and_then(|table| credential(&table, hash));
        match outcome {
            Ok(credential) => reading.accounts.push(Moved {
                place,
                name,
                credential,
                locked: false,
            }),
            Err(reason) => reading.refuse(place, reason),
        }
    }
    Ok(reading)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_prosody_encoding() {
        assert_eq!(encode("example.org"), "example%2eorg");
        assert_eq!(decode("example%2eorg").as_deref(), Some("example.org"));
        assert_eq!(decode("bad%zz"), None);
        assert_eq!(decode("cut%2"), None);
    }

    #[test]
    fn hashed_account_becomes_a_scram_verifier() {
        let file = br#"return {
	["iteration_count"] = 4096;
	["salt"] = "QSXCR+Q6sek8bf92";
	["server_key"] = "0fe09258b3ac852ba502cc62ba903eaacdbf7d31";
	["stored_key"] = "e9d94660c39d65c38fbad91c358f14da0eef2bd6";
};"#;
        let table = lua::parse_data_file(file).expect("parses");
        let Credential::Verifier(verifier) = credential(&table, ScramHash::Sha1).expect("reads")
        else {
            panic!("SCRAM keys give a verifier");
        };
        assert_eq!(
            verifier,
            "{SCRAM-SHA-1}4096,UVNYQ1IrUTZzZWs4YmY5Mg==,6dlGYMOdZcOPutkcNY8U2g7vK9Y=,D+CSWLOshSulAsxiupA+qs2/fTE="
        );
    }

    #[test]
    fn files_without_credentials_are_refused() {
        let table = lua::parse_data_file(b"return { salt = \"x\" };").expect("parses");
        assert!(credential(&table, ScramHash::Sha1).is_err());
        let table = lua::parse_data_file(b"return { stored_key = \"zz\", server_key = \"00\" };")
            .expect("parses");
        assert!(credential(&table, ScramHash::Sha1).is_err());
    }
}
