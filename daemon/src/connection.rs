//! JSON-lines framing over a Unix stream: the server reads whole request lines (bounded at
//! 64 KiB) and writes whole answer lines, never raw bytes.

use qam_client::wire::MAX_REQUEST_LINE;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use zeroize::{Zeroize, Zeroizing};

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
    stream: BufReader<UnixStream>,
    /// The current request line; wiped before each read since it may hold a password.
    line: Zeroizing<Vec<u8>>,
}

impl Connection {
    pub fn new(stream: UnixStream) -> Connection {
        Connection {
            stream: BufReader::new(stream),
            line: Zeroizing::new(Vec::with_capacity(512)),
        }
    }

    /// Reads the next request line.
    pub async fn read_frame(&mut self) -> std::io::Result<Frame<'_>> {
        self.line.zeroize();
        let limit = MAX_REQUEST_LINE as u64 + 1;
        let read = (&mut self.stream)
            .take(limit)
            .read_until(b'\n', &mut self.line)
            .await?;
        if read == 0 {
            return Ok(Frame::Closed);
        }
        match self.line.last() {
            Some(b'\n') => {
                let end = self.line.len() - 1;
                Ok(Frame::Line(&self.line[..end]))
            }
            _ if self.line.len() as u64 >= limit => Ok(Frame::TooLarge),
            _ => Ok(Frame::Closed),
        }
    }

    /// Writes one answer line and flushes it.
    pub async fn write_answer(&mut self, answer: &[u8]) -> std::io::Result<()> {
        let stream = self.stream.get_mut();
        stream.write_all(answer).await?;
        stream.flush().await
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
