//! qam-extauth: ejabberd's external auth program (and, with `--protocol generic`, the line
//! protocol of Prosody's mod_auth_external), answering each request by asking qamd.

use clap::Parser;
use qam_client::{ClientOptions, TrustedDaemon, DEFAULT_SOCKET};
use qam_extauth::frame::Protocol;
use qam_extauth::log::Log;
use qam_extauth::serve;
use qam_extauth::service::Service;
use std::io;
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
