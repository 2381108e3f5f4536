//! Answers parsed extauth commands by asking qamd: auth → verify, isuser → exists,
//! tryregister → register, setpass → set_password; removal only of an account qamd is deleting.

use crate::command::Command;
use crate::log::Log;
use qam_client::wire::{Done, ExistsInfo, LookupInfo, NameInfo};
use qam_client::{Client, ClientError, ClientOptions, ErrorCode, Request};
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Anything that answers a command yes or no (`serve` drives one).
pub trait Answer {
    fn answer(&mut self, command: Command) -> bool;
    /// Where to report requests that could not be answered properly.
    fn log(&self) -> &Log;
}

/// The qamd side: one connection kept open between requests, opened again when needed.
pub struct Service {
    /// XMPP hosts answered for, lowercase; a request for any other host is refused.
    domains: Vec<String>,
    /// Socket, trusted daemon uids and the per-attempt timeout (half the request deadline).
    options: ClientOptions,
    /// The open connection, dropped after any transport error.
    client: Option<Client>,
    /// Where answers other than the operation's expected yes or no are explained (qamd
    /// refused, or a host not served): the peer itself only ever sees false.
    log: Log,
}

impl Service {
    /// `deadline` bounds each request: at most two attempts (the first on a reused connection
    /// that may have gone stale, the second on a fresh one), each given half of it.
    pub fn new(domains: &[String], options: ClientOptions, deadline: Duration, log: Log) -> Self {
        Service {
            domains: domains
                .iter()
                .map(|domain| domain.to_ascii_lowercase())
                .collect(),
            options: options.with_timeout(deadline / 2),
            client: None,
            log,
        }
    }

    /// Sends a request, retrying once on a fresh connection when a reused one turns out closed.
    fn call<T: DeserializeOwned>(&mut self, request: &Request) -> Result<T, ClientError> {
        let reused = self.client.is_some();
        match self.attempt(request) {
            Err(err) if reused && err.is_unavailable() && !matches!(err, ClientError::Timeout) => {
                self.attempt(request)
            }
            result => result,
        }
    }

    fn attempt<T: DeserializeOwned>(&mut self, request: &Request) -> Result<T, ClientError> {
        let client = match &mut self.client {
            Some(client) => client,
            None => self.client.insert(Client::connect(&self.options)?),
        };
        let result = client.call(request);
        if let Err(err) = &result {
            if err.is_unavailable() || matches!(err, ClientError::Protocol(_)) {
                self.client = None;
            }
        }
        result
    }

    /// Logs a failed call unless it is the expected "no" of the operation. The attempted
    /// user name is never logged (it may be a password typed into the wrong field).
    fn refused(&self, command: &Command, err: &ClientError) -> bool {
        let server = command.account().1;
        match err.code() {
            Some(ErrorCode::Denied) => {}
            Some(ErrorCode::Forbidden) => self.log.line(&format!(
                "{} on {server} refused: qamd does not grant this operation to this program's user (see [permissions] in qamd's config)",
                command.name()
            )),
            Some(code) => self.log.line(&format!(
                "{} on {server} refused by qamd: {code}",
                command.name()
            )),
            None => self.log.line(&format!("{} on {server} answered no: {err}", command.name())),
        }
        false
    }
}

impl Answer for Service {
    fn answer(&mut self, command: Command) -> bool {
        let (user, server) = command.account();
        if !self
            .domains
            .iter()
            .any(|domain| domain.eq_ignore_ascii_case(server))
        {
            self.log.line(&format!(
                "{} for a host not served ({server}) answered no",
                command.name()
            ));
            return false;
        }
        let user = user.to_owned();
        let result = match &command {
            Command::Auth { password, .. } => self
                .call::<NameInfo>(&Request::Verify {
                    user,
                    password: password.clone(),
                    client: None,
                })
                .map(|_| true),
            Command::IsUser { .. } => self
                .call::<ExistsInfo>(&Request::Exists { user })
                .map(|info| info.exists),
            Command::TryRegister { password, .. } => self
                .call::<NameInfo>(&Request::Register {
                    user,
                    password: password.clone(),
                    force: false,
                    reuse_name: false,
                })
                .map(|_| true),
            Command::SetPass { password, .. } => self
                .call::<Done>(&Request::SetPassword {
                    user,
                    password: password.clone(),
                })
                .map(|_| true),
            // ejabberd purges the account's data only after its backend agreed to remove it;
            // qamd's own deletion (qam-hooks running `ejabberdctl unregister`) is let through,
            // a user's in-band unregistration is not.
            Command::RemoveUser { .. } | Command::RemoveUser3 { .. } => {
                match self.call::<LookupInfo>(&Request::Lookup { user }) {
                    Ok(LookupInfo {
                        account: Some(account),
                    }) if account.deleting => Ok(true),
                    Ok(_) => {
                        self.log.line(&format!(
                            "{} on {server} refused: accounts are removed by an admin with qamctl",
                            command.name()
                        ));
                        return false;
                    }
                    Err(err) => Err(err),
                }
            }
        };
        result.unwrap_or_else(|err| self.refused(&command, &err))
    }

    fn log(&self) -> &Log {
        &self.log
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qam_client::Password;
    use std::os::unix::net::UnixListener;
    use std::time::Instant;

    fn service(socket: &std::path::Path, deadline: Duration) -> Service {
        let domains = vec!["LocalHost".to_owned()];
        Service::new(&domains, ClientOptions::new(socket), deadline, Log::Silent)
    }

    fn auth(server: &str) -> Command {
        Command::Auth {
            user: "alice".into(),
            server: server.into(),
            password: Password::from("pw"),
        }
    }

    #[test]
    fn an_absent_daemon_means_no_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut service = service(&dir.path().join("none.sock"), Duration::from_secs(5));
        let start = Instant::now();
        assert!(!service.answer(auth("localhost")));
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_silent_daemon_means_no_within_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        // Each attempt gets half the deadline; a fresh connection is not retried.
        let mut service = service(&path, Duration::from_millis(1000));
        for _ in 0..2 {
            let start = Instant::now();
            assert!(!service.answer(auth("localhost")));
            let took = start.elapsed();
            assert!(
                took >= Duration::from_millis(490) && took < Duration::from_millis(1000),
                "{took:?}"
            );
        }
        drop(listener);
    }

    #[test]
    fn other_hosts_never_reach_the_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qamd.sock");
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let mut service = service(&path, Duration::from_secs(5));
        assert!(!service.answer(auth("example.org")));
        assert!(!service.answer(Command::RemoveUser {
            user: "alice".into(),
            server: "example.org".into()
        }));
        assert!(listener.accept().is_err(), "nothing connected");
    }

    /// A qamd that answers each `lookup` with `account` (JSON), echoing the request id.
    fn lookup_daemon(
        path: &std::path::Path,
        account: &'static str,
    ) -> std::thread::JoinHandle<Vec<String>> {
        use std::io::{BufRead, BufReader, Write};
        let listener = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            let mut seen = Vec::new();
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 0 {
                let request: serde_json::Value = serde_json::from_str(&line).unwrap();
                seen.push(format!("{} {}", request["op"], request["user"]));
                let answer = format!(
                    "{{\"ok\":true,\"id\":{},\"account\":{account}}}\n",
                    request["id"]
                );
                writer.write_all(answer.as_bytes()).unwrap();
                line.clear();
            }
            seen
        })
    }

    fn removals(service: &mut Service) -> [bool; 2] {
        [
            service.answer(Command::RemoveUser {
                user: "alice".into(),
                server: "localhost".into(),
            }),
            service.answer(Command::RemoveUser3 {
                user: "alice".into(),
                server: "localhost".into(),
            }),
        ]
    }

    #[test]
    fn removal_is_accepted_only_for_an_account_being_deleted() {
        let dir = tempfile::tempdir().unwrap();
        for (account, accepted) in [
            (
                r#"{"name":"alice","email":"alice@localhost","created":"2026-12-03","locked":true,"deleting":true}"#,
                true,
            ),
            (
                r#"{"name":"alice","email":"alice@localhost","created":"2026-12-03","locked":true}"#,
                false,
            ),
            ("null", false),
        ] {
            let path = dir
                .path()
                .join(format!("qamd-{accepted}-{}.sock", account.len()));
            let daemon = lookup_daemon(&path, account);
            let mut service = service(&path, Duration::from_secs(5));
            assert_eq!(removals(&mut service), [accepted; 2], "{account}");
            drop(service);
            assert_eq!(
                daemon.join().unwrap(),
                ["\"lookup\" \"alice\"", "\"lookup\" \"alice\""]
            );
        }
    }

    #[test]
    fn removal_without_qamd_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut service = service(&dir.path().join("none.sock"), Duration::from_secs(5));
        assert_eq!(removals(&mut service), [false; 2]);
    }
}
