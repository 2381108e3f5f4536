//! Refuses a config file or data dir that anyone but root or qamd's own user could change:
//! the path and every directory above it are checked for owner and group/world write bits.

use nix::unistd::Uid;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The sticky bit: in such a directory (e.g. `/tmp`) nobody may rename or remove another
/// user's entries, so a root-owned one may be writable by all without putting ours at risk.
const STICKY: u32 = 0o1000;

/// Why a path is not trusted; each message names the path and the command that fixes it.
#[derive(Debug, thiserror::Error)]
pub enum Untrusted {
    #[error("{what} {path} belongs to uid {owner}; it must belong to root or qamd's user (uid {ours}): run `chown root {path}`")]
    Owner {
        what: String,
        path: PathBuf,
        owner: u32,
        ours: u32,
    },
    #[error("{what} {path} is writable by its group or by others (mode {mode:04o}); run `chmod go-w {path}`")]
    Writable {
        what: String,
        path: PathBuf,
        mode: u32,
    },
    #[error("cannot inspect {what} {path}: {source}")]
    Inspect {
        what: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Checks `path` (described as `what`, e.g. "config") and each directory above it: owned by
/// root or qamd's effective uid, and not writable by group or others (a root-owned sticky
/// directory excepted). Symlinks are resolved first, so the real location is what counts.
pub fn check(path: &Path, what: &str) -> Result<(), Untrusted> {
    let inspect = |path: &Path, what: String| {
        let path = path.to_owned();
        move |source| Untrusted::Inspect { what, path, source }
    };
    let real = std::fs::canonicalize(path).map_err(inspect(path, what.to_owned()))?;
    let ours = Uid::effective().as_raw();
    for (depth, current) in real.ancestors().enumerate() {
        let described = if depth == 0 {
            what.to_owned()
        } else {
            format!("{what} {}: directory", real.display())
        };
        let meta = std::fs::metadata(current).map_err(inspect(current, described.clone()))?;
        if meta.uid() != 0 && meta.uid() != ours {
            return Err(Untrusted::Owner {
                what: described,
                path: current.to_owned(),
                owner: meta.uid(),
                ours,
            });
        }
        let mode = meta.mode() & 0o7777;
        let shared_sticky = depth > 0 && mode & STICKY != 0 && meta.uid() == 0;
        if mode & 0o022 != 0 && !shared_sticky {
            return Err(Untrusted::Writable {
                what: described,
                path: current.to_owned(),
                mode,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A private directory (0755 inside the sticky /tmp) holding a 0644 file.
    fn fixture() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o755);
        let file = dir.path().join("qamd.toml");
        std::fs::write(&file, "").unwrap();
        chmod(&file, 0o644);
        (dir, file)
    }

    #[test]
    fn a_file_only_its_owner_may_write_in_a_safe_tree_passes() {
        let (_dir, file) = fixture();
        check(&file, "config").unwrap();
    }

    #[test]
    fn group_or_world_write_on_the_file_is_refused() {
        let (_dir, file) = fixture();
        for mode in [0o664, 0o646, 0o666] {
            chmod(&file, mode);
            let err = check(&file, "config").unwrap_err();
            assert!(matches!(err, Untrusted::Writable { .. }), "{mode:o}: {err}");
            assert!(err.to_string().contains("chmod go-w"), "{err}");
        }
    }

    #[test]
    fn a_writable_directory_above_is_refused_unless_sticky_and_root_owned() {
        let (dir, file) = fixture();
        chmod(dir.path(), 0o775);
        let err = check(&file, "config").unwrap_err();
        assert!(
            matches!(&err, Untrusted::Writable { path, .. } if path == dir.path()),
            "{err}"
        );
        // /tmp-like: sticky, so others cannot swap our file; accepted when root owns it.
        chmod(dir.path(), 0o1777);
        let sticky = check(&file, "config");
        if Uid::effective().is_root() {
            sticky.unwrap();
        }
    }

    #[test]
    fn a_symlink_is_judged_by_its_target() {
        let (dir, file) = fixture();
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        check(&link, "config").unwrap();
        chmod(&file, 0o666);
        assert!(matches!(
            check(&link, "config"),
            Err(Untrusted::Writable { .. })
        ));
    }

    #[test]
    fn a_missing_path_is_an_inspect_error() {
        let (dir, _file) = fixture();
        assert!(matches!(
            check(&dir.path().join("absent"), "config"),
            Err(Untrusted::Inspect { .. })
        ));
    }
}
