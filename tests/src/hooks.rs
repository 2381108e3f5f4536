//! qam-hooks for tests: started on a test qamd's socket and a hooks dir with the environment
//! `/etc/default/qam-hooks` would give it, killed (SIGKILL) on demand or on drop.

use crate::{bin, Daemon};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running qam-hooks, its log in the hooks dir.
pub struct QamHooks {
    /// The process; killed on drop.
    child: Option<Child>,
    /// stdout and stderr of every start.
    log: PathBuf,
    /// The settings of the shipped hooks (`QAM_PROSODY_HOST`, ...), given at every start.
    env: Vec<(String, String)>,
}

impl QamHooks {
    /// Starts qam-hooks with `--hooks-dir hooks`, a 20 s hook timeout and debug logs.
    pub fn start(qamd: &Daemon, hooks: &Path) -> QamHooks {
        QamHooks::start_with(qamd, hooks, &[])
    }

    /// Starts it with `env` added, as `EnvironmentFile=-/etc/default/qam-hooks` would.
    pub fn start_with(qamd: &Daemon, hooks: &Path, env: &[(&str, &str)]) -> QamHooks {
        let mut runner = QamHooks {
            child: None,
            log: hooks.join("qam-hooks.log"),
            env: env
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
        };
        runner.spawn(qamd, hooks);
        runner
    }

    /// Starts the process (again).
    pub fn spawn(&mut self, qamd: &Daemon, hooks: &Path) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open qam-hooks log");
        let child = Command::new(bin("qam-hooks"))
            .arg("--socket")
            .arg(&qamd.socket)
            .arg("--hooks-dir")
            .arg(hooks)
            .arg("--timeout")
            .arg("20")
            .env("RUST_LOG", "debug")
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start qam-hooks");
        self.child = Some(child);
    }

    /// Waits until qam-hooks has had its first page of events: later events reach it.
    pub fn wait_listening(&self) {
        crate::wait_until(crate::within(30), "qam-hooks to wait for events", || {
            self.log_text().contains("waiting for events")
        });
    }

    /// SIGKILL, as the OOM killer or a crash would end it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Everything it logged so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for QamHooks {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A hooks dir (qamd's `[hooks] dir`) with `<event>.d` for the four events.
pub fn hooks_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("hooks dir");
    for event in ["delete", "lock", "unlock", "password"] {
        fs::create_dir(dir.path().join(format!("{event}.d"))).expect("event dir");
    }
    dir
}

/// Enables shipped hooks as README says: symlinks from `<hooks>/<id>` to the repo's
/// `packaging/hooks/<id>` (ids like `delete.d/50-prosody`).
pub fn enable_shipped(hooks: &Path, ids: &[&str]) {
    for id in ids {
        let shipped = crate::workspace_root().join("packaging/hooks").join(id);
        assert!(shipped.exists(), "{} is not shipped", shipped.display());
        std::os::unix::fs::symlink(&shipped, hooks.join(id)).expect("enable hook");
    }
}

/// The `[hooks]` table pointing qamd at `hooks`.
pub fn qamd_hooks_table(hooks: &Path) -> String {
    format!("\n[hooks]\ndir = {:?}\n", hooks.display().to_string())
}

/// A site's own hook `<hooks>/<id>` (`delete.d/40-site`): a shell script running `body`.
pub fn add_hook(hooks: &Path, id: &str, body: &str) {
    let path = hooks.join(id);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write hook");
    fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod hook");
}
