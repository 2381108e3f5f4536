//! qam-web in a real browser through a real nginx, set up as README says, with the accounts it
//! makes used over XMPP and PAM; also the attacks.
//!
//! The browser is headless Chromium with JavaScript off; qam-web is socket-activated as an
//! unprivileged user behind README's nginx block; XMPP is Prosody and PAM is pamtester. The
//! attacks: cross-site posts, dead and raced tokens, weak passwords; headers, cookies, logs,
//! axe-core.

use qam_client::wire::{LinkInfo, NameInfo};
use qam_client::{Password, Request};
use qam_tests::identity::Identity;
use qam_tests::web::{
    form, http, screenshot_dir, ChromeDriver, Nginx, QamWeb, Session, CHROMEDRIVER, CHROMIUM,
    NGINX, WEB_GRANTS, WEB_USER,
};
use qam_tests::xmpp::{plain_login, Login, Prosody, PRODUCTION_HASH};
use qam_tests::{bin, require_peer, wait_until, within, workspace_root, Daemon};
use serde_json::{json, Value};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Ports of this file's nginx, chromedriver and Prosody; its tests run one at a time.
const NGINX_PORT: u16 = 15380;
const DRIVER_PORT: u16 = 15381;
const PROSODY_PORT: u16 = 15323;
static SERIAL: Mutex<()> = Mutex::new(());

/// A password zxcvbn rates 4 of 4, and others.
const STRONG: &str = "copper kettle drifts over lantern moss";
const STRONG_TOO: &str = "silver otter naps beside the quarry";
const STRONG_THIRD: &str = "violet ferry hums under brittle snow";

const WEB_CONFIG: &str = "site_name = \"example.org\"\n\
    [[services]]\nname = \"XMPP\"\naddress = \"{user}@example.org\"\n\
    [[services]]\nname = \"Mail\"\naddress = \"{user}@example.org via IMAP and SMTP\"\n";

fn peers_present() -> bool {
    require_peer(NGINX, "nginx-light")
        && require_peer(CHROMIUM, "chromium")
        && require_peer(CHROMEDRIVER, "chromium-driver")
}

/// One test's servers, holding the file's lock; fields drop in order (browser first).
struct Stack {
    browser: Session,
    driver: ChromeDriver,
    nginx: Nginx,
    web: QamWeb,
    qamd: Daemon,
    _serial: MutexGuard<'static, ()>,
}

/// qamd (socket group `group`, `top` keys; README's grants for qam-web, strength 3) with
/// alice, qam-web in that group, nginx with README's block, and a browser without JavaScript.
fn stack_with(group: &str, top: &str, web_extra: &str) -> Option<Stack> {
    if !peers_present() {
        return None;
    }
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let qamd = Daemon::start_with(&format!(
        "socket_group = \"{group}\"\nmail_domain = \"example.org\"\n\
         web_url = \"http://127.0.0.1:{NGINX_PORT}\"\n{top}\
         [password]\nmin_strength = 3\n\
         [throttle]\nfree_failures = 100\n\
         [permissions.users]\n{WEB_USER} = {WEB_GRANTS}\nprosody = [\"verify\", \"exists\"]\n"
    ));
    qamd.add_user("alice", STRONG);
    let web = QamWeb::start(&qamd.socket, group, &format!("{web_extra}{WEB_CONFIG}"));
    let nginx = Nginx::start(NGINX_PORT, &web.socket);
    let driver = ChromeDriver::start(DRIVER_PORT);
    let browser = driver.session(false);
    Some(Stack {
        browser,
        driver,
        nginx,
        web,
        qamd,
        _serial: serial,
    })
}

fn default_stack() -> Option<Stack> {
    stack_with("nogroup", "", "")
}

/// The stack with Prosody serving `example.org` through mod_auth_qam. qamd's socket group is
/// Prosody's here: qam-web joins it as README has it join `qam`.
fn stack_with_prosody() -> Option<(Stack, Prosody)> {
    if !require_peer("/usr/bin/prosody", "prosody") {
        return None;
    }
    let stack = stack_with("prosody", "", "")?;
    let hosts = format!(
        "VirtualHost \"example.org\"\n  authentication = \"qam\"\n  qam_socket = \"{}\"\n",
        stack.qamd.socket.display()
    );
    let prosody = Prosody::start(PROSODY_PORT, &hosts);
    Some((stack, prosody))
}

/// `qamctl ARGS --json` against this qamd, parsed.
fn qamctl_json(qamd: &Daemon, args: &[&str]) -> Value {
    let out = Command::new(bin("qamctl"))
        .arg("--socket")
        .arg(&qamd.socket)
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success(), "qamctl {args:?}: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A fresh single-use invite's link, made with qamctl.
fn invite(qamd: &Daemon) -> String {
    let made = qamctl_json(qamd, &["invite", "create", "--note", "for a test"]);
    made["url"].as_str().unwrap().to_owned()
}

/// A reset link for `name`, made with qamctl.
fn reset_link(qamd: &Daemon, name: &str, expires: &str) -> String {
    let made = qamctl_json(qamd, &["user", "reset", name, "--expires", expires]);
    made["url"].as_str().unwrap().to_owned()
}

/// The path part of a link (`/join/<token>`).
fn path_of(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    after_scheme
        .find('/')
        .map_or("/", |slash| &after_scheme[slash..])
}

fn token_of(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

/// Fills and sends the join form at `url`.
fn join(browser: &Session, url: &str, user: &str, password: &str, password_again: &str) {
    browser.goto(url);
    browser.fill("#user", user);
    browser.fill("#new-password", password);
    browser.fill("#new-password-again", password_again);
    browser.click("button[type=submit]");
}

/// Fills and sends the change-password form.
fn change_password(
    browser: &Session,
    nginx: &Nginx,
    user: &str,
    current_password: &str,
    new_password: &str,
) {
    browser.goto(&nginx.url("/password"));
    browser.fill("#user", user);
    browser.fill("#current-password", current_password);
    browser.fill("#new-password", new_password);
    browser.fill("#new-password-again", new_password);
    browser.click("button[type=submit]");
}

/// Fills and sends the reset form at `url`.
fn reset(browser: &Session, url: &str, new_password: &str) {
    browser.goto(url);
    browser.fill("#new-password", new_password);
    browser.fill("#new-password-again", new_password);
    browser.click("button[type=submit]");
}

fn shot(browser: &Session, name: &str) {
    browser.screenshot(&screenshot_dir().join(format!("{name}.png")));
}

fn verifies(qamd: &Daemon, user: &str, password: &str) -> bool {
    qamd.client()
        .verify(user, &Password::from(password))
        .unwrap()
}

/// A PAM service using pam_qam.so with this qamd, removed on drop.
struct PamService {
    name: String,
    path: PathBuf,
}

impl PamService {
    fn new(qamd: &Daemon) -> PamService {
        let name = format!("qam-test-web-{}", std::process::id());
        let path = Path::new("/etc/pam.d").join(&name);
        let module = bin("libpam_qam.so");
        let args = format!("socket={}", qamd.socket.display());
        let text = format!(
            "auth required {m} {args}\naccount required {m} {args}\npassword required {m} {args}\n",
            m = module.display()
        );
        fs::write(&path, text).unwrap();
        PamService { name, path }
    }

    /// `pamtester SERVICE USER OPERATION` with `input` on stdin; true on success.
    fn pamtester(&self, user: &str, operation: &str, input: &str) -> bool {
        let mut child = Command::new("/usr/bin/pamtester")
            .args([&self.name, user, operation])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
        child.wait().unwrap().success()
    }
}

impl Drop for PamService {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

#[test]
fn invite_join_then_the_account_logs_in_over_xmpp_and_pam() {
    if !require_peer("/usr/bin/pamtester", "pamtester") {
        return;
    }
    let Some((stack, _prosody)) = stack_with_prosody() else {
        return;
    };
    let link = invite(&stack.qamd);
    assert!(link.starts_with(&format!("http://127.0.0.1:{NGINX_PORT}/join/")));
    assert!(token_of(&link).len() >= 22, "at least 128 bits: {link}");

    stack.browser.goto(&link);
    assert_eq!(
        stack.browser.attribute("#user", "autocomplete").as_deref(),
        Some("username")
    );
    assert_eq!(
        stack
            .browser
            .attribute("#new-password", "autocomplete")
            .as_deref(),
        Some("new-password")
    );
    shot(&stack.browser, "join");
    join(&stack.browser, &link, "Dave", STRONG_TOO, STRONG_TOO);
    let page = stack.browser.text();
    assert!(page.contains("Your account is ready"), "{page}");
    assert!(page.contains("XMPP: dave@example.org"), "{page}");
    assert!(
        page.contains("Mail: dave@example.org via IMAP and SMTP"),
        "{page}"
    );
    shot(&stack.browser, "joined");

    assert_eq!(
        plain_login(PROSODY_PORT, "example.org", "dave", STRONG_TOO).unwrap(),
        Login::Success
    );
    let pam = PamService::new(&stack.qamd);
    assert!(pam.pamtester("dave", "authenticate", &format!("{STRONG_TOO}\n")));
    assert!(!pam.pamtester("dave", "authenticate", "not dave's password\n"));

    // The invite was single-use: it is gone, and the page says so before any typing.
    stack.browser.goto(&link);
    assert!(stack.browser.text().contains("This link does not work"));
    let posted = http(
        NGINX_PORT,
        "POST",
        path_of(&link),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &form(&[
            ("user", "erin"),
            ("password", STRONG_THIRD),
            ("password_again", STRONG_THIRD),
        ]),
    );
    assert_eq!(posted.status, 404);
    assert!(!stack.qamd.client().exists("erin").unwrap());
    let invites = qamctl_json(&stack.qamd, &["invite", "list"]);
    assert_eq!(invites["invites"], json!([]));
}

#[test]
fn a_password_changed_in_the_browser_moves_the_xmpp_login() {
    let Some((stack, _prosody)) = stack_with_prosody() else {
        return;
    };
    stack.browser.goto(&stack.nginx.url("/password"));
    assert_eq!(
        stack
            .browser
            .attribute("#current-password", "autocomplete")
            .as_deref(),
        Some("current-password")
    );
    shot(&stack.browser, "password");

    // Unknown user and wrong password read the same, and change nothing.
    change_password(
        &stack.browser,
        &stack.nginx,
        "alice",
        "not her password",
        STRONG_TOO,
    );
    let wrong = stack.browser.text();
    change_password(
        &stack.browser,
        &stack.nginx,
        "nobody-here",
        "whatever it is",
        STRONG_TOO,
    );
    let unknown = stack.browser.text();
    assert!(wrong.contains("Wrong username or password."), "{wrong}");
    assert_eq!(wrong, unknown);
    shot(&stack.browser, "password-wrong");

    change_password(&stack.browser, &stack.nginx, "alice", STRONG, STRONG_TOO);
    assert!(stack.browser.text().contains("Your password is changed"));
    shot(&stack.browser, "password-changed");
    let failed = |outcome: Login| matches!(outcome, Login::Failure(_));
    assert!(failed(
        plain_login(PROSODY_PORT, "example.org", "alice", STRONG).unwrap()
    ));
    assert_eq!(
        plain_login(PROSODY_PORT, "example.org", "alice", STRONG_TOO).unwrap(),
        Login::Success
    );
}

#[test]
fn a_reset_link_works_once_and_an_expired_one_is_refused() {
    let Some(stack) = default_stack() else {
        return;
    };
    let link = reset_link(&stack.qamd, "alice", "24h");
    stack.browser.goto(&link);
    assert_eq!(
        stack.browser.attribute("#user", "value").as_deref(),
        Some("alice")
    );
    shot(&stack.browser, "reset");
    reset(&stack.browser, &link, STRONG_TOO);
    assert!(stack.browser.text().contains("Your new password is set"));
    assert!(verifies(&stack.qamd, "alice", STRONG_TOO));
    assert!(!verifies(&stack.qamd, "alice", STRONG));

    // Used: refused, and the password stays.
    stack.browser.goto(&link);
    assert!(stack.browser.text().contains("This link does not work"));
    shot(&stack.browser, "dead-link");
    let again = http(
        NGINX_PORT,
        "POST",
        path_of(&link),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &form(&[("password", STRONG_THIRD), ("password_again", STRONG_THIRD)]),
    );
    assert_eq!(again.status, 404);
    assert!(verifies(&stack.qamd, "alice", STRONG_TOO));

    // A newer link replaces an older one; a password change withdraws the newer one too.
    let older = reset_link(&stack.qamd, "alice", "24h");
    let newer = reset_link(&stack.qamd, "alice", "24h");
    stack.browser.goto(&older);
    assert!(stack.browser.text().contains("This link does not work"));
    let set = Request::SetPassword {
        user: "alice".into(),
        password: Password::from(STRONG),
    };
    stack
        .qamd
        .client()
        .call::<qam_client::wire::Done>(&set)
        .unwrap();
    stack.browser.goto(&newer);
    assert!(stack.browser.text().contains("This link does not work"));

    // Expired: refused once its second is over (waiting on the page's own answer).
    let short = reset_link(&stack.qamd, "alice", "1s");
    wait_until(within(10), "the reset link to expire", || {
        http(NGINX_PORT, "GET", path_of(&short), &[], b"").status == 404
    });
    let posted = http(
        NGINX_PORT,
        "POST",
        path_of(&short),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &form(&[("password", STRONG_THIRD), ("password_again", STRONG_THIRD)]),
    );
    assert_eq!(posted.status, 404);
    assert!(verifies(&stack.qamd, "alice", STRONG));
}

#[test]
fn a_weak_password_is_refused_with_advice_on_every_door() {
    if !require_peer("/usr/bin/pamtester", "pamtester") {
        return;
    }
    let Some(stack) = default_stack() else {
        return;
    };
    let link = invite(&stack.qamd);
    join(&stack.browser, &link, "frank", "password1", "password1");
    let page = stack.browser.text();
    assert!(page.contains("too easy to guess"), "{page}");
    assert!(
        page.contains("common password") || page.contains("Add another word"),
        "advice: {page}"
    );
    shot(&stack.browser, "join-weak-password");
    assert!(!stack.qamd.client().exists("frank").unwrap());
    // The name and the site count as guessable.
    for guessable in ["frank-zz9", "example.org-zz9"] {
        join(&stack.browser, &link, "frank", guessable, guessable);
        assert!(
            stack.browser.text().contains("too easy to guess"),
            "{guessable}"
        );
    }
    // Two different new passwords.
    join(&stack.browser, &link, "frank", STRONG_TOO, STRONG_THIRD);
    assert!(stack.browser.text().contains("not the same"));
    // The invite kept its use through all of that.
    join(&stack.browser, &link, "frank", STRONG_TOO, STRONG_TOO);
    assert!(stack.browser.text().contains("Your account is ready"));

    change_password(&stack.browser, &stack.nginx, "alice", STRONG, "alice2024");
    assert!(stack.browser.text().contains("too easy to guess"));
    assert!(verifies(&stack.qamd, "alice", STRONG));

    // The other doors: qamctl, PAM passwd.
    let weak_set = Request::SetPassword {
        user: "alice".into(),
        password: Password::from("qwerty123"),
    };
    let refused = stack
        .qamd
        .client()
        .call::<qam_client::wire::Done>(&weak_set)
        .unwrap_err();
    assert_eq!(refused.code(), Some(qam_client::ErrorCode::WeakPassword));
    let pam = PamService::new(&stack.qamd);
    assert!(!pam.pamtester(
        "alice",
        "chauthtok",
        &format!("{STRONG}\nqwerty123\nqwerty123\n")
    ));
    assert!(verifies(&stack.qamd, "alice", STRONG));
}

#[test]
fn taken_and_reserved_names_are_refused_and_keep_the_invite() {
    let Some(stack) = default_stack() else {
        return;
    };
    let link = invite(&stack.qamd);
    join(&stack.browser, &link, "alice", STRONG_TOO, STRONG_TOO);
    let page = stack.browser.text();
    assert!(page.contains("That username is taken"), "{page}");
    shot(&stack.browser, "join-taken");
    assert!(verifies(&stack.qamd, "alice", STRONG));
    join(&stack.browser, &link, "postmaster", STRONG_TOO, STRONG_TOO);
    assert!(stack.browser.text().contains("reserved"));
    join(&stack.browser, &link, "no spaces", STRONG_TOO, STRONG_TOO);
    assert!(stack.browser.text().contains("username must be"));
    join(&stack.browser, &link, "grace", STRONG_TOO, STRONG_TOO);
    assert!(stack.browser.text().contains("Your account is ready"));
}

#[test]
fn registration_closed_asks_for_an_invite_and_open_registration_has_a_host_budget() {
    let Some(stack) = default_stack() else {
        return;
    };
    stack.browser.goto(&stack.nginx.url("/join"));
    assert!(stack
        .browser
        .text()
        .contains("Ask an admin of this host for one"));
    shot(&stack.browser, "join-closed");
    let posted = http(
        NGINX_PORT,
        "POST",
        "/join",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &form(&[
            ("user", "mallory"),
            ("password", STRONG_TOO),
            ("password_again", STRONG_TOO),
        ]),
    );
    assert_eq!(posted.status, 403);
    assert!(!stack.qamd.client().exists("mallory").unwrap());
    drop(stack);

    let Some(stack) = stack_with(
        "nogroup",
        "registration_open = true\n",
        "open_registrations_per_hour = 1\n",
    ) else {
        return;
    };
    stack.browser.goto(&stack.nginx.url("/join"));
    shot(&stack.browser, "join-open");
    join(
        &stack.browser,
        &stack.nginx.url("/join"),
        "heidi",
        STRONG_TOO,
        STRONG_TOO,
    );
    assert!(stack.browser.text().contains("Your account is ready"));
    join(
        &stack.browser,
        &stack.nginx.url("/join"),
        "ivan",
        STRONG_THIRD,
        STRONG_THIRD,
    );
    let page = stack.browser.text();
    assert!(page.contains("Many accounts were made here"), "{page}");
    assert!(!stack.qamd.client().exists("ivan").unwrap());
}

#[test]
fn cross_site_posts_are_refused() {
    let Some(stack) = default_stack() else {
        return;
    };
    // A real cross-site form: another origin's page posting to the change form, clicked.
    let target = stack.nginx.url("/password");
    let evil = format!(
        "data:text/html,<form method=post action='{target}'>\
         <input name=user value=alice><input name=current_password value='{STRONG}'>\
         <input name=password value='{STRONG_TOO}'><input name=password_again value='{STRONG_TOO}'>\
         <button id=go>go</button></form>"
    );
    stack.browser.goto(&evil);
    stack.browser.click("#go");
    let page = stack.browser.text();
    assert!(
        page.contains("can only be sent from its own pages"),
        "{page}"
    );
    assert!(verifies(&stack.qamd, "alice", STRONG));

    let body = form(&[
        ("user", "alice"),
        ("current_password", STRONG),
        ("password", STRONG_TOO),
        ("password_again", STRONG_TOO),
    ]);
    let kind = ("Content-Type", "application/x-www-form-urlencoded");
    for headers in [
        vec![kind, ("Sec-Fetch-Site", "cross-site")],
        vec![kind, ("Sec-Fetch-Site", "same-site")],
        vec![kind, ("Origin", "http://evil.example")],
        vec![kind, ("Origin", "null")],
    ] {
        let reply = http(NGINX_PORT, "POST", "/password", &headers, &body);
        assert_eq!(reply.status, 403, "{headers:?}");
    }
    assert!(verifies(&stack.qamd, "alice", STRONG));
    // The page's own form is same-origin and works.
    change_password(&stack.browser, &stack.nginx, "alice", STRONG, STRONG_TOO);
    assert!(stack.browser.text().contains("Your password is changed"));
}

#[test]
fn every_page_sends_the_security_headers_and_never_a_cookie() {
    let Some(stack) = default_stack() else {
        return;
    };
    let link = invite(&stack.qamd);
    let reset_url = reset_link(&stack.qamd, "alice", "24h");
    let kind = ("Content-Type", "application/x-www-form-urlencoded");
    let same = ("Sec-Fetch-Site", "same-origin");
    let wrong_form = form(&[("user", "alice"), ("current_password", "nope nope nope")]);
    let big = vec![b'a'; 64 * 1024];
    let answers = [
        http(NGINX_PORT, "GET", "/", &[], b""),
        http(NGINX_PORT, "GET", "/join", &[], b""),
        http(NGINX_PORT, "GET", path_of(&link), &[], b""),
        http(NGINX_PORT, "GET", "/password", &[], b""),
        http(NGINX_PORT, "GET", path_of(&reset_url), &[], b""),
        http(NGINX_PORT, "GET", "/reset/not-a-token", &[], b""),
        http(NGINX_PORT, "GET", "/nothing-here", &[], b""),
        http(NGINX_PORT, "POST", "/password", &[kind, same], &wrong_form),
        http(
            NGINX_PORT,
            "POST",
            path_of(&link),
            &[kind, same],
            b"user=%zz",
        ),
        http(
            NGINX_PORT,
            "POST",
            "/password",
            &[kind, ("Sec-Fetch-Site", "cross-site")],
            b"",
        ),
    ];
    for reply in &answers {
        assert_eq!(reply.header("set-cookie"), None, "{reply:?}");
        assert_eq!(reply.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(reply.header("x-frame-options"), Some("DENY"));
        let csp = reply.header("content-security-policy").unwrap_or_default();
        for part in [
            "default-src 'none'",
            "frame-ancestors 'none'",
            "form-action 'self'",
        ] {
            assert!(csp.contains(part), "{csp}");
        }
        assert!(
            !csp.contains("script-src"),
            "no script allowed at all: {csp}"
        );
        assert_eq!(reply.header("cache-control"), Some("no-store"), "{reply:?}");
        assert!(!reply.body.contains("<script"), "{}", reply.body);
    }
    assert_eq!(answers[5].status, 404);
    assert_eq!(answers[8].status, 400);
    // Bounded bodies: nginx's 16k, then qam-web's own limit behind it.
    let too_big = http(NGINX_PORT, "POST", "/password", &[kind, same], &big);
    assert_eq!(too_big.status, 413);
    let style = http(NGINX_PORT, "GET", "/style.css", &[], b"");
    assert!(style
        .header("content-type")
        .unwrap_or_default()
        .starts_with("text/css"));
    // A browser session leaves no cookie either.
    join(&stack.browser, &link, "judy", STRONG_TOO, STRONG_TOO);
    let cookies = stack.browser.execute("return document.cookie;", json!([]));
    assert_eq!(cookies, json!(""));
}

#[test]
fn the_browser_runs_no_javascript_and_pages_work_without_it() {
    let Some(stack) = default_stack() else {
        return;
    };
    stack
        .browser
        .goto("data:text/html,<title>before</title><script>document.title='script ran'</script>");
    assert_eq!(stack.browser.title(), "before");
    let link = invite(&stack.qamd);
    join(&stack.browser, &link, "kim", STRONG_TOO, STRONG_TOO);
    assert!(stack.browser.text().contains("Your account is ready"));
    assert!(stack.browser.url().ends_with(path_of(&link)));
}

/// axe-core's `axe.min.js` (npm package axe-core; scripts/test-all installs it).
fn axe_source() -> Option<String> {
    let path = std::env::var_os("QAM_AXE_CORE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/axe/node_modules/axe-core/axe.min.js"));
    match fs::read_to_string(&path) {
        Ok(source) => Some(source),
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!(
                "{} is missing under CI=true (npm install axe-core)",
                path.display()
            )
        }
        Err(_) => {
            eprintln!("SKIP: {} missing (npm install axe-core)", path.display());
            None
        }
    }
}

/// axe-core's violations on the page `browser` shows (a JavaScript-enabled session).
fn axe_violations(browser: &Session, axe: &str) -> Vec<Value> {
    browser.execute(&format!("{axe}\n;return typeof axe;"), json!([]));
    let found = browser.execute_async(
        "const done = arguments[arguments.length - 1];\
         axe.run(document, {resultTypes: ['violations']})\
           .then(r => done(JSON.stringify(r.violations)))\
           .catch(e => done(JSON.stringify([{id: 'axe-error', help: String(e)}])));",
        json!([]),
    );
    serde_json::from_str(found.as_str().unwrap_or("[]")).unwrap()
}

#[test]
fn axe_core_finds_no_violation_on_any_page() {
    let Some(axe) = axe_source() else {
        return;
    };
    let Some(stack) = stack_with("nogroup", "registration_open = true\n", "") else {
        return;
    };
    // The same pages in a second browser that runs scripts, so axe can run in them.
    let checker = stack.driver.session(true);
    checker.set_timeouts(30_000);
    let link = invite(&stack.qamd);
    let reset_url = reset_link(&stack.qamd, "alice", "24h");
    let mut results = Vec::new();
    let mut check = |name: &str| {
        let violations = axe_violations(&checker, &axe);
        results.push((name.to_owned(), violations));
    };
    checker.goto(&stack.nginx.url("/join"));
    check("join (open)");
    checker.goto(&link);
    check("join (invite)");
    join(&checker, &link, "alice", "password1", "password1");
    check("join (message)");
    checker.goto(&stack.nginx.url("/password"));
    check("password");
    change_password(
        &checker,
        &stack.nginx,
        "alice",
        "wrong password here",
        STRONG_TOO,
    );
    check("password (message)");
    checker.goto(&reset_url);
    check("reset");
    join(&checker, &link, "leo", STRONG_TOO, STRONG_TOO);
    check("joined");
    checker.goto(&link);
    check("dead link");
    checker.goto(&stack.nginx.url("/nothing-here"));
    check("not found");
    drop(checker);
    let summary: Vec<String> = results
        .iter()
        .map(|(page, violations)| format!("{page}: {}", violations.len()))
        .collect();
    eprintln!("axe-core violations per page: {}", summary.join(", "));
    for (page, violations) in &results {
        assert!(violations.is_empty(), "{page}: {violations:#?}");
    }
    // And the closed page, on a qamd with registration closed.
    drop(stack);
    let Some(stack) = default_stack() else {
        return;
    };
    let checker = stack.driver.session(true);
    checker.set_timeouts(30_000);
    checker.goto(&stack.nginx.url("/join"));
    let closed = axe_violations(&checker, &axe);
    assert!(closed.is_empty(), "join (closed): {closed:#?}");
}

#[test]
fn logs_hold_no_password_token_or_ip() {
    let Some(stack) = default_stack() else {
        return;
    };
    let link = invite(&stack.qamd);
    join(&stack.browser, &link, "nina", STRONG_TOO, STRONG_TOO);
    change_password(
        &stack.browser,
        &stack.nginx,
        "nina",
        STRONG_TOO,
        STRONG_THIRD,
    );
    let reset_url = reset_link(&stack.qamd, "nina", "24h");
    reset(&stack.browser, &reset_url, STRONG_TOO);
    http(NGINX_PORT, "GET", "/reset/guessed-token-0000", &[], b"");
    let web_log = stack.web.log_text();
    let nginx_log = stack.nginx.log_text();
    assert!(web_log.contains("route=\"/join/{token}\""), "{web_log}");
    for (name, log) in [("qam-web", &web_log), ("nginx", &nginx_log)] {
        for secret in [
            STRONG_TOO,
            STRONG_THIRD,
            token_of(&link),
            token_of(&reset_url),
            "guessed-token",
        ] {
            assert!(!log.contains(secret), "{name} log holds a secret:\n{log}");
        }
        for identifying in ["127.0.0.1", "Mozilla", "Chrome/", "HeadlessChrome"] {
            assert!(
                !log.contains(identifying),
                "{name} log holds `{identifying}`:\n{log}"
            );
        }
    }
    let qamd_log = stack.qamd.log_text();
    assert!(!qamd_log.contains(token_of(&link)) && !qamd_log.contains(token_of(&reset_url)));
}

#[test]
fn two_requests_racing_for_the_last_use_of_an_invite_make_one_account() {
    // No browser: the race is at the protocol, from qam-web's side of the socket.
    let qamd = Daemon::start_with("[password]\nmin_strength = 3\n");
    for round in 0..10 {
        let made: LinkInfo = qamd
            .client()
            .call(&Request::InviteCreate {
                expires_seconds: None,
                uses: Some(1),
                note: None,
            })
            .unwrap();
        let outcomes: Vec<_> = std::thread::scope(|scope| {
            let racers: Vec<_> = ["left", "right"]
                .iter()
                .map(|side| {
                    let token = made.token.clone();
                    let qamd = &qamd;
                    scope.spawn(move || {
                        qamd.client().call::<NameInfo>(&Request::RegisterInvite {
                            token,
                            user: format!("{side}{round}"),
                            password: Password::from(STRONG),
                        })
                    })
                })
                .collect();
            racers
                .into_iter()
                .map(|racer| racer.join().unwrap())
                .collect()
        });
        let made_accounts = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
        assert_eq!(made_accounts, 1, "round {round}: {outcomes:?}");
        let loser = outcomes
            .iter()
            .find_map(|outcome| outcome.as_ref().err())
            .unwrap();
        assert_eq!(loser.code(), Some(qam_client::ErrorCode::InvalidToken));
    }
}

#[test]
fn guessed_tokens_tell_nothing_and_links_need_an_admin() {
    let qamd = Daemon::start_with("socket_group = \"nogroup\"\n[password]\nmin_strength = 3\n");
    qamd.add_user("alice", STRONG);
    let made: LinkInfo = qamd
        .client()
        .call(&Request::ResetCreate {
            user: "alice".into(),
            expires_seconds: None,
        })
        .unwrap();
    let mut messages = std::collections::BTreeSet::new();
    // Unknown, wrong length, an invite token used as a reset token, a near miss.
    let mut near = made.token.expose().to_owned();
    near.replace_range(0..1, if near.starts_with('A') { "B" } else { "A" });
    let invite: LinkInfo = qamd
        .client()
        .call(&Request::InviteCreate {
            expires_seconds: None,
            uses: None,
            note: None,
        })
        .unwrap();
    for guess in [
        "",
        "x",
        "AAAAAAAAAAAAAAAAAAAAAAAA",
        near.as_str(),
        invite.token.expose(),
    ] {
        let refused = qamd
            .client()
            .call::<NameInfo>(&Request::ResetInfo {
                token: Password::from(guess),
            })
            .unwrap_err();
        assert_eq!(refused.code(), Some(qam_client::ErrorCode::InvalidToken));
        messages.insert(refused.to_string());
    }
    assert_eq!(messages.len(), 1, "{messages:?}");
    // The store holds only the token's hash: its bytes are nowhere in the data dir.
    qamd.client()
        .call::<qam_client::wire::Done>(&Request::Status)
        .ok();
    let mut found = false;
    for entry in walk(&qamd.data_dir) {
        let bytes = fs::read(&entry).unwrap_or_default();
        found |= bytes
            .windows(made.token.expose().len())
            .any(|window| window == made.token.expose().as_bytes());
    }
    assert!(!found, "a token is stored in clear");
    // A peer without the admin grant cannot make links.
    let as_nobody = Identity::new("nobody", "nogroup")
        .command(bin("qamctl"))
        .arg("--socket")
        .arg(&qamd.socket)
        .args(["invite", "create"])
        .output()
        .unwrap();
    assert!(!as_nobody.status.success());
    let said = String::from_utf8_lossy(&as_nobody.stderr);
    assert!(said.contains("forbidden"), "{said}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn the_units_verify_and_expose_at_most_1_5() {
    if !require_peer("/usr/bin/systemd-analyze", "systemd") {
        return;
    }
    let dir = qam_tests::shared_tempdir();
    let mut copies = Vec::new();
    for name in ["qam-web.service", "qam-web.socket"] {
        let text = fs::read_to_string(workspace_root().join("systemd").join(name)).unwrap();
        let copy = dir.path().join(name);
        fs::write(
            &copy,
            text.replace("/usr/sbin/qam-web", bin("qam-web").to_str().unwrap()),
        )
        .unwrap();
        copies.push(copy);
    }
    let out = Command::new("/usr/bin/systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&copies)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let meaningful: Vec<&str> = stderr
        .lines()
        .filter(|line| !line.contains("qamd.socket") && !line.trim().is_empty())
        .collect();
    assert!(out.status.success() || meaningful.is_empty(), "{stderr}");
    let out = Command::new("/usr/bin/systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(workspace_root().join("systemd/qam-web.service"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = text
        .lines()
        .find(|line| line.contains("Overall exposure level"))
        .and_then(|line| line.split(": ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no exposure in:\n{text}"));
    eprintln!("qam-web.service exposure {exposure}");
    assert!(exposure <= 1.5, "{text}");
}

/// Median and 99th percentile.
fn spread(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    let at = |fraction: f64| times[((times.len() - 1) as f64 * fraction).round() as usize];
    (at(0.5), at(0.99))
}

/// What the page adds on top of qamd's own operation: a join and a password change through
/// nginx and qam-web (HTTP, as a browser sends them) against the bare qamd call, alternating in
/// the same run, with production argon2 parameters (or tiny ones with QAM_BENCH_CHEAP_HASH=1).
/// Run: `cargo test -p qam-tests --test web -- --ignored --nocapture`
#[test]
#[ignore = "benchmark: prints medians and p99"]
fn bench_page_overhead() {
    let Some(stack) = stack_with("nogroup", "", "") else {
        return;
    };
    drop(stack);
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // QAM_BENCH_CHEAP_HASH=1: tiny argon2 costs, so the page's own share stands out.
    let hash = if std::env::var_os("QAM_BENCH_CHEAP_HASH").is_some() {
        qam_tests::CHEAP_HASH
    } else {
        PRODUCTION_HASH
    };
    let qamd = Daemon::start_with(&format!(
        "socket_group = \"nogroup\"\nmail_domain = \"example.org\"\n{hash}\
         [password]\nmin_strength = 3\n[throttle]\nfree_failures = 100000\n\
         [permissions.users]\n{WEB_USER} = {WEB_GRANTS}\n"
    ));
    let web = QamWeb::start(&qamd.socket, "nogroup", WEB_CONFIG);
    let nginx = Nginx::start(NGINX_PORT, &web.socket);
    let runs: usize = std::env::var("QAM_BENCH_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(101);
    let kind = ("Content-Type", "application/x-www-form-urlencoded");
    let same = ("Sec-Fetch-Site", "same-origin");
    let new_invite = || -> LinkInfo {
        qamd.client()
            .call(&Request::InviteCreate {
                expires_seconds: None,
                uses: None,
                note: None,
            })
            .unwrap()
    };
    let (mut page_join, mut bare_join, mut page_change, mut bare_change) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let passwords = [STRONG, STRONG_TOO];
    for run in 0..runs {
        let link = new_invite();
        let path = format!("/join/{}", link.token.expose());
        let body = form(&[
            ("user", &format!("p{run}")),
            ("password", STRONG),
            ("password_again", STRONG),
        ]);
        let start = Instant::now();
        let reply = http(NGINX_PORT, "POST", &path, &[kind, same], &body);
        page_join.push(start.elapsed());
        assert_eq!(reply.status, 201, "{}", reply.body);

        let link = new_invite();
        let mut client = qamd.client();
        let start = Instant::now();
        client
            .call::<NameInfo>(&Request::RegisterInvite {
                token: link.token.clone(),
                user: format!("b{run}"),
                password: Password::from(STRONG),
            })
            .unwrap();
        bare_join.push(start.elapsed());

        let (old, new) = (passwords[run % 2], passwords[(run + 1) % 2]);
        let body = form(&[
            ("user", "p0"),
            ("current_password", old),
            ("password", new),
            ("password_again", new),
        ]);
        let start = Instant::now();
        let reply = http(NGINX_PORT, "POST", "/password", &[kind, same], &body);
        page_change.push(start.elapsed());
        assert_eq!(reply.status, 200, "{}", reply.body);

        let mut client = qamd.client();
        let start = Instant::now();
        client
            .call::<qam_client::wire::Done>(&Request::ChangePassword {
                user: "b0".into(),
                old_password: Password::from(old),
                new_password: Password::from(new),
            })
            .unwrap();
        bare_change.push(start.elapsed());
    }
    let report = |what: &str, page: Vec<Duration>, bare: Vec<Duration>| {
        let (page_median, page_p99) = spread(page);
        let (bare_median, bare_p99) = spread(bare);
        println!(
            "{what}, {runs} runs: page (nginx + qam-web + qamd) median {page_median:?} p99 {page_p99:?}; \
             bare qamd median {bare_median:?} p99 {bare_p99:?}; the page adds {:?} at the median",
            page_median.saturating_sub(bare_median)
        );
    };
    report("join with an invite", page_join, bare_join);
    report("password change", page_change, bare_change);
    drop(nginx);
    drop(web);
    drop(qamd);
    drop(serial);
}
