//! The one way the tests run a process as another unix identity: util-linux's `setpriv` with
//! a uid, a gid and exactly the supplementary groups asked for (none unless said).

use std::ffi::OsStr;
use std::process::Command;

/// Where Debian's util-linux installs setpriv.
pub const SETPRIV: &str = "/usr/bin/setpriv";

/// The supplementary groups a process run as an `Identity` holds.
#[derive(Debug, Clone)]
enum Groups {
    /// None (`--clear-groups`).
    Cleared,
    /// The user's own, from the group database (`--init-groups`).
    OfUser,
    /// Exactly these, comma-separated names or numbers (`--groups=`).
    These(String),
}

/// A uid, a gid and supplementary groups for a child process.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The real and effective user, a name or a number.
    user: String,
    /// The real and effective group, a name or a number.
    group: String,
    /// Which supplementary groups it holds.
    groups: Groups,
}

impl Identity {
    /// `user` and `group` (names or numbers), without supplementary groups.
    pub fn new(user: impl ToString, group: impl ToString) -> Identity {
        Identity {
            user: user.to_string(),
            group: group.to_string(),
            groups: Groups::Cleared,
        }
    }

    /// nobody:nogroup (65534:65534) without supplementary groups: an unprivileged local user.
    pub fn nobody() -> Identity {
        Identity::new(65534, 65534)
    }

    /// `user` with its primary group and its supplementary groups from the databases: what
    /// systemd's `User=` and a login give a process.
    pub fn service_user(user: &str) -> Identity {
        let primary = nix::unistd::User::from_name(user)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("user {user} does not exist"))
            .gid;
        Identity::new(user, primary).with_user_groups()
    }

    /// The same uid and gid, holding the user's supplementary groups from the group database.
    pub fn with_user_groups(mut self) -> Identity {
        self.groups = Groups::OfUser;
        self
    }

    /// The same uid and gid, holding exactly `groups` (comma-separated names or numbers).
    pub fn with_groups(mut self, groups: &str) -> Identity {
        self.groups = Groups::These(groups.to_owned());
        self
    }

    /// setpriv and its options, for a launcher that takes a command line (the program to run
    /// as this identity follows, after any further setpriv options).
    pub fn argv(&self) -> Vec<String> {
        let groups = match &self.groups {
            Groups::Cleared => "--clear-groups".to_owned(),
            Groups::OfUser => "--init-groups".to_owned(),
            Groups::These(list) => format!("--groups={list}"),
        };
        vec![
            SETPRIV.to_owned(),
            format!("--reuid={}", self.user),
            format!("--regid={}", self.group),
            groups,
        ]
    }

    /// The same setpriv command line as one string, for a shell script (in a container, say)
    /// to put before the command it runs as this identity.
    pub fn shell_prefix(&self) -> String {
        self.argv().join(" ")
    }

    /// `program` run as this identity; its arguments follow as usual.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let argv = self.argv();
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]).arg(program);
        command
    }
}
