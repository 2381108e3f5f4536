//! A sysadmin's first day, as the README tells it: the quick-start build, the `qam` group, and
//! qamd refusing a config or data dir that someone else could change.
//!
//! A service user in the `qam` group reaches sockets whose directories qamd had to create; the
//! refusal is one line and exit 1.

use qam_tests::deployment::{join_qam, sysadmin};
use qam_tests::identity::{Identity, SETPRIV};
use qam_tests::{
    bin, poll_until, require_peer, shared_tempdir, wait_until, within, workspace_root, CHEAP_HASH,
};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const SOCAT: &str = "/usr/bin/socat";
const TESTSASLAUTHD: &str = "/usr/sbin/testsaslauthd";

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A config for qamd in `dir` (0755) with its data dir at `data`, mode 0644.
fn write_config(dir: &Path, data: &Path) -> PathBuf {
    let config = dir.join("qamd.toml");
    fs::write(
        &config,
        format!(
            "socket = {:?}\ndata_dir = {:?}\n{CHEAP_HASH}",
            dir.join("qamd.sock").display().to_string(),
            data.display().to_string()
        ),
    )
    .expect("write config");
    chmod(&config, 0o644);
    config
}

/// Starts qamd on `config` and expects it to refuse: exit 1 with one line on stderr.
fn refusal(config: &Path) -> String {
    let mut child = Command::new(bin("qamd"))
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qamd");
    let mut exited = None;
    if !poll_until(within(20), || {
        exited = child.try_wait().expect("wait for qamd");
        exited.is_some()
    }) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("qamd started on {} instead of refusing", config.display());
    }
    let status = exited.expect("exit status");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr
}

#[test]
fn a_config_its_group_may_write_is_refused() {
    let dir = shared_tempdir();
    let config = write_config(dir.path(), &dir.path().join("data"));
    chmod(&config, 0o664);
    let line = refusal(&config);
    assert!(
        line.contains(&format!("config {}", config.display()))
            && line.contains("mode 0664")
            && line.contains("chmod go-w"),
        "{line}"
    );
}

#[test]
fn a_config_owned_by_another_user_is_refused() {
    let dir = shared_tempdir();
    let config = write_config(dir.path(), &dir.path().join("data"));
    nix::unistd::chown(&config, Some(nix::unistd::Uid::from_raw(65534)), None).expect("chown");
    let line = refusal(&config);
    assert!(
        line.contains("belongs to uid 65534") && line.contains("root or qamd's user"),
        "{line}"
    );
}

#[test]
fn a_data_dir_its_group_may_write_is_refused() {
    let dir = shared_tempdir();
    let data = dir.path().join("data");
    fs::create_dir(&data).expect("data dir");
    chmod(&data, 0o775);
    let line = refusal(&write_config(dir.path(), &data));
    assert!(
        line.contains(&format!("data dir {}", data.display())) && line.contains("mode 0775"),
        "{line}"
    );
}

#[test]
fn a_writable_directory_above_the_config_or_data_dir_is_refused() {
    // The config's directory: anyone in its group could swap the file.
    let dir = shared_tempdir();
    let config = write_config(dir.path(), &dir.path().join("data"));
    chmod(dir.path(), 0o775);
    let line = refusal(&config);
    assert!(
        line.contains(&format!("directory {} is writable", dir.path().display())),
        "{line}"
    );
    // The data dir's parent, world-writable without the sticky bit.
    let safe = shared_tempdir();
    let open = shared_tempdir();
    chmod(open.path(), 0o777);
    let data = open.path().join("data");
    let line = refusal(&write_config(safe.path(), &data));
    assert!(
        line.contains(&format!(
            "data dir {}: directory {}",
            data.display(),
            open.path().display()
        )),
        "{line}"
    );
}

/// A system user made for the test (like a service's), removed on drop.
struct ServiceUser(String);

impl ServiceUser {
    fn add(name: &str) -> ServiceUser {
        let _ = Command::new("deluser").arg(name).output();
        sysadmin("adduser", &["--system", "--no-create-home", name]);
        ServiceUser(name.to_owned())
    }
}

impl Drop for ServiceUser {
    fn drop(&mut self) {
        let _ = Command::new("deluser").arg(&self.0).output();
    }
}

#[test]
fn a_service_in_group_qam_reaches_sockets_below_directories_qamd_created() {
    if !require_peer(SOCAT, "socat")
        || !require_peer(SETPRIV, "util-linux")
        || !require_peer(TESTSASLAUTHD, "sasl2-bin")
    {
        return;
    }
    let service = ServiceUser::add(&format!("qamsvc{}", std::process::id() % 100_000));
    join_qam(&service.0);
    // /run/qam does not exist yet (a boot without the socket units): qamd makes it.
    let root = shared_tempdir();
    let run = root.path().join("run/qam");
    let (socket, door) = (run.join("qamd.sock"), run.join("saslauthd/mux"));
    let config = root.path().join("qamd.toml");
    fs::write(
        &config,
        format!(
            "socket = {:?}\ndata_dir = {:?}\nsaslauthd_socket = {:?}\n{CHEAP_HASH}",
            socket.display().to_string(),
            root.path().join("data").display().to_string(),
            door.display().to_string()
        ),
    )
    .expect("write config");
    let mut qamd = Stopped(
        Command::new(bin("qamd"))
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start qamd"),
    );
    wait_until(within(20), "qamd to bind its sockets", || {
        assert!(qamd.0.try_wait().expect("qamd").is_none(), "qamd exited");
        socket.exists() && door.exists()
    });
    let qam_gid = nix::unistd::Group::from_name("qam")
        .expect("group lookup")
        .expect("group qam")
        .gid
        .as_raw();
    for created in [root.path().join("run"), run.clone(), run.join("saslauthd")] {
        let meta = fs::metadata(&created).expect("created dir");
        assert_eq!(meta.mode() & 0o7777, 0o710, "{}", created.display());
        assert_eq!(meta.gid(), qam_gid, "{}", created.display());
    }

    let hello = |user: &str| {
        let mut child = Identity::service_user(user)
            .command(SOCAT)
            .arg("-")
            .arg(format!("UNIX-CONNECT:{}", socket.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run socat");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"{\"op\":\"hello\"}\n").expect("request");
        drop(stdin);
        let output = child.wait_with_output().expect("socat");
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr)
    };
    let sasl = |user: &str| {
        let output = Identity::service_user(user)
            .command(TESTSASLAUTHD)
            .args(["-u", "nobody-here", "-p", "x", "-s", "smtp", "-f"])
            .arg(&door)
            .output()
            .expect("run testsaslauthd");
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr)
    };
    let answer = hello(&service.0);
    assert!(answer.contains("\"ok\":true"), "{answer}");
    // The door answers (NO for an unknown name): the service got through to it.
    let answer = sasl(&service.0);
    assert!(answer.contains("NO"), "{answer}");
    // Outside group qam, the directories stop a process before the socket.
    assert!(hello("nobody").contains("Permission denied"));
    assert!(
        !sasl("nobody").contains("NO \""),
        "nobody must not reach the door"
    );
}

/// A qamd the test started, killed when the test ends, passing or failing.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The README's quick-start build command, as printed there.
fn readme_quick_start_build() -> Vec<String> {
    let readme = fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let line = readme
        .lines()
        .find(|line| line.trim_start().starts_with("cargo build --release"))
        .expect("a quick-start `cargo build --release` line in README");
    let command = line.split("&&").next().unwrap_or_default();
    command.split_whitespace().map(str::to_owned).collect()
}

#[test]
fn the_readme_quick_start_build_makes_the_pam_module() {
    let words = readme_quick_start_build();
    // Ask cargo (debug profile, already built by the suite) which artifacts that selection
    // yields; the cdylib appears only when the library targets are selected.
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(words.iter().skip(1).filter(|word| *word != "--release"))
        .args(["--message-format=json", "--quiet", "--offline"])
        .current_dir(workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo");
    assert!(output.status.success(), "{words:?}");
    let artifacts = String::from_utf8_lossy(&output.stdout);
    assert!(
        artifacts.contains("libpam_qam.so"),
        "README's `{}` does not build libpam_qam.so",
        words.join(" ")
    );
}
