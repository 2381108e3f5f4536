//! `CtlError`: every way a qamctl command can fail, worded for the sysadmin, and its exit
//! status (2 usage, 3 a deletion still pending, 1 the rest). Never holds a password.

use qam_client::{ClientError, UnknownDaemonUser};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The daemon refused (its code and message) or could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Trust(#[from] UnknownDaemonUser),
    /// The command cannot run as invoked (missing `--yes`, no terminal for a prompt, …).
    #[error("{0}")]
    Usage(String),
    /// `lookup` answered no account (the daemon's `not_found` for admin ops, said locally).
    #[error("not_found: no user named `{0}`")]
    NoSuchUser(String),
    #[error("the two passwords do not match; nothing was changed")]
    PasswordMismatch,
    #[error("{0}")]
    PasswordInput(String),
    /// The user answered no at the confirmation prompt.
    #[error("not confirmed; nothing was deleted")]
    NotConfirmed,
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// The import file has lines that cannot be imported; nothing was written.
    #[error("{file}: {count} invalid line(s), nothing was imported:{list}", file = .file.display(), count = .problems.len(), list = problem_list(.problems))]
    InvalidImport {
        file: PathBuf,
        problems: Vec<LineProblem>,
    },
    /// A batch failed its dry run; nothing was written.
    #[error("{source} ({place}); nothing was imported")]
    ImportRefused { source: ClientError, place: String },
    /// A batch failed while writing: earlier batches stay written.
    #[error("{source} ({place}); import stopped after {written} record(s) were written")]
    ImportStopped {
        source: ClientError,
        place: String,
        written: u64,
    },
    /// `import --from` refused entries (listed above it); nothing or only the rest was written.
    #[error("{0} entr(ies) of the source were not imported (see the list above)")]
    MoveInRefused(usize),
    /// A deletion started but is not complete: hooks failed, or have not all run yet.
    #[error("deletion of `{name}` pending: {reason}")]
    DeletionPending { name: String, reason: String },
    /// The daemon's answers break the protocol (e.g. a page that does not advance).
    #[error("qamd's answer is not valid: {0}")]
    Protocol(String),
}

/// One invalid line of an import file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProblem {
    /// The line's number in the file, from 1, so the admin can find and fix it.
    pub line: u64,
    /// What is wrong with it, listed after the line number in the error message.
    pub reason: String,
}

/// How many problems an error message lists before summarizing the rest.
const LISTED_PROBLEMS: usize = 20;

fn problem_list(problems: &[LineProblem]) -> String {
    let mut text = String::new();
    for problem in problems.iter().take(LISTED_PROBLEMS) {
        text.push_str(&format!("\n  line {}: {}", problem.line, problem.reason));
    }
    if problems.len() > LISTED_PROBLEMS {
        text.push_str(&format!(
            "\n  … and {} more",
            problems.len() - LISTED_PROBLEMS
        ));
    }
    text
}

impl CtlError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Usage(_) => 2,
            CtlError::DeletionPending { .. } => 3,
            _ => 1,
        }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CtlError {
        let what = what.into();
        move |source| CtlError::Io { what, source }
    }

    /// True when stdout was closed by the reader (e.g. `qamctl user list | head`).
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CtlError::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_import_lists_line_numbers() {
        let err = CtlError::InvalidImport {
            file: "users.jsonl".into(),
            problems: vec![LineProblem {
                line: 3,
                reason: "missing field `hash`".into(),
            }],
        };
        let text = err.to_string();
        assert!(text.contains("users.jsonl: 1 invalid line(s)"), "{text}");
        assert!(text.contains("line 3: missing field `hash`"), "{text}");
        assert_eq!(err.exit_code(), 1);
    }

    #[test]
    fn long_problem_lists_are_cut() {
        let problems = (1..=25)
            .map(|line| LineProblem {
                line,
                reason: "bad".into(),
            })
            .collect();
        let text = CtlError::InvalidImport {
            file: "f".into(),
            problems,
        }
        .to_string();
        assert!(text.contains("line 20: bad"));
        assert!(!text.contains("line 21: bad"));
        assert!(text.contains("and 5 more"));
    }

    #[test]
    fn only_usage_errors_exit_2() {
        assert_eq!(CtlError::Usage("x".into()).exit_code(), 2);
        assert_eq!(CtlError::PasswordMismatch.exit_code(), 1);
    }
}
