//! Runs one hook: argv `<event> <user>`, its own process group, stdin /dev/null, stdout and
//! stderr into one bounded capture, and a timeout after which the whole group is killed.

use crate::parts::Hook;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;
use std::fs::File;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

/// Output kept of one hook run (its end, the part that says why it failed).
pub const CAPTURE_LIMIT: usize = 64 * 1024;

/// Characters of output sent to qamd as a failed hook's detail (qamd keeps at most 500).
pub const DETAIL_CHARS: usize = 500;

/// How long a hook that was sent SIGTERM at its timeout has to exit before SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// How long to wait for the output pipe's end once the hook's group is gone (a process that
/// left the group may still hold the pipe open; its output is then cut off).
const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// Bounds on one hook run.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Time the hook has before its process group is sent SIGTERM.
    pub timeout: Duration,
    /// Time between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Bytes of output kept (the last ones).
    pub capture: usize,
}

impl Limits {
    /// The given timeout with the default grace and capture bound.
    pub fn new(timeout: Duration) -> Self {
        Limits {
            timeout,
            grace: KILL_GRACE,
            capture: CAPTURE_LIMIT,
        }
    }
}

/// The last bytes a hook wrote to stdout or stderr.
#[derive(Clone, Debug, Default)]
pub struct Captured {
    /// The kept bytes, at most `Limits::capture`, in the order written.
    pub bytes: Vec<u8>,
    /// Bytes written before those kept and dropped.
    pub dropped: u64,
}

impl Captured {
    fn push(&mut self, chunk: &[u8], limit: usize) {
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > limit {
            let extra = self.bytes.len() - limit;
            self.bytes.drain(..extra);
            self.dropped += extra as u64;
        }
    }

    /// The kept output as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// How a hook run ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Exit status 0 within the timeout.
    pub ok: bool,
    /// `exit 0`, `exit 3`, `killed by signal 9`, `timed out after 60 s` or `cannot run: ...`.
    pub status: String,
    /// What it wrote.
    pub output: Captured,
}

impl Outcome {
    /// What qamd is told about a failure: the status and the end of the output, at most
    /// `DETAIL_CHARS` characters in all.
    pub fn detail(&self) -> String {
        let text = self.output.text();
        let text = text.trim();
        if text.is_empty() {
            return tail_chars(&self.status, DETAIL_CHARS);
        }
        let budget = DETAIL_CHARS.saturating_sub(self.status.chars().count() + 2);
        format!("{}: {}", self.status, tail_chars(text, budget))
    }
}

/// The last `max` characters of `text`.
fn tail_chars(text: &str, max: usize) -> String {
    let count = text.chars().count();
    text.chars().skip(count.saturating_sub(max)).collect()
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => format!("ended with {status}"),
    }
}

fn cannot_run(reason: impl std::fmt::Display) -> Outcome {
    Outcome {
        ok: false,
        status: format!("cannot run: {reason}"),
        output: Captured::default(),
    }
}

/// Signals the hook's process group; it is gone already when that fails (ESRCH).
fn signal_group(group: Pid, signal: Signal) {
    let _ = killpg(group, signal);
}

/// Runs `hook` with argv `<event> <user>` and env `QAM_EVENT`, `QAM_USER` (plus this process's
/// own). Whatever the hook leaves running in its process group is killed when it ends.
pub fn run(hook: &Hook, event: &str, user: &str, limits: Limits) -> Outcome {
    let (read_end, write_end) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(ends) => ends,
        Err(err) => return cannot_run(format!("no pipe for its output: {err}")),
    };
    let spawned = {
        let stderr_end = match write_end.try_clone() {
            Ok(fd) => fd,
            Err(err) => return cannot_run(format!("no pipe for its output: {err}")),
        };
        // The command holds the pipe's write ends; it is dropped at the end of this block so
        // that the reader sees the end of the output once the hook's processes are gone.
        Command::new(&hook.path)
            .arg(event)
            .arg(user)
            .env("QAM_EVENT", event)
            .env("QAM_USER", user)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::from(write_end))
            .stderr(Stdio::from(stderr_end))
            .process_group(0)
            .spawn()
    };
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => return cannot_run(err),
    };
    let pid = child.id();
    let group = Pid::from_raw(pid as i32);

    let captured = Arc::new(Mutex::new(Captured::default()));
    let (drained_tx, drained_rx) = mpsc::channel();
    {
        let captured = Arc::clone(&captured);
        let mut pipe = File::from(read_end);
        let limit = limits.capture;
        thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(read) => captured
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(&chunk[..read], limit),
                }
            }
            let _ = drained_tx.send(());
        });
    }

    // Waits for the exit without reaping: the leader stays a zombie, so its pid (the group's
    // id) cannot be reused and killing the group below cannot reach another process.
    let (exited_tx, exited_rx) = mpsc::channel();
    thread::spawn(move || {
        loop {
            let id = Id::Pid(Pid::from_raw(pid as i32));
            match waitid(id, WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                Err(nix::errno::Errno::EINTR) => continue,
                _ => break,
            }
        }
        let _ = exited_tx.send(());
    });

    let timed_out = match exited_rx.recv_timeout(limits.timeout) {
        Ok(()) | Err(RecvTimeoutError::Disconnected) => false,
        Err(RecvTimeoutError::Timeout) => {
            signal_group(group, Signal::SIGTERM);
            if exited_rx.recv_timeout(limits.grace).is_err() {
                signal_group(group, Signal::SIGKILL);
                let _ = exited_rx.recv();
            }
            true
        }
    };
    signal_group(group, Signal::SIGKILL);
    let status = child.wait();
    let _ = drained_rx.recv_timeout(DRAIN_WAIT);
    let output = captured
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    match status {
        Ok(_) if timed_out => Outcome {
            ok: false,
            status: format!("timed out after {} s", limits.timeout.as_secs_f64()),
            output,
        },
        Ok(status) => Outcome {
            ok: status.success(),
            status: describe(status),
            output,
        },
        Err(err) => Outcome {
            ok: false,
            status: format!("cannot wait for it: {err}"),
            output,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::Path;
    use std::time::Instant;

    fn hook(dir: &Path, name: &str, body: &str) -> Hook {
        let path = dir.join(name);
        crate::testing::write_hook(&path, body);
        Hook {
            id: format!("delete.d/{name}"),
            path,
        }
    }

    fn limits(timeout_ms: u64) -> Limits {
        Limits {
            timeout: Duration::from_millis(timeout_ms),
            grace: Duration::from_millis(300),
            capture: CAPTURE_LIMIT,
        }
    }

    /// Whether `pid` is gone (or a zombie nobody reaped yet: it runs no more).
    fn gone(pid: i32) -> bool {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        }
    }

    fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "{what}");
            thread::yield_now();
        }
    }

    fn read_pids(path: &Path) -> Vec<i32> {
        fs::read_to_string(path)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|pid| pid.parse().ok())
            .collect()
    }

    #[test]
    fn passes_event_and_user_as_argv_and_env_with_stdin_empty() {
        let dir = tempfile::tempdir().expect("temp dir");
        let hook = hook(
            dir.path(),
            "10-args",
            r#"echo "argv=$1 $2 env=$QAM_EVENT $QAM_USER"; echo "to stderr" >&2; cat; pwd"#,
        );
        let outcome = run(&hook, "delete", "alice", limits(10_000));
        assert!(outcome.ok, "{outcome:?}");
        assert_eq!(outcome.status, "exit 0");
        assert_eq!(
            outcome.output.text(),
            "argv=delete alice env=delete alice\nto stderr\n/\n"
        );
    }

    #[test]
    fn a_failing_hook_reports_its_status_and_output_end() {
        let dir = tempfile::tempdir().expect("temp dir");
        let hook = hook(
            dir.path(),
            "20-fail",
            "echo 'doveadm: user not known' >&2; exit 3",
        );
        let outcome = run(&hook, "delete", "bob", limits(10_000));
        assert!(!outcome.ok);
        assert_eq!(outcome.detail(), "exit 3: doveadm: user not known");
    }

    #[test]
    fn a_hook_that_cannot_be_executed_fails() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("30-gone");
        let outcome = run(
            &Hook {
                id: "delete.d/30-gone".into(),
                path,
            },
            "delete",
            "bob",
            limits(10_000),
        );
        assert!(!outcome.ok);
        assert!(outcome.status.starts_with("cannot run: "), "{outcome:?}");
    }

    #[test]
    fn timeout_kills_the_hook_and_its_children() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pids = dir.path().join("pids");
        // The children ignore SIGTERM, so only the SIGKILL after the grace ends them.
        let hook = hook(
            dir.path(),
            "40-hang",
            &format!(
                "trap '' TERM\necho started\nsleep 1000 &\necho $! >> {p}\nsh -c 'trap \"\" TERM; sleep 1000' &\necho $! >> {p}\necho $$ >> {p}\nwait",
                p = pids.display()
            ),
        );
        let started = Instant::now();
        let outcome = run(&hook, "delete", "carol", limits(500));
        assert!(!outcome.ok);
        assert_eq!(outcome.status, "timed out after 0.5 s");
        assert_eq!(outcome.detail(), "timed out after 0.5 s: started");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let pids = read_pids(&pids);
        assert_eq!(pids.len(), 3, "{pids:?}");
        for pid in pids {
            eventually(&format!("process {pid} of the hook still runs"), || {
                gone(pid)
            });
        }
    }

    #[test]
    fn what_a_finished_hook_leaves_running_is_killed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pids = dir.path().join("pids");
        let hook = hook(
            dir.path(),
            "45-leaves",
            &format!("sleep 1000 &\necho $! > {}\necho done", pids.display()),
        );
        let started = Instant::now();
        let outcome = run(&hook, "lock", "dave", limits(10_000));
        assert!(outcome.ok, "{outcome:?}");
        assert_eq!(outcome.output.text(), "done\n");
        assert!(started.elapsed() < Duration::from_secs(5));
        for pid in read_pids(&pids) {
            eventually(&format!("process {pid} still runs"), || gone(pid));
        }
    }

    #[test]
    fn output_capture_keeps_only_its_end() {
        let dir = tempfile::tempdir().expect("temp dir");
        // 1 MiB of 'x' lines, then the line that explains the failure.
        let hook = hook(
            dir.path(),
            "50-noisy",
            "head -c 1048576 /dev/zero | tr '\\0' x\necho\necho 'the reason' >&2\nexit 1",
        );
        let outcome = run(&hook, "delete", "erin", limits(20_000));
        assert!(!outcome.ok);
        assert_eq!(outcome.output.bytes.len(), CAPTURE_LIMIT);
        assert_eq!(
            outcome.output.dropped,
            (1_048_576 + 1 + "the reason\n".len() - CAPTURE_LIMIT) as u64
        );
        assert!(outcome.output.text().ends_with("x\nthe reason\n"));
        let detail = outcome.detail();
        assert_eq!(detail.chars().count(), DETAIL_CHARS);
        assert!(detail.starts_with("exit 1: xxx"), "{detail}");
        assert!(detail.ends_with("x\nthe reason"), "{detail}");
    }
}
