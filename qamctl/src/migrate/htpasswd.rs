//! An Apache htpasswd file (`user:$2y$…`, made by `htpasswd -B`): bcrypt entries become qam
//! records; Apache's own MD5 (`$apr1$`), SHA1 and crypt entries are refused by name.

use super::{read_user_lines, Credential, Reading};

/// Reads every entry of an htpasswd file.
pub fn read(file: &[u8]) -> Reading {
    read_user_lines(file, |hash| {
        if hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$") {
            Ok(Credential::Verifier(hash.to_owned()))
        } else {
            Err("only bcrypt entries (htpasswd -B) can be moved in; reset this user".to_owned())
        }
    })
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
