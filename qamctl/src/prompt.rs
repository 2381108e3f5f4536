//! Reading what qamctl asks the sysadmin for: passwords (a no-echo terminal prompt, or one
//! line of standard input) and the yes/no confirmation before a delete.

use crate::cli::PasswordInput;
use crate::error::CtlError;
use qam_client::wire::MAX_REQUEST_LINE;
use qam_client::Password;
use std::fs::File;
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::os::fd::AsFd;
use zeroize::Zeroize;

/// Whether a new password is asked twice (to catch typos) or once (to check it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    New,
    Check,
}

/// Gets a password for `name` as `input` says: from standard input, or prompted on the terminal.
pub fn password(input: PasswordInput, name: &str, purpose: Purpose) -> Result<Password, CtlError> {
    let password = if input.password_stdin {
        stdin_line()?
    } else {
        prompted(name, purpose)?
    };
    if password.is_empty() {
        return Err(CtlError::PasswordInput("the password is empty".into()));
    }
    Ok(password)
}

fn prompted(name: &str, purpose: Purpose) -> Result<Password, CtlError> {
    if !io::stdin().is_terminal() {
        return Err(CtlError::Usage(
            "standard input is not a terminal: pass --password-stdin to read the password from it"
                .into(),
        ));
    }
    let ask = |prompt: &str| {
        rpassword::prompt_password(prompt)
            .map(Password::new)
            .map_err(CtlError::io("reading the password from the terminal"))
    };
    let first = ask(&format!("Password for {name}: "))?;
    if purpose == Purpose::New {
        let again = ask(&format!("Password for {name} again: "))?;
        if first != again {
            return Err(CtlError::PasswordMismatch);
        }
    }
    Ok(first)
}

/// Reads one line from fd 0 byte by byte, so no copy of the password stays in a buffer we
/// cannot wipe, and nothing after the line is consumed. The newline (and a `\r`) is dropped.
fn stdin_line() -> Result<Password, CtlError> {
    let fd = io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(CtlError::io("reading the password from standard input"))?;
    let mut input = File::from(fd);
    // Longer than any request may be, so longer than any password the daemon accepts.
    let mut line: Vec<u8> = Vec::with_capacity(MAX_REQUEST_LINE + 1);
    let mut byte = [0u8; 1];
    loop {
        match input.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if line.len() == MAX_REQUEST_LINE => {
                line.zeroize();
                return Err(CtlError::PasswordInput(
                    "the password line on standard input is too long".into(),
                ));
            }
            Ok(_) => line.push(byte[0]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                line.zeroize();
                return Err(CtlError::io("reading the password from standard input")(
                    err,
                ));
            }
        }
    }
    byte.zeroize();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map(Password::new).map_err(|err| {
        err.into_bytes().zeroize();
        CtlError::PasswordInput("the password on standard input is not valid UTF-8".into())
    })
}

/// Asks `question` on the terminal and returns whether the answer was yes.
/// Without a terminal on standard input it refuses: `--yes` must say it instead.
pub fn confirm(question: &str) -> Result<bool, CtlError> {
    let stdin = io::stdin();
    if !stdin.is_terminal() {
        return Err(CtlError::Usage(
            "standard input is not a terminal: pass --yes to confirm".into(),
        ));
    }
    let mut stderr = io::stderr().lock();
    write!(stderr, "{question} [y/N] ")
        .and_then(|()| stderr.flush())
        .map_err(CtlError::io("asking for confirmation"))?;
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .map_err(CtlError::io("reading the confirmation"))?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}
