//! qamctl's command line as clap derive types; the man pages and shell completions are
//! generated from [`Cli`], so every help text here is user documentation.

use crate::migrate::{LockedEntries, ScramHash};
use clap::{Args, Parser, Subcommand, ValueEnum};
use qam_client::{DEFAULT_SOCKET, SOCKET_ENV};
use std::path::PathBuf;

/// Administer qam accounts through the qamd daemon.
///
/// Every command talks to qamd over its Unix socket and needs admin rights there (root or a
/// member of qamd's admin group). Errors print the daemon's error code and message; the exit
/// status is 0 on success, 1 on any failure (a denied `verify` included), 2 on a usage error,
/// 3 while a deletion is pending.
#[derive(Debug, Parser)]
#[command(name = "qamctl", version, propagate_version = true)]
pub struct Cli {
    /// qamd's socket.
    #[arg(long, global = true, value_name = "PATH", env = SOCKET_ENV, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,

    /// The command given, which `execute` runs (not shown in `--help`: clap takes help
    /// from the subcommands themselves).
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, change, lock, delete and show accounts.
    #[command(subcommand)]
    User(UserCommand),

    /// Make, list and withdraw invite links to the self-service page.
    #[command(subcommand)]
    Invite(InviteCommand),

    /// Log at debug level for a while (`on --for 30m`), or stop now (`off`).
    ///
    /// qamd returns to its configured level by itself when the window ends; `status` shows
    /// until when. Debug lines name users and operations, never passwords or tokens.
    #[command(subcommand)]
    Debug(DebugCommand),

    /// Check a user's password: exit 0 when accepted, 1 when denied.
    Verify {
        /// The user name.
        name: String,
        #[command(flatten)]
        password: PasswordInput,
    },

    /// Show the daemon's counters: users, hashing pool, verify outcomes.
    Status {
        #[command(flatten)]
        output: OutputFormat,
    },

    /// Write every account (name, password hash, created, locked) as JSON lines.
    ///
    /// This is the backup: the file holds password hashes and is created with mode 0600,
    /// written to a temporary file first and renamed into place when complete.
    Export {
        /// Where to write; standard output when absent.
        file: Option<PathBuf>,
    },

    /// Load accounts from a file written by `export` (the restore path), or move them in from
    /// another server's password store (`--from`).
    ///
    /// Every line is checked before anything is written: invalid lines are reported with their
    /// line number and nothing is imported. Names that already exist refuse the whole import
    /// unless `--replace` is given.
    ///
    /// With `--from`, PATH is another server's password store and its accounts move in with
    /// the verifiers they have: each user logs in with the password they already have, and
    /// that first login replaces the old verifier with argon2id. `--dry-run` shows what would
    /// move in; nothing is written while any entry is refused, unless `--skip-bad`.
    Import {
        /// A JSON-lines file as `export` writes it; with `--from`, the source's file (Prosody:
        /// its data directory, e.g. /var/lib/prosody).
        file: PathBuf,
        /// Overwrite accounts whose names already exist.
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        from: MoveInArgs,
    },
}

/// Which legacy store `import --from` reads, and how.
#[derive(Debug, Clone, Args)]
pub struct MoveInArgs {
    /// The kind of store PATH is.
    #[arg(long, value_enum)]
    pub from: Option<SourceKind>,
    /// Prosody: the virtual host whose accounts to read (e.g. example.org).
    #[arg(long, required_if_eq("from", "prosody"))]
    pub host: Option<String>,
    /// Prosody: its `password_hash` setting (the hash is not stored per account).
    #[arg(long, value_enum, default_value = "sha-1")]
    pub scram_hash: ScramHash,
    /// shadow: the passwd file giving each name's uid.
    #[arg(long, default_value = "/etc/passwd")]
    pub passwd: PathBuf,
    /// shadow: the lowest uid of a person (system accounts stay out).
    #[arg(long, default_value_t = 1000)]
    pub min_uid: u32,
    /// shadow: the highest uid of a person.
    #[arg(long, default_value_t = 59999)]
    pub max_uid: u32,
    /// shadow: import `!`-locked entries locked, or skip them.
    #[arg(long, value_enum, default_value = "lock")]
    pub locked: LockedEntries,
    /// Check and report only; write nothing.
    #[arg(long, requires = "from")]
    pub dry_run: bool,
    /// Write what can be taken and leave the refused entries out (they are listed).
    #[arg(long, requires = "from")]
    pub skip_bad: bool,
    /// Accept weak schemes (MD5-crypt); `status` names them until their users log in.
    #[arg(long, requires = "from")]
    pub allow_weak: bool,
    /// Print the report as JSON.
    #[arg(long, requires = "from")]
    pub json: bool,
}

/// The stores `import --from` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceKind {
    /// Prosody's internal_hashed (or internal_plain) data directory.
    Prosody,
    /// A XEP-0227 export from `ejabberdctl export_piefxis`.
    Ejabberd,
    /// A Dovecot passwd-file.
    Dovecot,
    /// /etc/shadow (with --passwd for the uids).
    Shadow,
    /// An Apache htpasswd file made with `htpasswd -B`.
    Htpasswd,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account (asks for the password twice).
    Add {
        /// The new user's name (stored in lowercase).
        name: String,
        /// Take a name the system's user or group database knows (pam_qam then logs that
        /// unix user in with the qam password).
        #[arg(long)]
        force: bool,
        /// Take the name of an account deleted less than `name_quarantine_days` ago (other
        /// users' rosters and mail may still point at it).
        #[arg(long)]
        reuse_deleted_name: bool,
        #[command(flatten)]
        password: PasswordInput,
    },

    /// Set a new password for an account (asks for it twice).
    Passwd {
        /// The user name.
        name: String,
        #[command(flatten)]
        password: PasswordInput,
    },

    /// Delete an account everywhere: in every service through the hooks, then in qam.
    ///
    /// With hooks installed (see README, "Deleting and locking across services"), the account
    /// is locked, qam-hooks runs every hook, and the record is erased only once all
    /// succeeded; each hook's result is shown. While any hook failed or has not run, the exit
    /// status is 3 and the account stays locked, listed as deletion pending: run the same
    /// command again to retry what is left. Asks for confirmation on a terminal; without a
    /// terminal, `--yes` is required.
    Del {
        /// The user name.
        name: String,
        /// Delete without asking.
        #[arg(short, long)]
        yes: bool,
        /// How long to wait for the hooks, e.g. `60s`, `5m`.
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
        wait: std::time::Duration,
    },

    /// Lock an account: its password is refused until it is unlocked.
    Lock {
        /// The user name.
        name: String,
    },

    /// Unlock a locked account.
    Unlock {
        /// The user name.
        name: String,
    },

    /// Show one account: name, e-mail, creation date, locked.
    Show {
        /// The user name.
        name: String,
        #[command(flatten)]
        output: OutputFormat,
    },

    /// List every account, sorted by name.
    List {
        /// Only accounts still on a verifier moved in from another store, with its scheme.
        #[arg(long)]
        legacy: bool,
        #[command(flatten)]
        output: OutputFormat,
    },

    /// Make a link with which the user sets a new password on the self-service page.
    ///
    /// Prints `<web_url>/reset/<token>`. The link works once; a newer link for the same
    /// account replaces it, and changing the password any other way withdraws it.
    Reset {
        /// The user name.
        name: String,
        /// How long the link works, e.g. `24h`, `3d` (at most 7 days).
        #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = humantime::parse_duration)]
        expires: std::time::Duration,
        #[command(flatten)]
        output: OutputFormat,
    },
}

#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Open a window of debug logging.
    On {
        /// How long, e.g. `30m`, `2h` (at most a day).
        #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
        length: std::time::Duration,
    },
    /// Close the window now: back to the configured level.
    Off,
}

#[derive(Debug, Subcommand)]
pub enum InviteCommand {
    /// Make an invite link: prints `<web_url>/join/<token>` (shown this once only).
    Create {
        /// How long the link works, e.g. `7d`, `12h` (at most 90 days).
        #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = humantime::parse_duration)]
        expires: std::time::Duration,
        /// How many accounts it may make.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// A note for admins (whom it is for); never shown on the page.
        #[arg(long, value_name = "TEXT")]
        note: Option<String>,
        #[command(flatten)]
        output: OutputFormat,
    },

    /// List live invites: id, expiry, uses left, note (never their tokens).
    List {
        #[command(flatten)]
        output: OutputFormat,
    },

    /// Withdraw an invite by the id `invite list` shows.
    Revoke {
        /// The invite's id.
        id: String,
    },
}

/// Where a password comes from.
#[derive(Debug, Clone, Copy, Args)]
pub struct PasswordInput {
    /// Read the password as one line from standard input instead of prompting on the terminal.
    #[arg(long)]
    pub password_stdin: bool,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, Args)]
pub struct OutputFormat {
    /// Print one JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl MoveInArgs {
    /// The store `import --from` reads at `path`; `None` for a restore of qam's own export.
    pub fn source(&self, path: &std::path::Path) -> Option<crate::migrate::Source> {
        use crate::migrate::{Source, UidRange};
        let file = path.to_owned();
        Some(match self.from? {
            SourceKind::Prosody => Source::Prosody {
                dir: file,
                host: self.host.clone().unwrap_or_default(),
                hash: self.scram_hash,
            },
            SourceKind::Ejabberd => Source::Ejabberd { file },
            SourceKind::Dovecot => Source::Dovecot { file },
            SourceKind::Shadow => Source::Shadow {
                file,
                passwd: self.passwd.clone(),
                uids: UidRange {
                    min: self.min_uid,
                    max: self.max_uid,
                },
                locked: self.locked,
            },
            SourceKind::Htpasswd => Source::Htpasswd { file },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn json_and_password_flags_parse_after_the_name() {
        let cli = Cli::try_parse_from(["qamctl", "user", "show", "alice", "--json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::User(UserCommand::Show {
                output: OutputFormat { json: true },
                ..
            })
        ));
        let cli = Cli::try_parse_from(["qamctl", "verify", "bob", "--password-stdin"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Verify {
                password: PasswordInput {
                    password_stdin: true
                },
                ..
            }
        ));
    }

    #[test]
    fn socket_is_global() {
        let cli = Cli::try_parse_from(["qamctl", "status", "--socket", "/tmp/x.sock"]).unwrap();
        assert_eq!(cli.socket, PathBuf::from("/tmp/x.sock"));
    }
}
