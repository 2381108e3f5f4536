//! Test helpers: hooks written by a child process, so that no descriptor of this (threaded)
//! test process is open on a script another test thread's fork could keep (ETXTBSY at exec).

use std::path::Path;
use std::process::Command;

/// Writes an executable `#!/bin/sh` script with `body` at `path`.
pub fn write_hook(path: &Path, body: &str) {
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg("printf '#!/bin/sh\\n%s\\n' \"$1\" > \"$2\" && chmod 755 \"$2\"")
        .arg("sh")
        .arg(body)
        .arg(path)
        .status()
        .expect("run sh");
    assert!(status.success(), "writing {} failed", path.display());
}
