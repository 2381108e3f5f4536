//! qam-extauth: ejabberd's external auth program (and, with `--protocol generic`, the line
//! protocol of Prosody's mod_auth_external), answering each request by asking qamd.

mod command;
mod frame;
mod log;
mod service;

use clap::Parser;
use command::Command;
use frame::{Frame, Protocol};
use log::Log;
use qam_client::{ClientOptions, TrustedDaemon, DEFAULT_SOCKET};
use service::{Answer, Service};
use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Authenticates XMPP users against qamd for ejabberd (extauth) or a generic line protocol.
#[derive(Parser, Debug)]
#[command(name = "qam-extauth", version)]
struct Cli {
    /// qamd's socket.
    #[arg(long, env = qam_client::SOCKET_ENV, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// An XMPP host to answer for (repeat for several); requests for other hosts answer false.
    #[arg(long = "domain", required = true, value_name = "HOST")]
    domains: Vec<String>,
    /// The peer's protocol on stdin/stdout.
    #[arg(long, value_enum, default_value_t = Protocol::Ejabberd)]
    protocol: Protocol,
    /// Answer false when qamd has not answered within this many milliseconds; keep it below
    /// the peer's own deadline (ejabberd: 30 s; mod_auth_external: 5 s).
    /// Default: 10000 for ejabberd, 3000 for generic.
    #[arg(long, value_name = "MS")]
    deadline_ms: Option<u64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = match cli.protocol {
        Protocol::Ejabberd => Log::Stderr,
        Protocol::Generic => {
            raw_tty_stdin();
            Log::syslog()
        }
    };
    let trusted = TrustedDaemon::from_env_or_default().unwrap_or_else(|err| {
        log.line(&format!(
            "{err}; trusting no daemon, every request answers false"
        ));
        TrustedDaemon::uids([])
    });
    let deadline = Duration::from_millis(cli.deadline_ms.unwrap_or(match cli.protocol {
        Protocol::Ejabberd => 10_000,
        Protocol::Generic => 3_000,
    }));
    let options = ClientOptions::new(&cli.socket).with_trusted(trusted);
    let mut service = Service::new(&cli.domains, options, deadline, log);
    let stdin = io::stdin();
    let stdout = io::stdout();
    // Read or write failures mean the peer is gone: like EOF, end quietly and successfully.
    let _ = serve(
        cli.protocol,
        &mut stdin.lock(),
        &mut stdout.lock(),
        &mut service,
    );
    ExitCode::SUCCESS
}

/// Answers requests one by one, in order, until the input ends. Every request read gets
/// exactly one answer, whatever it holds.
fn serve(
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

/// mod_auth_external talks through a pty: without raw mode the tty echoes each query back and
/// the peer reads the echo as the answer. An echo of input that arrived before raw mode took
/// effect is discarded from the tty's output queue (nothing has been answered yet).
fn raw_tty_stdin() {
    use nix::sys::termios::{cfmakeraw, tcflush, tcgetattr, tcsetattr, FlushArg, SetArg};
    let stdin = io::stdin();
    if !nix::unistd::isatty(&stdin).unwrap_or(false) {
        return;
    }
    if let Ok(mut termios) = tcgetattr(&stdin) {
        cfmakeraw(&mut termios);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &termios);
        let _ = tcflush(&stdin, FlushArg::TCOFLUSH);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// Records the commands it is asked and accepts only the password "right:pw".
    struct Recorder {
        seen: Vec<String>,
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
