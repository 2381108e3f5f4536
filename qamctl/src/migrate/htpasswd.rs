//! An Apache htpasswd file (`user:$2y$…`, made by `htpasswd -B`): bcrypt entries become qam
//! records; Apache's own MD5 (`$apr1$`), SHA1 and crypt entries are refused by name.

use super::{text, text_lines, Credential, Moved, Reading};

/// Reads every entry of an htpasswd file.
pub fn read(file: &[u8]) -> Reading {
    let mut reading = Reading::default();
    for (number, line) in text_lines(file) {
        let place = format!("line {number}");
        let entry = text(line).map_err(str::to_owned).and_then(|line| {
            let (name, hash) = line.split_once(':').ok_or("expected user:hash")?;
            if hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$") {
                Ok((name, hash))
            } else {
                Err("only bcrypt entries (htpasswd -B) can be moved in; reset this user".to_owned())
            }
        });
        match entry {
            Ok((name, hash)) => reading.accounts.push(Moved {
                place,
                name: name.to_owned(),
                credential: Credential::Verifier(hash.to_owned()),
                locked: false,
            }),
            Err(reason) => reading.refuse(place, reason),
        }
    }
    reading
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_bcrypt_and_refuses_apr1() {
        let reading = read(
            b"alice:$2y$05$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz12345\nbob:$apr1$x$y\n",
        );
        assert_eq!(reading.accounts.len(), 1);
        assert_eq!(reading.unreadable[0].place, "line 2");
    }
}
