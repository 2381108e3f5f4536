//! Names the system already uses: a new qam account may not take the name of a unix user or
//! group (pam_qam would then log in as that user), nor a spelling that differs only in separators.

use crate::rules::skeleton;
use nix::unistd::{Group, User};

/// The spellings of `name` a person could mistake for it: itself, without trailing separators,
/// without any separator, and with every separator turned into `-`, `_` or `.`.
fn spellings(name: &str) -> Vec<String> {
    let mut all = vec![
        name.to_owned(),
        name.trim_end_matches(['.', '_', '-']).to_owned(),
        skeleton(name),
    ];
    for separator in ['-', '_', '.'] {
        all.push(name.replace(['.', '_', '-'], &separator.to_string()));
    }
    all.retain(|spelling| !spelling.is_empty());
    all.sort();
    all.dedup();
    all
}

/// True when the user or group database (through NSS, so LDAP and systemd's userdb count)
/// knows `name` or one of its spellings. A lookup that fails counts as known: a name is
/// only given away when the system said it is free.
pub fn known_to_system(name: &str) -> bool {
    spellings(name).iter().any(|spelling| {
        let user = User::from_name(spelling);
        let group = Group::from_name(spelling);
        !matches!((user, group), (Ok(None), Ok(None)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_cover_separator_variants() {
        let all = spellings("mailer_daemon.");
        for expected in [
            "mailer_daemon.",
            "mailer_daemon",
            "mailerdaemon",
            "mailer-daemon-",
        ] {
            assert!(all.iter().any(|s| s == expected), "{expected} in {all:?}");
        }
        assert_eq!(spellings("alice"), vec!["alice".to_owned()]);
    }

    #[test]
    fn system_users_and_groups_are_known() {
        assert!(known_to_system("root"));
        assert!(known_to_system("root."));
        assert!(known_to_system("nogroup"));
        assert!(!known_to_system("qam-no-such-user-7x"));
    }
}
