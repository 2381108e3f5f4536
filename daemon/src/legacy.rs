//! Password verifiers moved in from other stores (SCRAM from XMPP servers, crypt(3) strings from
//! shadow, Dovecot and htpasswd): parsed with bounded costs, checked until the first login.

use base64ct::{Base64, Encoding};
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Sha256, Sha512};
use std::ffi::{CStr, CString};
use std::fmt;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Highest SCRAM iteration count accepted (Prosody and ejabberd default to 4096).
pub const MAX_SCRAM_ITERATIONS: u32 = 50_000;
/// Highest `rounds=` of a SHA-crypt string accepted (the default is 5000).
pub const MAX_SHA_CRYPT_ROUNDS: u32 = 50_000;
/// Highest bcrypt cost accepted (htpasswd and Dovecot default to 5, PHP to 10).
pub const MAX_BCRYPT_COST: u32 = 12;
/// Most memory a yescrypt string may ask for (Debian's default cost asks for 16 MiB).
pub const MAX_YESCRYPT_BYTES: u64 = 64 * 1024 * 1024;

/// A family of imported verifiers, by the name sysadmins know it under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    ScramSha1,
    ScramSha256,
    ScramSha512,
    Yescrypt,
    Sha512Crypt,
    Sha256Crypt,
    Bcrypt,
    Md5Crypt,
}

impl Scheme {
    /// The name shown to admins and used in `status`, e.g. `SCRAM-SHA-1`, `SHA512-CRYPT`.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::ScramSha1 => "SCRAM-SHA-1",
            Scheme::ScramSha256 => "SCRAM-SHA-256",
            Scheme::ScramSha512 => "SCRAM-SHA-512",
            Scheme::Yescrypt => "YESCRYPT",
            Scheme::Sha512Crypt => "SHA512-CRYPT",
            Scheme::Sha256Crypt => "SHA256-CRYPT",
            Scheme::Bcrypt => "BLF-CRYPT",
            Scheme::Md5Crypt => "MD5-CRYPT",
        }
    }

    /// Schemes too cheap to trust: imported only when the admin allows weak schemes.
    pub fn is_weak(self) -> bool {
        matches!(self, Scheme::Md5Crypt)
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The kind of store a legacy verifier was moved in from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    Prosody,
    Ejabberd,
    Dovecot,
    Shadow,
    Htpasswd,
}

impl Origin {
    /// Every origin `import` accepts.
    const ALL: [Origin; 5] = [
        Origin::Prosody,
        Origin::Ejabberd,
        Origin::Dovecot,
        Origin::Shadow,
        Origin::Htpasswd,
    ];

    /// The name records and `qamctl import --from` use.
    pub fn name(self) -> &'static str {
        match self {
            Origin::Prosody => "prosody",
            Origin::Ejabberd => "ejabberd",
            Origin::Dovecot => "dovecot",
            Origin::Shadow => "shadow",
            Origin::Htpasswd => "htpasswd",
        }
    }

    /// The origin named `name`, if qam knows it.
    pub fn named(name: &str) -> Option<Origin> {
        Origin::ALL.into_iter().find(|origin| origin.name() == name)
    }
}

/// What an account still on a legacy verifier is on: where it came from and the scheme, as
/// `status` counts and `list` shows them (`prosody SCRAM-SHA-1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LegacyKind {
    /// The store it was moved in from.
    pub origin: Origin,
    /// The verifier's scheme.
    pub scheme: Scheme,
}

impl LegacyKind {
    /// The kind of a stored record's verifier: `None` for argon2id or an unknown origin.
    pub fn of(origin: Option<&str>, verifier: &str) -> Option<LegacyKind> {
        let origin = Origin::named(origin?)?;
        let scheme = Legacy::parse(verifier).ok()?.scheme();
        Some(LegacyKind { origin, scheme })
    }
}

impl fmt::Display for LegacyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.origin.name(), self.scheme)
    }
}

/// Why a verifier string cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LegacyError {
    #[error("not a verifier qam knows (SCRAM, yescrypt, SHA-crypt, bcrypt, MD5-crypt)")]
    UnknownScheme,
    #[error("malformed {scheme} verifier: {why}")]
    Malformed { scheme: Scheme, why: &'static str },
    #[error("{scheme} cost {cost} is above qam's limit {limit}")]
    TooCostly {
        scheme: Scheme,
        cost: u64,
        limit: u64,
    },
}

/// A parsed, cost-checked verifier ready to check passwords against.
#[derive(Clone, PartialEq, Eq)]
pub enum Legacy {
    /// RFC 5802 credentials: what Prosody's internal_hashed and ejabberd's SCRAM keep.
    Scram {
        scheme: Scheme,
        iterations: u32,
        salt: Vec<u8>,
        stored_key: Vec<u8>,
        server_key: Vec<u8>,
    },
    /// A crypt(3) string, checked by the system's libcrypt, which wrote it.
    Crypt { scheme: Scheme, setting: String },
}

impl fmt::Debug for Legacy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A verifier is as sensitive as a hash: only its scheme is printed.
        write!(f, "Legacy({})", self.scheme())
    }
}

impl Legacy {
    /// Parses a verifier string: `{SCRAM-SHA-1}i,salt,stored,server` (Dovecot's SCRAM form,
    /// base64 fields) or a crypt string (`$y$`, `$6$`, `$5$`, `$2y$`/`$2b$`/`$2a$`, `$1$`).
    pub fn parse(verifier: &str) -> Result<Legacy, LegacyError> {
        if let Some(rest) = verifier.strip_prefix('{') {
            let (name, fields) = rest.split_once('}').ok_or(LegacyError::UnknownScheme)?;
            let scheme = match name {
                "SCRAM-SHA-1" => Scheme::ScramSha1,
                "SCRAM-SHA-256" => Scheme::ScramSha256,
                "SCRAM-SHA-512" => Scheme::ScramSha512,
                _ => return Err(LegacyError::UnknownScheme),
            };
            return parse_scram(scheme, fields);
        }
        parse_crypt(verifier)
    }

    /// Whether `verifier` looks like a legacy verifier at all (as opposed to an argon2 PHC).
    pub fn is_legacy(verifier: &str) -> bool {
        !verifier.starts_with("$argon2")
    }

    /// The scheme this verifier belongs to.
    pub fn scheme(&self) -> Scheme {
        match self {
            Legacy::Scram { scheme, .. } | Legacy::Crypt { scheme, .. } => *scheme,
        }
    }

    /// Whether `password` is the one this verifier was made from (constant-time compares).
    pub fn matches(&self, password: &[u8]) -> bool {
        match self {
            Legacy::Scram {
                scheme,
                iterations,
                salt,
                stored_key,
                server_key,
            } => scram_matches(*scheme, *iterations, salt, stored_key, server_key, password),
            Legacy::Crypt { setting, .. } => crypt_matches(setting, password),
        }
    }
}

fn parse_scram(scheme: Scheme, fields: &str) -> Result<Legacy, LegacyError> {
    let malformed = |why| LegacyError::Malformed { scheme, why };
    let parts: Vec<&str> = fields.split(',').collect();
    let [iterations, salt, stored_key, server_key] = parts[..] else {
        return Err(malformed("expected iterations,salt,stored_key,server_key"));
    };
    let iterations: u32 = iterations
        .parse()
        .map_err(|_| malformed("iterations is not a number"))?;
    if iterations == 0 {
        return Err(malformed("iterations is 0"));
    }
    if iterations > MAX_SCRAM_ITERATIONS {
        return Err(LegacyError::TooCostly {
            scheme,
            cost: iterations.into(),
            limit: MAX_SCRAM_ITERATIONS.into(),
        });
    }
    let decode = |field: &str, why| Base64::decode_vec(field).map_err(|_| malformed(why));
    let salt = decode(salt, "salt is not base64")?;
    let stored_key = decode(stored_key, "stored key is not base64")?;
    let server_key = decode(server_key, "server key is not base64")?;
    let key_len = match scheme {
        Scheme::ScramSha1 => 20,
        Scheme::ScramSha256 => 32,
        _ => 64,
    };
    if salt.is_empty() || salt.len() > 256 {
        return Err(malformed("salt must be 1 to 256 bytes"));
    }
    if stored_key.len() != key_len || server_key.len() != key_len {
        return Err(malformed("key length does not match the hash"));
    }
    Ok(Legacy::Scram {
        scheme,
        iterations,
        salt,
        stored_key,
        server_key,
    })
}

/// The SCRAM keys of `password`, as `(StoredKey, ServerKey)`.
fn scram_keys<H>(password: &[u8], salt: &[u8], iterations: u32) -> (Vec<u8>, Vec<u8>)
where
    H: hmac::EagerHash + sha2::Digest,
    Hmac<H>: KeyInit + Mac + Clone,
{
    let mut salted = Zeroizing::new(vec![0u8; <H as sha2::Digest>::output_size()]);
    if pbkdf2::pbkdf2::<Hmac<H>>(password, salt, iterations, &mut salted).is_err() {
        return (Vec::new(), Vec::new());
    }
    let keyed = |label: &[u8]| -> Vec<u8> {
        match <Hmac<H> as KeyInit>::new_from_slice(&salted) {
            Ok(mut mac) => {
                mac.update(label);
                mac.finalize().into_bytes().to_vec()
            }
            Err(_) => Vec::new(),
        }
    };
    let client_key = Zeroizing::new(keyed(b"Client Key"));
    let stored_key = H::digest(&*client_key).to_vec();
    (stored_key, keyed(b"Server Key"))
}

fn scram_matches(
    scheme: Scheme,
    iterations: u32,
    salt: &[u8],
    stored_key: &[u8],
    server_key: &[u8],
    password: &[u8],
) -> bool {
    let Some(prepared) = saslprep(password) else {
        return false;
    };
    let (stored, server) = match scheme {
        Scheme::ScramSha1 => scram_keys::<Sha1>(&prepared, salt, iterations),
        Scheme::ScramSha256 => scram_keys::<Sha256>(&prepared, salt, iterations),
        Scheme::ScramSha512 => scram_keys::<Sha512>(&prepared, salt, iterations),
        _ => return false,
    };
    let stored_ok = stored.ct_eq(stored_key);
    let server_ok = server.ct_eq(server_key);
    (stored_ok & server_ok).into()
}

/// SASLprep (RFC 4013) of a UTF-8 password, as Prosody applies before deriving SCRAM keys;
/// `None` when the password is not valid UTF-8 or SASLprep prohibits it.
fn saslprep(password: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let text = std::str::from_utf8(password).ok()?;
    let prepared = stringprep::saslprep(text).ok()?;
    Some(Zeroizing::new(prepared.as_bytes().to_vec()))
}

/// crypt(3)'s base-64 alphabet, used by yescrypt's parameter string.
const CRYPT64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn crypt64_value(symbol: u8) -> Option<u64> {
    CRYPT64
        .iter()
        .position(|&c| c == symbol)
        .map(|index| index as u64)
}

/// Checks the cost fields of a crypt string split at `$`.
type CostCheck = fn(&[&str]) -> Result<(), LegacyError>;

fn parse_crypt(setting: &str) -> Result<Legacy, LegacyError> {
    let fields: Vec<&str> = setting.split('$').collect();
    // A crypt string starts with `$`, so the first field is empty.
    let (scheme, cost_check): (Scheme, CostCheck) = match fields.get(1).copied() {
        Some("y") => (Scheme::Yescrypt, check_yescrypt),
        Some("6") => (Scheme::Sha512Crypt, |f| {
            check_sha_crypt(Scheme::Sha512Crypt, f)
        }),
        Some("5") => (Scheme::Sha256Crypt, |f| {
            check_sha_crypt(Scheme::Sha256Crypt, f)
        }),
        Some("2y" | "2b" | "2a") => (Scheme::Bcrypt, check_bcrypt),
        Some("1") => (Scheme::Md5Crypt, |_| Ok(())),
        _ => return Err(LegacyError::UnknownScheme),
    };
    let malformed = |why| LegacyError::Malformed { scheme, why };
    if !fields[0].is_empty() {
        return Err(malformed("a crypt string starts with `$`"));
    }
    if setting.len() > 512 || !setting.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(malformed("a crypt string is short printable ASCII"));
    }
    let rounds_field = usize::from(fields.get(2).is_some_and(|f| f.starts_with("rounds=")));
    let expected_fields = match scheme {
        Scheme::Yescrypt => 5,
        Scheme::Sha512Crypt | Scheme::Sha256Crypt => 4 + rounds_field,
        _ => 4,
    };
    let hash_ok = fields.last().is_some_and(|hash| match scheme {
        Scheme::Bcrypt => hash.len() == 53,
        _ => !hash.is_empty(),
    });
    if fields.len() != expected_fields || !hash_ok {
        return Err(malformed("wrong number of `$` fields or no hash"));
    }
    cost_check(&fields)?;
    Ok(Legacy::Crypt {
        scheme,
        setting: setting.to_owned(),
    })
}

fn check_sha_crypt(scheme: Scheme, fields: &[&str]) -> Result<(), LegacyError> {
    let rounds = match fields.get(2).and_then(|f| f.strip_prefix("rounds=")) {
        Some(rounds) => rounds.parse::<u32>().map_err(|_| LegacyError::Malformed {
            scheme,
            why: "rounds= is not a number",
        })?,
        None => 5000,
    };
    if rounds > MAX_SHA_CRYPT_ROUNDS {
        return Err(LegacyError::TooCostly {
            scheme,
            cost: rounds.into(),
            limit: MAX_SHA_CRYPT_ROUNDS.into(),
        });
    }
    Ok(())
}

fn check_bcrypt(fields: &[&str]) -> Result<(), LegacyError> {
    let scheme = Scheme::Bcrypt;
    let cost: u32 = fields
        .get(2)
        .and_then(|f| f.parse().ok())
        .ok_or(LegacyError::Malformed {
            scheme,
            why: "the cost is not a number",
        })?;
    if cost > MAX_BCRYPT_COST {
        return Err(LegacyError::TooCostly {
            scheme,
            cost: cost.into(),
            limit: MAX_BCRYPT_COST.into(),
        });
    }
    Ok(())
}

/// yescrypt's parameters: flavor, log2(N) and r as crypt64 digits; extra parameters
/// (p, t, g) are not made by shadow or Dovecot and are refused.
fn check_yescrypt(fields: &[&str]) -> Result<(), LegacyError> {
    let scheme = Scheme::Yescrypt;
    let malformed = |why| LegacyError::Malformed { scheme, why };
    let params = fields
        .get(2)
        .map(|f| f.as_bytes())
        .ok_or(malformed("no parameters"))?;
    let [flavor, n_log2, r] = params else {
        return Err(malformed("parameters other than N and r"));
    };
    if *flavor != b'j' {
        return Err(malformed("only the default flavor `j` is accepted"));
    }
    let n_log2 = crypt64_value(*n_log2).ok_or(malformed("bad N"))? + 1;
    let r = crypt64_value(*r).ok_or(malformed("bad r"))? + 1;
    let bytes = 128u64
        .saturating_mul(1u64 << n_log2.min(63))
        .saturating_mul(r);
    if bytes > MAX_YESCRYPT_BYTES {
        return Err(LegacyError::TooCostly {
            scheme,
            cost: bytes,
            limit: MAX_YESCRYPT_BYTES,
        });
    }
    Ok(())
}

#[link(name = "crypt")]
extern "C" {
    /// libxcrypt's reentrant crypt: writes into `data` (of `size` bytes) and returns a pointer
    /// into it, or NULL on failure (`crypt_rn` never returns a "*0" failure token).
    fn crypt_rn(
        phrase: *const libc_char,
        setting: *const libc_char,
        data: *mut u8,
        size: i32,
    ) -> *const libc_char;
}

#[allow(non_camel_case_types)]
type libc_char = std::ffi::c_char;

/// Size of libxcrypt's `struct crypt_data` (CRYPT_DATA_RESERVED_SIZE + internals, 32 KiB).
const CRYPT_DATA_SIZE: usize = 32768;

fn crypt_matches(setting: &str, password: &[u8]) -> bool {
    let Ok(c_setting) = CString::new(setting) else {
        return false;
    };
    if password.contains(&0) {
        return false;
    }
    let mut phrase = Zeroizing::new(Vec::with_capacity(password.len() + 1));
    phrase.extend_from_slice(password);
    phrase.push(0);
    let mut data = Zeroizing::new(vec![0u8; CRYPT_DATA_SIZE]);
    // SAFETY: `phrase` and `c_setting` are NUL-terminated and live across the call; `data` is a writable
    // buffer of CRYPT_DATA_SIZE bytes, the size libxcrypt's crypt_data has; the result points
    // into `data`, is NUL-terminated, and is copied out before `data` is dropped.
    let computed = unsafe {
        let out = crypt_rn(
            phrase.as_ptr().cast(),
            c_setting.as_ptr(),
            data.as_mut_ptr(),
            CRYPT_DATA_SIZE as i32,
        );
        if out.is_null() {
            return false;
        }
        Zeroizing::new(CStr::from_ptr(out).to_bytes().to_vec())
    };
    computed.ct_eq(setting.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SCRAM-SHA-1 credentials of "pencil", salt "QSXCR+Q6sek8bf92", 4096 iterations
    /// (RFC 5802's example user).
    const RFC5802: &str = "{SCRAM-SHA-1}4096,QSXCR+Q6sek8bf92,6dlGYMOdZcOPutkcNY8U2g7vK9Y=,D+CSWLOshSulAsxiupA+qs2/fTE=";

    #[test]
    fn scram_sha1_matches_the_rfc_example() {
        let legacy = Legacy::parse(RFC5802).expect("parses");
        assert_eq!(legacy.scheme(), Scheme::ScramSha1);
        assert!(legacy.matches(b"pencil"));
        assert!(!legacy.matches(b"pencil2"));
        assert!(!legacy.matches(b""));
    }

    #[test]
    fn crypt_strings_made_by_libcrypt_verify() {
        let cases = [
            ("$6$saltsalt$", Scheme::Sha512Crypt),
            ("$5$saltsalt$", Scheme::Sha256Crypt),
            ("$2b$05$abcdefghijklmnopqrstuu", Scheme::Bcrypt),
            ("$y$j9T$saltsaltsaltsalt$", Scheme::Yescrypt),
            ("$1$saltsalt$", Scheme::Md5Crypt),
        ];
        for (prefix, scheme) in cases {
            let made = crypt_string(b"correct horse", prefix);
            let legacy = Legacy::parse(&made).expect("parses");
            assert_eq!(legacy.scheme(), scheme, "{made}");
            assert!(legacy.matches(b"correct horse"), "{made}");
            assert!(!legacy.matches(b"correct horsf"), "{made}");
        }
    }

    fn crypt_string(password: &[u8], setting: &str) -> String {
        let phrase = CString::new(password).expect("no NUL");
        let setting = CString::new(setting).expect("no NUL");
        let mut data = vec![0u8; CRYPT_DATA_SIZE];
        // SAFETY: as in crypt_matches.
        unsafe {
            let out = crypt_rn(
                phrase.as_ptr(),
                setting.as_ptr(),
                data.as_mut_ptr(),
                CRYPT_DATA_SIZE as i32,
            );
            assert!(!out.is_null(), "libcrypt refused the setting");
            CStr::from_ptr(out).to_string_lossy().into_owned()
        }
    }

    #[test]
    fn costly_verifiers_are_refused() {
        let too_many = "{SCRAM-SHA-1}4294967295,QSXCR+Q6sek8bf92,6dlGYMOdZcOPutkcNY8U2g7vK9Y=,D+CSWLOshSulAsxiupA+qs2/fTE=";
        assert!(matches!(
            Legacy::parse(too_many),
            Err(LegacyError::Malformed { .. } | LegacyError::TooCostly { .. })
        ));
        assert!(matches!(
            Legacy::parse("$6$rounds=999999999$salt$hash"),
            Err(LegacyError::TooCostly { .. })
        ));
        assert!(matches!(
            Legacy::parse("$2b$31$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz12345"),
            Err(LegacyError::TooCostly { .. })
        ));
        assert!(matches!(
            Legacy::parse("$y$jzT$salt$hash"),
            Err(LegacyError::TooCostly { .. })
        ));
    }

    #[test]
    fn malformed_verifiers_are_refused() {
        for bad in [
            "",
            "plain",
            "{SHA}abc",
            "{SCRAM-SHA-1}4096,only-two",
            "{SCRAM-SHA-256}4096,QSXCR+Q6sek8bf92,6dlGYMOdZcOPutkcNY8U2g7vK9Y=,D+CSWLOshSulAsxiupA+qs2/fTE=",
            "$y$j9T",
            "$y$j9TX$salt$hash",
            "$7$abc",
            "$6$salt\n$hash",
        ] {
            assert!(Legacy::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn debug_shows_only_the_scheme() {
        let legacy = Legacy::parse(RFC5802).expect("parses");
        assert_eq!(format!("{legacy:?}"), "Legacy(SCRAM-SHA-1)");
    }
}
