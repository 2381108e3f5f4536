//! The tokio client: the same requests and answers as the blocking client, for async services
//! (and qamd's own tests and benchmark).

use crate::wire::{encode_request, Request};
use crate::{finish_call, ClientError, ClientOptions, Password, MAX_REPLY_LINE};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// One async connection to qamd; every call is bounded by the options' timeout.
pub struct AsyncClient {
    /// The socket, buffered for reading answer lines; requests are written through it too.
    reader: BufReader<UnixStream>,
    /// Bound on each request's round trip.
    timeout: std::time::Duration,
    /// The `id` of the next request, checked in its answer so answers cannot be mixed up.
    next_id: u64,
    /// Set after a transport error: the stream's position is unknown, so no request may follow.
    spent: bool,
}

impl AsyncClient {
    /// Connects and checks that the daemon runs as a trusted uid.
    pub async fn connect(options: &ClientOptions) -> Result<Self, ClientError> {
        let connect = UnixStream::connect(&options.socket);
        let stream = tokio::time::timeout(options.timeout, connect)
            .await
            .map_err(|_| ClientError::Timeout)?
            .map_err(|source| ClientError::Connect {
                path: options.socket.clone(),
                source,
            })?;
        options.trusted.check(&stream)?;
        Ok(AsyncClient {
            reader: BufReader::new(stream),
            timeout: options.timeout,
            next_id: 1,
            spent: false,
        })
    }

    /// Sends one request and decodes its successful answer as `T`.
    pub async fn call<T: DeserializeOwned>(&mut self, request: &Request) -> Result<T, ClientError> {
        if self.spent {
            return Err(ClientError::Closed);
        }
        let id = self.next_id;
        self.next_id += 1;
        let result = match tokio::time::timeout(self.timeout, self.exchange(id, request)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout),
        };
        self.spent = matches!(&result, Err(err) if err.spends_connection());
        finish_call(id, result?)
    }

    async fn exchange(&mut self, id: u64, request: &Request) -> Result<Vec<u8>, ClientError> {
        let line = encode_request(Some(id), request);
        self.reader
            .get_mut()
            .write_all(&line)
            .await
            .map_err(ClientError::from_io)?;
        let mut answer = Vec::with_capacity(256);
        let read = (&mut self.reader)
            .take(MAX_REPLY_LINE as u64)
            .read_until(b'\n', &mut answer)
            .await
            .map_err(ClientError::from_io)?;
        crate::whole_answer(read, answer)
    }

    /// `verify`: `Ok(true)` accepted, `Ok(false)` denied; other refusals are errors.
    pub async fn verify(&mut self, user: &str, password: &Password) -> Result<bool, ClientError> {
        let request = Request::Verify {
            user: user.to_owned(),
            password: password.clone(),
            client: None,
        };
        crate::verdict(self.call(&request).await)
    }
}
