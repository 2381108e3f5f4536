//! Group commit: one thread makes writes durable for every writer that queued while the
//! previous commit ran, and only then erases the key slots those writes freed.
//!
//! A batch: sled's flush and a write-back of `KEYS` (the new records' keys) put both on the
//! disk, the sync of `WRITES` (the highest write number) flushes the disk's cache for all
//! three, then the freed slots are zeroed in place and every writer hears back. The old key
//! is erased only after the version replacing it is durable, so a crash never leaves a record
//! without a readable version; the zeros reach the disk with the next batch or the periodic
//! full sync (a process reading the data dir sees them at once).
//! It calls sled's blocking `flush`: sled 0.34's `flush_async` never wakes some of several
//! concurrent callers, which hung every write under load.

use super::error::StoreError;
use super::generation::Generation;
use super::layout::write_writes;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

/// A writer waiting for its write to be durable.
struct Waiter {
    /// The write's number in the generation.
    number: u64,
    /// Key slots the write left unreferenced (the replaced or removed version's).
    erase: Vec<u64>,
    /// Answered once the batch holding this write is durable.
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// Handle of the commit thread; dropping it ends the thread and waits for it, so the
/// engine's files are closed when the store is.
pub struct Committer {
    /// Where writers queue (None once dropping).
    waiters: Option<mpsc::Sender<Waiter>>,
    /// Joined on drop.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Committer {
    fn drop(&mut self) {
        drop(self.waiters.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Committer {
    pub fn start(dir: PathBuf, generation: Arc<Generation>) -> std::io::Result<Committer> {
        let (waiters, queue) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("qam-commit".into())
            .spawn(move || commit_loop(&dir, &generation, &queue))?;
        Ok(Committer {
            waiters: Some(waiters),
            thread: Some(thread),
        })
    }

    /// Waits until write `number` is durable and the slots in `erase` are zeroed.
    pub async fn durable(&self, number: u64, erase: Vec<u64>) -> Result<(), StoreError> {
        let (done, answer) = tokio::sync::oneshot::channel();
        self.waiters
            .as_ref()
            .ok_or(StoreError::CommitStopped)?
            .send(Waiter {
                number,
                erase,
                done,
            })
            .map_err(|_| StoreError::CommitStopped)?;
        answer
            .await
            .map_err(|_| StoreError::CommitStopped)?
            .map_err(StoreError::Commit)
    }
}

fn commit_loop(dir: &Path, generation: &Generation, queue: &mpsc::Receiver<Waiter>) {
    // The highest write number recorded in `WRITES`.
    let mut noted = 0;
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter());
        let result = commit(dir, generation, &batch, &mut noted).map_err(|err| err.to_string());
        for waiter in batch {
            let _ = waiter.done.send(result.clone());
        }
    }
}

fn commit(
    dir: &Path,
    generation: &Generation,
    batch: &[Waiter],
    noted: &mut u64,
) -> Result<(), StoreError> {
    generation.flush()?;
    let keys = generation.keys()?;
    keys.write_back()?;
    let highest = batch.iter().map(|waiter| waiter.number).max().unwrap_or(0);
    if highest > *noted {
        write_writes(dir, generation.number, highest)?;
        *noted = highest;
    } else {
        keys.sync()?;
    }
    let erase: Vec<u64> = batch.iter().flat_map(|w| w.erase.iter().copied()).collect();
    for slot in &erase {
        keys.erase(*slot)?;
    }
    keys.release(erase);
    Ok(())
}
