//! SIGHUP: re-reads the config and applies what can change while connections stay open
//! (permissions, registration, name/password rules, hash costs, log level), logging each change.

use crate::accounts::Settings;
use crate::cli::Cli;
use crate::config::{Config, ConfigError};
use crate::hasher::HashError;
use crate::log_level::LogLevel;
use crate::logging;
use crate::policy::Policy;
use crate::shutdown::Shutdown;
use crate::state::State;
use crate::systemd;
use std::fmt::Debug;
use std::sync::Arc;

/// Why a reload was refused; the running config stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("invalid username pattern: {0}")]
    Pattern(#[from] regex::Error),
    #[error("cannot switch hash parameters: {0}")]
    Hash(#[from] HashError),
    #[error("{0}")]
    Level(String),
}

/// What a reload changed: settings applied at once, and settings that wait for a restart.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Keys whose new values are in force now.
    pub applied: Vec<String>,
    /// Keys that changed but keep their start-up values until a restart.
    pub need_restart: Vec<&'static str>,
}

impl Changes {
    /// One line for the log and `systemctl status`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if self.applied.is_empty() {
            parts.push("nothing changed".to_owned());
        } else {
            parts.push(format!("applied: {}", self.applied.join(", ")));
        }
        if !self.need_restart.is_empty() {
            parts.push(format!(
                "changed but only applied on restart: {}",
                self.need_restart.join(", ")
            ));
        }
        parts.join("; ")
    }
}

/// Settings compared by value (the config types are plain data).
fn differs<T: Debug>(old: &T, new: &T) -> bool {
    format!("{old:?}") != format!("{new:?}")
}

fn hash_costs(config: &Config) -> String {
    let hash = &config.hash;
    format!(
        "m_cost={} t_cost={} p_cost={}",
        hash.m_cost, hash.t_cost, hash.p_cost
    )
}

/// Compares the config in force with a newly read one, which it turns into the next config
/// in force (restart-only settings keep their running values). `old_level`/`new_level` are
/// the effective log filters (a `--log-level` flag or `RUST_LOG` wins over the file).
pub fn compare(old: &Config, new: &mut Config, old_level: &str, new_level: &str) -> Changes {
    // Settings shown with their old and new values, then settings only named.
    let shown: [(&str, String, String); 5] = [
        (
            "registration_open",
            old.registration_open.to_string(),
            new.registration_open.to_string(),
        ),
        (
            "admin_group",
            old.admin_group.clone(),
            new.admin_group.clone(),
        ),
        (
            "mail_domain",
            old.mail_domain.clone(),
            new.mail_domain.clone(),
        ),
        ("hash for new passwords", hash_costs(old), hash_costs(new)),
        ("log_level", old_level.to_owned(), new_level.to_owned()),
    ];
    let named = [
        ("permissions", differs(&old.permissions, &new.permissions)),
        ("username rules", differs(&old.username, &new.username)),
        ("password rules", differs(&old.password, &new.password)),
        ("accounts", differs(&old.accounts, &new.accounts)),
        ("hooks", differs(&old.hooks, &new.hooks)),
    ];
    let applied = shown
        .into_iter()
        .filter(|(_, before, after)| before != after)
        .map(|(key, before, after)| format!("{key} {before} -> {after}"))
        .chain(
            named
                .into_iter()
                .filter(|(_, changed)| *changed)
                .map(|(key, _)| key.to_owned()),
        )
        .collect();
    Changes {
        applied,
        need_restart: keep_restart_only(old, new),
    }
}

/// Where a reload reads from and what it can change outside the account service.
pub struct ReloadSource {
    /// The command line qamd started with (config path and overriding flags).
    cli: Cli,
    /// The log level of the running subscriber (a debug window may hold it for a while).
    level: Arc<LogLevel>,
}

impl ReloadSource {
    pub fn new(cli: Cli, level: Arc<LogLevel>) -> ReloadSource {
        ReloadSource { cli, level }
    }

    /// The running log level, which `debug` windows change too.
    pub fn log_level(&self) -> Arc<LogLevel> {
        Arc::clone(&self.level)
    }
}

/// Everything a reload needs: where the config comes from and what to change.
pub struct Reloader {
    /// Where the config is read from again, and the log level to change.
    source: ReloadSource,
    /// The config in force (restart-only keys keep their start-up values).
    config: Config,
    /// Where the new settings and policy go.
    state: Arc<State>,
}

impl Reloader {
    pub fn new(source: ReloadSource, config: Config, state: Arc<State>) -> Reloader {
        Reloader {
            source,
            config,
            state,
        }
    }

    fn effective_level(&self, config: &Config) -> String {
        logging::choose_level(self.source.cli.log_level.as_deref(), &config.log_level)
    }

    /// Reads the config again and applies its live part; nothing changes when it is invalid.
    pub async fn reload(&mut self) -> Result<Changes, ReloadError> {
        let mut new = Config::load(&self.source.cli)?;
        let settings = Settings::from_config(&new)?;
        let policy = Policy::new(&new.permissions, &new.admin_group);
        let (old_level, new_level) = (
            self.effective_level(&self.config),
            self.effective_level(&new),
        );
        logging::parse_filter(&new_level).map_err(ReloadError::Level)?;
        let changes = compare(&self.config, &mut new, &old_level, &new_level);
        if hash_costs(&self.config) != hash_costs(&new) {
            self.state.accounts.hasher().set_params(&new.hash).await?;
        }
        self.state.accounts.set_settings(settings);
        self.state.set_policy(policy);
        if old_level != new_level {
            self.source
                .level
                .set_configured(new_level)
                .map_err(|err| ReloadError::Level(err.to_string()))?;
        }
        self.config = new;
        Ok(changes)
    }
}

/// Puts the running value of each setting that only a restart applies back into `next`, and
/// names those that differed (so they are reported on every reload until qamd restarts).
fn keep_restart_only(running: &Config, next: &mut Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! keep {
        ($($field:ident).+) => {
            if differs(&running.$($field).+, &next.$($field).+) {
                changed.push(stringify!($($field).+));
                next.$($field).+ = running.$($field).+.clone();
            }
        };
    }
    keep!(socket);
    keep!(socket_group);
    keep!(data_dir);
    keep!(max_connections);
    keep!(idle_timeout_seconds);
    keep!(sync_interval_seconds);
    keep!(hash.workers);
    keep!(hash.queue_limit);
    keep!(throttle);
    keep!(peers);
    keep!(saslauthd_socket);
    keep!(saslauthd_realms);
    keep!(nss);
    changed
}

/// Reloads on every SIGHUP until shutdown.
pub fn spawn_on_sighup(mut reloader: Reloader, mut shutdown: Shutdown) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                received = hangups.recv() => if received.is_none() { return },
                () = shutdown.recv() => return,
            }
            systemd::notify_reloading();
            let status = match reloader.reload().await {
                Ok(changes) => {
                    let summary = changes.summary();
                    tracing::info!("config reloaded: {summary}");
                    format!("serving; config reloaded: {summary}")
                }
                Err(err) => {
                    tracing::error!("config reload refused, running config unchanged: {err}");
                    format!("serving; config reload refused: {err}")
                }
            };
            systemd::notify_ready(&status);
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(text).unwrap()
    }

    #[test]
    fn live_settings_are_applied_and_named() {
        let old = parse("");
        let mut new = parse(
            "registration_open = true\n[hash]\nm_cost = 4096\n[permissions]\ndefault = [\"verify\"]\n",
        );
        let changes = compare(&old, &mut new, "info", "debug");
        assert_eq!(
            changes.applied,
            [
                "registration_open false -> true",
                "hash for new passwords m_cost=19456 t_cost=2 p_cost=1 -> m_cost=4096 t_cost=2 p_cost=1",
                "log_level info -> debug",
                "permissions",
            ]
        );
        assert!(changes.need_restart.is_empty());
        assert!(new.registration_open);
    }

    #[test]
    fn restart_only_settings_keep_their_running_values() {
        let old = parse("");
        let mut new =
            parse("socket = \"/tmp/other.sock\"\nmax_connections = 3\n[hash]\nworkers = 7\n");
        let changes = compare(&old, &mut new, "info", "info");
        assert!(changes.applied.is_empty());
        assert_eq!(
            changes.need_restart,
            ["socket", "max_connections", "hash.workers"]
        );
        assert_eq!(new.socket, old.socket);
        assert_eq!(new.max_connections, old.max_connections);
        assert_eq!(new.hash.workers, old.hash.workers);
        assert_eq!(
            changes.summary(),
            "nothing changed; changed but only applied on restart: socket, max_connections, hash.workers"
        );
    }
}
