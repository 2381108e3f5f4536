//! A framed client connection over a Unix stream: whole messages in (JSON request lines on the
//! main socket, varlink calls on the userdb door), whole answers out, never raw bytes.

use crate::framing::{Framer, Step};
use qam_client::wire::MAX_REQUEST_LINE;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use zeroize::Zeroizing;

/// Bytes asked of the socket per read.
const CHUNK: usize = 4096;

/// What one read produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete message, delimiter stripped.
    Line(&'a [u8]),
    /// The message exceeded the limit; the connection must be closed after answering.
    TooLarge,
    /// The client closed its side (a message cut short by the close is dropped).
    Closed,
}

/// One client connection.
pub struct Connection {
    /// The client's socket: requests are read from it and answers written to it.
    stream: UnixStream,
    /// Received bytes, cut into messages.
    framer: Framer,
}

impl Connection {
    /// A connection of JSON request lines, each at most `MAX_REQUEST_LINE` bytes.
    pub fn new(stream: UnixStream) -> Connection {
        Connection::framed(stream, Framer::new(b'\n', MAX_REQUEST_LINE))
    }

    /// A connection whose messages `framer` cuts.
    pub fn framed(stream: UnixStream, framer: Framer) -> Connection {
        Connection { stream, framer }
    }

    /// Reads the next message. Cancel-safe: bytes already received stay buffered.
    pub async fn read_frame(&mut self) -> std::io::Result<Frame<'_>> {
        let mut chunk = Zeroizing::new([0u8; CHUNK]);
        loop {
            match self.framer.advance() {
                Step::Message => return Ok(Frame::Line(self.framer.message())),
                Step::TooLarge => return Ok(Frame::TooLarge),
                Step::NeedMore => {}
            }
            let read = self.stream.read(&mut chunk[..]).await?;
            if read == 0 {
                return Ok(Frame::Closed);
            }
            self.framer.push(&chunk[..read]);
        }
    }

    /// Writes one answer and flushes it.
    pub async fn write_answer(&mut self, answer: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(answer).await?;
        self.stream.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_too_large_and_closed() {
        let (client, server) = UnixStream::pair().unwrap();
        let mut conn = Connection::new(server);
        let mut client = client;
        client.write_all(b"{\"op\":\"hello\"}\n").await.unwrap();
        assert_eq!(
            conn.read_frame().await.unwrap(),
            Frame::Line(b"{\"op\":\"hello\"}")
        );
        let exact = vec![b'x'; MAX_REQUEST_LINE];
        client.write_all(&exact).await.unwrap();
        client.write_all(b"\n").await.unwrap();
        assert!(
            matches!(conn.read_frame().await.unwrap(), Frame::Line(l) if l.len() == MAX_REQUEST_LINE)
        );
        let writer = tokio::spawn(async move {
            client
                .write_all(&vec![b'y'; MAX_REQUEST_LINE + 10])
                .await
                .unwrap();
            client
        });
        assert_eq!(conn.read_frame().await.unwrap(), Frame::TooLarge);
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn a_line_sent_byte_by_byte_is_one_frame() {
        let (mut client, server) = UnixStream::pair().unwrap();
        let mut conn = Connection::new(server);
        let writer = tokio::spawn(async move {
            for &byte in b"{\"op\":\"hello\"}\nnext\n" {
                client.write_all(&[byte]).await.unwrap();
                tokio::task::yield_now().await;
            }
            client
        });
        assert_eq!(
            conn.read_frame().await.unwrap(),
            Frame::Line(b"{\"op\":\"hello\"}")
        );
        assert_eq!(conn.read_frame().await.unwrap(), Frame::Line(b"next"));
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn lines_sharing_a_read_are_separate_frames() {
        let (mut client, server) = UnixStream::pair().unwrap();
        let mut conn = Connection::new(server);
        client.write_all(b"one\ntwo\nthr").await.unwrap();
        assert_eq!(conn.read_frame().await.unwrap(), Frame::Line(b"one"));
        assert_eq!(conn.read_frame().await.unwrap(), Frame::Line(b"two"));
        client.write_all(b"ee\n").await.unwrap();
        assert_eq!(conn.read_frame().await.unwrap(), Frame::Line(b"three"));
        drop(client);
        assert_eq!(conn.read_frame().await.unwrap(), Frame::Closed);
    }

    #[tokio::test]
    async fn a_line_cut_by_close_is_dropped() {
        let (mut client, server) = UnixStream::pair().unwrap();
        let mut conn = Connection::new(server);
        client
            .write_all(b"{\"op\":\"verify\",\"user\":")
            .await
            .unwrap();
        drop(client);
        assert_eq!(conn.read_frame().await.unwrap(), Frame::Closed);
    }
}
