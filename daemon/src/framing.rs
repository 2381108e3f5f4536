//! Splits a byte stream into bounded messages ended by one delimiter byte: JSON lines on the
//! main socket, NUL-ended varlink calls on the userdb door. Each byte is searched once.

use zeroize::Zeroizing;

/// What the framer holds next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<'a> {
    /// One complete message, delimiter stripped.
    Message(&'a [u8]),
    /// No complete message yet: push more bytes.
    NeedMore,
    /// The message under way exceeds the limit.
    TooLarge,
}

/// Received bytes cut into messages. They may hold passwords: they only ever live in a buffer
/// that is wiped when it is dropped or outgrown.
pub struct Framer {
    /// The byte that ends a message.
    delimiter: u8,
    /// Longest message accepted, delimiter excluded.
    limit: usize,
    /// Received bytes: the current message, then whatever followed it.
    buffer: Zeroizing<Vec<u8>>,
    /// Bytes at the front already searched for the delimiter.
    scanned: usize,
    /// Length (with its delimiter) of the message handed out last.
    consumed: usize,
}

impl Framer {
    /// Messages ended by `delimiter`, at most `limit` bytes long.
    pub fn new(delimiter: u8, limit: usize) -> Framer {
        Framer {
            delimiter,
            limit,
            buffer: Zeroizing::new(Vec::with_capacity(512)),
            scanned: 0,
            consumed: 0,
        }
    }

    /// Adds received bytes; when the buffer must grow, the old allocation is wiped.
    pub fn push(&mut self, bytes: &[u8]) {
        let needed = self.buffer.len() + bytes.len();
        if needed > self.buffer.capacity() {
            let mut bigger = Zeroizing::new(Vec::with_capacity(needed.next_power_of_two()));
            bigger.extend_from_slice(&self.buffer);
            self.buffer = bigger;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete message, if any. The one handed out before is dropped first.
    pub fn next_message(&mut self) -> Next<'_> {
        match self.advance() {
            Step::Message => Next::Message(self.message()),
            Step::NeedMore => Next::NeedMore,
            Step::TooLarge => Next::TooLarge,
        }
    }

    /// Looks for the next message without borrowing it, so a reader can go on pushing.
    pub(crate) fn advance(&mut self) -> Step {
        if self.consumed > 0 {
            self.buffer.drain(..self.consumed);
            self.consumed = 0;
            self.scanned = 0;
        }
        let window_end = self.buffer.len().min(self.limit + 1);
        let delimiter = self.delimiter;
        let found = self.buffer[self.scanned..window_end]
            .iter()
            .position(|&byte| byte == delimiter);
        match found {
            Some(at) => {
                self.consumed = self.scanned + at + 1;
                Step::Message
            }
            None if window_end > self.limit => Step::TooLarge,
            None => {
                self.scanned = window_end;
                Step::NeedMore
            }
        }
    }

    /// The message the last [`Framer::advance`] found.
    pub(crate) fn message(&self) -> &[u8] {
        &self.buffer[..self.consumed.saturating_sub(1)]
    }
}

/// What [`Framer::advance`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// A message: read it with [`Framer::message`].
    Message,
    NeedMore,
    TooLarge,
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1024;

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
            let mut framer = Framer::new(0, LIMIT);
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
        let mut framer = Framer::new(b'\n', LIMIT);
        framer.push(&vec![b'x'; LIMIT]);
        assert_eq!(framer.next_message(), Next::NeedMore);
        framer.push(b"\n");
        assert!(matches!(framer.next_message(), Next::Message(m) if m.len() == LIMIT));
        framer.push(&vec![b'y'; LIMIT + 1]);
        assert_eq!(framer.next_message(), Next::TooLarge);
    }

    #[test]
    fn bytes_sent_one_by_one_are_scanned_once() {
        let mut framer = Framer::new(0, LIMIT);
        for _ in 0..LIMIT {
            framer.push(b"z");
            assert_eq!(framer.next_message(), Next::NeedMore);
        }
        assert_eq!(framer.scanned, LIMIT);
        framer.push(b"z");
        assert_eq!(framer.next_message(), Next::TooLarge);
    }

    #[test]
    fn an_empty_message_is_a_message() {
        let mut framer = Framer::new(b'\n', LIMIT);
        framer.push(b"\n\nx\n");
        assert_eq!(
            messages(&mut framer),
            [b"".to_vec(), b"".to_vec(), b"x".to_vec()]
        );
    }
}
