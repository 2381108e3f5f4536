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
    #[error("{0}")]
    Weak(WeakPassword),
}

/// A password that zxcvbn scores below the host's minimum, with its advice in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeakPassword {
    /// zxcvbn's score of the password, 0 to 4.
    pub score: u8,
    /// The minimum the host asks for.
    pub needed: u8,
    /// What makes it guessable, when zxcvbn can say.
    pub warning: Option<String>,
    /// How to do better.
    pub suggestions: Vec<String>,
}

impl std::fmt::Display for WeakPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "This password is too easy to guess (strength {} of 4; at least {} is needed).",
            self.score, self.needed
        )?;
        if let Some(warning) = &self.warning {
            write!(f, " {warning}")?;
        }
        for suggestion in &self.suggestions {
            write!(f, " {suggestion}")?;
        }
        if self.suggestions.is_empty() {
            write!(f, " Add another word or two; uncommon words are better.")?;
        }
        Ok(())
    }
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
    /// `[password] min_length`: a new password with fewer characters is refused as too
    /// short.
    min_password_chars: usize,
    /// `[password] max_bytes`: a longer new password is refused before it reaches argon2.
    max_password_bytes: usize,
    /// zxcvbn score (0-4) a new password needs.
    min_strength: u8,
    /// Words of the host's own name, counted as guessable in every password.
    site_words: Vec<String>,
}

impl Rules {
    /// Compiles the configured rules (the config was validated, so the pattern compiles). The
    /// pattern must match the whole name, however it is written.
    /// `site` (the host's domain) and its labels are counted as guessable in passwords.
    pub fn new(
        username: &UsernameConfig,
        password: &PasswordConfig,
        site: &str,
    ) -> Result<Rules, regex::Error> {
        let mut site_words: Vec<String> = site
            .split('.')
            .filter(|label| label.len() > 2)
            .map(str::to_lowercase)
            .collect();
        site_words.push(site.to_lowercase());
        Ok(Rules {
            pattern: anchored(&username.pattern)?,
            reserved: username
                .reserved
                .iter()
                .map(|n| skeleton(&n.to_ascii_lowercase()))
                .collect(),
            min_password_chars: password.min_length,
            max_password_bytes: password.max_bytes,
            min_strength: password.min_strength,
            site_words,
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

    /// Checks a new password for account `user` (JSON already guarantees valid UTF-8): its
    /// length, and its strength with the username and the site's name counted as guessable.
    pub fn new_password(&self, password: &Password, user: &str) -> Result<(), RuleError> {
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
        if self.min_strength == 0 {
            return Ok(());
        }
        let mut guessable: Vec<&str> = self.site_words.iter().map(String::as_str).collect();
        guessable.push(user);
        let estimate = zxcvbn::zxcvbn(text, &guessable);
        let score = u8::from(estimate.score());
        if score >= self.min_strength {
            return Ok(());
        }
        let feedback = estimate.feedback();
        Err(RuleError::Weak(WeakPassword {
            score,
            needed: self.min_strength,
            warning: feedback
                .and_then(|feedback| feedback.warning())
                .map(|warning| warning.to_string()),
            suggestions: feedback
                .map(|feedback| {
                    feedback
                        .suggestions()
                        .iter()
                        .map(ToString::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        }))
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
        Rules::new(
            &UsernameConfig::default(),
            &PasswordConfig::default(),
            "example.org",
        )
        .unwrap()
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

    fn rules_of_strength(min_strength: u8) -> Rules {
        let password = PasswordConfig {
            min_strength,
            ..PasswordConfig::default()
        };
        Rules::new(&UsernameConfig::default(), &password, "example.org").unwrap()
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
        let rules = Rules::new(&username, &PasswordConfig::default(), "example.org").unwrap();
        let long = "a".repeat(40);
        for bad in ["bob\nroot", "../../etc", long.as_str()] {
            assert_eq!(rules.username(bad), Err(RuleError::BadUsername), "{bad:?}");
        }
        assert!(rules.username("bob").is_ok());
    }

    #[test]
    fn password_length_rules() {
        let r = rules_of_strength(0);
        let check = |password: &str| r.new_password(&password.into(), "alice");
        assert!(check("12345678").is_ok());
        assert_eq!(check("1234567"), Err(RuleError::PasswordTooShort(8)));
        // eight characters, more bytes: length counts characters
        assert!(check("ééééèèèè").is_ok());
        assert_eq!(check("abcd\0efgh"), Err(RuleError::PasswordHasNul));
        assert_eq!(
            check(&"x".repeat(1025)),
            Err(RuleError::PasswordTooLong(1024))
        );
        assert!(check(&"x".repeat(1024)).is_ok());
    }

    #[test]
    fn weak_passwords_are_refused_with_advice() {
        let r = rules();
        let Err(RuleError::Weak(weak)) = r.new_password(&"password1".into(), "alice") else {
            panic!("a common password passed");
        };
        assert!(weak.score < 3);
        let advice = weak.to_string();
        assert!(advice.contains("too easy to guess"), "{advice}");
        assert!(advice.len() > 60, "advice says how to do better: {advice}");
        assert!(r
            .new_password(&"copper kettle drifts over lantern moss".into(), "alice")
            .is_ok());
    }

    #[test]
    fn the_username_and_site_name_count_as_guessable() {
        let r = rules_of_strength(3);
        for guessable in ["bartholomew-zz9", "example.org-zz9"] {
            assert!(
                matches!(
                    r.new_password(&guessable.into(), "bartholomew"),
                    Err(RuleError::Weak(_))
                ),
                "{guessable}"
            );
        }
    }
}
