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
    #[error(
        "username `{0}` names a user or group of this system; an admin may add it with `force`"
    )]
    SystemName(String),
    #[error("password must be at least {0} characters")]
    PasswordTooShort(usize),
    #[error("password must be at most {0} bytes")]
    PasswordTooLong(usize),
    #[error("password must not contain a NUL character")]
    PasswordHasNul,
}

/// Characters that separate parts of a name: `root.`, `mailer_daemon` and `mailer-daemon` differ
/// only in them, so reserved names are compared without them.
const SEPARATORS: [char; 3] = ['.', '_', '-'];

/// A name without its separators, the form reserved names are compared in.
pub fn skeleton(name: &str) -> String {
    name.chars().filter(|c| !SEPARATORS.contains(c)).collect()
}

/// The compiled rules.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The configured pattern, anchored at both ends.
    pattern: Regex,
    /// Skeletons of the reserved names.
    reserved: HashSet<String>,
    min_password_chars: usize,
    max_password_bytes: usize,
}

impl Rules {
    /// Compiles the configured rules (the config was validated, so the pattern compiles). The
    /// pattern must match the whole name, however it is written.
    pub fn new(
        username: &UsernameConfig,
        password: &PasswordConfig,
    ) -> Result<Rules, regex::Error> {
        Ok(Rules {
            pattern: anchored(&username.pattern)?,
            reserved: username
                .reserved
                .iter()
                .map(|n| skeleton(&n.to_ascii_lowercase()))
                .collect(),
            min_password_chars: password.min_length,
            max_password_bytes: password.max_bytes,
        })
    }

    /// The stored form of a name: ASCII only (nothing outside it is folded into a letter that
    /// looks alike), ASCII letters lowercased, matching the pattern. Reserved names pass
    /// (they may exist, created by an admin's import); use `new_username` for creation.
    pub fn username(&self, input: &str) -> Result<String, RuleError> {
        if !input.is_ascii() {
            return Err(RuleError::BadUsername);
        }
        let name = input.to_ascii_lowercase();
        if name.len() > 255 || !self.pattern.is_match(&name) {
            return Err(RuleError::BadUsername);
        }
        Ok(name)
    }

    /// A name for a new account: valid and not reserved, nor spelled like a reserved name
    /// with other separators (`root.`, `mailer_daemon`).
    pub fn new_username(&self, input: &str) -> Result<String, RuleError> {
        let name = self.username(input)?;
        if self.reserved.contains(&skeleton(&name)) {
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

/// `pattern` as a regex that matches whole names only: `^(?:pattern)$`.
pub fn anchored(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
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
        assert_eq!(rules().username("KATE").unwrap(), "kate");
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
            "\u{212a}ate",
            "k\u{131}m",
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
    fn names_spelled_like_reserved_ones_cannot_be_created() {
        for lookalike in [
            "root.",
            "root_",
            "r.o.o.t",
            "admin-",
            "mailer_daemon",
            "www.data",
        ] {
            assert!(
                matches!(rules().new_username(lookalike), Err(RuleError::Reserved(_))),
                "{lookalike}"
            );
        }
        assert!(rules().new_username("rooted").is_ok());
    }

    #[test]
    fn a_custom_pattern_matches_whole_names_only() {
        let username = UsernameConfig {
            pattern: "[a-z0-9]{1,32}".into(),
            ..UsernameConfig::default()
        };
        let rules = Rules::new(&username, &PasswordConfig::default()).unwrap();
        let long = "a".repeat(40);
        for bad in ["bob\nroot", "../../etc", long.as_str()] {
            assert_eq!(rules.username(bad), Err(RuleError::BadUsername), "{bad:?}");
        }
        assert!(rules.username("bob").is_ok());
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
