//! Verifying a password from another Rust service: `cargo run -p qam-client --example verify
//! -- USER` reads the password as one line on stdin and exits 0 accepted, 1 denied, 2 error.

use qam_client::{Client, ClientOptions, Password};
use std::io::BufRead;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(user) = std::env::args().nth(1) else {
        eprintln!("usage: verify USER  (password on stdin; socket from QAM_SOCKET)");
        return ExitCode::from(2);
    };
    let socket = std::env::var(qam_client::SOCKET_ENV)
        .unwrap_or_else(|_| qam_client::DEFAULT_SOCKET.to_owned());
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        eprintln!("cannot read the password from stdin");
        return ExitCode::from(2);
    }
    let password = Password::new(line.trim_end_matches(['\r', '\n']).to_owned());
    line.clear();
    let verdict = Client::connect(&ClientOptions::new(socket))
        .and_then(|mut qam| qam.verify(&user, &password));
    match verdict {
        Ok(true) => {
            println!("accepted");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("denied");
            ExitCode::from(1)
        }
        Err(err) => {
            // Fail closed: an unreachable daemon is never a yes.
            eprintln!("{err}");
            ExitCode::from(2)
        }
    }
}
