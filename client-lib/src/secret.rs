//! `Password`: the one type a password travels in, from the wire to argon2 and back out.
//! It wipes its memory on drop and never shows its contents in `Debug` output.

use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::Zeroizing;

/// A password held in a zeroizing buffer; `Debug` prints `Password(<redacted>)`.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Password(Zeroizing<String>);

/// An adapter's opaque key for its client (an address, a session id) in `verify`: kept like a
/// password, since it may name a person's address, and never shown in `Debug`.
pub type ClientKey = Password;

impl Password {
    /// Wraps an owned string; the string's buffer is wiped when the `Password` drops.
    pub fn new(secret: String) -> Self {
        Password(Zeroizing::new(secret))
    }

    /// The password itself, for hashing or sending; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True for the empty password.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Password {
    fn from(secret: String) -> Self {
        Password::new(secret)
    }
}

impl From<&str> for Password {
    fn from(secret: &str) -> Self {
        Password::new(secret.to_owned())
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let password = Password::from("hunter2-secret");
        let shown = format!("{password:?} {:?}", Some(&password));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn serializes_as_a_plain_string() {
        let json = serde_json::to_string(&Password::from("a\"b")).unwrap();
        assert_eq!(json, r#""a\"b""#);
        let back: Password = serde_json::from_str(&json).unwrap();
        assert_eq!(back.expose(), "a\"b");
    }
}
