//! qam-hooks as README sets it up: a hooks dir whose `<event>.d/` entries are symlinks to the
//! shipped scripts (or a test's own), and the qam-hooks process that runs them for qamd.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The events qamd publishes, each with its `<event>.d` directory.
pub const EVENTS: [&str; 4] = ["delete", "lock", "unlock", "password"];

/// A hooks directory (what `/etc/qam/hooks` is on a host) in a temp dir.
pub struct HooksDir {
    /// The temp dir holding `<event>.d/`, wrappers and the hooks' records.
    pub dir: tempfile::TempDir,
}

impl Default for HooksDir {
    fn default() -> Self {
        HooksDir::new()
    }
}

impl HooksDir {
    /// An empty hooks dir: every `<event>.d/` there, none holding a hook.
    pub fn new() -> HooksDir {
        let dir = crate::shared_tempdir();
        for event in EVENTS {
            fs::create_dir_all(dir.path().join(format!("{event}.d"))).expect("hook dir");
        }
        HooksDir { dir }
    }

    /// The directory qamd's `[hooks] dir` and qam-hooks' `--hooks-dir` name.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// qamd's `[hooks]` table naming this dir.
    pub fn qamd_config(&self) -> String {
        format!("[hooks]\ndir = {:?}\n", self.path().display().to_string())
    }

    /// README: `ln -s /usr/share/qam/hooks/EVENT.d/SCRIPT /etc/qam/hooks/EVENT.d/`, with the
    /// checkout's `packaging/hooks` standing for `/usr/share/qam/hooks`.
    pub fn enable(&self, event: &str, script: &str) {
        let shipped = crate::workspace_root()
            .join("packaging/hooks")
            .join(format!("{event}.d"))
            .join(script);
        assert!(
            shipped.exists(),
            "{} is not shipped (packaging/hooks)",
            shipped.display()
        );
        std::os::unix::fs::symlink(
            &shipped,
            self.path().join(format!("{event}.d")).join(script),
        )
        .expect("symlink a shipped hook");
    }

    /// A site's own hook `EVENT.d/NAME`: a shell script with `body` (executable).
    pub fn add(&self, event: &str, name: &str, body: &str) {
        let path = self.path().join(format!("{event}.d")).join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write hook");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod hook");
    }

    /// A file in this dir, for hooks' records and markers.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }
}

/// A running `qam-hooks --socket SOCKET --hooks-dir DIR`, as its unit runs it (root).
pub struct QamHooks {
    /// qamd's socket.
    socket: PathBuf,
    /// The hooks dir.
    hooks_dir: PathBuf,
    /// The variables `/etc/default/qam-hooks` gives it (the unit's `EnvironmentFile=`).
    env: Vec<(String, String)>,
    /// Where its stdout and stderr go (the journal on a host).
    log: PathBuf,
    /// The process while it runs.
    child: Option<Child>,
}

impl QamHooks {
    /// Starts qam-hooks for `socket` and `hooks`, its environment read from `defaults` (the
    /// text of `/etc/default/qam-hooks`: `NAME=value` lines, `#` comments) as systemd does.
    pub fn start(socket: &Path, hooks: &HooksDir, defaults: &str) -> QamHooks {
        let env = defaults
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .filter_map(|line| line.split_once('='))
            .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
            .collect();
        let mut hooks = QamHooks {
            socket: socket.to_owned(),
            hooks_dir: hooks.path().to_owned(),
            env,
            log: hooks.file("qam-hooks.log"),
            child: None,
        };
        hooks.spawn();
        hooks
    }

    /// Starts the process (again, after `kill`).
    pub fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open qam-hooks log");
        let child = Command::new(crate::bin("qam-hooks"))
            .arg("--socket")
            .arg(&self.socket)
            .arg("--hooks-dir")
            .arg(&self.hooks_dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start qam-hooks");
        self.child = Some(child);
    }

    /// Returns once qam-hooks serves events published from now on: locks and unlocks a bystander
    /// account until the site hook `unlock.d/00-listening` (added to `hooks`) saw it. (A lock,
    /// unlock or password event before that is not replayed to it; a deletion is.)
    pub fn wait_listening(&self, qamd: &crate::Daemon, hooks: &HooksDir) {
        let seen = hooks.file("listening");
        hooks.add(
            "unlock",
            "00-listening",
            &format!("echo \"$2\" >> '{}'", seen.display()),
        );
        qamd.add_user("hooksready", "hooks ready password");
        let mut client = qamd.client();
        crate::wait_until(crate::within(120), "qam-hooks to serve events", || {
            let _ = client.call::<qam_client::wire::Done>(&qam_client::Request::Lock {
                user: "hooksready".into(),
            });
            let _ = client.call::<qam_client::wire::Done>(&qam_client::Request::Unlock {
                user: "hooksready".into(),
            });
            crate::poll_until(crate::within(5), || seen.exists())
        });
    }

    /// SIGKILL to qam-hooks alone (not the hooks it started), then reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Everything qam-hooks logged so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for QamHooks {
    fn drop(&mut self) {
        self.kill();
        if let Some(dir) = self.log.parent() {
            crate::keep_log(dir, &self.log);
        }
    }
}
