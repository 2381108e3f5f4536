//! qam-docgen: writes the man pages qamd(8) and qamctl(8) and bash/zsh/fish completions from
//! the daemon's and qamctl's clap definitions, so the docs never drift from the flags.

use clap::{Command, CommandFactory};
use clap_complete::Shell;
use roff::{bold, roman, Roff};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// A file that could not be written, with its path.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
struct WriteError {
    /// The file, so the one error line says which.
    path: PathBuf,
    /// Why the write failed.
    source: io::Error,
}

/// The shells qam ships completions for, each with its directory under the output dir.
const SHELLS: [(Shell, &str); 3] = [
    (Shell::Bash, "completions/bash"),
    (Shell::Zsh, "completions/zsh"),
    (Shell::Fish, "completions/fish"),
];

/// A man page section the clap definitions cannot hold: title and (term, text) entries; an
/// entry without a term is a plain paragraph.
type Section = (&'static str, &'static [(&'static str, &'static str)]);

const QAMD_SECTIONS: &[Section] = &[
    (
        "SIGNALS",
        &[
            ("SIGTERM, SIGINT", "Stop accepting connections, let requests in flight finish, flush the account store, exit 0."),
            ("SIGHUP", "Re-read the config file and apply, without dropping connections: permissions, registration_open, admin_group, mail_domain, the username and password rules, the hash costs for new hashes, and log_level. The log names each change; settings that only a restart applies are named and keep their running values. An invalid file changes nothing. systemctl reload qamd sends it."),
        ],
    ),
    (
        "SYSTEMD",
        &[
            ("", "qamd.service runs qamd as the unprivileged qam user (Type=notify: READY=1 once the store is open and the socket served, with a STATUS= line). qamd.socket passes /run/qam/qamd.sock (FileDescriptorName=qamd) and the optional qamd-saslauthd.socket passes /run/qam/saslauthd/mux (FileDescriptorName=saslauthd); without passed sockets qamd binds the configured paths itself. The userdb socket ([nss] enabled) is never passed: qamd binds it itself, so no lookup waits for qamd to start. Under the journal (JOURNAL_STREAM set) log lines carry no timestamps."),
        ],
    ),
    (
        "FILES",
        &[
            ("/etc/qam/qamd.toml", "The config file; every key is listed there, commented, with its default."),
            ("/var/lib/qam", "The account store (mode 0700)."),
            ("/run/qam/qamd.sock", "The JSON-lines protocol socket (mode 0660, group qam)."),
            ("/run/qam/io.qam", "With [nss] enabled: the io.systemd.UserDatabase socket (mode 0666) through which nss-systemd shows qam accounts to the system."),
            ("/run/systemd/userdb/io.qam", "The symlink to /run/qam/io.qam where nss-systemd finds it (/usr/lib/tmpfiles.d/qam.conf); it dangles while qamd is down, and lookups skip it at once."),
        ],
    ),
    ("SEE ALSO", &[("", "qamctl(8), systemd.socket(5), systemctl(1)")]),
];

const QAMCTL_SECTIONS: &[Section] = &[
    (
        "ENVIRONMENT",
        &[
            ("QAM_SOCKET", "The socket of qamd (default /run/qam/qamd.sock)."),
            ("QAM_DAEMON_USERS", "Comma-separated users or uids trusted to serve the socket (default: root, qam and the caller), checked with SO_PEERCRED."),
        ],
    ),
    ("SEE ALSO", &[("", "qamd(8)")]),
];

/// The extra sections of a program's main page.
fn extra_sections(name: &str) -> &'static [Section] {
    match name {
        "qamd" => QAMD_SECTIONS,
        "qamctl" => QAMCTL_SECTIONS,
        _ => &[],
    }
}

fn render_sections(sections: &[Section]) -> Roff {
    let mut roff = Roff::new();
    for (title, entries) in sections {
        roff.control("SH", [*title]);
        for (term, text) in *entries {
            if term.is_empty() {
                roff.control("PP", []);
            } else {
                roff.control("TP", []);
                roff.text([bold(*term)]);
            }
            roff.text([roman(*text)]);
        }
    }
    roff
}

fn main() -> ExitCode {
    let out = match std::env::args_os().nth(1) {
        Some(dir) => PathBuf::from(dir),
        None => {
            eprintln!(
                "usage: qam-docgen OUT_DIR  (writes OUT_DIR/man/*.8 and OUT_DIR/completions/*)"
            );
            return ExitCode::from(2);
        }
    };
    let commands = [qamd::cli::Cli::command(), qamctl::cli::Cli::command()];
    for command in commands {
        if let Err(err) = write_docs(command, &out) {
            eprintln!("qam-docgen: {err}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// Writes one program's man pages (section 8: both are system administration programs),
/// one per subcommand as `git` does (`qamctl-user-add.8`), and its completion scripts.
fn write_docs(command: Command, out: &Path) -> Result<(), WriteError> {
    let name = command.get_name().to_owned();
    let mut built = command.clone().disable_help_subcommand(true);
    built.build();
    write_pages(built, &out.join("man"), extra_sections(&name))?;
    for (shell, dir) in SHELLS {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut command.clone(), &name, &mut script);
        write_file(&out.join(dir).join(completion_file(shell, &name)), &script)?;
    }
    Ok(())
}

/// Renders the page of `command` with `extra` sections and, recursively, of each visible
/// subcommand.
fn write_pages(command: Command, dir: &Path, extra: &[Section]) -> Result<(), WriteError> {
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        write_pages(sub.clone(), dir, &[])?;
    }
    let man = clap_mangen::Man::new(command).section("8");
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    man.render(&mut page)
        .and_then(|()| render_sections(extra).to_writer(&mut page))
        .map_err(|source| WriteError {
            path: path.clone(),
            source,
        })?;
    write_file(&path, &page)
}

/// The file name each shell's completion loader expects for command `name`.
fn completion_file(shell: Shell, name: &str) -> String {
    match shell {
        Shell::Zsh => format!("_{name}"),
        Shell::Fish => format!("{name}.fish"),
        _ => name.to_owned(),
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let error = |source| WriteError {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(error)?;
    }
    fs::write(path, bytes).map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_files_are_named_as_each_shell_expects() {
        assert_eq!(completion_file(Shell::Bash, "qamctl"), "qamctl");
        assert_eq!(completion_file(Shell::Zsh, "qamctl"), "_qamctl");
        assert_eq!(completion_file(Shell::Fish, "qamctl"), "qamctl.fish");
    }
}
