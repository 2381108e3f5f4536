//! The self-service page's real peers for tests: qam-web, nginx, headless Chromium driven over
//! WebDriver, and a small HTTP/1.1 client for requests a browser would not send.
//!
//! qam-web is socket-activated as systemd does it, as an unprivileged user; nginx is configured
//! with README's block.

use crate::identity::Identity;
use crate::{wait_until, within};
use serde_json::{json, Value};
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const NGINX: &str = "/usr/sbin/nginx";
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How many times a browser that fails to start is asked for before the test fails.
const SESSION_ATTEMPTS: usize = 3;

/// The unprivileged user qam-web runs as in tests (README: its own `qam-web` user; the tests
/// create no system user, and `nobody` has no other rights either).
pub const WEB_USER: &str = "nobody";
pub const WEB_GROUP: &str = "nogroup";

/// The operations README grants qam-web.
pub const WEB_GRANTS: &str =
    "[\"status\", \"register\", \"register_invite\", \"invite_info\", \"change_password\", \"reset_info\", \"reset_password\"]";

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// Header names lowercased, in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// One HTTP/1.1 request to 127.0.0.1:`port` (`Connection: close`), answer read whole.
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    http_to(
        &format!("127.0.0.1:{port}"),
        port,
        method,
        path,
        headers,
        body,
    )
}

/// One HTTP/1.1 request to 127.0.0.1:`port` for the virtual host `authority` (its `Host:`).
pub fn http_to(
    authority: &str,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect for HTTP");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("send request");
    stream.write_all(body).expect("send body");
    parse_reply(&read_reply(&mut stream))
}

/// Reads one answer: up to the end of its `Content-Length` body, or to EOF without one
/// (chromedriver keeps connections open whatever `Connection` says).
fn read_reply(stream: &mut TcpStream) -> Vec<u8> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse::<usize>().ok());
            if let Some(length) = length {
                if raw.len() >= end + 4 + length {
                    return raw;
                }
            }
        }
        match stream.read(&mut buf) {
            Ok(0) => return raw,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(err) => panic!("read answer: {err}"),
        }
    }
}

fn parse_reply(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_lowercase(), value.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(name, value)| name == "transfer-encoding" && value.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// `application/x-www-form-urlencoded` of some fields.
pub fn form(fields: &[(&str, &str)]) -> Vec<u8> {
    fields
        .iter()
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            b' ' => "+".to_owned(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// qam-web on a socket the test binds and passes as systemd would (LISTEN_FDS, group
/// www-data, mode 0660), running as [`WEB_USER`].
pub struct QamWeb {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl QamWeb {
    /// Starts qam-web with `config` (TOML) against qamd's `qamd_socket`, as a member of
    /// `qamd_group` (the group of qamd's socket).
    pub fn start(qamd_socket: &Path, qamd_group: &str, config: &str) -> QamWeb {
        let dir = crate::shared_tempdir();
        let socket = dir.path().join("web.sock");
        let log = dir.path().join("qam-web.log");
        let config_path = dir.path().join("qam-web.toml");
        fs::write(&config_path, config).expect("write qam-web config");
        fs::set_permissions(&config_path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind web.sock");
        let www = nix::unistd::Group::from_name("www-data")
            .ok()
            .flatten()
            .expect("group www-data (Debian's nginx runs as it)");
        nix::unistd::chown(&socket, None, Some(www.gid)).expect("chown web.sock");
        fs::set_permissions(&socket, fs::Permissions::from_mode(0o660)).expect("chmod web.sock");
        let out = fs::File::create(&log).expect("qam-web log");
        fs::set_permissions(&log, fs::Permissions::from_mode(0o644)).expect("chmod log");
        let fd = listener.as_raw_fd();
        let mut command = Identity::new(WEB_USER, WEB_GROUP)
            .with_groups(qamd_group)
            .command("/bin/sh");
        command
            .args([
                "-c",
                "LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=qam-web exec \"$0\" \"$@\"",
            ])
            .arg(crate::bin("qam-web"))
            .arg("--config")
            .arg(&config_path)
            .arg("--socket")
            .arg(qamd_socket)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("fd"))
            .stderr(out);
        // SAFETY: between fork and exec only dup2 and fcntl (async-signal-safe) run.
        unsafe {
            command.pre_exec(move || {
                if fd != 3 {
                    // Kept open for the exec'd program: never dropped (closed) here.
                    let passed = nix::unistd::dup2_raw(std::os::fd::BorrowedFd::borrow_raw(fd), 3)
                        .map_err(std::io::Error::from)?;
                    let _fd3 = std::os::fd::IntoRawFd::into_raw_fd(passed);
                }
                nix::fcntl::fcntl(
                    std::os::fd::BorrowedFd::borrow_raw(3),
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                )
                .map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let child = command.spawn().expect("start qam-web");
        drop(listener);
        let web = QamWeb {
            dir,
            socket,
            log,
            child: Some(child),
        };
        let log = web.log.clone();
        wait_until(within(20), "qam-web to be ready", || {
            fs::read_to_string(&log).is_ok_and(|text| text.contains("qam-web serving"))
        });
        web
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for QamWeb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        crate::keep_log(self.dir.path(), &self.log);
    }
}

/// nginx (master as root, workers as www-data) on 127.0.0.1:`port`, with README's block.
pub struct Nginx {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

impl Nginx {
    pub fn start(port: u16, web_socket: &Path) -> Nginx {
        let dir = crate::shared_tempdir();
        let d = dir.path().display().to_string();
        // README's nginx block for qam-web, as written there.
        let block = crate::readme::block_after("<!-- nginx-qam-web")
            .replace("/run/qam-web/web.sock", &web_socket.display().to_string())
            .replace("/var/log/nginx/", &format!("{d}/"));
        // TLS is left out (README leaves it to the proxy's own setup); the rest is README's.
        let config = format!(
            "user www-data;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               server {{\n    listen 127.0.0.1:{port};\n    server_name localhost;\n{block}\n  }}\n}}\n"
        );
        let path = dir.path().join("nginx.conf");
        fs::write(&path, config).expect("write nginx.conf");
        let out = fs::File::create(dir.path().join("foreground.out")).expect("nginx output");
        let child = Command::new(NGINX)
            .arg("-c")
            .arg(&path)
            .args(["-p", &d, "-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("fd"))
            .stderr(out)
            .spawn()
            .expect("start nginx");
        let nginx = Nginx {
            dir,
            port,
            child: Some(child),
        };
        wait_until(within(20), "nginx to listen", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        nginx
    }

    /// Everything nginx logged (error log and its own output).
    pub fn log_text(&self) -> String {
        ["error.log", "qam-web.error.log", "foreground.out"]
            .iter()
            .map(|name| fs::read_to_string(self.dir.path().join(name)).unwrap_or_default())
            .collect()
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT);
            crate::poll_until(within(5), || !matches!(child.try_wait(), Ok(None)));
            let _ = child.kill();
            let _ = child.wait();
        }
        for log in ["error.log", "qam-web.error.log", "foreground.out"] {
            crate::keep_log(self.dir.path(), &self.dir.path().join(log));
        }
    }
}

/// chromedriver on 127.0.0.1:`port`; sessions are headless Chromium browsers.
pub struct ChromeDriver {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl ChromeDriver {
    pub fn start(port: u16) -> ChromeDriver {
        let dir = crate::shared_tempdir();
        let out = fs::File::create(dir.path().join("chromedriver.log")).expect("log");
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("fd"))
            .stderr(out)
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let driver = ChromeDriver {
            port,
            dir,
            child: Some(child),
        };
        wait_until(within(20), "chromedriver to listen", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        driver
    }

    /// A new browser; `javascript` false disables scripts for every page it shows.
    pub fn session(&self, javascript: bool) -> Session {
        let profile = self.dir.path().join(format!(
            "profile-{}",
            Instant::now().elapsed().as_nanos() ^ u128::from(std::process::id()) ^ rand_ish()
        ));
        let mut args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--window-size=900,1000".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        if !javascript {
            args.push("--blink-settings=scriptEnabled=false".to_owned());
        }
        let prefs = if javascript {
            json!({})
        } else {
            json!({"profile.managed_default_content_settings.javascript": 2})
        };
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args, "prefs": prefs}
        }}});
        // A browser that did not start in time on a loaded machine is asked for again; any
        // other answer, or a third failure, ends the test with what chromedriver said.
        let mut refusals = Vec::new();
        while refusals.len() < SESSION_ATTEMPTS {
            let answer = driver_call(self.port, "POST", "/session", Some(&capabilities));
            if let Some(id) = answer["value"]["sessionId"].as_str() {
                return Session {
                    port: self.port,
                    id: id.to_owned(),
                };
            }
            let not_started = answer["value"]["error"] == "session not created";
            refusals.push(answer.to_string());
            if !not_started {
                break;
            }
        }
        let log = fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default();
        panic!(
            "no WebDriver session: {}\nchromedriver.log:\n{log}",
            refusals.join("\n")
        );
    }
}

/// A different number for each call (profile directory names).
fn rand_ish() -> u128 {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    u128::from(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

fn driver_call(port: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
    let body = body.map(Value::to_string).unwrap_or_default();
    let reply = http(
        port,
        method,
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    serde_json::from_str(&reply.body)
        .unwrap_or_else(|err| panic!("WebDriver answer is not JSON ({err}): {}", reply.body))
}

/// One browser (a WebDriver session); closed on drop.
pub struct Session {
    port: u16,
    id: String,
}

/// The W3C key of a found element.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Session {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.id);
        let answer = driver_call(self.port, method, &path, body.as_ref());
        if answer["value"]["error"].is_string() {
            panic!("WebDriver {method} {path} failed: {answer}");
        }
        answer["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    fn element(&self, css: &str) -> String {
        let found = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element `{css}`: {found}"))
            .to_owned()
    }

    /// Types `text` into the field `css` (cleared first).
    pub fn fill(&self, css: &str, text: &str) {
        let element = self.element(css);
        self.call(
            "POST",
            &format!("/element/{element}/clear"),
            Some(json!({})),
        );
        self.call(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Clicks `css` (a submit button) and waits until the next page has replaced this one
    /// and finished loading.
    pub fn click(&self, css: &str) {
        let old_page = self.element("html");
        let element = self.element(css);
        self.call(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        );
        let path = format!("/session/{}/element/{old_page}/name", self.id);
        wait_until(within(30), "the next page", || {
            let answer = driver_call(self.port, "GET", &path, None);
            answer["value"]["error"].is_string()
        });
        wait_until(within(30), "the page to load", || {
            self.execute("return document.readyState;", json!([])) == json!("complete")
        });
    }

    /// The attribute `name` of `css`.
    pub fn attribute(&self, css: &str, name: &str) -> Option<String> {
        let element = self.element(css);
        self.call("GET", &format!("/element/{element}/attribute/{name}"), None)
            .as_str()
            .map(str::to_owned)
    }

    /// The visible text of the whole page.
    pub fn text(&self) -> String {
        let body = self.element("body");
        self.call("GET", &format!("/element/{body}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn title(&self) -> String {
        self.call("GET", "/title", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn url(&self) -> String {
        self.call("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs `script` (DevTools-injected, so it runs even where the page's own scripts may not).
    pub fn execute(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// Runs an async script (its last argument is the callback).
    pub fn execute_async(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/async",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// Saves a PNG of the window to `path`.
    pub fn screenshot(&self, path: &Path) {
        let data = self.call("GET", "/screenshot", None);
        let png =
            <base64ct::Base64 as base64ct::Encoding>::decode_vec(data.as_str().unwrap_or_default())
                .expect("screenshot is base64");
        if let Some(parent) = path.parent() {
            let _ = fs::create_dir_all(parent);
        }
        fs::write(path, png).expect("write screenshot");
    }

    pub fn set_timeouts(&self, script_ms: u64) {
        self.call(
            "POST",
            "/timeouts",
            Some(json!({"script": script_ms, "pageLoad": 60000})),
        );
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.id);
        let _ = std::panic::catch_unwind(|| driver_call(self.port, "DELETE", &path, None));
    }
}

/// Where screenshots go: `QAM_KEEP_LOGS` (with the other logs) when set, else
/// `target/qam-web-screenshots`.
pub fn screenshot_dir() -> PathBuf {
    std::env::var_os("QAM_KEEP_LOGS")
        .map(|dir| PathBuf::from(dir).join("qam-web-screenshots"))
        .unwrap_or_else(|| crate::workspace_root().join("target/qam-web-screenshots"))
}
