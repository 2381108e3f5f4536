//! The hashing pool: a fixed number of threads running argon2id behind a bounded queue, so
//! cheap requests never wait behind hashing and a full queue answers `busy` at once.

use crate::config::HashConfig;
use argon2::password_hash::phc::{Output, ParamsString, Salt};
use argon2::password_hash::try_generate_salt;
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use qam_client::Password;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::oneshot;
use zeroize::Zeroize;

/// Why hashing did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("every hashing worker is busy and the queue is full")]
    Busy,
    #[error("the hashing pool has stopped")]
    Stopped,
    #[error("argon2 failed: {0}")]
    Argon2(String),
    #[error("the random number generator failed")]
    Random,
}

/// The result of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyOutcome {
    pub matches: bool,
    /// The stored hash uses other parameters than the configured ones.
    pub needs_rehash: bool,
}

enum Job {
    Hash {
        password: Password,
        params: Params,
        reply: oneshot::Sender<Result<String, HashError>>,
    },
    Verify {
        password: Password,
        phc: String,
        /// The parameters in force and their dummy hash, which tops up a cheaper refusal.
        current: Arc<Current>,
        reply: oneshot::Sender<VerifyOutcome>,
    },
}

/// The parameters for new hashes and the dummy hash made with them.
struct Current {
    params: Params,
    /// Verified against when the user is unknown, so every `denied` costs the same work.
    dummy: String,
}

/// Handle to the pool; cheap to clone.
#[derive(Clone)]
pub struct Hasher {
    jobs: SyncSender<Job>,
    queued: Arc<AtomicUsize>,
    current: Arc<RwLock<Arc<Current>>>,
    workers: usize,
    queue_limit: usize,
}

/// How much nicer than the rest of qamd the hashing threads run. With every core hashing, a
/// cheap request's wake-up (and its client's) then preempts argon2 at once instead of waiting
/// out a time slice (BENCHMARKS.md, "What changed in qamd", has the measured gain).
pub const HASH_NICENESS: i32 = 10;

/// Lowers the calling thread's priority by [`HASH_NICENESS`] (capped at 19). On Linux
/// `setpriority` on a thread id renices that thread only; raising niceness needs no privilege.
pub fn lower_thread_priority() -> std::io::Result<()> {
    use nix::libc::{getpriority, id_t, setpriority, PRIO_PROCESS};
    let tid = nix::unistd::gettid().as_raw() as id_t;
    nix::errno::Errno::clear();
    // SAFETY: plain syscalls about this thread's own id; no memory is passed.
    let current = unsafe { getpriority(PRIO_PROCESS, tid) };
    if current == -1 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(0) {
            return Err(err);
        }
    }
    let target = current.saturating_add(HASH_NICENESS).min(19);
    // SAFETY: as above.
    if unsafe { setpriority(PRIO_PROCESS, tid, target) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// argon2 parameters from the config (validated at load).
pub fn params_of(config: &HashConfig) -> Result<Params, HashError> {
    Params::new(config.m_cost, config.t_cost, config.p_cost, None)
        .map_err(|err| HashError::Argon2(err.to_string()))
}

/// Hashes one password with fresh salt, on the calling thread, with fresh memory.
pub fn hash_now(password: &[u8], params: &Params) -> Result<String, HashError> {
    hash_with(&mut Scratch::default(), password, params)
}

/// Hashes one password with fresh salt in `scratch`: the PHC string argon2's
/// `hash_password_with_salt` makes, without its allocation.
pub fn hash_with(
    scratch: &mut Scratch,
    password: &[u8],
    params: &Params,
) -> Result<String, HashError> {
    let failed = |err: &dyn std::fmt::Display| HashError::Argon2(err.to_string());
    let salt = try_generate_salt().map_err(|_| HashError::Random)?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let length = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let mut buffer = [0u8; Output::MAX_LENGTH];
    let output = buffer
        .get_mut(..length)
        .ok_or_else(|| HashError::Argon2("output length".into()))?;
    argon2
        .hash_password_into_with_memory(password, &salt, &mut *output, scratch.blocks(params))
        .map_err(|err| failed(&err))?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|err| failed(&err))?,
        salt: Some(Salt::new(&salt).map_err(|err| failed(&err))?),
        hash: Some(Output::new(output).map_err(|err| failed(&err))?),
    };
    Ok(hash.to_string())
}

/// argon2's working memory, kept by a hashing thread from one job to the next: no
/// m_cost-sized allocation, zeroing and page faults per hash, and resident memory stays
/// near workers × m_cost (glibc would keep freed arenas; BENCHMARKS.md has the figures).
#[derive(Default)]
pub struct Scratch(Vec<Block>);

/// A hashing thread idle this long gives its argon2 memory back (the first hash after that
/// costs a few ms of page faults): an idle qamd holds no W × m_cost of hashing memory.
pub const IDLE_RELEASE: std::time::Duration = std::time::Duration::from_secs(5);

impl Scratch {
    /// Wipes and frees the blocks (they hold material derived from the last password), then
    /// returns free heap memory to the system (glibc keeps freed memory of this size in its
    /// arenas otherwise).
    fn release(&mut self) {
        if self.0.is_empty() {
            return;
        }
        self.0.iter_mut().for_each(Zeroize::zeroize);
        self.0 = Vec::new();
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim only returns free memory of the allocator's own arenas.
        unsafe {
            nix::libc::malloc_trim(0);
        }
    }

    /// Exactly the blocks `params` needs, carved from memory kept at the largest size asked
    /// since the last release: a cheap verify followed by its top-up to the current cost
    /// allocates nothing (memory follows a lower `m_cost` at the next idle release).
    fn blocks(&mut self, params: &Params) -> &mut [Block] {
        let count = params.block_count();
        if self.0.len() < count {
            self.0 = Vec::new();
            self.0.resize(count, Block::default());
        }
        &mut self.0[..count]
    }
}

/// Checks a password against a PHC string, on the calling thread, with fresh memory.
pub fn verify_now(password: &[u8], phc: &str, policy: &Params) -> VerifyOutcome {
    verify_with(&mut Scratch::default(), password, phc, policy)
}

/// Checks a password against a PHC string in `scratch`. An unreadable hash never matches and
/// is flagged for rehash (it cannot be, since it never matches).
pub fn verify_with(
    scratch: &mut Scratch,
    password: &[u8],
    phc: &str,
    policy: &Params,
) -> VerifyOutcome {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return VerifyOutcome {
            matches: false,
            needs_rehash: true,
        };
    };
    VerifyOutcome {
        matches: recompute_matches(scratch, password, &parsed).unwrap_or(false),
        needs_rehash: differs_from_policy(&parsed, policy),
    }
}

/// What `PasswordVerifier::verify_password` does, in reused memory: the hash's own
/// algorithm, version and parameters, then a constant-time comparison (`Output`'s `==`).
fn recompute_matches(scratch: &mut Scratch, password: &[u8], hash: &PasswordHash) -> Option<bool> {
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return Some(false);
    };
    let algorithm = Algorithm::try_from(hash.algorithm.as_str()).ok()?;
    let version = match hash.version {
        Some(version) => Version::try_from(version).ok()?,
        None => Version::default(),
    };
    let params = Params::try_from(hash).ok()?;
    let mut buffer = [0u8; Output::MAX_LENGTH];
    let computed = buffer.get_mut(..expected.len())?;
    Argon2::new(algorithm, version, params.clone())
        .hash_password_into_with_memory(password, salt, &mut *computed, scratch.blocks(&params))
        .ok()?;
    let matches = Output::new(computed).ok()? == *expected;
    buffer.zeroize();
    Some(matches)
}

/// True when checking `phc` costs less memory or fewer passes than `policy`, or it cannot be
/// read: a refusal against it is topped up to the current cost.
fn costs_less(phc: &str, policy: &Params) -> bool {
    PasswordHash::new(phc)
        .ok()
        .and_then(|hash| Params::try_from(&hash).ok())
        .is_none_or(|stored| stored.m_cost() < policy.m_cost() || stored.t_cost() < policy.t_cost())
}

/// Checks `password` against `phc`; a refusal costs at least one verify at the current
/// parameters (the dummy's), so the time of a `denied` tells nothing about the stored hash.
fn verify_at_least_current(
    scratch: &mut Scratch,
    password: &[u8],
    phc: &str,
    current: &Current,
) -> VerifyOutcome {
    let outcome = verify_with(scratch, password, phc, &current.params);
    if !outcome.matches && costs_less(phc, &current.params) {
        verify_with(scratch, password, &current.dummy, &current.params);
    }
    outcome
}

/// Compares algorithm, version and m/t/p one by one (whole-`Params` equality gives false
/// mismatches through fields the PHC string does not carry).
fn differs_from_policy(hash: &PasswordHash, policy: &Params) -> bool {
    let stored = match Params::try_from(hash) {
        Ok(stored) => stored,
        Err(_) => return true,
    };
    hash.algorithm.as_str() != argon2::ARGON2ID_IDENT.as_str()
        || hash.version != Some(Version::V0x13.into())
        || stored.m_cost() != policy.m_cost()
        || stored.t_cost() != policy.t_cost()
        || stored.p_cost() != policy.p_cost()
}

impl Hasher {
    /// Starts the workers and makes the dummy hash with the configured parameters.
    pub fn start(config: &HashConfig) -> Result<Hasher, HashError> {
        let params = params_of(config)?;
        let dummy = dummy_hash(&params)?;
        let workers = config.worker_count();
        let (jobs, receiver) = sync_channel(config.queue_limit);
        let receiver = Arc::new(Mutex::new(receiver));
        let queued = Arc::new(AtomicUsize::new(0));
        for index in 0..workers {
            let receiver = Arc::clone(&receiver);
            let queued = Arc::clone(&queued);
            std::thread::Builder::new()
                .name(format!("qam-hash-{index}"))
                .spawn(move || work(&receiver, &queued))
                .map_err(|err| HashError::Argon2(format!("cannot start hashing thread: {err}")))?;
        }
        Ok(Hasher {
            jobs,
            queued,
            current: Arc::new(RwLock::new(Arc::new(Current { params, dummy }))),
            workers,
            queue_limit: config.queue_limit,
        })
    }

    fn current(&self) -> Arc<Current> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(|poison| poison.into_inner()),
        )
    }

    /// Parameters used for new hashes.
    pub fn params(&self) -> Params {
        self.current().params.clone()
    }

    /// Switches new hashes (and the dummy) to other parameters, e.g. on config reload.
    pub async fn set_params(&self, config: &HashConfig) -> Result<(), HashError> {
        let params = params_of(config)?;
        let dummy = self
            .hash_with(Password::from(dummy_secret()?), params.clone())
            .await?;
        *self
            .current
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = Arc::new(Current { params, dummy });
        Ok(())
    }

    /// Hashes a new password with the current parameters.
    pub async fn hash(&self, password: Password) -> Result<String, HashError> {
        self.hash_with(password, self.params()).await
    }

    async fn hash_with(&self, password: Password, params: Params) -> Result<String, HashError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Hash {
            password,
            params,
            reply,
        })?;
        answer.await.map_err(|_| HashError::Stopped)?
    }

    /// Checks a password against `phc`, or against the dummy hash when there is no user.
    pub async fn verify(
        &self,
        password: Password,
        phc: Option<String>,
    ) -> Result<VerifyOutcome, HashError> {
        let current = self.current();
        let (reply, answer) = oneshot::channel();
        let against_dummy = phc.is_none();
        self.submit(Job::Verify {
            password,
            phc: phc.unwrap_or_else(|| current.dummy.clone()),
            current,
            reply,
        })?;
        let outcome = answer.await.map_err(|_| HashError::Stopped)?;
        Ok(if against_dummy {
            VerifyOutcome {
                matches: false,
                needs_rehash: false,
            }
        } else {
            outcome
        })
    }

    fn submit(&self, job: Job) -> Result<(), HashError> {
        self.queued.fetch_add(1, Ordering::SeqCst);
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(err) => {
                self.queued.fetch_sub(1, Ordering::SeqCst);
                Err(match err {
                    TrySendError::Full(_) => HashError::Busy,
                    TrySendError::Disconnected(_) => HashError::Stopped,
                })
            }
        }
    }

    /// Jobs waiting for a worker.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    pub fn queue_limit(&self) -> usize {
        self.queue_limit
    }
}

/// A random throw-away password for the dummy hash.
fn dummy_secret() -> Result<String, HashError> {
    let salt = try_generate_salt().map_err(|_| HashError::Random)?;
    Ok(salt.iter().map(|byte| format!("{byte:02x}")).collect())
}

fn dummy_hash(params: &Params) -> Result<String, HashError> {
    hash_now(Password::from(dummy_secret()?).expose().as_bytes(), params)
}

/// A worker's loop (at lower priority): take a job, run argon2, answer; ends when every
/// `Hasher` is dropped.
fn work(receiver: &Mutex<Receiver<Job>>, queued: &AtomicUsize) {
    if let Err(err) = lower_thread_priority() {
        tracing::warn!(error = %err, "hashing thread keeps normal priority");
    }
    let mut scratch = Scratch::default();
    loop {
        let job = {
            let receiver = receiver.lock().unwrap_or_else(|poison| poison.into_inner());
            receiver.recv_timeout(IDLE_RELEASE)
        };
        let job = match job {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                scratch.release();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        queued.fetch_sub(1, Ordering::SeqCst);
        match job {
            Job::Hash {
                password,
                params,
                reply,
            } => {
                let _ = reply.send(hash_with(
                    &mut scratch,
                    password.expose().as_bytes(),
                    &params,
                ));
            }
            Job::Verify {
                password,
                phc,
                current,
                reply,
            } => {
                let outcome = verify_at_least_current(
                    &mut scratch,
                    password.expose().as_bytes(),
                    &phc,
                    &current,
                );
                let _ = reply.send(outcome);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> HashConfig {
        HashConfig {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
            workers: 1,
            queue_limit: 2,
        }
    }

    #[tokio::test]
    async fn hash_then_verify() {
        let hasher = Hasher::start(&cheap()).unwrap();
        let phc = hasher.hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
        let right = hasher
            .verify("correct horse".into(), Some(phc.clone()))
            .await
            .unwrap();
        assert_eq!(
            right,
            VerifyOutcome {
                matches: true,
                needs_rehash: false
            }
        );
        let wrong = hasher.verify("wrong".into(), Some(phc)).await.unwrap();
        assert!(!wrong.matches);
    }

    #[tokio::test]
    async fn unknown_user_never_matches_even_the_dummy_secret() {
        let hasher = Hasher::start(&cheap()).unwrap();
        let outcome = hasher.verify("anything".into(), None).await.unwrap();
        assert!(!outcome.matches);
    }

    #[test]
    fn parameter_check_compares_each_field() {
        let old = params_of(&cheap()).unwrap();
        let phc = hash_now(b"pw", &old).unwrap();
        let same = verify_now(b"pw", &phc, &old);
        assert!(same.matches && !same.needs_rehash);
        for (m, t, p) in [(128, 1, 1), (64, 2, 1), (64, 1, 2)] {
            let policy = Params::new(m, t, p, None).unwrap();
            let outcome = verify_now(b"pw", &phc, &policy);
            assert!(outcome.matches && outcome.needs_rehash, "{m} {t} {p}");
        }
        let argon2i =
            "$argon2i$v=19$m=64,t=1,p=1$c29tZXNhbHQ$iWh06vD8Fy27wf9npn6FXWiCX4K6pW6Ue1Bnzz07Z8A";
        assert!(verify_now(b"pw", argon2i, &old).needs_rehash);
        assert!(!verify_now(b"pw", "not a hash", &old).matches);
    }

    #[test]
    fn only_cheaper_or_unreadable_hashes_are_topped_up() {
        let policy = Params::new(128, 2, 1, None).unwrap();
        let same = hash_now(b"pw", &policy).unwrap();
        assert!(!costs_less(&same, &policy));
        for (m, t) in [(64, 2), (128, 1)] {
            let cheaper = hash_now(b"pw", &Params::new(m, t, 1, None).unwrap()).unwrap();
            assert!(costs_less(&cheaper, &policy), "{m} {t}");
        }
        assert!(costs_less("not a hash", &policy));
    }

    #[test]
    fn reused_memory_agrees_with_the_argon2_crate() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let mut scratch = Scratch::default();
        for (m, t) in [(64, 1), (128, 2), (64, 1)] {
            let params = Params::new(m, t, 1, None).unwrap();
            let ours = hash_with(&mut scratch, b"pw", &params).unwrap();
            let parsed = PasswordHash::new(&ours).unwrap();
            assert!(Argon2::default().verify_password(b"pw", &parsed).is_ok());
            assert!(Argon2::default().verify_password(b"pX", &parsed).is_err());
            let theirs = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
                .hash_password_with_salt(b"pw", b"somesaltsomesalt")
                .unwrap()
                .to_string();
            assert!(verify_with(&mut scratch, b"pw", &theirs, &params).matches);
            assert!(!verify_with(&mut scratch, b"pX", &theirs, &params).matches);
        }
        let argon2i =
            "$argon2i$v=19$m=64,t=1,p=1$c29tZXNhbHQ$iWh06vD8Fy27wf9npn6FXWiCX4K6pW6Ue1Bnzz07Z8A";
        let parsed = PasswordHash::new(argon2i).unwrap();
        for password in [&b"pw"[..], b"password"] {
            assert_eq!(
                verify_with(
                    &mut scratch,
                    password,
                    argon2i,
                    &params_of(&cheap()).unwrap()
                )
                .matches,
                Argon2::default().verify_password(password, &parsed).is_ok()
            );
        }
    }

    #[test]
    fn released_memory_is_taken_again_for_the_next_hash() {
        let params = params_of(&cheap()).unwrap();
        let mut scratch = Scratch::default();
        let phc = hash_with(&mut scratch, b"pw", &params).unwrap();
        scratch.release();
        assert!(scratch.0.is_empty());
        assert!(verify_with(&mut scratch, b"pw", &phc, &params).matches);
        assert_eq!(scratch.0.len(), params.block_count());
    }

    /// This thread's nice value, from /proc (field 19 of `stat`).
    fn own_niceness() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let after_name = stat.rsplit_once(')').unwrap().1;
        after_name
            .split_whitespace()
            .nth(16)
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn hashing_threads_run_nicer_than_the_rest() {
        std::thread::spawn(|| {
            let before = own_niceness();
            lower_thread_priority().unwrap();
            assert_eq!(own_niceness(), (before + HASH_NICENESS).min(19));
        })
        .join()
        .unwrap();
    }

    #[tokio::test]
    async fn full_queue_answers_busy_at_once() {
        let slow = HashConfig {
            m_cost: 65536,
            t_cost: 3,
            ..cheap()
        };
        let hasher = Hasher::start(&slow).unwrap();
        let mut pending = Vec::new();
        let mut busy = 0;
        for _ in 0..8 {
            let hasher = hasher.clone();
            let started = std::time::Instant::now();
            match hasher.submit_probe() {
                Ok(answer) => pending.push(answer),
                Err(HashError::Busy) => {
                    busy += 1;
                    assert!(started.elapsed() < std::time::Duration::from_millis(50));
                }
                Err(other) => panic!("{other}"),
            }
        }
        // one running + queue_limit (2) waiting at most
        assert!(busy >= 5, "busy = {busy}");
        for answer in pending {
            answer.await.unwrap().unwrap();
        }
        assert_eq!(hasher.queued(), 0);
    }

    impl Hasher {
        fn submit_probe(&self) -> Result<oneshot::Receiver<Result<String, HashError>>, HashError> {
            let (reply, answer) = oneshot::channel();
            self.submit(Job::Hash {
                password: "p".into(),
                params: self.params(),
                reply,
            })?;
            Ok(answer)
        }
    }
}
