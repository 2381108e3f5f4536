//! A Debian 12 booted with systemd-nspawn for tests that need systemd as PID 1, and the qam
//! packages they install; the root filesystem and the 0.1.0 package are cached in CACHE.

pub use crate::shown;
use crate::{keep_log, require_peer, run_ok, target_dir, workspace_root};
use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

const NSPAWN: &str = "/usr/bin/systemd-nspawn";
const DEBOOTSTRAP: &str = "/usr/sbin/debootstrap";
const NSENTER: &str = "/usr/bin/nsenter";
const ZSTD: &str = "/usr/bin/zstd";

/// Outside the clone, kept between runs: the root filesystem tarball and the old package.
const CACHE: &str = "/var/cache/qam-tests";
const SUITE: &str = "bookworm";
/// Beyond minbase: systemd as PID 1, NSS through systemd's userdb, and the peers README
/// connects to qam. Not procps: the
/// package must work without it (no /bin/kill). debootstrap does not resolve virtual
/// packages, hence Prosody's Lua libraries by name.
const ROOTFS_PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "adduser",
    "pamtester",
    "libnss-systemd",
    "systemd-userdbd",
    "prosody",
    "lua-bitop",
    "lua-sec",
    "lua-socket",
];
/// The release an upgrade starts from, and the commit its package is built from.
const OLD_VERSION: &str = "0.1.0";
const OLD_COMMIT: &str = "da0cf3f";

/// How long booting, a unit's start or an awaited condition may take on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(90);

/// True when the container can be made (as root, with the tools installed).
pub fn peers_present() -> bool {
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "booting a container needs root under CI=true"
        );
        eprintln!("SKIP: booting a container needs root");
        return false;
    }
    require_peer(NSPAWN, "systemd-container")
        && require_peer(DEBOOTSTRAP, "debootstrap")
        && require_peer(ZSTD, "zstd")
}

/// A command line for the container's /bin/sh, with what it reads on stdin.
pub struct Script {
    /// The shell text.
    text: String,
    /// Given on stdin (passwords go here, never on a command line).
    input: Option<String>,
}

impl Script {
    pub fn new(text: &str) -> Script {
        Script {
            text: text.to_owned(),
            input: None,
        }
    }

    pub fn stdin(mut self, input: &str) -> Script {
        self.input = Some(input.to_owned());
        self
    }
}

/// One line of /proc/PID/mountinfo.
pub struct Mount {
    /// Where it is mounted.
    pub point: String,
    /// The part of its filesystem mounted there (a private /tmp names its directory).
    pub root: String,
    /// Mounted read-write.
    pub writable: bool,
}

pub fn mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            Some(Mount {
                root: (*fields.get(3)?).to_owned(),
                point: (*fields.get(4)?).to_owned(),
                writable: fields.get(5)?.split(',').any(|option| option == "rw"),
            })
        })
        .collect()
}

/// One container at a time per test process: systemd-nspawn --keep-unit puts every container
/// in the same `payload` cgroup of the test's own.
static SERIAL: Mutex<()> = Mutex::new(());

/// A booted Debian 12, stopped (and its files removed) on drop.
pub struct Container {
    /// systemd-nspawn itself: SIGTERM to it halts the container.
    nspawn: Child,
    /// The container's PID 1 (systemd), as the host sees it: `nsenter -t` target.
    leader: i32,
    /// The unpacked root filesystem and nspawn's log.
    dir: tempfile::TempDir,
    /// Held while the container lives (see SERIAL).
    _serial: MutexGuard<'static, ()>,
}

impl Container {
    /// Unpacks the cached root filesystem and boots it; returns it with the time from starting
    /// systemd-nspawn to `systemctl is-system-running` saying `running`.
    pub fn boot() -> (Container, Duration) {
        let tarball = rootfs_tarball();
        let serial = SERIAL
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = tempfile::Builder::new()
            .prefix("boot-")
            .tempdir_in(CACHE)
            .expect("container dir");
        let root = dir.path().join("root");
        fs::create_dir(&root).expect("root dir");
        run_ok(
            Command::new("tar")
                .args(["--zstd", "-xf"])
                .arg(tarball)
                .arg("-C")
                .arg(&root),
        );
        let log = fs::File::create(dir.path().join("nspawn.log")).expect("nspawn log");
        let start = Instant::now();
        let nspawn = Command::new(NSPAWN)
            .args(["-q", "-D"])
            .arg(&root)
            // No machined or host bus here; the unified hierarchy and CAP_BPF with the bpf
            // syscall let IPAddressDeny= and DevicePolicy= be enforced inside.
            .args([
                "--boot",
                "--register=no",
                "--keep-unit",
                "--console=pipe",
                "--private-network",
                "--capability=CAP_BPF",
                "--system-call-filter=bpf",
                "--volatile=overlay",
            ])
            .env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start systemd-nspawn");
        let mut container = Container {
            leader: 0,
            nspawn,
            dir,
            _serial: serial,
        };
        container.leader = container.wait_for("the container's systemd", || {
            let children = fs::read_to_string(format!(
                "/proc/{0}/task/{0}/children",
                container.nspawn.id()
            ))
            .ok()?;
            children.split_whitespace().find_map(|pid| {
                let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
                (comm.trim() == "systemd")
                    .then(|| pid.parse().ok())
                    .flatten()
            })
        });
        // is-system-running says `offline` (or nothing) until systemd listens on its bus.
        let state = container.wait_for("the system bus", || {
            let out = container.run(Script::new("systemctl is-system-running --wait"));
            let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            (!state.is_empty() && state != "offline").then_some(state)
        });
        let booted = start.elapsed();
        assert_eq!(
            state,
            "running",
            "failed units:\n{}",
            container.ok(Script::new("systemctl --failed --no-pager"))
        );
        (container, booted)
    }

    /// Runs `script` with /bin/sh inside, in every namespace of the container.
    pub fn run(&self, script: Script) -> Output {
        let mut child = Command::new(NSENTER)
            .arg("-t")
            .arg(self.leader.to_string())
            .args(["-a", "/bin/sh", "-c", &script.text])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", "/root")
            .env("LANG", "C.UTF-8")
            .stdin(if script.input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nsenter");
        if let (Some(input), Some(mut stdin)) = (&script.input, child.stdin.take()) {
            // The command may finish without reading everything.
            let _ = stdin.write_all(input.as_bytes());
        }
        child.wait_with_output().expect("wait for nsenter")
    }

    /// Runs `script` inside, asserts it succeeded, returns its stdout.
    pub fn ok(&self, script: Script) -> String {
        let text = script.text.clone();
        let out = self.run(script);
        if !out.status.success() {
            let journal = self.journal();
            let lines: Vec<&str> = journal.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            panic!(
                "`{text}` in the container: {}\njournal's end:\n{tail}",
                shown(&out)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `systemctl show -P NAME UNIT`.
    pub fn property(&self, unit: &str, name: &str) -> String {
        self.ok(Script::new(&format!("systemctl show -P {name} {unit}")))
            .trim()
            .to_owned()
    }

    /// Polls `check` until it gives a value; fails after PATIENCE with the container's journal.
    pub fn wait_for<T>(&self, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let mut value = None;
        crate::poll_until(Instant::now() + PATIENCE, || {
            value = check();
            value.is_some()
        });
        value.unwrap_or_else(|| {
            panic!(
                "waited {PATIENCE:?} for {what}; journal:\n{}",
                self.journal()
            )
        })
    }

    /// A path inside the container, as the host reaches it.
    pub fn host_path(&self, inner: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{inner}", self.leader))
    }

    /// Copies the package in and runs `dpkg -i` on it.
    pub fn install_deb(&self, deb: &Path) {
        fs::copy(deb, self.host_path("/tmp/qam.deb")).expect("copy the package in");
        self.ok(Script::new("dpkg -i /tmp/qam.deb && rm /tmp/qam.deb"));
    }

    /// The journal's position now: what is logged later comes after it.
    pub fn cursor(&self) -> String {
        let export = self.ok(Script::new("journalctl -q -n 1 -o export"));
        export
            .lines()
            .find_map(|line| line.strip_prefix("__CURSOR="))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no cursor in {export}"))
    }

    /// Runs `work` on a thread inside the container's network namespace (its 127.0.0.1).
    pub fn in_network<T: Send>(&self, work: impl FnOnce() -> T + Send) -> T {
        let namespace = fs::File::open(format!("/proc/{}/ns/net", self.leader))
            .expect("open the container's network namespace");
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET)
                        .expect("enter the container's network namespace");
                    work()
                })
                .join()
                .expect("thread in the container's network namespace")
        })
    }

    fn journal(&self) -> String {
        let out = self.run(Script::new("journalctl -q --no-pager -o short-monotonic"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Container {
    /// Keeps the journal for the secrets audit (QAM_KEEP_LOGS), halts the container (SIGTERM
    /// to systemd-nspawn) and removes the empty cgroups `--keep-unit` leaves behind.
    fn drop(&mut self) {
        let journal = self.dir.path().join("journal.log");
        if fs::write(&journal, self.journal()).is_ok() {
            keep_log(self.dir.path(), &journal);
        }
        let pid = nix::unistd::Pid::from_raw(self.nspawn.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        crate::poll_until(crate::within(30), || {
            !matches!(self.nspawn.try_wait(), Ok(None))
        });
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
        for cgroup in own_cgroups() {
            for leftover in ["payload", "supervisor"] {
                remove_cgroup_tree(&cgroup.join(leftover));
            }
        }
    }
}

/// This process's cgroup directories in the unified and the named systemd hierarchy.
fn own_cgroups() -> Vec<PathBuf> {
    let unified = if Path::new("/sys/fs/cgroup/unified").is_dir() {
        "/sys/fs/cgroup/unified"
    } else {
        "/sys/fs/cgroup"
    };
    fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (hierarchy, path) = line.split_once(':')?.1.split_once(':')?;
            let base = match hierarchy {
                "" => unified,
                "name=systemd" => "/sys/fs/cgroup/systemd",
                _ => return None,
            };
            Some(PathBuf::from(format!("{base}{path}")))
        })
        .collect()
}

/// Removes a cgroup and the cgroups below it, deepest first (only empty ones go).
fn remove_cgroup_tree(cgroup: &Path) {
    if let Ok(entries) = fs::read_dir(cgroup) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                remove_cgroup_tree(&entry.path());
            }
        }
        let _ = fs::remove_dir(cgroup);
    }
}

/// Holds an exclusive lock on CACHE/`name` while alive (one builder per machine).
fn cache_lock(name: &str) -> nix::fcntl::Flock<fs::File> {
    fs::create_dir_all(CACHE).expect("create the cache dir");
    let file = fs::File::create(Path::new(CACHE).join(name)).expect("lock file");
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("lock {name}: {e}"))
}

/// The cached root filesystem tarball, made with debootstrap when missing or when the
/// package list changed.
fn rootfs_tarball() -> &'static Path {
    static TARBALL: OnceLock<PathBuf> = OnceLock::new();
    TARBALL.get_or_init(|| {
        let _lock = cache_lock("rootfs.lock");
        let start = Instant::now();
        let packages = ROOTFS_PACKAGES.join(",");
        // Named by its package list, so trees with different lists keep their own.
        let name = format!("{SUITE}-minbase-{:016x}", fnv1a(&packages));
        let tarball = Path::new(CACHE).join(format!("{name}.tar.zst"));
        let listed = Path::new(CACHE).join(format!("{name}.packages"));
        if tarball.exists() && fs::read_to_string(&listed).ok().as_deref() == Some(&packages) {
            return tarball;
        }
        let build = Path::new(CACHE).join("rootfs.build");
        let _ = fs::remove_dir_all(&build);
        let log = Path::new(CACHE).join("debootstrap.log");
        let out = Command::new(DEBOOTSTRAP)
            .args(["--variant=minbase", &format!("--include={packages}"), SUITE])
            .arg(&build)
            .arg(mirror())
            .output()
            .expect("run debootstrap");
        let _ = fs::write(&log, [out.stdout.as_slice(), &out.stderr].concat());
        assert!(out.status.success(), "debootstrap failed: {}", shown(&out));
        run_ok(
            Command::new("chroot")
                .arg(&build)
                .args(["apt-get", "clean"]),
        );
        let partial = tarball.with_extension("partial");
        run_ok(
            Command::new("tar")
                .args(["--zstd", "-cf"])
                .arg(&partial)
                .arg("-C")
                .arg(&build)
                .arg("."),
        );
        fs::rename(&partial, &tarball).expect("keep the tarball");
        fs::write(&listed, &packages).expect("note the package list");
        let _ = fs::remove_dir_all(&build);
        println!(
            "FIGURE systemd: root filesystem made in {:?}",
            start.elapsed()
        );
        tarball
    })
}

/// FNV-1a: a hash that stays the same across Rust releases.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The Debian mirror apt already uses here (the network may reach nothing else).
fn mirror() -> String {
    let deb822 = fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    let one_line = fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    deb822
        .lines()
        .filter_map(|line| line.strip_prefix("URIs:"))
        .flat_map(str::split_whitespace)
        .chain(one_line.lines().filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("deb")).then(|| words.find(|w| !w.starts_with('[')))?
        }))
        .find(|uri| !uri.contains("security"))
        .unwrap_or("http://deb.debian.org/debian")
        .to_owned()
}

/// The packages the tests install.
pub struct Debs {
    /// 0.1.0, built from its commit (cached).
    pub old: PathBuf,
    /// This tree's, built by packaging/build-deb.
    pub new: PathBuf,
}

/// Builds (or finds) both packages once per test process.
pub fn debs() -> &'static Debs {
    static DEBS: OnceLock<Debs> = OnceLock::new();
    DEBS.get_or_init(|| {
        // The root filesystem's download meanwhile (on a machine without the cache).
        let rootfs = std::thread::spawn(rootfs_tarball);
        let start = Instant::now();
        let old = old_deb();
        let new = build_deb(&workspace_root(), &target_dir());
        println!(
            "FIGURE systemd: both packages ready in {:?}",
            start.elapsed()
        );
        if let Err(panic) = rootfs.join() {
            std::panic::resume_unwind(panic);
        }
        Debs { old, new }
    })
}

/// The profile the suite's binaries were built with, so build-deb reuses that build.
fn profile() -> &'static str {
    match std::env::var("QAM_TEST_PROFILE").as_deref() {
        Ok("release") => "release",
        _ => "dev",
    }
}

/// Runs `tree`/packaging/build-deb with `target` as cargo's target dir; returns the .deb's path.
fn build_deb(tree: &Path, target: &Path) -> PathBuf {
    let out = run_ok(
        Command::new(tree.join("packaging/build-deb"))
            .arg(profile())
            .env("CARGO_TARGET_DIR", target),
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find(|line| line.ends_with(".deb"))
        .map(|line| PathBuf::from(line.trim()))
        .unwrap_or_else(|| panic!("build-deb printed no .deb path: {}", shown(&out)))
}

/// The 0.1.0 package, built from OLD_COMMIT in a `git worktree` once per machine.
fn old_deb() -> PathBuf {
    let _lock = cache_lock("old-deb.lock");
    let cached = Path::new(CACHE).join(format!("qam_{OLD_VERSION}_{OLD_COMMIT}_{}.deb", profile()));
    if cached.exists() {
        return cached;
    }
    let scratch = tempfile::Builder::new()
        .prefix("old-src-")
        .tempdir_in(CACHE)
        .expect("scratch dir");
    let tree = scratch.path().join(OLD_COMMIT);
    let repo = workspace_root();
    run_ok(
        Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(["worktree", "add", "--detach", "--quiet"])
            .arg(&tree)
            .arg(OLD_COMMIT),
    );
    // Its own target dir: cargo names a workspace's artifacts relative to the workspace root,
    // so in this tree's target dir the old build would pass for this tree's. Seeded with this
    // tree's dependency artifacts (the same versions), so only qam's own crates are compiled.
    let target = scratch.path().join("target");
    let profile_dir = if profile() == "dev" {
        "debug"
    } else {
        "release"
    };
    run_ok(
        Command::new("sh")
            .args([
                "-c",
                r#"mkdir -p "$2/deps" && cp -a "$1/.fingerprint" "$1/build" "$2/" \
                   && cp -a "$1"/deps/lib* "$2/deps/""#,
                "seed",
            ])
            .arg(target_dir().join(profile_dir))
            .arg(target.join(profile_dir)),
    );
    let built = build_deb(&tree, &target);
    let partial = cached.with_extension("partial");
    fs::copy(&built, &partial).expect("copy the old package");
    fs::rename(&partial, &cached).expect("keep the old package");
    run_ok(
        Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(["worktree", "remove", "--force"])
            .arg(&tree),
    );
    cached
}
