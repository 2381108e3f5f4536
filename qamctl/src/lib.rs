//! qamctl, qam's admin command line: account management, password checks, status, and the
//! export/import backup path, each one request (or a few) to qamd over its Unix socket.
//!
//! [`cli::Cli`] is the whole command line (man pages and completions are generated from it);
//! [`run`] executes a parsed command and returns the process exit status.

pub mod cli;
mod deletion;
mod error;
pub mod migrate;
mod move_in;
mod output;
mod pages;
mod prompt;
mod transfer;

pub use error::{CtlError, LineProblem};

use cli::{Cli, Command, DebugCommand, InviteCommand, OutputFormat, UserCommand};
use prompt::Purpose;
use qam_client::wire::{
    Account, DebugInfo, Done, InviteList, LinkInfo, ListPage, LookupInfo, NameInfo, StatusInfo,
};
use qam_client::{Client, ClientOptions, Request, TrustedDaemon};
use std::process::ExitCode;
use std::time::Duration;

/// How long qamctl waits for the daemon to connect or to answer one request.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a parsed command; errors are printed as `qamctl: <code>: <message>` on stderr.
pub fn run(cli: Cli) -> ExitCode {
    match execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`qamctl user list | head`): nothing left to say to anyone.
        Err(err) if err.is_broken_pipe() => ExitCode::from(err.exit_code()),
        Err(err) => {
            eprintln!("qamctl: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

fn connect(cli: &Cli) -> Result<Client, CtlError> {
    let options = ClientOptions::new(&cli.socket)
        .with_timeout(TIMEOUT)
        .with_trusted(TrustedDaemon::from_env_or_default()?);
    Ok(Client::connect(&options)?)
}

fn execute(cli: Cli) -> Result<(), CtlError> {
    match &cli.command {
        Command::User(command) => user(&cli, command),
        Command::Invite(command) => invite(&cli, command),
        Command::Debug(command) => {
            let seconds = match command {
                DebugCommand::On { length } => length.as_secs().max(1),
                DebugCommand::Off => 0,
            };
            let request = Request::Debug {
                seconds: Some(seconds),
            };
            let info: DebugInfo = connect(&cli)?.call(&request)?;
            output::emit(&match info.until {
                Some(until) => format!("debug logging until {until}"),
                None => "debug logging off: qamd logs at its configured level".to_owned(),
            })
        }
        Command::Verify { name, password } => {
            // Read the password before connecting: a prompt may take the sysadmin a while.
            let password = prompt::password(*password, name, Purpose::Check)?;
            let request = Request::Verify {
                user: name.clone(),
                password,
                client: None,
            };
            let info: NameInfo = connect(&cli)?.call(&request)?;
            output::emit(&format!("accepted: {}", info.name))
        }
        Command::Status { output } => {
            let status: StatusInfo = connect(&cli)?.call(&Request::Status)?;
            show(*output, &status, output::status)
        }
        Command::Export { file } => {
            let count = transfer::export(&mut connect(&cli)?, file.as_deref())?;
            if let Some(file) = file {
                output::emit(&format!("exported {count} user(s) to {}", file.display()))?;
            }
            Ok(())
        }
        Command::Import {
            file,
            replace,
            from,
        } => match from.source(file) {
            Some(source) => move_in(&cli, &source, from, *replace),
            None => {
                let done = transfer::import(&mut connect(&cli)?, file, *replace)?;
                output::emit(&format!(
                    "imported {} user(s), {} of them replaced",
                    done.imported, done.replaced
                ))
            }
        },
    }
}

/// `import --from`: the report, and exit status 1 unless every entry moved in (or, for a dry
/// run, would).
fn move_in(
    cli: &Cli,
    source: &migrate::Source,
    args: &cli::MoveInArgs,
    replace: bool,
) -> Result<(), CtlError> {
    let options = move_in::MoveInOptions {
        dry_run: args.dry_run,
        skip_bad: args.skip_bad,
        allow_weak: args.allow_weak,
        replace,
    };
    let report = move_in::import_from(&mut connect(cli)?, source, options)?;
    let text = if args.json {
        output::json(&report)?
    } else {
        move_in::describe(&report)
    };
    output::emit(&text)?;
    let complete = report.refused.is_empty() || (report.written && args.skip_bad);
    if complete {
        Ok(())
    } else {
        Err(CtlError::MoveInRefused(report.refused.len()))
    }
}

fn user(cli: &Cli, command: &UserCommand) -> Result<(), CtlError> {
    match command {
        UserCommand::Add {
            name,
            force,
            reuse_deleted_name,
            password,
        } => {
            let password = prompt::password(*password, name, Purpose::New)?;
            let request = Request::Register {
                user: name.clone(),
                password,
                force: *force,
                reuse_name: *reuse_deleted_name,
            };
            let info: NameInfo = connect(cli)?.call(&request)?;
            output::emit(&format!("created user {}", info.name))
        }
        UserCommand::Passwd { name, password } => {
            let password = prompt::password(*password, name, Purpose::New)?;
            let request = Request::SetPassword {
                user: name.clone(),
                password,
            };
            connect(cli)?.call::<Done>(&request)?;
            output::emit(&format!("password of {name} changed"))
        }
        UserCommand::Del { name, yes, wait } => {
            let question = format!("Delete user {name} from qam and from every service?");
            if !yes && !prompt::confirm(&question)? {
                return Err(CtlError::NotConfirmed);
            }
            deletion::delete(&mut connect(cli)?, name, *wait)
        }
        UserCommand::Lock { name } => {
            admin(cli, Request::Lock { user: name.clone() })?;
            output::emit(&format!("locked user {name}"))
        }
        UserCommand::Unlock { name } => {
            admin(cli, Request::Unlock { user: name.clone() })?;
            output::emit(&format!("unlocked user {name}"))
        }
        UserCommand::Show { name, output } => {
            let info: LookupInfo = connect(cli)?.call(&Request::Lookup { user: name.clone() })?;
            let account = info
                .account
                .ok_or_else(|| CtlError::NoSuchUser(name.clone()))?;
            show(*output, &account, output::account)
        }
        UserCommand::List { legacy, output } => {
            let mut accounts: Vec<Account> = Vec::new();
            pages::each_page::<ListPage>(
                &mut connect(cli)?,
                |after, limit| Request::List { after, limit },
                |page| {
                    accounts.extend(page);
                    Ok(())
                },
            )?;
            if *legacy {
                accounts.retain(|account| account.legacy.is_some());
            }
            show(*output, accounts.as_slice(), output::accounts)
        }
        UserCommand::Reset {
            name,
            expires,
            output,
        } => {
            let request = Request::ResetCreate {
                user: name.clone(),
                expires_seconds: Some(expires.as_secs()),
            };
            let link: LinkInfo = connect(cli)?.call(&request)?;
            show(*output, &link, output::link)
        }
    }
}

fn invite(cli: &Cli, command: &InviteCommand) -> Result<(), CtlError> {
    match command {
        InviteCommand::Create {
            expires,
            uses,
            note,
            output,
        } => {
            let request = Request::InviteCreate {
                expires_seconds: Some(expires.as_secs()),
                uses: Some(*uses),
                note: note.clone(),
            };
            let link: LinkInfo = connect(cli)?.call(&request)?;
            show(*output, &link, output::link)
        }
        InviteCommand::List { output } => {
            let list: InviteList = connect(cli)?.call(&Request::InviteList)?;
            show(*output, &list, output::invites)
        }
        InviteCommand::Revoke { id } => {
            admin(cli, Request::InviteRevoke { invite: id.clone() })?;
            output::emit(&format!("revoked invite {id}"))
        }
    }
}

/// Sends an admin request whose answer carries nothing but success.
fn admin(cli: &Cli, request: Request) -> Result<(), CtlError> {
    connect(cli)?.call::<Done>(&request)?;
    Ok(())
}

/// Prints `value` as JSON or as the table `table` makes of it.
fn show<T: serde::Serialize + ?Sized>(
    format: OutputFormat,
    value: &T,
    table: impl FnOnce(&T) -> String,
) -> Result<(), CtlError> {
    let text = if format.json {
        output::json(value)?
    } else {
        table(value)
    };
    output::emit(&text)
}
