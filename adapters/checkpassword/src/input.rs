//! The checkpassword request read from fd 3: `login\0password\0timestamp\0`, at most 512
//! bytes; only login and password matter, anything after the second NUL is ignored.

use qam_client::Password;
use std::io::{self, Read};
use zeroize::Zeroizing;

/// The interface's limit on what fd 3 carries.
pub const MAX_INPUT: usize = 512;

/// Login and password as the caller sent them.
#[derive(Debug)]
pub struct Credentials {
    /// The name the client logged in with, sent to qamd's `verify` as typed.
    pub login: String,
    /// The password to check with qamd; wiped on drop, never logged.
    pub password: Password,
}

/// Why the bytes on fd 3 are not a checkpassword request (exit 2, "misuse").
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("more than {MAX_INPUT} bytes on fd 3")]
    TooLong,
    #[error("fd 3 does not hold `login NUL password NUL`")]
    Malformed,
    #[error("login or password on fd 3 is not UTF-8")]
    NotUtf8,
}

/// Reads `source` (fd 3) to its end, but at most one byte past [`MAX_INPUT`], so an over-long
/// request is noticed without reading it all; the bytes are wiped on drop.
pub fn read(source: impl Read) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_INPUT + 1));
    source.take(MAX_INPUT as u64 + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Splits the request; `bytes` is wiped on drop by the caller's `Zeroizing`.
pub fn parse(bytes: &Zeroizing<Vec<u8>>) -> Result<Credentials, InputError> {
    if bytes.len() > MAX_INPUT {
        return Err(InputError::TooLong);
    }
    let mut fields = bytes.splitn(3, |&b| b == 0);
    let login = fields.next().ok_or(InputError::Malformed)?;
    let password = fields.next().ok_or(InputError::Malformed)?;
    // Without a NUL after the password the third part is missing: the request is cut short.
    fields.next().ok_or(InputError::Malformed)?;
    let login = std::str::from_utf8(login).map_err(|_| InputError::NotUtf8)?;
    let password = std::str::from_utf8(password).map_err(|_| InputError::NotUtf8)?;
    Ok(Credentials {
        login: login.to_owned(),
        password: Password::from(password),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(data: &[u8]) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(data.to_vec())
    }

    #[test]
    fn reads_login_and_password_and_ignores_the_timestamp() {
        let creds = parse(&bytes(b"alice\0s3cret:pw\0\0")).unwrap();
        assert_eq!(creds.login, "alice");
        assert_eq!(creds.password.expose(), "s3cret:pw");
        let creds = parse(&bytes(b"bob\0pw\0<123@host>\0")).unwrap();
        assert_eq!(creds.login, "bob");
    }

    #[test]
    fn lookup_mode_sends_an_empty_password() {
        let creds = parse(&bytes(b"alice\0\0\0")).unwrap();
        assert!(creds.password.is_empty());
    }

    #[test]
    fn malformed_requests_are_misuse() {
        assert_eq!(parse(&bytes(b"")).unwrap_err(), InputError::Malformed);
        assert_eq!(parse(&bytes(b"alice")).unwrap_err(), InputError::Malformed);
        assert_eq!(
            parse(&bytes(b"alice\0pw")).unwrap_err(),
            InputError::Malformed
        );
        assert_eq!(
            parse(&bytes(b"al\xffce\0pw\0")).unwrap_err(),
            InputError::NotUtf8
        );
        let long = [b'a'; MAX_INPUT + 1];
        assert_eq!(parse(&bytes(&long)).unwrap_err(), InputError::TooLong);
    }

    #[test]
    fn reading_stops_one_byte_past_the_limit() {
        let long = vec![b'a'; 10 * MAX_INPUT];
        assert_eq!(read(&long[..]).unwrap().len(), MAX_INPUT + 1);
        assert_eq!(
            read(&b"alice\0pw\0"[..]).unwrap().as_slice(),
            b"alice\0pw\0"
        );
    }
}
