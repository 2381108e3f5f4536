//! The store's own error type: what callers may match on, with no type of the engine
//! underneath in it, so the engine can change behind the store.

use std::path::PathBuf;

/// What can go wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store at {dir} cannot be opened: {reason}; restore from backup (see README, \"Backup and restore\")")]
    Open { dir: PathBuf, reason: String },
    #[error("store at {dir} was written by a newer qam (store format {found}; this qamd reads formats up to {known}); run that release or a newer one")]
    Newer {
        dir: PathBuf,
        found: u64,
        known: u64,
    },
    #[error("store I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("store engine failed: {0}")]
    Engine(String),
    #[error("a stored record is unreadable: {0}")]
    Corrupt(String),
    #[error("store commit failed: {0}")]
    Commit(String),
    #[error("the store's commit thread stopped")]
    CommitStopped,
}

/// Turns the engine's errors into [`StoreError::Engine`] at the edge of the engine code.
pub(crate) trait EngineResult<T> {
    fn engine(self) -> Result<T, StoreError>;
}

impl<T> EngineResult<T> for Result<T, sled::Error> {
    fn engine(self) -> Result<T, StoreError> {
        self.map_err(|err| StoreError::Engine(err.to_string()))
    }
}
