//! qam-extauth as a library: ejabberd's extauth framing and the generic line protocol, the
//! command parser, and the service answering each request by asking qamd (used by main.rs, fuzz/).

pub mod command;
pub mod frame;
pub mod log;
pub mod service;

use command::Command;
use frame::{Frame, Protocol};
use service::Answer;
use std::io::{self, BufRead, Write};

/// Answers requests one by one, in order, until the input ends. Every request read gets
/// exactly one answer, whatever it holds.
pub fn serve(
    protocol: Protocol,
    input: &mut impl BufRead,
    output: &mut impl Write,
    answerer: &mut impl Answer,
) -> io::Result<()> {
    while let Some(frame) = protocol.read(input)? {
        let accepted = match frame {
            Frame::Oversized => {
                answerer.log().line("over-long request answered no");
                false
            }
            Frame::Request(bytes) => match Command::parse(&bytes) {
                Ok(command) => answerer.answer(command),
                Err(err) => {
                    answerer
                        .log()
                        .line(&format!("unreadable request answered no: {err}"));
                    false
                }
            },
        };
        protocol.write(output, accepted)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Log;
    use std::io::Cursor;

    /// Records the commands it is asked and accepts only the password "right:pw".
    struct Recorder {
        /// Each command asked, as `name user server`, so a test can check what reached it
        /// and in which order.
        seen: Vec<String>,
        /// Where `serve` reports unreadable requests; silent in these tests.
        log: Log,
    }

    impl Answer for Recorder {
        fn answer(&mut self, command: Command) -> bool {
            let (user, server) = command.account();
            self.seen
                .push(format!("{} {user} {server}", command.name()));
            match command {
                Command::Auth { password, .. } => password.expose() == "right:pw",
                Command::IsUser { user, .. } => user == "alice",
                _ => true,
            }
        }
        fn log(&self) -> &Log {
            &self.log
        }
    }

    fn run(protocol: Protocol, input: Vec<u8>) -> (Vec<u8>, Vec<String>) {
        let mut recorder = Recorder {
            seen: Vec::new(),
            log: Log::Silent,
        };
        let mut output = Vec::new();
        serve(
            protocol,
            &mut Cursor::new(input),
            &mut output,
            &mut recorder,
        )
        .unwrap();
        (output, recorder.seen)
    }

    fn framed(requests: &[&[u8]]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for request in requests {
            bytes.extend((request.len() as u16).to_be_bytes());
            bytes.extend(*request);
        }
        bytes
    }

    const YES: [u8; 4] = [0, 2, 0, 1];
    const NO: [u8; 4] = [0, 2, 0, 0];

    #[test]
    fn every_ejabberd_command_gets_one_answer_in_order() {
        let input = framed(&[
            b"auth:alice:localhost:right:pw",
            b"auth:alice:localhost:wrong",
            b"isuser:alice:localhost",
            b"isuser:bob:localhost",
            b"setpass:alice:localhost:new:pw",
            b"tryregister:carol:localhost:pw",
            b"removeuser:alice:localhost",
            b"removeuser3:alice:localhost:pw",
        ]);
        let (output, seen) = run(Protocol::Ejabberd, input);
        assert_eq!(output, [YES, NO, YES, NO, YES, YES, YES, YES].concat());
        assert_eq!(seen.len(), 8);
        assert_eq!(seen[4], "setpass alice localhost");
        assert_eq!(seen[7], "removeuser3 alice localhost");
    }

    #[test]
    fn empty_oversized_and_garbage_frames_answer_no_and_keep_step() {
        let big = vec![b'a'; 0xffff];
        let input = framed(&[
            b"",
            &big,
            b"\xff\xfe\x00",
            b"auth:alice",
            b"isuser:alice:localhost:extra",
            b"auth:alice:localhost:right:pw",
        ]);
        let (output, seen) = run(Protocol::Ejabberd, input);
        assert_eq!(output, [NO, NO, NO, NO, NO, YES].concat());
        assert_eq!(seen, vec!["auth alice localhost"]);
    }

    #[test]
    fn eof_mid_frame_ends_without_a_partial_answer() {
        let mut input = framed(&[b"isuser:alice:localhost"]);
        input.extend([0x00, 0x30, b'a', b'u']);
        let (output, _) = run(Protocol::Ejabberd, input);
        assert_eq!(output, YES);
        let (output, _) = run(Protocol::Ejabberd, vec![0x00]);
        assert!(output.is_empty());
    }

    #[test]
    fn generic_lines_are_answered_one_per_line() {
        let mut input = b"auth:alice:localhost:right:pw\nauth:alice:localhost:nope\r\n".to_vec();
        input.extend(b"isuser:alice:localhost\n\ngarbage\n");
        input.extend(vec![b'x'; 10_000]);
        input.extend(b"\nisuser:bob:localhost\nauth:alice:localhost:right:pw");
        let (output, seen) = run(Protocol::Generic, input);
        assert_eq!(output, b"1\n0\n1\n0\n0\n0\n0\n");
        assert_eq!(seen.len(), 4);
    }
}
