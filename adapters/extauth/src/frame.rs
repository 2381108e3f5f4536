//! Framing of the two peer protocols: ejabberd's 2-byte big-endian length frames and the
//! generic one-query-per-line protocol; reads whole requests and writes the boolean answers.

use std::io::{self, BufRead, Write};
use zeroize::Zeroizing;

/// Longest request accepted; ejabberd's frames are read whole (to stay in step) and answered
/// false beyond this, over-long lines are skipped to their newline and answered false.
pub const MAX_REQUEST: usize = 4096;

/// Which protocol the peer speaks on stdin/stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// ejabberd extauth: every message is a 2-byte big-endian length, then the bytes.
    Ejabberd,
    /// One query per line, answered `1` or `0` and a newline (Prosody's mod_auth_external).
    Generic,
}

/// One request as read from the peer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// The request bytes, in a buffer wiped on drop (they hold a password).
    Request(Zeroizing<Vec<u8>>),
    /// A request that was consumed whole but is too long to consider: answer false.
    Oversized,
}

impl Protocol {
    /// Reads the next request; `None` when the peer closed its end (also in mid-request).
    pub fn read(self, input: &mut impl BufRead) -> io::Result<Option<Frame>> {
        match self {
            Protocol::Ejabberd => read_length_frame(input),
            Protocol::Generic => read_line_frame(input),
        }
    }

    /// Writes one answer and flushes it.
    pub fn write(self, output: &mut impl Write, accepted: bool) -> io::Result<()> {
        let answer: &[u8] = match (self, accepted) {
            (Protocol::Ejabberd, true) => &[0, 2, 0, 1],
            (Protocol::Ejabberd, false) => &[0, 2, 0, 0],
            (Protocol::Generic, true) => b"1\n",
            (Protocol::Generic, false) => b"0\n",
        };
        output.write_all(answer)?;
        output.flush()
    }
}

/// Fills `buf` completely; `Ok(false)` when the input ends first.
fn read_full(input: &mut impl BufRead, buf: &mut [u8]) -> io::Result<bool> {
    match input.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(err) => Err(err),
    }
}

fn read_length_frame(input: &mut impl BufRead) -> io::Result<Option<Frame>> {
    let mut header = [0u8; 2];
    if !read_full(input, &mut header)? {
        return Ok(None);
    }
    let length = usize::from(u16::from_be_bytes(header));
    let mut body = Zeroizing::new(vec![0u8; length]);
    if !read_full(input, &mut body)? {
        return Ok(None);
    }
    Ok(Some(if length > MAX_REQUEST {
        Frame::Oversized
    } else {
        Frame::Request(body)
    }))
}

fn read_line_frame(input: &mut impl BufRead) -> io::Result<Option<Frame>> {
    let mut line = Zeroizing::new(Vec::with_capacity(128));
    let mut oversized = false;
    loop {
        let available = input.fill_buf()?;
        if available.is_empty() {
            // End of input without a newline: the peer is gone, nothing is owed.
            return Ok(None);
        }
        let (chunk, done) = match available.iter().position(|&byte| byte == b'\n') {
            Some(end) => (&available[..end], end + 1),
            None => (available, available.len()),
        };
        let complete = done > chunk.len();
        if !oversized && line.len() + chunk.len() <= MAX_REQUEST {
            line.extend_from_slice(chunk);
        } else {
            oversized = true;
            line.clear();
        }
        input.consume(done);
        if complete {
            break;
        }
    }
    if oversized {
        return Ok(Some(Frame::Oversized));
    }
    // A tty in raw mode or a CRLF peer may end lines with "\r\n".
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(Frame::Request(line)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn frames(protocol: Protocol, input: &[u8]) -> Vec<Frame> {
        let mut input = Cursor::new(input.to_vec());
        let mut out = Vec::new();
        while let Some(frame) = protocol.read(&mut input).unwrap() {
            out.push(frame);
        }
        out
    }

    fn request(bytes: &[u8]) -> Frame {
        Frame::Request(Zeroizing::new(bytes.to_vec()))
    }

    #[test]
    fn length_frames_are_read_whole_and_in_order() {
        let got = frames(Protocol::Ejabberd, b"\x00\x03abc\x00\x00\x00\x01z");
        assert_eq!(got, vec![request(b"abc"), request(b""), request(b"z")]);
    }

    #[test]
    fn oversized_length_frame_is_consumed_and_flagged() {
        let mut input = vec![0xff, 0xff];
        input.extend(std::iter::repeat_n(b'a', 0xffff));
        input.extend(b"\x00\x01z");
        let got = frames(Protocol::Ejabberd, &input);
        assert_eq!(got, vec![Frame::Oversized, request(b"z")]);
    }

    #[test]
    fn eof_inside_a_length_frame_ends_quietly() {
        assert!(frames(Protocol::Ejabberd, b"\x00").is_empty());
        assert!(frames(Protocol::Ejabberd, b"\x00\x05ab").is_empty());
        assert_eq!(
            frames(Protocol::Ejabberd, b"\x00\x01a\x00\x09ab"),
            vec![request(b"a")]
        );
    }

    #[test]
    fn lines_are_split_and_crlf_trimmed() {
        let got = frames(Protocol::Generic, b"auth:a:b:c\nisuser:a:b\r\n\n");
        assert_eq!(
            got,
            vec![request(b"auth:a:b:c"), request(b"isuser:a:b"), request(b"")]
        );
    }

    #[test]
    fn over_long_line_is_skipped_to_its_newline() {
        let mut input = vec![b'x'; MAX_REQUEST * 3];
        input.extend(b"\nisuser:a:b\n");
        let got = frames(Protocol::Generic, &input);
        assert_eq!(got, vec![Frame::Oversized, request(b"isuser:a:b")]);
    }

    #[test]
    fn line_cut_by_eof_is_not_answered() {
        assert_eq!(
            frames(Protocol::Generic, b"isuser:a:b\nauth:a:b"),
            vec![request(b"isuser:a:b")]
        );
    }

    #[test]
    fn answers_have_the_exact_bytes() {
        let mut out = Vec::new();
        for protocol in [Protocol::Ejabberd, Protocol::Generic] {
            protocol.write(&mut out, true).unwrap();
            protocol.write(&mut out, false).unwrap();
        }
        assert_eq!(out, b"\x00\x02\x00\x01\x00\x02\x00\x001\n0\n");
    }
}
