//! JSON-lines framing over a Unix stream: the server reads whole request lines (bounded at
//! 64 KiB) and writes whole answer lines, never raw bytes. Received bytes may hold passwords:
//! they only ever live in buffers that are wiped when they are dropped or outgrown.

use qam_client::wire::MAX_REQUEST_LINE;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use zeroize::Zeroizing;

/// Bytes asked of the socket per read.
const CHUNK: usize = 4096;

/// What one read produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete line, newline stripped.
    Line(&'a [u8]),
    /// The line exceeded the limit; the connection must be closed after answering.
    TooLarge,
    /// The client closed its side (a line cut short by the close is dropped).
    Closed,
}

/// One client connection.
pub struct Connection {
    /// The client's socket.
    stream: UnixStream,
    /// Received bytes: the current line, then whatever followed it.
    received: Zeroizing<Vec<u8>>,
    /// Length of the line (with its newline) handed out by the last `read_frame`.
    consumed: usize,
}

impl Connection {
    pub fn new(stream: UnixStream) -> Connection {
        Connection {
            stream,
            received: Zeroizing::new(Vec::with_capacity(512)),
            consumed: 0,
        }
    }

    /// Reads the next request line. Cancel-safe: bytes already received stay buffered.
    pub async fn read_frame(&mut self) -> std::io::Result<Frame<'_>> {
        self.received.drain(..self.consumed);
        self.consumed = 0;
        let limit = MAX_REQUEST_LINE + 1;
        let mut chunk = Zeroizing::new([0u8; CHUNK]);
        // Bytes already searched for a newline: each byte is looked at once, however
        // small the pieces a client sends a line in.
        let mut scanned = 0;
        loop {
            let window_end = self.received.len().min(limit);
            let window = &self.received[scanned..window_end];
            if let Some(at) = window.iter().position(|&byte| byte == b'\n') {
                let end = scanned + at;
                self.consumed = end + 1;
                return Ok(Frame::Line(&self.received[..end]));
            }
            scanned = window_end;
            if self.received.len() >= limit {
                return Ok(Frame::TooLarge);
            }
            let read = self.stream.read(&mut chunk[..]).await?;
            if read == 0 {
                return Ok(Frame::Closed);
            }
            append_wiping(&mut self.received, &chunk[..read]);
        }
    }

    /// Writes one answer line and flushes it.
    pub async fn write_answer(&mut self, answer: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(answer).await?;
        self.stream.flush().await
    }
}

/// Appends `bytes`; when the buffer must grow, the old allocation is wiped, not just freed.
fn append_wiping(buffer: &mut Zeroizing<Vec<u8>>, bytes: &[u8]) {
    let needed = buffer.len() + bytes.len();
    if needed > buffer.capacity() {
        let mut bigger = Zeroizing::new(Vec::with_capacity(needed.next_power_of_two()));
        bigger.extend_from_slice(buffer);
        *buffer = bigger;
    }
    buffer.extend_from_slice(bytes);
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
