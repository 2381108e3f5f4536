//! The accept loop and the life of each connection: credentials, shares, idle timeout and
//! maximum age, answers in order one per turn, and a stop that lets requests finish a while.

use crate::config::Config;
use crate::connection::{Connection, Frame};
use crate::cpu_budget::CpuBudgets;
use crate::dispatch::answer_line;
use crate::hasher::charged_to;
use crate::policy::{Credentials, Grants, Policy};
use crate::seats::{Seat, SeatLimits, Seats};
use crate::shutdown::Shutdown;
use crate::state::State;
use qam_client::wire::encode_error;
use qam_client::{ErrorCode, WireError};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long a stop waits for requests in flight before it stops anyway (a request stuck on
/// the hashing pool must not hold the daemon).
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// How long each connection may live and idle.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// Closes a connection with no complete request (or unread answers) for this long.
    pub idle: Duration,
    /// Closes a connection this long after it was accepted, between two requests.
    pub max_age: Duration,
}

impl Lifetimes {
    pub fn of(config: &Config) -> Lifetimes {
        Lifetimes {
            idle: config.idle_timeout(),
            max_age: config.max_connection_age(),
        }
    }
}

/// The connection shares a config asks for.
pub fn seat_limits(config: &Config) -> SeatLimits {
    SeatLimits {
        total: config.max_connections,
        per_peer: config.peers.connections_per_peer,
        admin_reserve: config
            .peers
            .admin_reserved_connections
            .min(config.max_connections / 4),
    }
}

/// Accepts connections until shutdown, then waits for every connection task to finish.
pub struct Listener {
    /// The bound protocol socket.
    listener: UnixListener,
    /// Cloned into each connection: the accounts and the policy.
    state: Arc<State>,
    /// The open connections by peer; a connection without a seat gets one `busy` answer.
    seats: Seats,
    /// Each peer's CPU time on this side while passwords are hashed.
    budgets: CpuBudgets,
    /// How long connections may idle and live.
    lifetimes: Lifetimes,
    /// Stops accepting; cloned into each connection so it stops too.
    shutdown: Shutdown,
    /// Cloned into each connection task; `run` waits until every clone is dropped.
    finished: mpsc::Sender<()>,
    /// Yields `None` once every connection task dropped its `finished` clone.
    all_finished: mpsc::Receiver<()>,
}

impl Listener {
    pub fn new(
        listener: UnixListener,
        state: Arc<State>,
        limits: SeatLimits,
        budgets: CpuBudgets,
        lifetimes: Lifetimes,
        shutdown: Shutdown,
    ) -> Listener {
        let (finished, all_finished) = mpsc::channel(1);
        Listener {
            listener,
            state,
            seats: Seats::new(limits),
            budgets,
            lifetimes,
            shutdown,
            finished,
            all_finished,
        }
    }

    /// Serves until shutdown; returns once every connection has closed.
    pub async fn run(mut self) {
        let mut shutdown = self.shutdown.clone();
        let mut backoff = Duration::from_millis(10);
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                () = shutdown.recv() => break,
            };
            match accepted {
                Ok((stream, _)) => {
                    backoff = Duration::from_millis(10);
                    self.admit(stream);
                }
                Err(err) => {
                    // Usually EMFILE: wait a little instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
        drop(self.listener);
        drop(self.finished);
        if tokio::time::timeout(STOP_GRACE, self.all_finished.recv())
            .await
            .is_err()
        {
            tracing::warn!(
                "stopping without waiting longer for requests in flight ({} s)",
                STOP_GRACE.as_secs()
            );
        }
    }

    fn admit(&self, stream: UnixStream) {
        let credentials = match Credentials::of(&stream) {
            Ok(credentials) => credentials,
            Err(err) => {
                tracing::warn!(error = %err, "peer credentials unavailable; connection dropped");
                return;
            }
        };
        let policy = self.state.policy();
        let grants = policy.grants(&credentials);
        let uid = credentials.peer.uid;
        let seat = match self.seats.take(uid, grants.is_admin()) {
            Ok(seat) => seat,
            Err(refused) => {
                tracing::warn!(peer_uid = uid, "connection refused: {refused}");
                tokio::spawn(refuse_busy(stream, refused.to_string()));
                return;
            }
        };
        let handler = Handler {
            connection: Connection::new(stream),
            state: Arc::clone(&self.state),
            grants_for: (policy, grants),
            credentials,
            budgets: self.budgets.clone(),
            lifetimes: self.lifetimes,
            closes_at: Instant::now() + self.lifetimes.max_age,
            shutdown: self.shutdown.clone(),
            _seat: seat,
            _finished: self.finished.clone(),
        };
        let metered = self.budgets.metered(uid, handler.run());
        tokio::spawn(charged_to(uid, metered));
    }
}

/// The grants of `credentials` under the policy in force now (`cached` is worked out again
/// after a reload).
fn current_grants(
    state: &State,
    credentials: &Credentials,
    cached: &mut (Arc<Policy>, Grants),
) -> Grants {
    let policy = state.policy();
    if !Arc::ptr_eq(&cached.0, &policy) {
        let grants = policy.grants(credentials);
        *cached = (policy, grants);
    }
    cached.1.clone()
}

async fn refuse_busy(mut stream: UnixStream, why: String) {
    let answer = encode_error(None, &WireError::new(ErrorCode::Busy, why));
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&answer)).await;
}

/// One connection's task. Fields drop in order: the seat is freed before the socket
/// closes, so a client that sees its connection end can connect again at once.
struct Handler {
    /// This connection's seat among its peer's, freed on drop.
    _seat: Seat,
    /// The client's socket with its framing: where requests come from and answers go.
    connection: Connection,
    /// The accounts, the policy and the connection count.
    state: Arc<State>,
    /// The peer's process as it was when it connected.
    credentials: Credentials,
    /// The grants of `credentials` under the policy they were worked out with; worked out
    /// again after a reload.
    grants_for: (Arc<Policy>, Grants),
    /// Makes the peer wait before its next request while it is over its CPU budget.
    budgets: CpuBudgets,
    /// How long a client may send nothing or read nothing, and live.
    lifetimes: Lifetimes,
    /// When the connection is closed however busy (`max_connection_seconds` after accept).
    closes_at: Instant,
    /// Ends the connection between requests on shutdown.
    shutdown: Shutdown,
    /// Dropped when the task ends, so `Listener::run` knows when all have.
    _finished: mpsc::Sender<()>,
}

impl Handler {
    async fn run(mut self) {
        let _open = self.state.connection_opened();
        self.serve().await;
    }

    async fn serve(&mut self) {
        let uid = self.credentials.peer.uid;
        loop {
            if self.shutdown.is_shutdown() {
                return;
            }
            let mut shutdown = self.shutdown.clone();
            let wait = self.budgets.wait(uid);
            if !wait.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = shutdown.recv() => return,
                }
            }
            let idle_until = (Instant::now() + self.lifetimes.idle).min(self.closes_at);
            let read = tokio::select! {
                read = tokio::time::timeout_at(idle_until, self.connection.read_frame()) => read,
                () = shutdown.recv() => return,
            };
            let line = match read {
                Err(_) => {
                    tracing::debug!(peer_uid = uid, "idle or old connection closed");
                    return;
                }
                Ok(Err(_)) | Ok(Ok(Frame::Closed)) => return,
                Ok(Ok(Frame::TooLarge)) => {
                    let answer = encode_error(
                        None,
                        &WireError::new(ErrorCode::TooLarge, "request line exceeds 65536 bytes"),
                    );
                    let _ = self.write(&answer).await;
                    return;
                }
                Ok(Ok(Frame::Line(line))) => line,
            };
            let grants = current_grants(&self.state, &self.credentials, &mut self.grants_for);
            let answer = answer_line(&self.state, self.credentials.peer, &grants, line).await;
            if self.write(&answer).await.is_err() {
                return;
            }
            if Instant::now() >= self.closes_at {
                tracing::debug!(peer_uid = uid, "connection closed at its maximum age");
                return;
            }
            // One request per turn: a connection with many requests queued behind each
            // other lets every other connection's request through between two of its own.
            tokio::task::yield_now().await;
        }
    }

    /// Writes an answer; a client that does not read it within the idle timeout is dropped.
    async fn write(&mut self, answer: &[u8]) -> Result<(), ()> {
        match tokio::time::timeout(self.lifetimes.idle, self.connection.write_answer(answer)).await
        {
            Ok(Ok(())) => Ok(()),
            _ => {
                tracing::debug!(
                    peer_uid = self.credentials.peer.uid,
                    "client not reading; connection closed"
                );
                Err(())
            }
        }
    }
}
