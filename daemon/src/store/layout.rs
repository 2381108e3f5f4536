//! The data dir's layout: `CURRENT` names the generation in use (`store-N`, a directory),
//! `WRITES` counts its acknowledged writes so a db that lost its tail is refused.
//!
//! A new generation is written only to change the store's format (`migrate.rs`): it is
//! written and synced, `CURRENT` switches to it by an atomic rename, then the old one is
//! removed. Before qam 0.1.0's first compaction a store was sled's files directly in the data
//! dir (generation 0); such files without `CURRENT` are refused, never taken for a new store.

use std::path::{Path, PathBuf};

/// The file naming the generation in use, and the prefix of generation directories.
pub const CURRENT_FILE: &str = "CURRENT";
pub const GENERATION_PREFIX: &str = "store-";
/// The generation and the number of its last acknowledged write.
pub const WRITES_FILE: &str = "WRITES";

/// sled's own files when the db lives directly in the data dir (generation 0).
const LEGACY_FILES: [&str; 3] = ["conf", "db", "blobs"];
const LEGACY_SNAPSHOT_PREFIX: &str = "snap.";

pub fn generation_path(dir: &Path, number: u64) -> PathBuf {
    if number == 0 {
        dir.to_owned()
    } else {
        dir.join(format!("{GENERATION_PREFIX}{number}"))
    }
}

/// The generation `CURRENT` names; 0 when there is no `CURRENT` (and no generation dirs).
pub fn current_generation(dir: &Path) -> Result<u64, String> {
    match std::fs::read(dir.join(CURRENT_FILE)) {
        Ok(bytes) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|text| text.strip_suffix('\n'))
            .and_then(|text| text.strip_prefix(GENERATION_PREFIX))
            .and_then(|number| number.parse::<u64>().ok())
            .filter(|number| *number > 0)
            .ok_or_else(|| format!("its {CURRENT_FILE} file is damaged")),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            match generation_dirs(dir).map_err(|err| err.to_string())?.first() {
                Some(number) => Err(format!(
                    "{GENERATION_PREFIX}{number} exists but {CURRENT_FILE} is missing"
                )),
                None => Ok(0),
            }
        }
        Err(err) => Err(format!("cannot read {CURRENT_FILE}: {err}")),
    }
}

/// The entries of `dir`; none when it does not exist yet.
fn dir_entries(dir: &Path) -> std::io::Result<Vec<std::fs::DirEntry>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.collect(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(err) => Err(err),
    }
}

/// Numbers of the `store-N` directories in the data dir.
pub fn generation_dirs(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut numbers = Vec::new();
    for entry in dir_entries(dir)? {
        let name = entry.file_name();
        if let Some(number) = name
            .to_str()
            .and_then(|name| name.strip_prefix(GENERATION_PREFIX))
            .and_then(|number| number.parse::<u64>().ok())
        {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// `WRITES`: the generation and the number of its last acknowledged write.
pub fn read_writes(dir: &Path) -> Result<Option<(u64, u64)>, String> {
    let text = match std::fs::read_to_string(dir.join(WRITES_FILE)) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(_) => return Err(format!("its {WRITES_FILE} file is damaged")),
    };
    let mut fields = text.trim_end_matches('\n').split(' ');
    let generation = fields
        .next()
        .and_then(|field| field.strip_prefix(GENERATION_PREFIX))
        .and_then(|number| number.parse().ok());
    let writes = fields.next().and_then(|number| number.parse().ok());
    match (generation, writes, fields.next()) {
        (Some(generation), Some(writes), None) => Ok(Some((generation, writes))),
        _ => Err(format!("its {WRITES_FILE} file is damaged")),
    }
}

/// Overwrites `WRITES` in place (fixed width, so no stale tail) and syncs it.
pub fn write_writes(dir: &Path, generation: u64, writes: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(WRITES_FILE))?;
    let text = format!("{GENERATION_PREFIX}{generation:020} {writes:020}\n");
    file.write_all_at(text.as_bytes(), 0)?;
    file.set_len(text.len() as u64)?;
    file.sync_data()
}

/// Writes `CURRENT` naming `number`: a temp file, fsync, rename over, fsync of the dir.
pub fn write_current(dir: &Path, number: u64) -> std::io::Result<()> {
    use std::io::Write;
    let temp = dir.join(format!("{CURRENT_FILE}.new"));
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(format!("{GENERATION_PREFIX}{number}\n").as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temp, dir.join(CURRENT_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// sled's files lying directly in the data dir (generation 0).
pub fn legacy_entries(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut legacy = Vec::new();
    for entry in dir_entries(dir)? {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if LEGACY_FILES.contains(&name.as_ref()) || name.starts_with(LEGACY_SNAPSHOT_PREFIX) {
            legacy.push(entry.path());
        }
    }
    Ok(legacy)
}

/// Whether generations other than `keep` (or generation 0's files) are still in the data dir.
pub fn others_remain(dir: &Path, keep: u64) -> std::io::Result<bool> {
    Ok(!legacy_entries(dir)?.is_empty()
        || generation_dirs(dir)?.iter().any(|number| *number != keep))
}

/// Removes every generation but `keep`: other `store-N` dirs and sled's files of generation 0.
pub fn remove_other_generations(dir: &Path, keep: u64) -> std::io::Result<()> {
    for number in generation_dirs(dir)? {
        if number != keep {
            std::fs::remove_dir_all(generation_path(dir, number))?;
        }
    }
    for path in legacy_entries(dir)? {
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    std::fs::File::open(dir)?.sync_all()
}

/// fsyncs every file under `dir`, then the directories themselves. Files that vanish meanwhile
/// are skipped.
pub fn sync_tree(dir: &Path) -> std::io::Result<()> {
    let skip_vanished = |result: std::io::Result<()>| match result {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    };
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            skip_vanished(sync_tree(&path))?;
        } else {
            skip_vanished(std::fs::File::open(&path).and_then(|file| file.sync_all()))?;
        }
    }
    std::fs::File::open(dir)?.sync_all()
}
