//! Authorization by peer credentials: SO_PEERCRED's uid/gid → unix user and groups → the
//! operations this connection may call, as the config grants them.

use crate::config::PermissionsConfig;
use nix::unistd::{getgrouplist, Gid, Group, Uid, User};
use qam_client::wire::{Grant, Op};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;

/// Who is on the other end of a connection (from SO_PEERCRED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The peer's user id, looked up in `[permissions.users]`.
    pub uid: u32,
    /// The peer's primary group id; its supplementary groups come from the group database.
    pub gid: u32,
}

impl Peer {
    /// The credentials of the process at the other end of a connected socket.
    pub fn of(stream: &tokio::net::UnixStream) -> std::io::Result<Peer> {
        let cred = stream.peer_cred()?;
        Ok(Peer {
            uid: cred.uid(),
            gid: cred.gid(),
        })
    }
}

/// What one connection may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    /// Root, qamd's own uid or the admin group: every operation.
    admin: bool,
    /// The operations granted otherwise.
    ops: BTreeSet<Op>,
}

impl Grants {
    /// Every operation.
    pub fn admin() -> Grants {
        Grants {
            admin: true,
            ops: Op::ALL.into_iter().collect(),
        }
    }

    /// Operations for everyone are always allowed; everything else as granted.
    pub fn allows(&self, op: Op) -> bool {
        op.grant() == Grant::Everyone || self.admin || self.ops.contains(&op)
    }

    pub fn is_admin(&self) -> bool {
        self.admin
    }
}

/// The configured permissions, resolved once per config load.
#[derive(Debug, Clone)]
pub struct Policy {
    /// qamd's own uid: a process running as it can read the store anyway, so it is an admin.
    daemon_uid: u32,
    /// The admin group's gid, `None` when that group does not exist.
    admin_gid: Option<u32>,
    /// Granted to every peer.
    default: BTreeSet<Op>,
    /// Granted to a user name, beyond `default`.
    users: BTreeMap<String, BTreeSet<Op>>,
    /// Granted to members of a group, beyond `default`.
    groups: BTreeMap<String, BTreeSet<Op>>,
}

fn op_set(names: &[String]) -> BTreeSet<Op> {
    // The config was validated: unknown names cannot occur here.
    names.iter().filter_map(|name| name.parse().ok()).collect()
}

impl Policy {
    /// Builds the policy; an `admin_group` that does not exist simply has no members.
    pub fn new(permissions: &PermissionsConfig, admin_group: &str) -> Policy {
        let admin_gid = Group::from_name(admin_group)
            .ok()
            .flatten()
            .map(|group| group.gid.as_raw());
        Policy {
            daemon_uid: Uid::current().as_raw(),
            admin_gid,
            default: op_set(&permissions.default),
            users: permissions
                .users
                .iter()
                .map(|(name, ops)| (name.clone(), op_set(ops)))
                .collect(),
            groups: permissions
                .groups
                .iter()
                .map(|(name, ops)| (name.clone(), op_set(ops)))
                .collect(),
        }
    }

    /// The grants of a peer: admin for root, the daemon's own uid and the admin group;
    /// otherwise `default` plus whatever its user name and groups are granted.
    pub fn grants(&self, peer: Peer) -> Grants {
        if peer.uid == 0 || peer.uid == self.daemon_uid {
            return Grants::admin();
        }
        let user = User::from_uid(Uid::from_raw(peer.uid)).ok().flatten();
        let gids = peer_groups(user.as_ref(), peer.gid);
        if self.admin_gid.is_some_and(|admin| gids.contains(&admin)) {
            return Grants::admin();
        }
        let mut ops = self.default.clone();
        if let Some(granted) = user.as_ref().and_then(|user| self.users.get(&user.name)) {
            ops.extend(granted);
        }
        for gid in gids {
            let group = Group::from_gid(Gid::from_raw(gid)).ok().flatten();
            if let Some(granted) = group.and_then(|group| self.groups.get(&group.name)) {
                ops.extend(granted);
            }
        }
        Grants { admin: false, ops }
    }
}

/// The peer's primary gid plus its supplementary groups from the group database.
fn peer_groups(user: Option<&User>, gid: u32) -> Vec<u32> {
    let mut gids = vec![gid];
    if let Some(user) = user {
        if let Ok(name) = CString::new(user.name.as_bytes()) {
            if let Ok(list) = getgrouplist(&name, Gid::from_raw(gid)) {
                gids.extend(list.into_iter().map(Gid::as_raw));
            }
        }
    }
    gids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nobody() -> Peer {
        Peer {
            uid: 65534,
            gid: 65534,
        }
    }

    #[test]
    fn root_is_admin() {
        let policy = Policy::new(&PermissionsConfig::default(), "qam-admin");
        assert!(policy.grants(Peer { uid: 0, gid: 0 }).is_admin());
    }

    #[test]
    fn default_grants_for_other_peers() {
        let policy = Policy::new(&PermissionsConfig::default(), "qam-admin");
        let grants = policy.grants(nobody());
        assert!(!grants.is_admin());
        for op in [
            Op::Hello,
            Op::Verify,
            Op::Exists,
            Op::Lookup,
            Op::ChangePassword,
        ] {
            assert!(grants.allows(op), "{op}");
        }
        for op in [
            Op::Register,
            Op::SetPassword,
            Op::Delete,
            Op::List,
            Op::Status,
            Op::Export,
        ] {
            assert!(!grants.allows(op), "{op}");
        }
    }

    #[test]
    fn user_and_group_grants_add_to_default() {
        let mut permissions = PermissionsConfig::default();
        permissions
            .users
            .insert("nobody".into(), vec!["register".into()]);
        permissions
            .groups
            .insert("nogroup".into(), vec!["list".into()]);
        let grants = Policy::new(&permissions, "qam-admin").grants(nobody());
        assert!(grants.allows(Op::Register));
        assert!(grants.allows(Op::List));
        assert!(grants.allows(Op::Verify));
        assert!(!grants.allows(Op::Delete));
    }
}
