//! The blocking client: `std::os::unix::net::UnixStream` with read/write timeouts, for PAM
//! modules, adapters and CLIs that must not run an async runtime.

use crate::wire::{encode_request, Request};
use crate::{finish_call, ClientError, ClientOptions, Password, MAX_REPLY_LINE};
use serde::de::DeserializeOwned;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;

/// One connection to qamd. Requests are answered in order; after any transport error the
/// connection is spent and `call` answers `ClientError::Closed`: connect again.
pub struct Client {
    /// The socket, buffered for reading answer lines; requests are written through it too.
    reader: BufReader<UnixStream>,
    /// The `id` of the next request, checked in its answer so answers cannot be mixed up.
    next_id: u64,
    /// Set after a transport error: the stream's position is unknown, so no request may follow.
    spent: bool,
}

impl Client {
    /// Connects, applies the timeouts and checks that the daemon runs as a trusted uid.
    pub fn connect(options: &ClientOptions) -> Result<Self, ClientError> {
        let stream =
            UnixStream::connect(&options.socket).map_err(|source| ClientError::Connect {
                path: options.socket.clone(),
                source,
            })?;
        options.trusted.check(&stream)?;
        stream
            .set_read_timeout(Some(options.timeout))
            .and_then(|()| stream.set_write_timeout(Some(options.timeout)))
            .map_err(ClientError::Io)?;
        Ok(Client {
            reader: BufReader::new(stream),
            next_id: 1,
            spent: false,
        })
    }

    /// Sends one request and decodes its successful answer as `T`.
    pub fn call<T: DeserializeOwned>(&mut self, request: &Request) -> Result<T, ClientError> {
        if self.spent {
            return Err(ClientError::Closed);
        }
        let id = self.next_id;
        self.next_id += 1;
        let result = self.exchange(id, request);
        self.spent = matches!(&result, Err(err) if err.spends_connection());
        finish_call(id, result?)
    }

    fn exchange(&mut self, id: u64, request: &Request) -> Result<Vec<u8>, ClientError> {
        let line = encode_request(Some(id), request);
        self.reader
            .get_mut()
            .write_all(&line)
            .map_err(ClientError::from_io)?;
        let mut answer = Vec::with_capacity(256);
        let read = (&mut self.reader)
            .take(MAX_REPLY_LINE as u64)
            .read_until(b'\n', &mut answer)
            .map_err(ClientError::from_io)?;
        crate::whole_answer(read, answer)
    }

    /// `verify`: `Ok(true)` accepted, `Ok(false)` denied; throttling, busy and transport
    /// problems are errors the caller must treat as a refusal too.
    pub fn verify(&mut self, user: &str, password: &Password) -> Result<bool, ClientError> {
        let request = Request::Verify {
            user: user.to_owned(),
            password: password.clone(),
            client: None,
        };
        crate::verdict(self.call(&request))
    }

    /// `exists`: whether an account of that name exists.
    pub fn exists(&mut self, user: &str) -> Result<bool, ClientError> {
        let request = Request::Exists {
            user: user.to_owned(),
        };
        Ok(self.call::<crate::wire::ExistsInfo>(&request)?.exists)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TrustedDaemon;
    use std::os::unix::net::UnixListener;
    use std::time::Duration;

    #[test]
    fn a_socket_served_by_an_untrusted_uid_is_refused_before_sending() {
        let dir = std::env::temp_dir().join(format!("qam-client-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("squat.sock");
        let _ = std::fs::remove_file(&path);
        let _listener = UnixListener::bind(&path).unwrap();
        let options = ClientOptions::new(&path).with_trusted(TrustedDaemon::uids([4_000_000]));
        match Client::connect(&options) {
            Err(ClientError::UntrustedDaemon { uid }) => {
                assert_eq!(uid, nix::unistd::Uid::current().as_raw())
            }
            Err(other) => panic!("unexpected error: {other}"),
            Ok(_) => panic!("untrusted daemon accepted"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unreachable_daemon_is_an_unavailable_error() {
        let options =
            ClientOptions::new("/nonexistent/qam.sock").with_timeout(Duration::from_millis(200));
        let err = Client::connect(&options).err().expect("no daemon there");
        assert!(err.is_unavailable());
        assert!(err.to_string().contains("/nonexistent/qam.sock"));
    }

    #[test]
    fn request_debug_output_never_shows_passwords() {
        let request = Request::ChangePassword {
            user: "alice".into(),
            old_password: "old-secret-1".into(),
            new_password: "new-secret-2".into(),
        };
        let shown = format!("{request:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
