//! Authorization matrix: every operation × {root, admin-group member,
//! service user with grants, service user without, unrelated uid}, with real unix users.

use qam_tests::identity::Identity;
use qam_tests::reliability::{code_of, figure, raw_as, raw_lines, UnixAccounts};
use qam_tests::Daemon;
use std::collections::BTreeSet;

/// Live invite and reset tokens for one peer's requests (made by root beforehand).
#[derive(Default)]
struct Links {
    /// An invite with two uses: `register_invite` takes one, `invite_info` sees the other.
    invite: String,
    /// The id of another invite, for `invite_revoke`.
    revocable: String,
    /// A reset link of the peer's doomed user (the target's own is withdrawn by its
    /// `change_password` before `reset_info` runs).
    reset: String,
}

impl Links {
    fn make(daemon: &Daemon, who: &str) -> Links {
        let invite = |uses| -> qam_client::wire::LinkInfo {
            daemon
                .client()
                .call(&qam_client::Request::InviteCreate {
                    expires_seconds: None,
                    uses: Some(uses),
                    note: None,
                })
                .unwrap()
        };
        let reset: qam_client::wire::LinkInfo = daemon
            .client()
            .call(&qam_client::Request::ResetCreate {
                user: format!("doomed-{who}"),
                expires_seconds: None,
            })
            .unwrap();
        Links {
            invite: invite(2).token.expose().to_owned(),
            revocable: invite(1).invite.unwrap_or_default(),
            reset: reset.token.expose().to_owned(),
        }
    }
}

/// Every operation, in protocol.md's order, with arguments valid for `who`'s target user.
fn requests(who: &str, links: &Links) -> Vec<(&'static str, String)> {
    let target = format!("target-{who}");
    let Links {
        invite,
        revocable,
        reset,
    } = links;
    vec![
        ("hello", r#"{"op":"hello"}"#.into()),
        (
            "verify",
            format!(r#"{{"op":"verify","user":"{target}","password":"target-password"}}"#),
        ),
        ("exists", format!(r#"{{"op":"exists","user":"{target}"}}"#)),
        ("lookup", format!(r#"{{"op":"lookup","user":"{target}"}}"#)),
        (
            "register",
            format!(r#"{{"op":"register","user":"new-{who}","password":"new-password"}}"#),
        ),
        (
            "change_password",
            format!(
                r#"{{"op":"change_password","user":"{target}","old_password":"target-password","new_password":"changed-password"}}"#
            ),
        ),
        (
            "register_invite",
            format!(
                r#"{{"op":"register_invite","token":"{invite}","user":"invited-{who}","password":"invited-password"}}"#
            ),
        ),
        (
            "invite_info",
            format!(r#"{{"op":"invite_info","token":"{invite}"}}"#),
        ),
        (
            "reset_info",
            format!(r#"{{"op":"reset_info","token":"{reset}"}}"#),
        ),
        (
            "reset_password",
            format!(r#"{{"op":"reset_password","token":"{reset}","password":"reset-password"}}"#),
        ),
        ("invite_create", r#"{"op":"invite_create"}"#.into()),
        ("invite_list", r#"{"op":"invite_list"}"#.into()),
        (
            "invite_revoke",
            format!(r#"{{"op":"invite_revoke","invite":"{revocable}"}}"#),
        ),
        (
            "reset_create",
            format!(r#"{{"op":"reset_create","user":"{target}"}}"#),
        ),
        (
            "set_password",
            format!(r#"{{"op":"set_password","user":"{target}","password":"set-password"}}"#),
        ),
        (
            "delete",
            format!(r#"{{"op":"delete","user":"doomed-{who}"}}"#),
        ),
        // With a hook installed the deletion waits: its steps are the hook runner's to report.
        (
            "deletion_step",
            format!(
                r#"{{"op":"deletion_step","user":"doomed-{who}","hook":"delete.d/50-x","ok":true}}"#
            ),
        ),
        (
            "deletion_finish",
            format!(r#"{{"op":"deletion_finish","user":"doomed-{who}"}}"#),
        ),
        ("events", r#"{"op":"events"}"#.into()),
        ("debug", r#"{"op":"debug","seconds":0}"#.into()),
        ("lock", format!(r#"{{"op":"lock","user":"{target}"}}"#)),
        ("unlock", format!(r#"{{"op":"unlock","user":"{target}"}}"#)),
        ("list", r#"{"op":"list","limit":2}"#.into()),
        ("status", r#"{"op":"status"}"#.into()),
        ("export", r#"{"op":"export","limit":2}"#.into()),
        (
            "import",
            r#"{"op":"import","records":[],"dry_run":true}"#.into(),
        ),
    ]
}

#[test]
fn every_operation_for_every_kind_of_peer_is_allowed_or_forbidden_as_configured() {
    let tag = std::process::id() % 100_000;
    let (sock, admin, svc_group) = (
        format!("qamt-sock{tag}"),
        format!("qamt-adm{tag}"),
        format!("qamt-svcg{tag}"),
    );
    let (admin_user, granted, plain) = (
        format!("qamt-a{tag}"),
        format!("qamt-g{tag}"),
        format!("qamt-p{tag}"),
    );
    let mut accounts = UnixAccounts::default();
    for group in [&sock, &admin, &svc_group] {
        accounts.group(group);
    }
    accounts.user(&admin_user, &[&sock, &admin]);
    accounts.user(&granted, &[&sock, &svc_group]);
    accounts.user(&plain, &[&sock]);

    let user_grant = ["register", "lock", "unlock"];
    let group_grant = ["list", "status"];
    let hooks = qam_tests::shared_tempdir();
    std::fs::create_dir(hooks.path().join("delete.d")).unwrap();
    std::fs::write(hooks.path().join("delete.d/50-x"), "").unwrap();
    let daemon = Daemon::start_with(&format!(
        "socket_group = \"{sock}\"\nadmin_group = \"{admin}\"\nregistration_open = true\n\
         [hooks]\ndir = \"{hooks}\"\n\
         [permissions]\ndefault = [\"verify\", \"exists\", \"lookup\", \"change_password\"]\n\
         [permissions.users]\n\"{granted}\" = {user_grant:?}\n\
         [permissions.groups]\n\"{svc_group}\" = {group_grant:?}\n",
        hooks = hooks.path().display()
    ));
    let default: BTreeSet<&str> = ["hello", "verify", "exists", "lookup", "change_password"].into();
    let everything: BTreeSet<&str> = requests("x", &Links::default())
        .iter()
        .map(|(op, _)| *op)
        .collect();
    let known: BTreeSet<&str> = qam_client::wire::Op::ALL.map(|op| op.as_str()).into();
    assert_eq!(everything, known, "requests() has one line per operation");
    let with_grants: BTreeSet<&str> = default
        .iter()
        .chain(&user_grant)
        .chain(&group_grant)
        .copied()
        .collect();
    let unrelated_uid = format!("{}", 60_000 + tag % 5_000);
    let sock_gid = qam_tests::reliability::socket_gid(&daemon.socket);
    let peers: Vec<(&str, Option<Identity>, &BTreeSet<&str>)> = vec![
        ("root", None, &everything),
        (
            "admin",
            Some(Identity::new(&admin_user, &admin_user).with_user_groups()),
            &everything,
        ),
        (
            "granted",
            Some(Identity::new(&granted, &granted).with_user_groups()),
            &with_grants,
        ),
        (
            "plain",
            Some(Identity::new(&plain, &plain).with_user_groups()),
            &default,
        ),
        (
            "unrelated",
            Some(Identity::new(&unrelated_uid, &sock_gid)),
            &default,
        ),
    ];
    let (mut checked, mut wrong) = (0, Vec::new());
    for (who, identity, allowed) in &peers {
        for name in [format!("target-{who}"), format!("doomed-{who}")] {
            daemon.add_user(&name, "target-password");
        }
        let requests = requests(who, &Links::make(&daemon, who));
        let lines: Vec<&str> = requests.iter().map(|(_, line)| line.as_str()).collect();
        let answers = match identity {
            None => {
                let bytes: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
                raw_lines(&daemon.socket, &bytes)
            }
            Some(identity) => raw_as(identity, &daemon.socket, &lines),
        };
        for ((op, _), answer) in requests.iter().zip(&answers) {
            checked += 1;
            let code = code_of(answer);
            let expected_allowed = allowed.contains(op);
            if expected_allowed == (code == "forbidden") {
                wrong.push(format!("{who} {op}: {answer}"));
            }
            if expected_allowed && code != "ok" {
                wrong.push(format!("{who} {op}: allowed but failed: {answer}"));
            }
        }
    }
    // A uid outside the socket's group cannot even connect (the socket is 0660).
    let outsider = Identity::new(&unrelated_uid, &unrelated_uid)
        .command("socat")
        .arg("-")
        .arg(format!("UNIX-CONNECT:{}", daemon.socket.display()))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        !outsider.status.success(),
        "a peer outside the socket group connected"
    );
    figure(
        "5 authorization",
        format!("{checked} op × peer cells (5 peers × 14 ops), {} wrong; outsider uid refused at connect", wrong.len()),
    );
    assert!(wrong.is_empty(), "{wrong:#?}");
}
