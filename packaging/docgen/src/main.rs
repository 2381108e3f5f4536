//! qam-docgen: writes the man pages qamd(8) and qamctl(8) and bash/zsh/fish completions from
//! the daemon's and qamctl's clap definitions, so the docs never drift from the flags.

use clap::{Command, CommandFactory};
use clap_complete::Shell;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// A file that could not be written, with its path.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
struct WriteError {
    path: PathBuf,
    source: io::Error,
}

/// The shells qam ships completions for, each with its directory under the output dir.
const SHELLS: [(Shell, &str); 3] = [
    (Shell::Bash, "completions/bash"),
    (Shell::Zsh, "completions/zsh"),
    (Shell::Fish, "completions/fish"),
];

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
    write_pages(built, &out.join("man"))?;
    for (shell, dir) in SHELLS {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut command.clone(), &name, &mut script);
        write_file(&out.join(dir).join(completion_file(shell, &name)), &script)?;
    }
    Ok(())
}

/// Renders the page of `command` and, recursively, of each visible subcommand.
fn write_pages(command: Command, dir: &Path) -> Result<(), WriteError> {
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        write_pages(sub.clone(), dir)?;
    }
    let man = clap_mangen::Man::new(command).section("8");
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    man.render(&mut page).map_err(|source| WriteError {
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
