//! The module arguments of a `pam_qam.so` line in /etc/pam.d (`socket=PATH`, `debug`,
//! `timeout=SECONDS`); arguments meant for libpam itself (`use_first_pass`, …) pass through.

use std::path::PathBuf;
use std::time::Duration;

/// Round-trip bound when the pam.d line gives no `timeout=`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest `timeout=` accepted: a login prompt must never hang for minutes.
const MAX_TIMEOUT_SECONDS: u64 = 60;

/// What one pam.d line asks of the module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleArgs {
    /// `socket=`: where qamd listens, for a host whose qamd is not at the default path.
    pub socket: PathBuf,
    /// `timeout=`: how long connecting and each round trip to qamd may take, so a login
    /// prompt never hangs on a stuck qamd.
    pub timeout: Duration,
    /// `debug`: log each step to syslog at debug level.
    pub debug: bool,
    /// Arguments this module does not know (logged once per call so typos are visible).
    pub unknown: Vec<String>,
}

/// Arguments that libpam's `pam_get_authtok` reads by itself from the same line.
const LIBPAM_ARGS: [&str; 4] = [
    "use_first_pass",
    "try_first_pass",
    "use_authtok",
    "authtok_type",
];

impl ModuleArgs {
    /// Parses the arguments; a bad value keeps the default and is reported in `unknown`.
    pub fn parse<'a>(args: impl IntoIterator<Item = &'a str>) -> Self {
        let mut parsed = ModuleArgs {
            socket: PathBuf::from(qam_client::DEFAULT_SOCKET),
            timeout: DEFAULT_TIMEOUT,
            debug: false,
            unknown: Vec::new(),
        };
        for arg in args {
            let (key, value) = match arg.split_once('=') {
                Some((key, value)) => (key, Some(value)),
                None => (arg, None),
            };
            match (key, value) {
                ("socket", Some(path)) if !path.is_empty() => parsed.socket = PathBuf::from(path),
                ("timeout", Some(seconds)) => match seconds.parse::<u64>() {
                    Ok(n @ 1..=MAX_TIMEOUT_SECONDS) => parsed.timeout = Duration::from_secs(n),
                    _ => parsed.unknown.push(arg.to_owned()),
                },
                ("debug", None) => parsed.debug = true,
                (key, _) if LIBPAM_ARGS.contains(&key) => {}
                _ => parsed.unknown.push(arg.to_owned()),
            }
        }
        parsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_arguments() {
        let args = ModuleArgs::parse([]);
        assert_eq!(args.socket, PathBuf::from(qam_client::DEFAULT_SOCKET));
        assert_eq!(args.timeout, DEFAULT_TIMEOUT);
        assert!(!args.debug);
        assert!(args.unknown.is_empty());
    }

    #[test]
    fn reads_socket_timeout_and_debug() {
        let args =
            ModuleArgs::parse(["socket=/tmp/q.sock", "timeout=3", "debug", "use_first_pass"]);
        assert_eq!(args.socket, PathBuf::from("/tmp/q.sock"));
        assert_eq!(args.timeout, Duration::from_secs(3));
        assert!(args.debug);
        assert!(args.unknown.is_empty());
    }

    #[test]
    fn bad_values_keep_defaults_and_are_reported() {
        let args = ModuleArgs::parse([
            "timeout=0",
            "timeout=abc",
            "timeout=9999",
            "socket=",
            "sokcet=/x",
        ]);
        assert_eq!(args.timeout, DEFAULT_TIMEOUT);
        assert_eq!(args.socket, PathBuf::from(qam_client::DEFAULT_SOCKET));
        assert_eq!(args.unknown.len(), 5);
    }
}
