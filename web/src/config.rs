//! qam-web's configuration: where it listens, which qamd it asks, what the host calls itself
//! and which services an account opens, read from a TOML file and overridden by flags.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Config file read when `--config` is not given and the file exists.
pub const DEFAULT_CONFIG: &str = "/etc/qam/qam-web.toml";

/// Everything wrong with a configuration, for the one line qam-web prints before exiting 1.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid --listen `{0}`: give a socket path (unix:/run/qam-web/web.sock) or a loopback address (127.0.0.1:8080)")]
    Listen(String),
}

/// The whole configuration with defaults applied.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the page listens: `unix:PATH` (the default, for the reverse proxy) or a loopback
    /// `IP:PORT`. Ignored when systemd passes a socket.
    pub listen: String,
    /// qamd's socket.
    pub qamd_socket: PathBuf,
    /// The host's name as people know it, shown in titles and on the success page.
    pub site_name: String,
    /// The username rules in words, shown above the username field.
    pub username_rules: String,
    /// Accounts made through open registration (`/join` without an invite) per hour, for
    /// the whole host; 0 refuses them all even when qamd's registration is open.
    pub open_registrations_per_hour: u32,
    /// Seconds a request may take, qamd's answer included.
    pub request_timeout_seconds: u64,
    /// The services an account opens, listed on the success page.
    pub services: Vec<Service>,
}

/// One service of the host, as the success page names it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// What people call it ("XMPP", "Mail").
    pub name: String,
    /// How the new account is used there; `{user}` becomes the account's name
    /// ("{user}@example.org via IMAP/SMTP").
    pub address: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "unix:/run/qam-web/web.sock".into(),
            qamd_socket: PathBuf::from(qam_client::DEFAULT_SOCKET),
            site_name: "this host".into(),
            username_rules: "1 to 32 characters: lowercase letters, digits, '.', '_' and '-', \
                starting with a letter or digit"
                .into(),
            open_registrations_per_hour: 10,
            request_timeout_seconds: 15,
            services: Vec::new(),
        }
    }
}

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Unix(PathBuf),
    Tcp(std::net::SocketAddr),
}

impl Listen {
    /// Parses `unix:PATH`, an absolute path, or a loopback `IP:PORT` (anything else is
    /// refused: TLS and the outside world belong to the reverse proxy).
    pub fn parse(text: &str) -> Result<Listen, ConfigError> {
        if let Some(path) = text.strip_prefix("unix:") {
            return Ok(Listen::Unix(PathBuf::from(path)));
        }
        if text.starts_with('/') {
            return Ok(Listen::Unix(PathBuf::from(text)));
        }
        match text.parse::<std::net::SocketAddr>() {
            Ok(addr) if addr.ip().is_loopback() => Ok(Listen::Tcp(addr)),
            _ => Err(ConfigError::Listen(text.to_owned())),
        }
    }
}

impl Config {
    /// Reads `path`, or the defaults when no path was given and the default file is absent.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, required) = match path {
            Some(path) => (path.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if !required && err.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Config::default())
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        toml::from_str(&text).map_err(|err| ConfigError::Parse {
            path,
            message: err.message().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_sockets_and_loopback_only() {
        assert_eq!(
            Listen::parse("unix:/run/x.sock").unwrap(),
            Listen::Unix("/run/x.sock".into())
        );
        assert!(matches!(
            Listen::parse("127.0.0.1:8080").unwrap(),
            Listen::Tcp(_)
        ));
        assert!(matches!(Listen::parse("[::1]:80").unwrap(), Listen::Tcp(_)));
        assert!(Listen::parse("0.0.0.0:8080").is_err());
        assert!(Listen::parse("192.0.2.1:80").is_err());
    }

    #[test]
    fn services_parse() {
        let config: Config = toml::from_str(
            "site_name = \"example.org\"\n[[services]]\nname = \"XMPP\"\naddress = \"{user}@example.org\"\n",
        )
        .unwrap();
        assert_eq!(config.services[0].name, "XMPP");
        assert_eq!(config.open_registrations_per_hour, 10);
    }
}
