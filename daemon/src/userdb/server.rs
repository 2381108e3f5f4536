//! The userdb door's accept loop and connections, run so that no userdb client can hold up the
//! main socket's clients or another userdb client.
//!
//! The door has its own task and connection cap and a timeout on every read and write, and it
//! answers each call (enumerations streamed page by page).

use super::directory::{Directory, Listing};
use super::varlink::{
    decode_call, encode_error, encode_reply, Call, Method, VarlinkError, MAX_MESSAGE,
};
use crate::connection::{Connection, Frame};
use crate::framing::Framer;
use crate::shutdown::Shutdown;
use crate::store::{Record, StoreError};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// userdb connections served at once; nss-systemd opens one per lookup and closes it after.
pub const MAX_CONNECTIONS: usize = 256;

/// Connections one uid may hold at once, so no local user can take every slot and leave the
/// system unable to resolve qam accounts. Root is not capped: it could stop qamd anyway, and
/// root daemons (sshd, cron) make the most lookups.
pub const MAX_PER_UID: usize = 16;

/// Longest wait for a call, and for a client to read a reply: nss-systemd sends its call as
/// soon as it connects and reads at once, so only a hostile client waits longer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What a call is answered with.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// The replies, known at once; none means `NoRecordFound`.
    Found(Vec<Value>),
    Error(VarlinkError),
    /// Every entry of a listing, streamed page by page.
    All(Listing),
}

/// Decides the answer to one lookup.
pub fn answer(directory: &Directory, method: &Method) -> Result<Answer, StoreError> {
    let found = |entry: Option<Value>| Answer::Found(entry.into_iter().collect());
    Ok(match method {
        Method::Info => found(Some(json!({
            "vendor": "qam",
            "product": "qamd",
            "version": env!("CARGO_PKG_VERSION"),
            "url": "https://example.invalid/qam",
            "interfaces": ["io.systemd.UserDatabase", "org.varlink.service"],
        }))),
        Method::User {
            uid: None,
            name: None,
        } => Answer::All(Listing::Users),
        Method::Group {
            gid: None,
            name: None,
        } => Answer::All(Listing::Groups),
        Method::User { uid, name } => match matching(directory, *uid, name.as_deref())? {
            Ok(account) => {
                found(account.map(|(name, record)| directory.user_record(&name, &record)))
            }
            Err(error) => Answer::Error(error),
        },
        Method::Group { gid, name } => match matching(directory, *gid, name.as_deref())? {
            Ok(account) => {
                found(account.map(|(name, record)| directory.group_record(&name, &record)))
            }
            Err(error) => Answer::Error(error),
        },
        Method::Memberships { user, group } => {
            let Some(shared) = directory.shared_group() else {
                return Ok(Answer::Found(Vec::new()));
            };
            let in_shared = group.as_deref().is_none_or(|group| group == shared);
            match user {
                Some(user) if in_shared => found(
                    directory
                        .account(user)?
                        .and_then(|(name, _)| directory.membership(&name)),
                ),
                None if in_shared => Answer::All(Listing::Memberships),
                _ => Answer::Found(Vec::new()),
            }
        }
    })
}

/// The account an id and/or a name select: both must name the same account.
fn matching(
    directory: &Directory,
    id: Option<u32>,
    name: Option<&str>,
) -> Result<Result<Option<(String, Record)>, VarlinkError>, StoreError> {
    let by_name = match name {
        Some(name) => Some(directory.account(name)?),
        None => None,
    };
    let by_id = match id {
        Some(id) => Some(directory.account_of(id)?),
        None => None,
    };
    Ok(match (by_name, by_id) {
        (Some(by_name), Some(by_id)) => {
            if by_name.is_some() && by_name == by_id {
                Ok(by_name)
            } else if by_name.is_some() || by_id.is_some() {
                Err(VarlinkError::ConflictingRecordFound)
            } else {
                Ok(None)
            }
        }
        (Some(only), None) | (None, Some(only)) => Ok(only),
        (None, None) => Ok(None),
    })
}

/// Accepts userdb connections until shutdown.
pub struct Listener {
    /// The userdb socket qamd bound (`[nss] socket`).
    listener: UnixListener,
    /// Shared by every connection: where the answers come from.
    directory: Arc<Directory>,
    /// Caps connections served at once (`MAX_CONNECTIONS`); more are closed at once.
    slots: Arc<Semaphore>,
    /// Open connections per peer uid, capped at `MAX_PER_UID`.
    per_uid: Arc<Mutex<HashMap<u32, usize>>>,
    /// Bound on waiting for a call and on each write.
    timeout: Duration,
}

/// A peer uid's share of the connections, given back when the connection ends.
struct UidSlot {
    /// The peer uid whose count this slot holds.
    uid: u32,
    /// The listener's counts, to decrement on drop.
    per_uid: Arc<Mutex<HashMap<u32, usize>>>,
}

impl UidSlot {
    fn take(per_uid: &Arc<Mutex<HashMap<u32, usize>>>, uid: u32) -> Option<UidSlot> {
        let mut open = per_uid.lock().unwrap_or_else(|poison| poison.into_inner());
        let count = open.entry(uid).or_insert(0);
        if *count >= MAX_PER_UID && uid != 0 {
            return None;
        }
        *count += 1;
        Some(UidSlot {
            uid,
            per_uid: Arc::clone(per_uid),
        })
    }
}

impl Drop for UidSlot {
    fn drop(&mut self) {
        let mut open = self
            .per_uid
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(count) = open.get_mut(&self.uid) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.uid);
            }
        }
    }
}

impl Listener {
    /// `idle_timeout` bounds each wait, and is itself cut to `CALL_TIMEOUT`.
    pub fn new(listener: UnixListener, directory: Directory, idle_timeout: Duration) -> Listener {
        Listener {
            listener,
            directory: Arc::new(directory),
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            per_uid: Arc::new(Mutex::new(HashMap::new())),
            timeout: idle_timeout.min(CALL_TIMEOUT),
        }
    }

    /// Serves until shutdown, then waits for the connections to finish their current reply.
    pub async fn run(self, shutdown: Shutdown) {
        let mut stop = shutdown.clone();
        let mut connections = JoinSet::new();
        let mut backoff = Duration::from_millis(10);
        loop {
            let accepted = tokio::select! {
                () = stop.recv() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _)) => {
                    backoff = Duration::from_millis(10);
                    let Ok(peer_uid) = stream.peer_cred().map(|cred| cred.uid()) else {
                        continue;
                    };
                    let Some(uid_slot) = UidSlot::take(&self.per_uid, peer_uid) else {
                        tracing::debug!(peer_uid, "userdb: too many connections of one uid");
                        continue;
                    };
                    let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
                        tracing::warn!("userdb connection limit reached; closing one");
                        continue;
                    };
                    let handler = Handler {
                        stream: Connection::framed(stream, Framer::new(0, MAX_MESSAGE)),
                        directory: Arc::clone(&self.directory),
                        timeout: self.timeout,
                        shutdown: shutdown.clone(),
                    };
                    connections.spawn(async move {
                        handler.run().await;
                        drop((slot, uid_slot));
                    });
                }
                Err(err) => {
                    // Usually EMFILE: wait a little instead of spinning.
                    tracing::warn!(error = %err, "userdb socket: accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
        drop(self.listener);
        while connections.join_next().await.is_some() {}
    }
}

/// One userdb connection: calls answered in order until the client closes or stalls.
struct Handler {
    /// The client's socket, framed by NUL: where calls come from and replies go.
    stream: Connection,
    /// Where the answers come from.
    directory: Arc<Directory>,
    /// Bound on waiting for a call and on each write.
    timeout: Duration,
    /// Ends the connection between calls (and an enumeration between pages) at shutdown.
    shutdown: Shutdown,
}

/// The client is gone, stalled or over the limit: close the connection.
struct Closed;

impl Handler {
    async fn run(mut self) {
        while self.serve_one().await.is_ok() {}
    }

    async fn serve_one(&mut self) -> Result<(), Closed> {
        let mut shutdown = self.shutdown.clone();
        let read = tokio::select! {
            read = tokio::time::timeout(self.timeout, self.stream.read_frame()) => read,
            () = shutdown.recv() => return Err(Closed),
        };
        let message = match read {
            Ok(Ok(Frame::Line(message))) => message,
            Ok(Ok(Frame::TooLarge)) => {
                tracing::debug!("userdb message too large; connection closed");
                return Err(Closed);
            }
            _ => return Err(Closed),
        };
        let call = match decode_call(message, self.directory.service()) {
            Ok(call) => call,
            Err(error) => return self.send_error(&error).await,
        };
        let answer = match answer(&self.directory, &call.method) {
            Ok(answer) => answer,
            Err(err) => {
                tracing::error!(error = %err, "userdb lookup failed");
                Answer::Error(VarlinkError::ServiceNotAvailable)
            }
        };
        if call.oneway {
            return Ok(());
        }
        match answer {
            Answer::Error(error) => self.send_error(&error).await,
            Answer::Found(replies) if replies.is_empty() => {
                self.send_error(&VarlinkError::NoRecordFound).await
            }
            Answer::Found(replies) => self.send_found(&call, &replies).await,
            Answer::All(_) if !call.more => self.send_error(&VarlinkError::ExpectedMore).await,
            Answer::All(listing) => self.stream_all(listing).await,
        }
    }

    /// Replies known at once: all of them with `more`, else the one asked for.
    async fn send_found(&mut self, call: &Call, replies: &[Value]) -> Result<(), Closed> {
        let count = if call.more { replies.len() } else { 1 };
        let mut out = Vec::new();
        for (index, reply) in replies.iter().take(count).enumerate() {
            encode_reply(&mut out, reply, index + 1 < count);
        }
        self.send(&out).await
    }

    /// Every entry of `listing`: `continues` on all but the last, which is held back until
    /// the next page shows whether more follow.
    async fn stream_all(&mut self, listing: Listing) -> Result<(), Closed> {
        let mut held: Option<Value> = None;
        let mut after: Option<String> = None;
        loop {
            if self.shutdown.is_shutdown() {
                return Err(Closed);
            }
            let (entries, last) = match self.directory.page(listing, after.as_deref()) {
                Ok(page) => page,
                Err(err) => {
                    tracing::error!(error = %err, "userdb enumeration failed");
                    return self.send_error(&VarlinkError::ServiceNotAvailable).await;
                }
            };
            let mut out = Vec::new();
            for entry in entries {
                if let Some(previous) = held.replace(entry) {
                    encode_reply(&mut out, &previous, true);
                }
            }
            if !out.is_empty() {
                self.send(&out).await?;
            }
            match last {
                Some(last) => after = Some(last),
                None => break,
            }
            // A long enumeration leaves room for every other task between pages.
            tokio::task::yield_now().await;
        }
        match held {
            Some(last) => {
                let mut out = Vec::new();
                encode_reply(&mut out, &last, false);
                self.send(&out).await
            }
            None => self.send_error(&VarlinkError::NoRecordFound).await,
        }
    }

    async fn send_error(&mut self, error: &VarlinkError) -> Result<(), Closed> {
        let mut out = Vec::new();
        encode_error(&mut out, error);
        self.send(&out).await
    }

    /// Writes replies; a client that does not read them within the timeout is dropped.
    async fn send(&mut self, out: &[u8]) -> Result<(), Closed> {
        match tokio::time::timeout(self.timeout, self.stream.write_answer(out)).await {
            Ok(Ok(())) => Ok(()),
            _ => {
                tracing::debug!("userdb client not reading; connection closed");
                Err(Closed)
            }
        }
    }
}
