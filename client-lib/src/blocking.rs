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
    reader: BufReader<UnixStream>,
    next_id: u64,
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
        if matches!(&result, Err(err) if err.is_unavailable() || matches!(err, ClientError::Protocol(_)))
        {
            self.spent = true;
        }
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
        if read == 0 {
            return Err(ClientError::Closed);
        }
        if answer.last() != Some(&b'\n') {
            return Err(ClientError::Protocol(
                "answer line too long or cut short".into(),
            ));
        }
        Ok(answer)
    }

    /// `verify`: `Ok(true)` accepted, `Ok(false)` denied; throttling, busy and transport
    /// problems are errors the caller must treat as a refusal too.
    pub fn verify(&mut self, user: &str, password: &Password) -> Result<bool, ClientError> {
        let request = Request::Verify {
            user: user.to_owned(),
            password: password.clone(),
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
