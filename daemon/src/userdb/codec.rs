//! Varlink framing: each message is one JSON object ended by a NUL byte. Messages are bounded
//! (`MAX_MESSAGE`); each received byte is searched for the NUL once, however it was split.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Longest message accepted (a userdb call is under 200 bytes); longer closes the connection.
pub const MAX_MESSAGE: usize = 16 * 1024;

/// Bytes asked of the socket per read.
const CHUNK: usize = 4096;

/// What the framer holds next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<'a> {
    /// One complete message, NUL stripped.
    Message(&'a [u8]),
    /// No complete message yet: push more bytes.
    NeedMore,
    /// The message under way exceeds `MAX_MESSAGE`.
    TooLarge,
}

/// Splits a byte stream into NUL-terminated messages.
#[derive(Debug, Default)]
pub struct Framer {
    /// Received bytes: the current message, then whatever followed it.
    buffer: Vec<u8>,
    /// Bytes at the front already searched for a NUL.
    scanned: usize,
    /// Length (with its NUL) of the message the last `next` handed out.
    consumed: usize,
}

impl Framer {
    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete message, if any. The one handed out before is dropped first.
    pub fn next_message(&mut self) -> Next<'_> {
        if self.consumed > 0 {
            self.buffer.drain(..self.consumed);
            self.consumed = 0;
            self.scanned = 0;
        }
        let window_end = self.buffer.len().min(MAX_MESSAGE + 1);
        let found = self.buffer[self.scanned..window_end]
            .iter()
            .position(|&byte| byte == 0);
        match found {
            Some(at) => {
                let end = self.scanned + at;
                self.consumed = end + 1;
                Next::Message(&self.buffer[..end])
            }
            None if window_end > MAX_MESSAGE => Next::TooLarge,
            None => {
                self.scanned = window_end;
                Next::NeedMore
            }
        }
    }
}

/// What one read produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Message(Vec<u8>),
    TooLarge,
    /// The client closed its side (a message cut short by the close is dropped).
    Closed,
}

/// One userdb client connection.
pub struct MessageStream {
    /// The client's connection.
    stream: UnixStream,
    /// Bytes received and not yet handed out as messages.
    framer: Framer,
}

impl MessageStream {
    pub fn new(stream: UnixStream) -> MessageStream {
        MessageStream {
            stream,
            framer: Framer::default(),
        }
    }

    /// Reads the next message. Cancel-safe: bytes already received stay buffered.
    pub async fn read_message(&mut self) -> std::io::Result<Incoming> {
        let mut chunk = [0u8; CHUNK];
        loop {
            match self.framer.next_message() {
                Next::Message(message) => return Ok(Incoming::Message(message.to_vec())),
                Next::TooLarge => return Ok(Incoming::TooLarge),
                Next::NeedMore => {}
            }
            let read = self.stream.read(&mut chunk).await?;
            if read == 0 {
                return Ok(Incoming::Closed);
            }
            self.framer.push(&chunk[..read]);
        }
    }

    /// Writes already framed replies.
    pub async fn write(&mut self, replies: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(replies).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(framer: &mut Framer) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Next::Message(message) = framer.next_message() {
            out.push(message.to_vec());
        }
        out
    }

    #[test]
    fn messages_split_anywhere_come_out_whole() {
        let bytes = b"{\"a\":1}\0{\"b\":2}\0{\"c\"";
        for cut in 0..bytes.len() {
            let mut framer = Framer::default();
            framer.push(&bytes[..cut]);
            let mut seen = messages(&mut framer);
            framer.push(&bytes[cut..]);
            seen.extend(messages(&mut framer));
            assert_eq!(
                seen,
                [b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()],
                "{cut}"
            );
        }
    }

    #[test]
    fn a_message_at_the_limit_passes_and_one_over_is_too_large() {
        let mut framer = Framer::default();
        framer.push(&vec![b'x'; MAX_MESSAGE]);
        assert_eq!(framer.next_message(), Next::NeedMore);
        framer.push(b"\0");
        assert!(matches!(framer.next_message(), Next::Message(m) if m.len() == MAX_MESSAGE));
        framer.push(&vec![b'y'; MAX_MESSAGE + 1]);
        assert_eq!(framer.next_message(), Next::TooLarge);
    }

    #[test]
    fn bytes_sent_one_by_one_are_scanned_once() {
        let mut framer = Framer::default();
        for _ in 0..MAX_MESSAGE {
            framer.push(b"z");
            assert_eq!(framer.next_message(), Next::NeedMore);
        }
        assert_eq!(framer.scanned, MAX_MESSAGE);
        framer.push(b"z");
        assert_eq!(framer.next_message(), Next::TooLarge);
    }
}
