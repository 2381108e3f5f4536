//! Creating the listening socket safely, with its mode, group and directories, and a data dir
//! only root or qamd's user can change.
//!
//! It never steals a live socket and never replaces a file qamd does not own; the socket gets
//! mode 0660 with the configured group, and so do the directories qamd makes for it.

use crate::trusted_path::{self, Untrusted};
use nix::unistd::{chown, Gid, Group, Uid};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Why qamd cannot start; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("another process is already listening on {0}; stop it or choose another socket")]
    SocketInUse(PathBuf),
    #[error("{0} exists and is not a socket; remove it or choose another socket path")]
    NotASocket(PathBuf),
    #[error("{path} belongs to uid {owner}, not to qamd's uid {ours}; refusing to replace it")]
    ForeignSocket {
        path: PathBuf,
        owner: u32,
        ours: u32,
    },
    #[error("{0} is not searchable by every user, so other processes cannot reach the userdb socket in it; make it 0755 or choose another [nss] socket")]
    Unreachable(PathBuf),
    #[error("socket group `{0}` does not exist; create it or set socket_group")]
    NoSuchGroup(String),
    #[error(transparent)]
    Untrusted(#[from] Untrusted),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_error<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> SetupError + 'a {
    move |source| SetupError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// The gid the socket gets: the named group; by default `qam` when it exists; `""` or no
/// `qam` group means the daemon's own group (None: leave it).
pub fn socket_gid(configured: Option<&str>) -> Result<Option<Gid>, SetupError> {
    match configured {
        Some("") => Ok(None),
        Some(name) => match Group::from_name(name) {
            Ok(Some(group)) => Ok(Some(group.gid)),
            _ => Err(SetupError::NoSuchGroup(name.to_owned())),
        },
        None => Ok(Group::from_name("qam")
            .ok()
            .flatten()
            .map(|group| group.gid)),
    }
}

/// Mode of each directory qamd creates above a socket: the socket group may pass through
/// (not list), others may not. qamd's umask 077 alone would shut the group out.
const SOCKET_DIR_MODE: u32 = 0o710;

/// A bound or passed listener, made ready for the async accept loops.
pub fn into_async(listener: UnixListener) -> std::io::Result<tokio::net::UnixListener> {
    listener.set_nonblocking(true)?;
    tokio::net::UnixListener::from_std(listener)
}

/// Binds `path` as a 0660 socket owned by `gid`, replacing only a stale socket of ours.
pub fn bind(path: &Path, gid: Option<Gid>) -> Result<UnixListener, SetupError> {
    remove_stale(path)?;
    if let Some(parent) = path.parent() {
        create_socket_dirs(parent, gid)?;
    }
    let listener = UnixListener::bind(path).map_err(io_error("cannot bind", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(io_error("cannot chmod", path))?;
    set_group(path, gid)?;
    Ok(listener)
}

/// Creates the missing directories of `dir`, each `SOCKET_DIR_MODE` with group `gid`;
/// directories that already exist are left as the sysadmin made them.
fn create_socket_dirs(dir: &Path, gid: Option<Gid>) -> Result<(), SetupError> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|p| !p.as_os_str().is_empty() && !p.exists())
        .collect();
    for created in missing.into_iter().rev() {
        match std::fs::create_dir(created) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(io_error("cannot create socket directory", created)(err)),
        }
        std::fs::set_permissions(created, std::fs::Permissions::from_mode(SOCKET_DIR_MODE))
            .map_err(io_error("cannot chmod", created))?;
        set_group(created, gid)?;
    }
    Ok(())
}

/// Gives `path` the group `gid` (None: leave qamd's own). chown runs only when the group
/// differs: qamd.service's seccomp filter refuses chown, and under it files are already
/// created with the wanted group, qamd's own.
fn set_group(path: &Path, gid: Option<Gid>) -> Result<(), SetupError> {
    let current = std::fs::metadata(path)
        .map_err(io_error("cannot inspect", path))?
        .gid();
    if let Some(gid) = gid.filter(|gid| gid.as_raw() != current) {
        chown(path, None, Some(gid))
            .map_err(|errno| io_error("cannot chgrp", path)(std::io::Error::from(errno)))?;
    }
    Ok(())
}

/// Binds `path` as a 0666 socket anyone may connect to (the userdb door), creating its
/// directory 0755 when missing, replacing only a stale socket of ours, and refusing a
/// directory some user cannot pass through (nss-systemd runs in every process).
pub fn bind_public(path: &Path) -> Result<UnixListener, SetupError> {
    remove_stale(path)?;
    if let Some(parent) = path.parent().filter(|p| !p.exists()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(io_error("cannot create socket directory", parent))?;
        // The umask (077) applied to the mode: every process must reach the socket.
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755))
            .map_err(io_error("cannot chmod", parent))?;
    }
    for dir in path
        .ancestors()
        .skip(1)
        .filter(|p| !p.as_os_str().is_empty())
    {
        let mode = std::fs::metadata(dir)
            .map_err(io_error("cannot inspect", dir))?
            .mode();
        if mode & 0o001 == 0 {
            return Err(SetupError::Unreachable(dir.to_owned()));
        }
    }
    let listener = UnixListener::bind(path).map_err(io_error("cannot bind", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(io_error("cannot chmod", path))?;
    Ok(listener)
}

fn remove_stale(path: &Path) -> Result<(), SetupError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(io_error("cannot inspect", path)(err)),
    };
    if !meta.file_type().is_socket() {
        return Err(SetupError::NotASocket(path.to_owned()));
    }
    let ours = Uid::current().as_raw();
    if meta.uid() != ours && ours != 0 {
        return Err(SetupError::ForeignSocket {
            path: path.to_owned(),
            owner: meta.uid(),
            ours,
        });
    }
    if UnixStream::connect(path).is_ok() {
        return Err(SetupError::SocketInUse(path.to_owned()));
    }
    std::fs::remove_file(path).map_err(io_error("cannot remove stale socket", path))
}

/// Creates the data dir 0700 when missing; refuses one that anyone but root or qamd's user
/// could change, or that sits in such a directory (see `trusted_path`).
pub fn prepare_data_dir(dir: &Path) -> Result<(), SetupError> {
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(io_error("cannot create data dir", dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_error("cannot chmod data dir", dir))?;
    }
    trusted_path::check(dir, "data dir")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_socket_is_not_stolen_and_stale_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let first = bind(&path, None).unwrap();
        assert!(matches!(bind(&path, None), Err(SetupError::SocketInUse(_))));
        drop(first);
        let again = bind(&path, None).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        drop(again);
    }

    #[test]
    fn the_public_socket_replaces_only_a_stale_socket_and_is_0666() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("run/io.qam");
        let first = bind_public(&path).unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o666);
        assert_eq!(mode(&dir.path().join("run")), 0o755);
        // Someone answers: never stolen.
        assert!(matches!(
            bind_public(&path),
            Err(SetupError::SocketInUse(_))
        ));
        // Left behind by a qamd that died: nobody answers, so it is replaced.
        drop(first);
        assert!(path.exists());
        let _again = bind_public(&path).unwrap();
        assert_eq!(mode(&path), 0o666);
        // Anything else at the path stays, and so does a symlink (even to a socket).
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(matches!(bind_public(&link), Err(SetupError::NotASocket(_))));
        let file = dir.path().join("file");
        std::fs::write(&file, "keep me").unwrap();
        assert!(matches!(bind_public(&file), Err(SetupError::NotASocket(_))));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    }

    #[test]
    fn a_public_socket_in_a_directory_others_cannot_pass_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let shut = dir.path().join("shut");
        std::fs::create_dir(&shut).unwrap();
        std::fs::set_permissions(&shut, std::fs::Permissions::from_mode(0o710)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let refused = bind_public(&shut.join("io.qam"));
        assert!(
            matches!(&refused, Err(SetupError::Unreachable(at)) if *at == shut),
            "{refused:?}"
        );
        assert!(!shut.join("io.qam").exists());
    }

    #[test]
    fn a_regular_file_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        std::fs::write(&path, "keep me").unwrap();
        assert!(matches!(bind(&path, None), Err(SetupError::NotASocket(_))));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
    }

    #[test]
    fn group_writable_data_dir_is_refused_and_a_fresh_one_is_private() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o775)).unwrap();
        assert!(matches!(
            prepare_data_dir(dir.path()),
            Err(SetupError::Untrusted(Untrusted::Writable { .. }))
        ));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let fresh = dir.path().join("new");
        prepare_data_dir(&fresh).unwrap();
        assert_eq!(
            std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn missing_socket_directories_let_the_socket_group_through() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let made = dir.path().join("run");
        let path = made.join("qam/saslauthd/mux");
        let _listener = bind(&path, None).unwrap();
        for created in [made.clone(), made.join("qam"), made.join("qam/saslauthd")] {
            let mode = std::fs::metadata(&created).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, SOCKET_DIR_MODE, "{}", created.display());
        }
        // An existing directory keeps the mode its owner gave it.
        let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn missing_group_is_an_error_only_when_named() {
        assert!(matches!(
            socket_gid(Some("no-such-group-qam")),
            Err(SetupError::NoSuchGroup(_))
        ));
        assert_eq!(socket_gid(Some("")).unwrap(), None);
    }
}
