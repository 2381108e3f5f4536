//! The hashing pool: argon2id threads behind a bounded queue fair between peers; a full queue
//! answers `busy` at once, and stored hashes with outlandish parameters are never run.

use crate::config::{HashConfig, PeersConfig};
use crate::hash_queue::{FairQueue, Refused, Taken};
use crate::legacy::Legacy;
use crate::scheduling;
use argon2::password_hash::phc::{Output, ParamsString, Salt};
use argon2::password_hash::try_generate_salt;
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use qam_client::Password;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use zeroize::Zeroize;

tokio::task_local! {
    /// The uid whose share of the hashing queue the current request's jobs take; set by the
    /// connection serving the request (see [`charged_to`]).
    static CHARGED_TO: u32;
}

/// The queue share of jobs that no peer asked for (a config reload's new dummy hash).
const QAMD_ITSELF: u32 = u32::MAX;

/// Runs `request` with its hashing charged to peer `uid`'s share of the queue.
pub async fn charged_to<F: std::future::Future>(uid: u32, request: F) -> F::Output {
    CHARGED_TO.scope(uid, request).await
}

/// Why hashing did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("every hashing worker is busy and the queue (or this peer's share) is full")]
    Busy,
    #[error("too many verifies of names without an account")]
    UnknownNamesThrottled,
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
    /// Whether the password is the stored one: decides between `accepted` and `denied`.
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
        settings: Arc<HashSettings>,
        reply: oneshot::Sender<VerifyOutcome>,
    },
}

/// The parameters for new hashes and the dummy hash made with them.
struct HashSettings {
    /// What new hashes are made with, and the cost every refusal is topped up to; a stored
    /// hash with other parameters is rehashed at its user's next login.
    params: Params,
    /// Verified against when the user is unknown, so every `denied` costs the same work.
    dummy: String,
}

/// Handle to the pool; cheap to clone.
#[derive(Clone)]
pub struct Hasher {
    /// Jobs waiting for a worker, by peer.
    queue: Arc<FairQueue<Job>>,
    /// Jobs being hashed right now.
    running: Arc<AtomicUsize>,
    /// Stops the workers when the last handle is dropped.
    _stopper: Arc<Stopper>,
    /// The parameters in force and their dummy hash, replaced whole by `set_params` on
    /// reload: a verify keeps the version it was queued with.
    settings: Arc<RwLock<Arc<HashSettings>>>,
    /// Bounds verifies of names without an account (they can be made up without end).
    unknown_names: Arc<Mutex<TokenBucket>>,
    /// How many hashing threads were started, for `status` and the start-up log line.
    workers: usize,
    /// The configured bound on waiting jobs (the queue holds its own copy), for `status`.
    queue_limit: usize,
}

/// Stops the queue (and so the workers) when dropped.
struct Stopper(Arc<FairQueue<Job>>);

impl Drop for Stopper {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// A rate with a burst of one second's worth.
struct TokenBucket {
    /// Tokens added per second, and the most there can be.
    rate: f64,
    /// What may still be spent: each verify of an unknown name takes one, and time adds
    /// them back up to `rate`.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    refilled: Instant,
}

impl TokenBucket {
    fn new(rate: u32) -> TokenBucket {
        TokenBucket {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            refilled: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The parameters a stored hash may have, derived from the configured ones: far enough
/// above them for hashes made before the cost was lowered, never a cost that jams a worker
/// or an allocation that aborts qamd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredBounds {
    /// The most memory (KiB) a stored or imported hash may ask for; `check` refuses more,
    /// which could make the worker's allocation abort qamd.
    pub max_m_cost: u32,
    /// The most passes a stored or imported hash may ask for; `check` refuses more, which
    /// would hold a worker for too long.
    pub max_t_cost: u32,
    /// The most lanes a stored or imported hash may ask for; `check` refuses more without
    /// running it.
    pub max_p_cost: u32,
}

/// Salt lengths (bytes) a stored hash may have: the PHC format's range.
const SALT_LENGTHS: std::ops::RangeInclusive<usize> = 8..=64;
/// Output lengths (bytes) a stored hash may have: at least 128 bits, at most the PHC maximum.
const OUTPUT_LENGTHS: std::ops::RangeInclusive<usize> = 16..=Output::MAX_LENGTH;

impl StoredBounds {
    /// Four times the configured memory and passes, and at least OWASP's figures four times
    /// over, so lowering the configured cost never locks out existing hashes.
    pub fn around(params: &Params) -> StoredBounds {
        StoredBounds {
            max_m_cost: params.m_cost().max(19_456).saturating_mul(4),
            max_t_cost: params.t_cost().max(2).saturating_mul(4),
            max_p_cost: params.p_cost().max(4),
        }
    }

    /// Why `phc` may not be stored or run, if it may not.
    pub fn check(&self, phc: &str) -> Result<(), String> {
        let hash = PasswordHash::new(phc).map_err(|_| "not a PHC string".to_owned())?;
        if Algorithm::try_from(hash.algorithm.as_str()).is_err() {
            return Err("not an argon2 hash".into());
        }
        let params = Params::try_from(&hash).map_err(|_| "argon2 parameters unreadable")?;
        if params.m_cost() > self.max_m_cost
            || params.t_cost() > self.max_t_cost
            || params.p_cost() > self.max_p_cost
        {
            return Err(format!(
                "argon2 parameters m={},t={},p={} exceed m={},t={},p={} (four times the configured cost)",
                params.m_cost(),
                params.t_cost(),
                params.p_cost(),
                self.max_m_cost,
                self.max_t_cost,
                self.max_p_cost
            ));
        }
        let salt_len = hash.salt.as_ref().map_or(0, |salt| salt.len());
        if !SALT_LENGTHS.contains(&salt_len) {
            return Err(format!("salt of {salt_len} bytes (8 to 64 allowed)"));
        }
        let output_len = hash.hash.as_ref().map_or(0, |output| output.len());
        if !OUTPUT_LENGTHS.contains(&output_len) {
            return Err(format!(
                "hash output of {output_len} bytes (16 to 64 allowed)"
            ));
        }
        Ok(())
    }
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
pub const IDLE_RELEASE: Duration = Duration::from_secs(5);

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

/// Checks a password against a PHC string in `scratch`. An unreadable hash, or one outside
/// [`StoredBounds`] (never run), never matches and is flagged for rehash (it cannot be, since
/// it never matches).
pub fn verify_with(
    scratch: &mut Scratch,
    password: &[u8],
    phc: &str,
    policy: &Params,
) -> VerifyOutcome {
    if Legacy::is_legacy(phc) {
        // A verifier moved in from another store: any match is replaced by argon2id.
        return VerifyOutcome {
            matches: Legacy::parse(phc).is_ok_and(|legacy| legacy.matches(password)),
            needs_rehash: true,
        };
    }
    if let Err(why) = StoredBounds::around(policy).check(phc) {
        tracing::warn!("stored hash refused without hashing: {why}");
        return VerifyOutcome {
            matches: false,
            needs_rehash: true,
        };
    }
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
    settings: &HashSettings,
) -> VerifyOutcome {
    let outcome = verify_with(scratch, password, phc, &settings.params);
    if !outcome.matches && costs_less(phc, &settings.params) {
        verify_with(scratch, password, &settings.dummy, &settings.params);
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
    pub fn start(config: &HashConfig, peers: &PeersConfig) -> Result<Hasher, HashError> {
        let params = params_of(config)?;
        let dummy = dummy_hash(&params)?;
        let workers = config.worker_count();
        let queue = Arc::new(FairQueue::new(
            config.queue_limit,
            peers.hash_queue_per_peer,
        ));
        let running = Arc::new(AtomicUsize::new(0));
        for index in 0..workers {
            let (queue, running) = (Arc::clone(&queue), Arc::clone(&running));
            let niceness = config.niceness;
            std::thread::Builder::new()
                .name(format!("qam-hash-{index}"))
                .spawn(move || work(&queue, &running, niceness))
                .map_err(|err| HashError::Argon2(format!("cannot start hashing thread: {err}")))?;
        }
        Ok(Hasher {
            _stopper: Arc::new(Stopper(Arc::clone(&queue))),
            queue,
            running,
            settings: Arc::new(RwLock::new(Arc::new(HashSettings { params, dummy }))),
            unknown_names: Arc::new(Mutex::new(TokenBucket::new(
                peers.unknown_name_verifies_per_second,
            ))),
            workers,
            queue_limit: config.queue_limit,
        })
    }

    /// The parameters in force and their dummy hash, as one version.
    fn settings(&self) -> Arc<HashSettings> {
        Arc::clone(
            &self
                .settings
                .read()
                .unwrap_or_else(|poison| poison.into_inner()),
        )
    }

    /// Parameters used for new hashes.
    pub fn params(&self) -> Params {
        self.settings().params.clone()
    }

    /// Switches new hashes (and the dummy) to other parameters, e.g. on config reload.
    pub async fn set_params(&self, config: &HashConfig) -> Result<(), HashError> {
        let params = params_of(config)?;
        let dummy = self
            .hash_with(Password::from(dummy_secret()?), params.clone())
            .await?;
        *self
            .settings
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) =
            Arc::new(HashSettings { params, dummy });
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
        let settings = self.settings();
        let (reply, answer) = oneshot::channel();
        let against_dummy = phc.is_none();
        if against_dummy && !self.unknown_name_allowed() {
            return Err(HashError::UnknownNamesThrottled);
        }
        self.submit(Job::Verify {
            password,
            phc: phc.unwrap_or_else(|| settings.dummy.clone()),
            settings,
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

    fn unknown_name_allowed(&self) -> bool {
        self.unknown_names
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take(Instant::now())
    }

    /// Queues a job on the share of the peer the current request is charged to.
    fn submit(&self, job: Job) -> Result<(), HashError> {
        let peer = CHARGED_TO.try_with(|uid| *uid).unwrap_or(QAMD_ITSELF);
        self.queue.push(peer, job).map_err(|refused| match refused {
            Refused::Full => HashError::Busy,
            Refused::Stopped => HashError::Stopped,
        })
    }

    /// Jobs waiting for a worker.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// True while any job is hashed or waiting.
    pub fn has_work(&self) -> bool {
        self.running.load(Ordering::Relaxed) > 0 || !self.queue.is_empty()
    }

    /// Counts as one job being hashed until the guard is dropped: lets tests of what
    /// depends on hashing running hold it exactly as long as they need.
    #[cfg(test)]
    pub(crate) fn pretend_hashing(&self) -> PretendHashing {
        self.running.fetch_add(1, Ordering::Relaxed);
        PretendHashing(Arc::clone(&self.running))
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    pub fn queue_limit(&self) -> usize {
        self.queue_limit
    }
}

/// A job that [`Hasher::has_work`] counts until dropped (tests only).
#[cfg(test)]
pub(crate) struct PretendHashing(
    /// The pool's count of running jobs, given back on drop.
    Arc<AtomicUsize>,
);

#[cfg(test)]
impl Drop for PretendHashing {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
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
fn work(queue: &FairQueue<Job>, running: &AtomicUsize, niceness: i32) {
    if let Err(err) = scheduling::lower_thread_priority(niceness) {
        tracing::warn!(error = %err, "hashing thread keeps normal priority");
    }
    let mut scratch = Scratch::default();
    loop {
        let job = match queue.take(IDLE_RELEASE) {
            Taken::Job(job) => job,
            Taken::Idle => {
                scratch.release();
                continue;
            }
            Taken::Stopped => return,
        };
        running.fetch_add(1, Ordering::Relaxed);
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
                settings,
                reply,
            } => {
                let outcome = verify_at_least_current(
                    &mut scratch,
                    password.expose().as_bytes(),
                    &phc,
                    &settings,
                );
                let _ = reply.send(outcome);
            }
        }
        running.fetch_sub(1, Ordering::Relaxed);
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
            niceness: 0,
        }
    }

    #[tokio::test]
    async fn hash_then_verify() {
        let hasher = Hasher::start(&cheap(), &PeersConfig::default()).unwrap();
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
        let hasher = Hasher::start(&cheap(), &PeersConfig::default()).unwrap();
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

    #[tokio::test]
    async fn full_queue_answers_busy_at_once() {
        let slow = HashConfig {
            m_cost: 65536,
            t_cost: 3,
            ..cheap()
        };
        let hasher = Hasher::start(&slow, &PeersConfig::default()).unwrap();
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
