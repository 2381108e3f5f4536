//! Crypto-erasure: every stored record is sealed (ChaCha20-Poly1305) with its own key, kept in
//! one slot of the small file `KEYS`; overwriting that slot in place erases the record at once.
//!
//! The engine is log-structured: a removed or replaced value stays in its files until the
//! engine reuses the space. Those bytes are unreadable once their key slot is zeroed, which
//! happens (once the write replacing them is durable) before that write is acknowledged; the
//! zeros reach the disk with the next commit or the periodic full sync.
//! Every write of a record takes a fresh slot, so a key seals one value once.
//! Slot 0 holds the secret that keys names: the engine's keys are keyed hashes of names, so
//! no name is stored in clear either.

use blake2::digest::{FixedOutput, KeyInit as _, Update};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use std::collections::BTreeSet;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;
use zeroize::Zeroizing;

/// Bytes of one slot: a ChaCha20-Poly1305 key (slot 0: the name secret).
pub const KEY_BYTES: usize = 32;
/// Bytes of an engine key: a keyed BLAKE2s of the name, cut to 128 bits.
pub const NAME_KEY_BYTES: usize = 16;
/// The first byte of a sealed value, so the sealing itself can change later.
const SEAL_FORMAT: u8 = 1;
const NONCE_BYTES: usize = 12;
/// Format byte, slot number, nonce.
const HEADER_BYTES: usize = 1 + 8 + NONCE_BYTES;

/// The engine key of a name.
pub type NameKey = [u8; NAME_KEY_BYTES];

/// The key of one record, wiped when dropped.
pub struct RecordKey(Zeroizing<[u8; KEY_BYTES]>);

impl RecordKey {
    /// An erased (or never written) slot.
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|byte| *byte == 0)
    }
}

/// The open `KEYS` file and which of its slots are free.
pub struct KeyFile {
    /// Read and written in place at slot offsets (never appended through a cursor).
    file: std::fs::File,
    /// The secret of slot 0, kept in memory: every lookup hashes a name with it.
    name_secret: Zeroizing<[u8; KEY_BYTES]>,
    /// Slot allocation, shared by every writer.
    slots: Mutex<Slots>,
}

/// Which slots a new record may take.
struct Slots {
    /// The first slot never handed out: the file's length in slots.
    next: u64,
    /// Zeroed slots no record references. Empty until the index has seen every record,
    /// because only then is it known which old slots are unreferenced.
    free: BTreeSet<u64>,
    /// Whether `free` may be used (set once the index is built).
    reuse: bool,
}

fn random_key() -> std::io::Result<Zeroizing<[u8; KEY_BYTES]>> {
    let mut key = Zeroizing::new([0u8; KEY_BYTES]);
    getrandom::fill(&mut *key).map_err(|err| std::io::Error::other(err.to_string()))?;
    Ok(key)
}

/// Where `slot` starts in the file (a damaged slot number reads past the end, never wraps).
fn offset(slot: u64) -> u64 {
    slot.saturating_mul(KEY_BYTES as u64)
}

impl KeyFile {
    /// Creates `KEYS` with a fresh name secret, synced.
    pub fn create(path: &Path) -> std::io::Result<KeyFile> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        let name_secret = random_key()?;
        file.write_all_at(&*name_secret, 0)?;
        file.sync_all()?;
        Ok(KeyFile::new(file, name_secret, 1))
    }

    /// Opens `KEYS`, which must hold at least `slots_in_use` slots and a name secret.
    pub fn open(path: &Path, slots_in_use: u64) -> Result<KeyFile, String> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|err| format!("cannot open {}: {err}", path.display()))?;
        let len = file.metadata().map_err(|err| err.to_string())?.len();
        if len < offset(slots_in_use.max(1)) {
            return Err(format!("{} is truncated", path.display()));
        }
        let mut name_secret = Zeroizing::new([0u8; KEY_BYTES]);
        file.read_exact_at(&mut *name_secret, 0)
            .map_err(|err| err.to_string())?;
        if name_secret.iter().all(|byte| *byte == 0) {
            return Err(format!("{} is damaged", path.display()));
        }
        let next = len.div_ceil(KEY_BYTES as u64).max(slots_in_use);
        Ok(KeyFile::new(file, name_secret, next))
    }

    fn new(file: std::fs::File, name_secret: Zeroizing<[u8; KEY_BYTES]>, next: u64) -> KeyFile {
        KeyFile {
            file,
            name_secret,
            slots: Mutex::new(Slots {
                next,
                free: BTreeSet::new(),
                reuse: false,
            }),
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The engine key of `name`.
    pub fn name_key(&self, name: &str) -> NameKey {
        let mut mac = match blake2::Blake2sMac256::new_from_slice(&*self.name_secret) {
            Ok(mac) => mac,
            // A 32-byte key is always accepted.
            Err(_) => return [0; NAME_KEY_BYTES],
        };
        mac.update(name.as_bytes());
        let digest = mac.finalize_fixed();
        let mut key = [0u8; NAME_KEY_BYTES];
        key.copy_from_slice(&digest[..NAME_KEY_BYTES]);
        key
    }

    /// Slots handed out so far (the file's length in slots).
    pub fn len(&self) -> u64 {
        self.slots().next
    }

    /// A free slot with a fresh random key written into it (not yet synced).
    pub fn allocate(&self) -> std::io::Result<(u64, RecordKey)> {
        let key = random_key()?;
        let slot = {
            let mut slots = self.slots();
            let reused = if slots.reuse {
                slots.free.pop_first()
            } else {
                None
            };
            match reused {
                Some(slot) => slot,
                None => {
                    let slot = slots.next;
                    slots.next += 1;
                    slot
                }
            }
        };
        self.file.write_all_at(&*key, offset(slot))?;
        Ok((slot, RecordKey(key)))
    }

    /// The key in `slot`.
    pub fn key(&self, slot: u64) -> std::io::Result<RecordKey> {
        let mut key = Zeroizing::new([0u8; KEY_BYTES]);
        self.file.read_exact_at(&mut *key, offset(slot))?;
        Ok(RecordKey(key))
    }

    /// Overwrites `slot` with zeros in place (durable after [`KeyFile::sync`]).
    pub fn erase(&self, slot: u64) -> std::io::Result<()> {
        self.file.write_all_at(&[0u8; KEY_BYTES], offset(slot))
    }

    /// Makes every slot written so far durable.
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    /// Writes every changed slot to the disk and waits for it, without flushing the disk's
    /// cache: the sync of `WRITES` that follows in the same commit flushes it for both.
    pub fn write_back(&self) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let flags = nix::libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | nix::libc::SYNC_FILE_RANGE_WRITE
            | nix::libc::SYNC_FILE_RANGE_WAIT_AFTER;
        // SAFETY: a system call on a file descriptor this struct owns; no memory is passed.
        match unsafe { nix::libc::sync_file_range(self.file.as_raw_fd(), 0, 0, flags) } {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        }
    }

    /// Erased slots a new record may take (only once [`KeyFile::start_reuse`] ran).
    pub fn release(&self, erased: impl IntoIterator<Item = u64>) {
        self.slots().free.extend(erased);
    }

    /// From now on, allocation takes released slots first.
    pub fn start_reuse(&self) {
        self.slots().reuse = true;
    }
}

/// Seals `plain` for engine key `name_key` with the key in `slot`.
pub fn seal(
    name_key: &NameKey,
    slot: u64,
    key: &RecordKey,
    plain: &[u8],
) -> std::io::Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::fill(&mut nonce).map_err(|err| std::io::Error::other(err.to_string()))?;
    let cipher = ChaCha20Poly1305::new((&*key.0).into());
    let aad = associated(name_key, slot);
    let sealed = cipher
        .encrypt(
            (&nonce).into(),
            Payload {
                msg: plain,
                aad: &aad,
            },
        )
        .map_err(|_| std::io::Error::other("sealing failed"))?;
    let mut value = Vec::with_capacity(HEADER_BYTES + sealed.len());
    value.push(SEAL_FORMAT);
    value.extend_from_slice(&slot.to_be_bytes());
    value.extend_from_slice(&nonce);
    value.extend_from_slice(&sealed);
    Ok(value)
}

/// The slot a sealed value's key lives in.
pub fn slot_of(value: &[u8]) -> Option<u64> {
    match value {
        [SEAL_FORMAT, rest @ ..] if rest.len() >= HEADER_BYTES - 1 => {
            let mut slot = [0u8; 8];
            slot.copy_from_slice(&rest[..8]);
            Some(u64::from_be_bytes(slot))
        }
        _ => None,
    }
}

/// Opens a sealed value with `key`; None when it is not what [`seal`] made with that key
/// (a damaged value, or a key slot erased meanwhile).
pub fn open(name_key: &[u8], key: &RecordKey, value: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let slot = slot_of(value)?;
    let nonce = &value[9..HEADER_BYTES];
    let cipher = ChaCha20Poly1305::new((&*key.0).into());
    let aad = associated(name_key, slot);
    cipher
        .decrypt(
            nonce.into(),
            Payload {
                msg: &value[HEADER_BYTES..],
                aad: &aad,
            },
        )
        .ok()
        .map(Zeroizing::new)
}

/// What a sealed value is bound to: its engine key and its slot.
fn associated(name_key: &[u8], slot: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(name_key.len() + 8);
    aad.extend_from_slice(name_key);
    aad.extend_from_slice(&slot.to_be_bytes());
    aad
}

/// The key of `slot` in `all`, the bytes of a whole `KEYS` file, if `slot` is among them.
pub fn key_in(all: &[u8], slot: u64) -> Option<RecordKey> {
    let start = usize::try_from(offset(slot)).ok()?;
    let bytes = all.get(start..start.checked_add(KEY_BYTES)?)?;
    let mut key = Zeroizing::new([0u8; KEY_BYTES]);
    key.copy_from_slice(bytes);
    Some(RecordKey(key))
}

/// Bytes of the smallest and largest sealed values [`readable`] tries.
const SEALED_BYTES: std::ops::RangeInclusive<usize> =
    (HEADER_BYTES + 16 + 8)..=(HEADER_BYTES + 2048);

/// Every record an attacker holding the data dir could still decrypt for one of `names`: any
/// byte string in the generation's files (old, superseded engine pages included) that a key
/// slot of `KEYS`, as it is on disk now, opens. Slow; for erasure tests and audits.
pub fn readable(
    generation: &Path,
    keys: &KeyFile,
    names: &[&str],
) -> std::io::Result<Vec<Zeroizing<Vec<u8>>>> {
    let slots = std::fs::read(generation.join("KEYS"))?;
    let name_keys: Vec<NameKey> = names.iter().map(|name| keys.name_key(name)).collect();
    let mut opened = Vec::new();
    for entry in std::fs::read_dir(generation)? {
        let path = entry?.path();
        if !path.is_file() || path.ends_with("KEYS") {
            continue;
        }
        let bytes = Zeroizing::new(std::fs::read(&path)?);
        for start in 0..bytes.len() {
            let Some(key) = slot_of(&bytes[start..]).and_then(|slot| key_in(&slots, slot)) else {
                continue;
            };
            if key.is_zero() {
                continue;
            }
            let ends =
                (start + SEALED_BYTES.start())..=(start + SEALED_BYTES.end()).min(bytes.len());
            for end in ends {
                for name_key in &name_keys {
                    opened.extend(open(name_key, &key, &bytes[start..end]));
                }
            }
        }
    }
    Ok(opened)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_erased_slot_makes_its_value_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyFile::create(&dir.path().join("KEYS")).unwrap();
        let name = keys.name_key("alice");
        let (slot, key) = keys.allocate().unwrap();
        let value = seal(&name, slot, &key, b"secret").unwrap();
        assert_eq!(slot_of(&value), Some(slot));
        let opened = open(&name, &keys.key(slot).unwrap(), &value).unwrap();
        assert_eq!(&opened[..], b"secret");
        assert!(
            open(&keys.name_key("bob"), &key, &value).is_none(),
            "bound to its name"
        );
        keys.erase(slot).unwrap();
        assert!(open(&name, &keys.key(slot).unwrap(), &value).is_none());
    }
}
