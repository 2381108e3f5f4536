//! A Dovecot passwd-file (`user:{SCHEME}hash:uid:gid:gecos:home:shell:extra`): crypt schemes,
//! ARGON2ID, SCRAM and PLAIN entries become qam records; other schemes are refused by name.

use super::{read_user_lines, Credential, Reading};
use qam_client::Password;

/// The credential of one password field, or why qam cannot take it.
fn credential(field: &str) -> Result<Credential, String> {
    let (scheme, value) = match field
        .strip_prefix('{')
        .and_then(|rest| rest.split_once('}'))
    {
        Some((scheme, value)) => (scheme.to_ascii_uppercase(), value),
        // Without a prefix Dovecot uses its default_pass_scheme; crypt strings say what they are.
        None if field.starts_with('$') => ("CRYPT".to_owned(), field),
        None => return Err("no {SCHEME} prefix and not a crypt string".into()),
    };
    match scheme.as_str() {
        "SHA512-CRYPT" | "SHA256-CRYPT" | "BLF-CRYPT" | "MD5-CRYPT" | "CRYPT" | "ARGON2ID" => {
            Ok(Credential::Verifier(value.to_owned()))
        }
        "SCRAM-SHA-1" | "SCRAM-SHA-256" => Ok(Credential::Verifier(format!("{{{scheme}}}{value}"))),
        "PLAIN" | "CLEAR" | "CLEARTEXT" => Ok(Credential::Plain(Password::from(value))),
        other => Err(format!(
            "scheme {other} is not one qam verifies (reset these users' passwords instead)"
        )),
    }
}

/// Reads every entry of a passwd-file.
pub fn read(file: &[u8]) -> Reading {
    read_user_lines(file, credential)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_scheme_and_refuses_unknown_ones() {
        let file = b"# users\n\
alice:{SHA512-CRYPT}$6$salt$hash::::::\n\
bob:{BLF-CRYPT}$2y$05$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz12345\n\
carol:{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA:1000:1000::/home/carol\n\
dave:$5$salt$hash\n\
erin:{PLAIN}secret\n\
frank:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n\
broken\n";
        let reading = read(file);
        let names: Vec<&str> = reading.accounts.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["alice", "bob", "carol", "dave", "erin"]);
        let places: Vec<&str> = reading
            .unreadable
            .iter()
            .map(|u| u.place.as_str())
            .collect();
        assert_eq!(places, ["line 7", "line 8"]);
        let Credential::Verifier(carol) = &reading.accounts[2].credential else {
            panic!("carol has a verifier");
        };
        assert!(carol.starts_with("$argon2id$"));
    }
}
