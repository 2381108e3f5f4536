//! The accept loop and the life of each connection: peer credentials, the connection cap, the
//! idle timeout, answers in order, and a graceful stop that lets in-flight requests finish.

use crate::connection::{Connection, Frame};
use crate::dispatch::answer_line;
use crate::policy::{Grants, Peer, Policy};
use crate::shutdown::Shutdown;
use crate::state::State;
use qam_client::wire::encode_error;
use qam_client::{ErrorCode, WireError};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Accepts connections until shutdown, then waits for every connection task to finish.
pub struct Listener {
    /// The bound protocol socket.
    listener: UnixListener,
    /// Cloned into each connection: the accounts and the policy.
    state: Arc<State>,
    /// Caps open connections; a connection beyond it gets one `busy` answer.
    limit: Arc<Semaphore>,
    /// Closes a connection with no complete request (or unread answers) for this long.
    idle_timeout: Duration,
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
        max_connections: usize,
        idle_timeout: Duration,
        shutdown: Shutdown,
    ) -> Listener {
        let (finished, all_finished) = mpsc::channel(1);
        Listener {
            listener,
            state,
            limit: Arc::new(Semaphore::new(max_connections)),
            idle_timeout,
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
        let _ = self.all_finished.recv().await;
    }

    fn admit(&self, stream: UnixStream) {
        let peer = match Peer::of(&stream) {
            Ok(peer) => peer,
            Err(err) => {
                tracing::warn!(error = %err, "peer credentials unavailable; connection dropped");
                return;
            }
        };
        let Ok(permit) = Arc::clone(&self.limit).try_acquire_owned() else {
            tracing::warn!(peer_uid = peer.uid, "connection limit reached; refusing");
            tokio::spawn(refuse_busy(stream));
            return;
        };
        let handler = Handler {
            connection: Connection::new(stream),
            state: Arc::clone(&self.state),
            peer,
            idle_timeout: self.idle_timeout,
            shutdown: self.shutdown.clone(),
            _permit: permit,
            _finished: self.finished.clone(),
        };
        tokio::spawn(handler.run());
    }
}

async fn refuse_busy(mut stream: UnixStream) {
    let answer = encode_error(
        None,
        &WireError::new(ErrorCode::Busy, "too many connections; retry shortly"),
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&answer)).await;
}

/// One connection's task. Fields drop in order: the permit is released before the socket
/// closes, so a client that sees its connection end can connect again at once.
struct Handler {
    /// This connection's place under `max_connections`, released on drop.
    _permit: OwnedSemaphorePermit,
    /// The framed socket.
    connection: Connection,
    /// The accounts, the policy and the connection count.
    state: Arc<State>,
    /// Who is on the other end, for grants and logs.
    peer: Peer,
    /// How long a client may send nothing or read nothing.
    idle_timeout: Duration,
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
        let mut grants_for: Option<(Arc<Policy>, Grants)> = None;
        loop {
            if self.shutdown.is_shutdown() {
                return;
            }
            let mut shutdown = self.shutdown.clone();
            let read = tokio::select! {
                read = tokio::time::timeout(self.idle_timeout, self.connection.read_frame()) => read,
                () = shutdown.recv() => return,
            };
            let line = match read {
                Err(_) => {
                    tracing::debug!(peer_uid = self.peer.uid, "idle connection closed");
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
            let policy = self.state.policy();
            let grants = match &grants_for {
                Some((seen, grants)) if Arc::ptr_eq(seen, &policy) => grants.clone(),
                _ => {
                    let grants = policy.grants(self.peer);
                    grants_for = Some((Arc::clone(&policy), grants.clone()));
                    grants
                }
            };
            let answer = answer_line(&self.state, self.peer, &grants, line).await;
            if self.write(&answer).await.is_err() {
                return;
            }
        }
    }

    /// Writes an answer; a client that does not read it within the idle timeout is dropped.
    async fn write(&mut self, answer: &[u8]) -> Result<(), ()> {
        match tokio::time::timeout(self.idle_timeout, self.connection.write_answer(answer)).await {
            Ok(Ok(())) => Ok(()),
            _ => {
                tracing::debug!(
                    peer_uid = self.peer.uid,
                    "client not reading; connection closed"
                );
                Err(())
            }
        }
    }
}
