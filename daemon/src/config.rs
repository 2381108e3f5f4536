//! qamd's configuration: the TOML file's schema with every default, command-line overrides,
//! and validation that turns a bad file into one clear message before anything starts.

use crate::cli::Cli;
use crate::trusted_path::{self, Untrusted};
use qam_client::wire::{Grant, Op};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Config file read when `--config` is not given and the file exists.
pub const DEFAULT_CONFIG: &str = "/etc/qam/qamd.toml";

/// Everything wrong with a configuration, for the one line qamd prints before exiting 1.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Untrusted(#[from] Untrusted),
    #[error("config {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The whole configuration with defaults applied.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The main socket's path.
    pub socket: PathBuf,
    /// Group owning the socket (mode 0660). Default "qam" when that group exists, else the
    /// daemon's own group; "" means the daemon's own group.
    pub socket_group: Option<String>,
    /// Directory of the sled store; created 0700 when missing.
    pub data_dir: PathBuf,
    /// Log level or tracing filter (`--log-level` and `RUST_LOG` win over it).
    pub log_level: String,
    /// Members of this group may call every operation.
    pub admin_group: String,
    /// Domain of the mock e-mail address `name@mail_domain` answered by lookup.
    pub mail_domain: String,
    /// Whether peers granted `register` may create accounts.
    pub registration_open: bool,
    /// Address of the self-service page (qam-web), e.g. `https://account.example.org`; invite
    /// and reset links are `<web_url>/join/<token>` and `<web_url>/reset/<token>`.
    pub web_url: String,
    /// Connections served at once; more are answered `busy` and closed.
    pub max_connections: usize,
    /// A connection without a complete request (or not reading answers) this long is closed.
    pub idle_timeout_seconds: u64,
    /// Seconds between full syncs of the store's files (sled's own flush is not an fsync).
    pub sync_interval_seconds: u64,
    /// `[hash]`: the cost of new hashes (applied on reload) and the size of the hashing
    /// pool (read at start).
    pub hash: HashConfig,
    /// `[username]`: what a new account's name must look like; applied on reload.
    pub username: UsernameConfig,
    /// `[password]`: how long and how strong a new password must be; applied on reload.
    pub password: PasswordConfig,
    /// `[throttle]`: how failed logins slow down guessing; read at start.
    pub throttle: ThrottleConfig,
    /// `[permissions]`: which operations each non-admin peer may call; applied on reload.
    pub permissions: PermissionsConfig,
    /// `[peers]`: each peer's share of connections, hashing and CPU, so one peer flooding
    /// qamd slows only itself; read at start.
    pub peers: PeersConfig,
    /// Optional saslauthd-compatible socket (off when absent).
    pub saslauthd_socket: Option<PathBuf>,
    /// Realms the saslauthd door accepts; empty accepts any.
    pub saslauthd_realms: Vec<String>,
    /// `[nss]`: whether accounts are also system users through systemd's userdb, and their
    /// uids, home and shell; read at start.
    pub nss: NssConfig,
    /// `[accounts]`: what becomes of deleted accounts' names; applied on reload.
    pub accounts: AccountsConfig,
    /// `[hooks]`: where qam-hooks finds its programs, which decides whether a deletion waits
    /// for them; applied on reload.
    pub hooks: HooksConfig,
}

/// What becomes of deleted accounts' names.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AccountsConfig {
    /// Days a deleted account's name cannot be registered again (other users' rosters and
    /// mail still point at it); 0 lets it be taken at once.
    pub name_quarantine_days: u32,
}

/// Where qam-hooks finds the programs that make services follow deletions and locks.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HooksConfig {
    /// qam-hooks' `--hooks-dir`: with any entry in its `delete.d` or `lock.d`, a deletion
    /// waits for qam-hooks to run them; without, it erases at once.
    pub dir: PathBuf,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        AccountsConfig {
            name_quarantine_days: 180,
        }
    }
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            dir: PathBuf::from("/etc/qam/hooks"),
        }
    }
}

/// qam users as system users (getpwnam, id, sshd) through systemd's userdb and nss-systemd.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct NssConfig {
    /// Whether qamd answers `io.systemd.UserDatabase` on `socket`.
    pub enabled: bool,
    /// The userdb socket qamd binds (0666); its file name is the service name every record
    /// carries, and the name of its symlink in /run/systemd/userdb/, where nss-systemd looks.
    pub socket: PathBuf,
    /// Lowest uid given to an account (each account's private group has gid = uid).
    pub uid_min: u32,
    /// Highest uid given to an account; creation fails once the range is used up.
    pub uid_max: u32,
    /// Home directory of every account; `%u` is replaced by the username.
    pub home: String,
    /// Login shell of every account.
    pub shell: String,
    /// An existing /etc/group group every account is a member of (none when absent).
    pub group: Option<String>,
}

/// The uid windows `[nss] uid_min..uid_max` must fit in: the unused ranges of systemd's
/// docs/UIDS-GIDS.md (below them: system, adduser's, homed's and dynamic users; between them:
/// container ranges; above: the foreign range and uids other programs mishandle).
pub const NSS_UID_WINDOWS: [(u32, u32); 2] = [(65_536, 524_287), (1_879_048_192, 2_147_352_575)];

/// Argon2id parameters for new hashes and the hashing pool's size.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HashConfig {
    /// Memory cost in KiB (OWASP: 19456).
    pub m_cost: u32,
    /// Iterations (OWASP: 2).
    pub t_cost: u32,
    /// Lanes; 1 is right for throughput.
    pub p_cost: u32,
    /// Hashing threads; 0 means one per core.
    pub workers: usize,
    /// Hash jobs waiting beyond the busy workers; more are answered `busy`.
    pub queue_limit: usize,
    /// How much nicer (0–19) the hashing threads run than the rest of qamd.
    pub niceness: i32,
}

/// Which usernames are acceptable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsernameConfig {
    /// Regular expression a lowercased username must match in full (qamd anchors it).
    pub pattern: String,
    /// Names nobody may register or be given.
    pub reserved: Vec<String>,
}

/// Which new passwords are acceptable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordConfig {
    /// Minimum length in characters.
    pub min_length: usize,
    /// Maximum length in bytes (argon2 input).
    pub max_bytes: usize,
    /// zxcvbn score (0 to 4) a new password needs on every door; 0 turns the check off.
    pub min_strength: u8,
}

/// The failure ladders: one per (username, source), and a ceiling per username.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleConfig {
    /// Failures one source (peer service, plus the client key its adapter passes) may make
    /// for one username before its back-off starts.
    pub free_failures: u32,
    /// Failures of all sources together for one username before sources that never logged
    /// in to it are backed off too; unset: four times `free_failures`.
    pub name_free_failures: Option<u32>,
    /// First back-off; each further failure doubles it.
    pub base_delay_ms: u64,
    /// Longest back-off.
    pub max_delay_seconds: u64,
    /// Ladders tracked at once, per kind (least recently used are forgotten first).
    pub max_tracked: usize,
}

/// Shares between peers (uids), so that one peer flooding qamd slows only itself.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PeersConfig {
    /// Connections one non-admin uid may hold open at once.
    pub connections_per_peer: usize,
    /// Part of `max_connections` only admins may take, so an admin gets in however full
    /// (at most a quarter of `max_connections`).
    pub admin_reserved_connections: usize,
    /// A connection is closed after this long, between two requests, however busy it is.
    pub max_connection_seconds: u64,
    /// Hashing jobs one uid may have waiting at once (within `hash.queue_limit`).
    pub hash_queue_per_peer: usize,
    /// Verifies of names without an account hashed per second, over all peers; beyond it
    /// they are answered `throttled` without hashing.
    pub unknown_name_verifies_per_second: u32,
    /// The saslauthd door closes a connection whose request is not complete this soon.
    pub saslauthd_request_seconds: u64,
    /// Percent of one core each uid's requests may use on qamd's request side while
    /// passwords are being hashed; a peer beyond it waits before its next request.
    pub request_cpu_percent: u32,
}

/// Operations granted to non-admin peers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PermissionsConfig {
    /// Ops for any peer not named below.
    pub default: Vec<String>,
    /// Ops by unix user name.
    pub users: BTreeMap<String, Vec<String>>,
    /// Ops by unix group name (primary or supplementary).
    pub groups: BTreeMap<String, Vec<String>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: PathBuf::from(qam_client::DEFAULT_SOCKET),
            socket_group: None,
            data_dir: PathBuf::from("/var/lib/qam"),
            log_level: "info".into(),
            admin_group: "qam-admin".into(),
            mail_domain: "localhost".into(),
            registration_open: false,
            web_url: String::new(),
            max_connections: 256,
            idle_timeout_seconds: 30,
            sync_interval_seconds: 5,
            hash: HashConfig::default(),
            username: UsernameConfig::default(),
            password: PasswordConfig::default(),
            throttle: ThrottleConfig::default(),
            permissions: PermissionsConfig::default(),
            peers: PeersConfig::default(),
            saslauthd_socket: None,
            saslauthd_realms: Vec::new(),
            nss: NssConfig::default(),
            accounts: AccountsConfig::default(),
            hooks: HooksConfig::default(),
        }
    }
}

impl Default for NssConfig {
    fn default() -> Self {
        NssConfig {
            enabled: false,
            socket: PathBuf::from("/run/qam/io.qam"),
            uid_min: 70_000,
            uid_max: 99_999,
            home: "/home/%u".into(),
            shell: "/bin/bash".into(),
            group: None,
        }
    }
}

impl NssConfig {
    /// The service name: the socket's file name, as nss-systemd expects in every record.
    pub fn service(&self) -> Option<&str> {
        self.socket.file_name().and_then(|name| name.to_str())
    }

    /// The home directory of `name`.
    pub fn home_of(&self, name: &str) -> String {
        self.home.replace("%u", name)
    }

    fn validate(&self) -> Result<(), String> {
        if self.uid_min > self.uid_max {
            return Err("nss.uid_min is above nss.uid_max".into());
        }
        let inside = |(low, high): (u32, u32)| low <= self.uid_min && self.uid_max <= high;
        if !NSS_UID_WINDOWS.into_iter().any(inside) {
            return Err(format!(
                "nss.uid_min..uid_max ({}..{}) must lie within 65536..524287 or 1879048192..2147352575 (see README, \"Shell accounts\")",
                self.uid_min, self.uid_max
            ));
        }
        if self.service().is_none_or(str::is_empty) || !self.socket.is_absolute() {
            return Err("nss.socket must be an absolute path ending in a file name".into());
        }
        if !self.home.starts_with('/') || self.home.contains(['\n', ':']) {
            return Err("nss.home must be an absolute path without `:`".into());
        }
        if !self.shell.starts_with('/') || self.shell.contains(['\n', ':']) {
            return Err("nss.shell must be an absolute path without `:`".into());
        }
        if self.group.as_deref().is_some_and(str::is_empty) {
            return Err("nss.group must name a group (or be left out)".into());
        }
        Ok(())
    }
}

impl Default for HashConfig {
    fn default() -> Self {
        HashConfig {
            m_cost: 19456,
            t_cost: 2,
            p_cost: 1,
            workers: 0,
            queue_limit: 64,
            niceness: 0,
        }
    }
}

impl Default for PeersConfig {
    fn default() -> Self {
        PeersConfig {
            connections_per_peer: 64,
            admin_reserved_connections: 16,
            max_connection_seconds: 600,
            hash_queue_per_peer: 16,
            unknown_name_verifies_per_second: 20,
            saslauthd_request_seconds: 2,
            request_cpu_percent: 3,
        }
    }
}

impl Default for UsernameConfig {
    fn default() -> Self {
        UsernameConfig {
            pattern: "^[a-z0-9][a-z0-9._-]{0,31}$".into(),
            reserved: [
                // People-facing roles (RFC 2142 and common practice).
                "root",
                "admin",
                "administrator",
                "postmaster",
                "abuse",
                "hostmaster",
                "webmaster",
                "noreply",
                "mailer-daemon",
                "security",
                "support",
                "info",
                "sysadmin",
                "operator",
                "localhost",
                // Debian's system users and groups, and the usual service accounts: a
                // name one of them has, or will have once its package is installed.
                "daemon",
                "bin",
                "sys",
                "sync",
                "games",
                "man",
                "lp",
                "mail",
                "news",
                "uucp",
                "proxy",
                "www-data",
                "backup",
                "list",
                "irc",
                "gnats",
                "nobody",
                "nogroup",
                "adm",
                "shadow",
                "sudo",
                "wheel",
                "staff",
                "users",
                "systemd",
                "messagebus",
                "sshd",
                "git",
                "postgres",
                "postgresql",
                "mysql",
                "redis",
                "ftp",
                "http",
                "nginx",
                "apache",
                "dovecot",
                "dovenull",
                "postfix",
                "prosody",
                "ejabberd",
                "vmail",
                "qam",
                "qam-admin",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

impl Default for PasswordConfig {
    fn default() -> Self {
        PasswordConfig {
            min_length: 8,
            max_bytes: 1024,
            min_strength: 3,
        }
    }
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            free_failures: 5,
            name_free_failures: None,
            base_delay_ms: 1000,
            max_delay_seconds: 300,
            max_tracked: 100_000,
        }
    }
}

impl Default for PermissionsConfig {
    fn default() -> Self {
        PermissionsConfig {
            default: Op::ALL
                .into_iter()
                .filter(|op| op.grant() == Grant::Default)
                .map(|op| op.as_str().to_owned())
                .collect(),
            users: BTreeMap::new(),
            groups: BTreeMap::new(),
        }
    }
}

impl ThrottleConfig {
    /// The per-username ceiling in force.
    pub fn name_free_failures(&self) -> u32 {
        self.name_free_failures
            .unwrap_or_else(|| self.free_failures.saturating_mul(4))
    }
}

impl HashConfig {
    /// Workers actually started: the configured count, or one per core.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, usize::from)
        }
    }
}

impl Config {
    /// Reads the config file (explicit, or the default one when present), applies the
    /// command-line overrides and validates the result.
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
        let path = match &cli.config {
            Some(path) => Some(path.clone()),
            None => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()),
        };
        let mut config = match &path {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(socket) = &cli.socket {
            config.socket = socket.clone();
        }
        if let Some(dir) = &cli.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(level) = &cli.log_level {
            config.log_level = level.clone();
        }
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses one file, refusing one that anyone but root or qamd's user could
    /// change (see `trusted_path`).
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let read_error = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        std::fs::metadata(path).map_err(read_error)?;
        trusted_path::check(path, "config")?;
        let text = std::fs::read_to_string(path).map_err(read_error)?;
        Config::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses TOML text (no validation beyond the schema).
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|err| err.message().to_owned())
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        if let Err(err) = crate::rules::anchored(&self.username.pattern) {
            return invalid(format!("username.pattern is not a valid regex: {err}"));
        }
        if argon2::Params::new(self.hash.m_cost, self.hash.t_cost, self.hash.p_cost, None).is_err()
        {
            return invalid(format!(
                "hash parameters m_cost={} t_cost={} p_cost={} are outside argon2's limits (m_cost >= 8*p_cost, t_cost >= 1, p_cost >= 1)",
                self.hash.m_cost, self.hash.t_cost, self.hash.p_cost
            ));
        }
        if !(0..=19).contains(&self.hash.niceness) {
            return invalid("hash.niceness must be between 0 and 19".into());
        }
        if self.hash.queue_limit == 0 {
            return invalid("hash.queue_limit must be at least 1".into());
        }
        if self.max_connections == 0 || self.idle_timeout_seconds == 0 {
            return invalid("max_connections and idle_timeout_seconds must be at least 1".into());
        }
        let peers = &self.peers;
        if peers.connections_per_peer == 0
            || peers.hash_queue_per_peer == 0
            || peers.max_connection_seconds == 0
            || peers.saslauthd_request_seconds == 0
            || peers.unknown_name_verifies_per_second == 0
            || !(1..=100).contains(&peers.request_cpu_percent)
        {
            return invalid("every value in [peers] must be at least 1 (admin_reserved_connections may be 0; request_cpu_percent at most 100)".into());
        }
        if self.password.min_length > self.password.max_bytes {
            return invalid("password.min_length exceeds password.max_bytes".into());
        }
        if self.password.min_strength > 4 {
            return invalid("password.min_strength is a zxcvbn score: 0 to 4".into());
        }
        if self.throttle.max_tracked == 0 {
            return invalid("throttle.max_tracked must be at least 1".into());
        }
        if self.mail_domain.is_empty() || self.mail_domain.contains(['@', ' ']) {
            return invalid(format!(
                "mail_domain `{}` is not a domain",
                self.mail_domain
            ));
        }
        if let Err(message) = self.nss.validate() {
            return invalid(message);
        }
        if !self.hooks.dir.is_absolute() {
            return invalid("hooks.dir must be an absolute path".into());
        }
        if self.accounts.name_quarantine_days > 36_500 {
            return invalid("accounts.name_quarantine_days must be at most 36500".into());
        }
        let lists = std::iter::once(("permissions.default".to_owned(), &self.permissions.default))
            .chain(
                self.permissions
                    .users
                    .iter()
                    .map(|(k, v)| (format!("permissions.users.{k}"), v)),
            )
            .chain(
                self.permissions
                    .groups
                    .iter()
                    .map(|(k, v)| (format!("permissions.groups.{k}"), v)),
            );
        for (key, ops) in lists {
            for name in ops {
                if name.parse::<Op>().is_err() {
                    return invalid(format!("{key} names unknown operation `{name}`"));
                }
            }
        }
        Ok(())
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_seconds)
    }

    /// The longest a connection stays open, however busy.
    pub fn max_connection_age(&self) -> Duration {
        Duration::from_secs(self.peers.max_connection_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_documented_defaults() {
        let config = Config::parse("").unwrap();
        assert_eq!(config.hash.m_cost, 19456);
        assert_eq!(config.hash.t_cost, 2);
        assert_eq!(config.hash.p_cost, 1);
        assert_eq!(config.socket, PathBuf::from("/run/qam/qamd.sock"));
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/qam"));
        assert_eq!(config.password.min_length, 8);
        assert!(!config.registration_open);
        assert!(config.username.reserved.iter().any(|n| n == "postmaster"));
        config.validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_ops_are_refused() {
        assert!(Config::parse("sockett = \"/x\"").is_err());
        let config = Config::parse("[permissions]\ndefault = [\"verify\", \"fly\"]").unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("fly"), "{err}");
    }

    #[test]
    fn impossible_hash_parameters_are_refused() {
        let config = Config::parse("[hash]\nm_cost = 1\n").unwrap();
        assert!(config.validate().is_err());
    }

    #[test]
    fn nss_defaults_and_uid_ranges() {
        let config = Config::parse("").unwrap();
        assert!(!config.nss.enabled);
        assert_eq!(config.nss.socket, Path::new("/run/qam/io.qam"));
        assert_eq!(config.nss.service(), Some("io.qam"));
        assert_eq!(config.nss.home_of("alice"), "/home/alice");
        for (min, max) in [
            (70_000, 99_999),
            (65_536, 524_287),
            (1_879_048_192, 1_879_048_192),
        ] {
            let text = format!("[nss]\nuid_min = {min}\nuid_max = {max}\n");
            Config::parse(&text).unwrap().validate().unwrap();
        }
        // adduser's range, homed's and dynamic users', nobody, container ranges, the foreign
        // range, and uids above 2^31.
        for (min, max) in [
            (1000_u32, 59_999_u32),
            (60_001, 60_513),
            (61_184, 65_519),
            (65_534, 65_534),
            (65_536, 524_288),
            (600_000, 700_000),
            (2_147_352_576, 2_147_352_576),
            (3_000_000_000, 3_000_000_001),
            (90_000, 80_000),
        ] {
            let text = format!("[nss]\nuid_min = {min}\nuid_max = {max}\n");
            let err = Config::parse(&text).unwrap().validate().unwrap_err();
            assert!(err.to_string().contains("nss.uid"), "{min}..{max}: {err}");
        }
        let bad_socket = Config::parse("[nss]\nsocket = \"relative\"\n").unwrap();
        assert!(bad_socket.validate().is_err());
    }

    #[test]
    fn group_writable_config_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("qamd.toml");
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
        assert!(matches!(
            Config::from_file(&path),
            Err(ConfigError::Untrusted(Untrusted::Writable { .. }))
        ));
    }
}
