//! Authorization by peer credentials: the kernel's view of the connecting process (uid, egid
//! and supplementary groups, taken once at accept) → the operations it may call, as configured.

use crate::config::PermissionsConfig;
use nix::unistd::{Group, Uid, User};
use qam_client::wire::{Grant, Op};
use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsRawFd;

/// Who is on the other end of a connection (from SO_PEERCRED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The peer's effective user id, looked up in `[permissions.users]`.
    pub uid: u32,
    /// The peer's effective group id.
    pub gid: u32,
}

/// A peer and the groups its process held when it connected: the egid and SO_PEERGROUPS.
/// Groups come from the kernel, never from the group database: a process that dropped a
/// group has lost it, one that holds a group only at run time has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The uid and egid, for grants, shares and logs.
    pub peer: Peer,
    /// The egid first, then the supplementary groups.
    pub gids: Vec<u32>,
}

impl Credentials {
    /// The credentials of the process at the other end of a connected socket.
    pub fn of(stream: &tokio::net::UnixStream) -> std::io::Result<Credentials> {
        let cred = stream.peer_cred()?;
        let peer = Peer {
            uid: cred.uid(),
            gid: cred.gid(),
        };
        let mut gids = vec![peer.gid];
        gids.extend(peer_groups(stream)?);
        Ok(Credentials { peer, gids })
    }
}

/// SO_PEERGROUPS: the supplementary groups of the peer process as of `connect`.
fn peer_groups(stream: &impl AsRawFd) -> std::io::Result<Vec<u32>> {
    use nix::libc::{c_void, getsockopt, gid_t, socklen_t, SOL_SOCKET, SO_PEERGROUPS};
    // NGROUPS_MAX is 65536; start with room for the common case and grow once if told to.
    let mut groups: Vec<gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<gid_t>()) as socklen_t;
        // SAFETY: `groups` is a writable buffer of exactly `len` bytes.
        let result = unsafe {
            getsockopt(
                stream.as_raw_fd(),
                SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast::<c_void>(),
                &mut len,
            )
        };
        let count = len as usize / std::mem::size_of::<gid_t>();
        if result == 0 {
            groups.truncate(count);
            return Ok(groups);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(nix::libc::ERANGE) || count <= groups.len() {
            return Err(err);
        }
        groups.resize(count, 0);
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
    /// `admin_group`'s gid, when that group exists.
    admin_gid: Option<u32>,
    /// `[permissions] default`: what a peer the config does not name may call.
    default: BTreeSet<Op>,
    /// `[permissions.users]` by user name.
    users: BTreeMap<String, BTreeSet<Op>>,
    /// `[permissions.groups]`, by the gid each named group has at load.
    groups: BTreeMap<u32, BTreeSet<Op>>,
}

fn op_set(names: &[String]) -> BTreeSet<Op> {
    // The config was validated: unknown names cannot occur here.
    names.iter().filter_map(|name| name.parse().ok()).collect()
}

fn gid_of(group: &str) -> Option<u32> {
    Group::from_name(group)
        .ok()
        .flatten()
        .map(|group| group.gid.as_raw())
}

impl Policy {
    /// Builds the policy; a group that does not exist simply has no members.
    pub fn new(permissions: &PermissionsConfig, admin_group: &str) -> Policy {
        let mut groups: BTreeMap<u32, BTreeSet<Op>> = BTreeMap::new();
        for (name, ops) in &permissions.groups {
            if let Some(gid) = gid_of(name) {
                groups.entry(gid).or_default().extend(op_set(ops));
            }
        }
        Policy {
            daemon_uid: Uid::current().as_raw(),
            admin_gid: gid_of(admin_group),
            default: op_set(&permissions.default),
            users: permissions
                .users
                .iter()
                .map(|(name, ops)| (name.clone(), op_set(ops)))
                .collect(),
            groups,
        }
    }

    /// The grants of a peer: admin for root, the daemon's own uid and holders of the admin
    /// group; otherwise `default` plus whatever its user name and held groups are granted.
    pub fn grants(&self, credentials: &Credentials) -> Grants {
        let Credentials { peer, gids } = credentials;
        if peer.uid == 0 || peer.uid == self.daemon_uid {
            return Grants::admin();
        }
        if self.admin_gid.is_some_and(|admin| gids.contains(&admin)) {
            return Grants::admin();
        }
        let mut ops = self.default.clone();
        let user = User::from_uid(Uid::from_raw(peer.uid)).ok().flatten();
        if let Some(granted) = user.as_ref().and_then(|user| self.users.get(&user.name)) {
            ops.extend(granted);
        }
        for gid in gids {
            if let Some(granted) = self.groups.get(gid) {
                ops.extend(granted);
            }
        }
        Grants { admin: false, ops }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nobody() -> Credentials {
        Credentials {
            peer: Peer {
                uid: 65534,
                gid: 65534,
            },
            gids: vec![65534],
        }
    }

    #[test]
    fn root_is_admin() {
        let policy = Policy::new(&PermissionsConfig::default(), "qam-admin");
        let root = Credentials {
            peer: Peer { uid: 0, gid: 0 },
            gids: vec![0],
        };
        assert!(policy.grants(&root).is_admin());
    }

    #[test]
    fn default_grants_for_other_peers() {
        let policy = Policy::new(&PermissionsConfig::default(), "qam-admin");
        let grants = policy.grants(&nobody());
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
        let grants = Policy::new(&permissions, "qam-admin").grants(&nobody());
        assert!(grants.allows(Op::Register));
        assert!(grants.allows(Op::List));
        assert!(grants.allows(Op::Verify));
        assert!(!grants.allows(Op::Delete));
    }

    #[tokio::test]
    async fn groups_are_the_ones_the_kernel_reports() {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        let credentials = Credentials::of(&ours).unwrap();
        let held = nix::unistd::getgroups().unwrap();
        assert_eq!(credentials.gids[0], nix::unistd::getegid().as_raw());
        for gid in held {
            assert!(credentials.gids.contains(&gid.as_raw()));
        }
        drop(theirs);
    }
}
