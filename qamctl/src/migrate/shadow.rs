//! `/etc/shadow` with the passwd file beside it: only accounts whose uid is in the range of
//! people move in (system accounts stay out); `!`-locked hashes move in locked or not at all.

use super::{text, text_lines, Credential, Moved, Reading};
use std::collections::HashMap;

/// The uids that are people, inclusive (Debian's adduser gives 1000–59999).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    /// `--min-uid`: entries with a lower uid are system accounts and stay out.
    pub min: u32,
    /// `--max-uid`: entries with a higher uid are not people (e.g. `nobody`) and stay out.
    pub max: u32,
}

/// What to do with an entry whose hash is locked with `!` (`passwd -l`, `usermod -L`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LockedEntries {
    /// Import it as a locked qam account (an admin may unlock it later).
    Lock,
    /// Leave it out, listed among the refused entries.
    Skip,
}

/// Each passwd entry's uid, by name.
fn uids(passwd: &[u8]) -> HashMap<String, u32> {
    text_lines(passwd)
        .filter_map(|(_, line)| {
            let line = text(line).ok()?;
            let mut fields = line.split(':');
            let name = fields.next()?;
            let uid = fields.nth(1)?.parse().ok()?;
            Some((name.to_owned(), uid))
        })
        .collect()
}

/// Reads every shadow entry of a person with a password.
pub fn read(shadow: &[u8], passwd: &[u8], range: UidRange, locked: LockedEntries) -> Reading {
    let uids = uids(passwd);
    let mut reading = Reading::default();
    for (number, line) in text_lines(shadow) {
        let place = format!("line {number}");
        let Ok(line) = text(line) else {
            reading.refuse(place, "not UTF-8");
            continue;
        };
        let mut fields = line.split(':');
        let (Some(name), Some(hash)) = (fields.next(), fields.next()) else {
            reading.refuse(place, "expected name:hash:…");
            continue;
        };
        match uids.get(name) {
            Some(uid) if (range.min..=range.max).contains(uid) => {}
            Some(uid) => {
                reading.refuse(
                    place,
                    format!("uid {uid} is outside the people range (a system account)"),
                );
                continue;
            }
            None => {
                reading.refuse(place, "no passwd entry, so no uid");
                continue;
            }
        }
        let (is_locked, hash) = match hash.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, hash),
        };
        if hash.is_empty() || hash.starts_with('*') || hash.starts_with('!') {
            reading.refuse(place, "no password (login by password is disabled)");
            continue;
        }
        if is_locked && locked == LockedEntries::Skip {
            reading.refuse(place, "locked (skipped as asked)");
            continue;
        }
        reading.accounts.push(Moved {
            place,
            name: name.to_owned(),
            credential: Credential::Verifier(hash.to_owned()),
            locked: is_locked,
        });
    }
    reading
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/bash\n\
daemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n\
alice:x:1000:1000::/home/alice:/bin/bash\n\
bob:x:1001:1001::/home/bob:/bin/bash\n\
carol:x:1002:1002::/home/carol:/bin/bash\n\
dave:x:1003:1003::/home/dave:/bin/bash\n";
    const SHADOW: &[u8] = b"root:$y$j9T$a$b:19000:0:99999:7:::\n\
daemon:*:19000:0:99999:7:::\n\
alice:$y$j9T$salt$hash:19000:0:99999:7:::\n\
bob:!$6$salt$hash:19000:0:99999:7:::\n\
carol:!:19000:0:99999:7:::\n\
dave:$6$salt$hash:19000:0:99999:7:::\n\
erin:$6$salt$hash:19000:0:99999:7:::\n";
    const PEOPLE: UidRange = UidRange {
        min: 1000,
        max: 59999,
    };

    #[test]
    fn people_move_in_and_system_accounts_stay_out() {
        let reading = read(SHADOW, PASSWD, PEOPLE, LockedEntries::Lock);
        let names: Vec<(&str, bool)> = reading
            .accounts
            .iter()
            .map(|m| (m.name.as_str(), m.locked))
            .collect();
        assert_eq!(names, [("alice", false), ("bob", true), ("dave", false)]);
        let places: Vec<&str> = reading
            .unreadable
            .iter()
            .map(|u| u.place.as_str())
            .collect();
        assert_eq!(places, ["line 1", "line 2", "line 5", "line 7"]);
    }

    #[test]
    fn locked_entries_can_be_skipped() {
        let reading = read(SHADOW, PASSWD, PEOPLE, LockedEntries::Skip);
        assert!(reading.accounts.iter().all(|m| m.name != "bob"));
    }
}
