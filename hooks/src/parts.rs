//! Which hooks an event runs: the entries of `<hooks dir>/<event>.d` that run-parts would run
//! (names of `[A-Za-z0-9_-]` only, executable files or symlinks to them), in bytewise order.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// One hook to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hook {
    /// `<event>.d/<file>`: how qamd records the hook's outcome and how `done` names it.
    pub id: String,
    /// The file to execute (a symlink is executed as such, so `$0` is the link).
    pub path: PathBuf,
}

/// Whether run-parts would consider a file of this name (it ignores `foo.dpkg-old`, `README.md`,
/// editor backups and hidden files).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
}

/// The hooks of `<dir>/<subdir>`, sorted bytewise by name. A missing directory has none; a
/// matching entry that is not an executable file (after following symlinks) is skipped with a
/// warning, as a hook an admin meant to enable but cannot run.
pub fn list(dir: &Path, subdir: &str) -> io::Result<Vec<Hook>> {
    let parts = dir.join(subdir);
    let entries = match fs::read_dir(&parts) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !valid_name(&name) {
            continue;
        }
        let path = entry.path();
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => {
                names.push(name);
            }
            Ok(_) => tracing::warn!(
                hook = %path.display(),
                "not an executable file: skipped (chmod +x it, or remove it)"
            ),
            Err(err) => tracing::warn!(
                hook = %path.display(),
                "cannot be run ({err}): skipped (a dangling symlink?)"
            ),
        }
    }
    names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names
        .into_iter()
        .map(|name| Hook {
            id: format!("{subdir}/{name}"),
            path: parts.join(name),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn write(path: &Path, mode: u32) -> io::Result<()> {
        fs::write(path, "#!/bin/sh\nexit 0\n")?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
    }

    #[test]
    fn names_run_parts_accepts() {
        for name in ["50-prosody", "a", "A_b-9", "00"] {
            assert!(valid_name(name), "{name}");
        }
        for name in [
            "",
            "50-prosody.dpkg-old",
            "50-prosody~",
            ".hidden",
            "README.md",
            "a b",
            "é",
        ] {
            assert!(!valid_name(name), "{name}");
        }
    }

    #[test]
    fn lists_executables_and_their_symlinks_in_bytewise_order() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let shipped = dir.path().join("shipped");
        fs::create_dir(&shipped)?;
        write(&shipped.join("prosody"), 0o755)?;
        let parts = dir.path().join("delete.d");
        fs::create_dir(&parts)?;
        for name in ["b", "B", "50-x", "10-y", "_z", "a-1", "a_1"] {
            write(&parts.join(name), 0o755)?;
        }
        symlink(shipped.join("prosody"), parts.join("20-prosody"))?;
        write(&parts.join("30-not-executable"), 0o644)?;
        write(&parts.join("40-old.dpkg-old"), 0o755)?;
        write(&parts.join(".hidden"), 0o755)?;
        symlink(dir.path().join("missing"), parts.join("60-dangling"))?;
        fs::create_dir(parts.join("70-directory"))?;
        let ids: Vec<String> = list(dir.path(), "delete.d")?
            .into_iter()
            .map(|hook| hook.id)
            .collect();
        assert_eq!(
            ids,
            [
                "delete.d/10-y",
                "delete.d/20-prosody",
                "delete.d/50-x",
                "delete.d/B",
                "delete.d/_z",
                "delete.d/a-1",
                "delete.d/a_1",
                "delete.d/b",
            ]
        );
        Ok(())
    }

    #[test]
    fn a_missing_directory_has_no_hooks() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        assert!(list(dir.path(), "lock.d")?.is_empty());
        Ok(())
    }
}
