//! Username and password rules: normalization of names to their stored form, and the checks a
//! new name or password must pass before anything is hashed or written.

use crate::config::{PasswordConfig, UsernameConfig};
use qam_client::Password;
use regex::Regex;
use std::collections::HashSet;

/// Why a username or password was refused; the message is safe to send to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("username must be lowercase letters, digits, `.`, `_` or `-`, start with a letter or digit, and fit the configured pattern")]
    BadUsername,
    #[error("username `{0}` is reserved")]
    Reserved(String),
    #[error("password must be at least {0} characters")]
    PasswordTooShort(usize),
    #[error("password must be at most {0} bytes")]
    PasswordTooLong(usize),
    #[error("password must not contain a NUL character")]
    PasswordHasNul,
}

/// The compiled rules.
#[derive(Debug, Clone)]
pub struct Rules {
    pattern: Regex,
    reserved: HashSet<String>,
    min_password_chars: usize,
    max_password_bytes: usize,
}

impl Rules {
    /// Compiles the configured rules (the config was validated, so the pattern compiles).
    pub fn new(
        username: &UsernameConfig,
        password: &PasswordConfig,
    ) -> Result<Rules, regex::Error> {
        Ok(Rules {
            pattern: Regex::new(&username.pattern)?,
            reserved: username
                .reserved
                .iter()
                .map(|n| n.to_ascii_lowercase())
                .collect(),
            min_password_chars: password.min_length,
            max_password_bytes: password.max_bytes,
        })
    }

    /// The stored form of a name: lowercased and matching the pattern. Reserved names pass
    /// (they may exist, created by an admin's import); use `new_username` for creation.
    pub fn username(&self, input: &str) -> Result<String, RuleError> {
        let name = input.to_lowercase();
        if name.len() > 255 || !self.pattern.is_match(&name) {
            return Err(RuleError::BadUsername);
        }
        Ok(name)
    }

    /// A name for a new account: valid and not reserved.
    pub fn new_username(&self, input: &str) -> Result<String, RuleError> {
        let name = self.username(input)?;
        if self.reserved.contains(&name) {
            return Err(RuleError::Reserved(name));
        }
        Ok(name)
    }

    /// Checks a new password (JSON already guarantees valid UTF-8).
    pub fn new_password(&self, password: &Password) -> Result<(), RuleError> {
        let text = password.expose();
        if text.contains('\0') {
            return Err(RuleError::PasswordHasNul);
        }
        if text.len() > self.max_password_bytes {
            return Err(RuleError::PasswordTooLong(self.max_password_bytes));
        }
        if text.chars().count() < self.min_password_chars {
            return Err(RuleError::PasswordTooShort(self.min_password_chars));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules::new(&UsernameConfig::default(), &PasswordConfig::default()).unwrap()
    }

    #[test]
    fn usernames_are_lowercased() {
        assert_eq!(rules().username("Alice").unwrap(), "alice");
        assert_eq!(rules().username("a.b_c-9").unwrap(), "a.b_c-9");
    }

    #[test]
    fn bad_usernames_are_refused() {
        let long = "a".repeat(33);
        for bad in [
            "",
            ".alice",
            "-a",
            "al ice",
            "ålice",
            "a@b",
            "a:b",
            long.as_str(),
            "a\0b",
        ] {
            assert_eq!(
                rules().username(bad),
                Err(RuleError::BadUsername),
                "{bad:?}"
            );
        }
        assert!(rules().username(&"a".repeat(32)).is_ok());
    }

    #[test]
    fn reserved_names_cannot_be_created_in_any_case() {
        assert_eq!(
            rules().new_username("PostMaster"),
            Err(RuleError::Reserved("postmaster".into()))
        );
        assert!(rules().username("postmaster").is_ok());
    }

    #[test]
    fn password_rules() {
        let r = rules();
        assert!(r.new_password(&"12345678".into()).is_ok());
        assert_eq!(
            r.new_password(&"1234567".into()),
            Err(RuleError::PasswordTooShort(8))
        );
        // eight characters, more bytes: length counts characters
        assert!(r.new_password(&"ééééèèèè".into()).is_ok());
        assert_eq!(
            r.new_password(&"abcd\0efgh".into()),
            Err(RuleError::PasswordHasNul)
        );
        assert_eq!(
            r.new_password(&"x".repeat(1025).as_str().into()),
            Err(RuleError::PasswordTooLong(1024))
        );
        assert!(r.new_password(&"x".repeat(1024).as_str().into()).is_ok());
    }
}
