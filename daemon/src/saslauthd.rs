//! The saslauthd-compatible door (`saslauthd_socket`, off by default): Cyrus SASL clients such
//! as Postfix and Prosody's mod_auth_cyrus check passwords here with the same `Accounts::verify`.
//!
//! Wire format (Cyrus SASL 2.1.28): one request per connection, four fields — login, password,
//! service, realm — each a u16 big-endian length and that many bytes; the answer is a u16 length
//! and text starting `OK` or `NO`, then the connection closes. Each field is capped at 256 bytes
//! like the real saslauthd; fields after the fourth are never read. Access is decided by
//! SO_PEERCRED exactly as on the main socket: the peer must be granted `verify`. Connections
//! are shared between peers like the main socket's, and a request must arrive within
//! `peers.saslauthd_request_seconds`.

use crate::config::Config;
use crate::daemon::StartError;
use crate::hasher::charged_to;
use crate::policy::{Credentials, Grants};
use crate::seats::Seats;
use crate::served::Served;
use crate::server::seat_limits;
use crate::shutdown::Shutdown;
use crate::socket;
use crate::state::State;
use qam_client::wire::Op;
use qam_client::{ErrorCode, Password};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;
use tracing::Instrument;
use zeroize::Zeroizing;

/// Longest field the real saslauthd accepts; longer ones end the request with `NO`.
pub const MAX_FIELD: usize = 256;

/// Names of the four fields, in wire order.
const FIELD_NAMES: [&str; 4] = ["login", "password", "service", "realm"];

/// Longest request this door reads: four capped fields with their length prefixes.
pub const MAX_FRAME: usize = FIELD_NAMES.len() * (2 + MAX_FIELD);

/// One decoded request. Only the password is secret.
#[derive(Debug)]
pub struct SaslRequest {
    /// The name as the client sent it.
    pub login: String,
    /// Checked, never logged.
    pub password: Password,
    /// The service asking (`smtp`, `xmpp`), for the debug span only.
    pub service: String,
    /// Checked against `saslauthd_realms`.
    pub realm: String,
}

/// Why a request is answered `NO` before any account is looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the {0} field is longer than {MAX_FIELD} bytes")]
    FieldTooLong(&'static str),
    #[error("empty login or password")]
    Empty,
    #[error("the {0} field is not UTF-8")]
    NotUtf8(&'static str),
}

/// Decodes a request from the bytes received so far: `Ok(None)` while the fourth field is
/// still incomplete. Bytes after the fourth field (a newer client's fifth field) are ignored.
pub fn parse_frame(buf: &[u8]) -> Result<Option<SaslRequest>, FrameError> {
    let mut fields: [&[u8]; 4] = [&[]; 4];
    let mut rest = buf;
    for (slot, name) in fields.iter_mut().zip(FIELD_NAMES) {
        let Some((prefix, after)) = rest.split_first_chunk::<2>() else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes(*prefix));
        if len > MAX_FIELD {
            return Err(FrameError::FieldTooLong(name));
        }
        if after.len() < len {
            return Ok(None);
        }
        let (field, after) = after.split_at(len);
        *slot = field;
        rest = after;
    }
    let [login, password, service, realm] = fields;
    if login.is_empty() || password.is_empty() {
        return Err(FrameError::Empty);
    }
    let text = |bytes, name| std::str::from_utf8(bytes).map_err(|_| FrameError::NotUtf8(name));
    Ok(Some(SaslRequest {
        login: text(login, "login")?.to_owned(),
        password: Password::from(text(password, "password")?),
        service: text(service, "service")?.to_owned(),
        realm: text(realm, "realm")?.to_owned(),
    }))
}

/// The answer frame: a u16 big-endian length, then the text.
pub fn encode_reply(text: &str) -> Vec<u8> {
    encode_fields(&[text.as_bytes()])
}

/// Fields in saslauthd framing (as clients send requests): each a u16 big-endian length,
/// then the bytes; a field longer than 65535 bytes is cut.
pub fn encode_fields(fields: &[&[u8]]) -> Vec<u8> {
    let mut frame = Vec::new();
    for field in fields {
        let bytes = &field[..field.len().min(usize::from(u16::MAX))];
        frame.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        frame.extend_from_slice(bytes);
    }
    frame
}

/// True when `realm` is accepted: any realm when the list is empty, else one of the list
/// (compared without regard to ASCII case, as realms are domain names).
pub fn realm_accepted(accepted: &[String], realm: &str) -> bool {
    accepted.is_empty() || accepted.iter().any(|ok| ok.eq_ignore_ascii_case(realm))
}

/// Opens the door when configured: the socket systemd passed (`FileDescriptorName=saslauthd`),
/// else `saslauthd_socket` bound like the main socket (0660, `socket_group`).
pub fn start(
    config: &Config,
    passed: Option<std::os::unix::net::UnixListener>,
    state: &Arc<State>,
    shutdown: Shutdown,
) -> Result<Served, StartError> {
    let (std_listener, bound) = match (passed, &config.saslauthd_socket) {
        (Some(listener), _) => (listener, None),
        (None, Some(path)) => {
            let gid = socket::socket_gid(config.socket_group.as_deref())?;
            (socket::bind(path, gid)?, Some(path.clone()))
        }
        (None, None) => return Ok(Served::nothing("saslauthd")),
    };
    let listener = socket::into_async(std_listener).map_err(StartError::Listen)?;
    let saslauthd = SaslauthdListener::new(
        Arc::clone(state),
        config.saslauthd_realms.clone(),
        Seats::new(seat_limits(config)),
        Timeouts {
            request: Duration::from_secs(config.peers.saslauthd_request_seconds),
            answer: config.idle_timeout(),
        },
    );
    tracing::info!(
        socket = %bound.as_deref().unwrap_or(std::path::Path::new("(passed by systemd)")).display(),
        realms = ?config.saslauthd_realms,
        "saslauthd-compatible socket open"
    );
    let task = tokio::spawn(Arc::new(saslauthd).serve(listener, shutdown));
    Ok(Served::new(task, bound, "saslauthd"))
}

/// How long the door waits on a client.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// For the whole request, from accept (`peers.saslauthd_request_seconds`): a client
    /// that connects and stays silent frees its seat this soon.
    pub request: Duration,
    /// For the client to take the answer (`idle_timeout_seconds`).
    pub answer: Duration,
}

/// The saslauthd-compatible door: what its connections share, and the loop accepting them
/// ([`SaslauthdListener::serve`]).
pub struct SaslauthdListener {
    /// The accounts verified against and the policy saying who may.
    state: Arc<State>,
    /// `saslauthd_realms`: accepted realms, empty for any.
    realms: Vec<String>,
    /// Connections served at once, shared between peers as on the main socket; a connection
    /// without a seat is answered `NO busy`.
    seats: Seats,
    /// How long a client may take to send its request and to take the answer.
    timeouts: Timeouts,
}

impl SaslauthdListener {
    pub fn new(
        state: Arc<State>,
        realms: Vec<String>,
        seats: Seats,
        timeouts: Timeouts,
    ) -> SaslauthdListener {
        SaslauthdListener {
            state,
            realms,
            seats,
            timeouts,
        }
    }

    /// Accepts connections until shutdown; each is served by its own task, so a slow or
    /// silent client never delays another. After shutdown it stops accepting and returns once
    /// the requests being verified are answered (clients still sending are dropped).
    pub async fn serve(self: Arc<Self>, listener: UnixListener, shutdown: Shutdown) {
        let mut stop = shutdown.clone();
        let mut connections = JoinSet::new();
        loop {
            let accepted = tokio::select! {
                () = stop.recv() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _)) => {
                    let saslauthd = Arc::clone(&self);
                    let shutdown = shutdown.clone();
                    connections.spawn(async move { saslauthd.answer(stream, shutdown).await });
                }
                Err(err) => {
                    // Usually EMFILE: give in-flight connections a moment to finish.
                    tracing::warn!(error = %err, "saslauthd socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        drop(listener);
        while connections.join_next().await.is_some() {}
    }

    /// Serves one connection: read one request, answer it, close.
    async fn answer(&self, mut stream: UnixStream, shutdown: Shutdown) {
        let credentials = match Credentials::of(&stream) {
            Ok(credentials) => credentials,
            Err(err) => {
                tracing::warn!(error = %err, "saslauthd socket: no peer credentials");
                return;
            }
        };
        let grants = self.state.policy().grants(&credentials);
        let uid = credentials.peer.uid;
        let reply = match self.seats.take(uid, grants.is_admin()) {
            Ok(_seat) => {
                charged_to(
                    uid,
                    self.decide(&mut stream, &credentials, &grants, shutdown),
                )
                .await
            }
            Err(refused) => {
                tracing::debug!(peer_uid = uid, "saslauthd socket: {refused}");
                Some("NO busy".to_owned())
            }
        };
        if let Some(reply) = reply {
            let frame = encode_reply(&reply);
            let sent = tokio::time::timeout(self.timeouts.answer, stream.write_all(&frame)).await;
            if !matches!(sent, Ok(Ok(()))) {
                tracing::debug!("saslauthd socket: client left before the answer");
            }
        }
    }

    /// The answer text, or `None` to close without one (the client left or stalled).
    async fn decide(
        &self,
        stream: &mut UnixStream,
        credentials: &Credentials,
        grants: &Grants,
        mut shutdown: Shutdown,
    ) -> Option<String> {
        let peer = credentials.peer;
        let received = tokio::select! {
            received = tokio::time::timeout(self.timeouts.request, read_request(stream)) => received,
            () = shutdown.recv() => return None,
        };
        let request = match received {
            Ok(Received::Request(request)) => request,
            Ok(Received::Refused(err)) => {
                tracing::debug!(peer_uid = peer.uid, error = %err, "saslauthd request refused");
                return Some(format!("NO {err}"));
            }
            Ok(Received::Gone) => return None,
            Err(_) => {
                tracing::debug!(peer_uid = peer.uid, "saslauthd request timed out");
                return None;
            }
        };
        if !grants.allows(Op::Verify) {
            tracing::info!(
                peer_uid = peer.uid,
                op = "verify",
                "saslauthd: operation forbidden"
            );
            return Some("NO forbidden".to_owned());
        }
        if !realm_accepted(&self.realms, &request.realm) {
            tracing::info!(peer_uid = peer.uid, realm = %request.realm, "saslauthd: realm not accepted");
            return Some("NO realm not accepted".to_owned());
        }
        let span = tracing::debug_span!(
            "saslauthd",
            peer_uid = peer.uid,
            service = %request.service,
            realm = %request.realm
        );
        let verdict = self
            .state
            .accounts
            .verify(
                &request.login,
                request.password,
                crate::throttle::Source::peer(peer.uid),
            )
            .instrument(span)
            .await;
        Some(match verdict {
            Ok(_) => "OK".to_owned(),
            Err(err) => match err.code {
                ErrorCode::Denied => "NO authentication failed".to_owned(),
                ErrorCode::Throttled => "NO too many failures, retry later".to_owned(),
                ErrorCode::Busy => "NO busy, retry later".to_owned(),
                _ => "NO internal error".to_owned(),
            },
        })
    }
}

/// What reading a request produced.
enum Received {
    Request(SaslRequest),
    /// Answered `NO` with the reason.
    Refused(FrameError),
    /// The client closed (or failed) before the request was complete: close without answer.
    Gone,
}

/// Reads until a whole request is in; never more than `MAX_FRAME` bytes.
async fn read_request(stream: &mut UnixStream) -> Received {
    let mut buf = Zeroizing::new(Vec::with_capacity(MAX_FRAME));
    loop {
        match parse_frame(&buf) {
            Ok(Some(request)) => return Received::Request(request),
            Err(err) => return Received::Refused(err),
            Ok(None) => {}
        }
        // A complete frame never exceeds MAX_FRAME, so there is always room here.
        let room = (MAX_FRAME - buf.len()) as u64;
        match (&mut *stream).take(room).read_buf(&mut *buf).await {
            Ok(0) | Err(_) => return Received::Gone,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fields: &[&[u8]]) -> Vec<u8> {
        encode_fields(fields)
    }

    #[test]
    fn a_whole_request_decodes() {
        let bytes = frame(&[b"alice", b"pass word", b"xmpp", b"localhost"]);
        let request = parse_frame(&bytes).unwrap().unwrap();
        assert_eq!(request.login, "alice");
        assert_eq!(request.password.expose(), "pass word");
        assert_eq!(request.service, "xmpp");
        assert_eq!(request.realm, "localhost");
    }

    #[test]
    fn empty_service_and_realm_are_fine() {
        let request = parse_frame(&frame(&[b"a", b"p", b"", b""]))
            .unwrap()
            .unwrap();
        assert_eq!((request.service.as_str(), request.realm.as_str()), ("", ""));
    }

    #[test]
    fn every_prefix_of_a_request_asks_for_more() {
        let bytes = frame(&[b"alice", b"pw", b"smtp", b"example.org"]);
        for cut in 0..bytes.len() {
            assert!(
                parse_frame(&bytes[..cut]).unwrap().is_none(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_fifth_field_is_ignored() {
        let bytes = frame(&[b"alice", b"pw", b"smtp", b"", b"192.0.2.1"]);
        assert_eq!(parse_frame(&bytes).unwrap().unwrap().login, "alice");
    }

    #[test]
    fn empty_login_or_password_is_refused() {
        assert_eq!(
            parse_frame(&frame(&[b"", b"pw", b"", b""])).unwrap_err(),
            FrameError::Empty
        );
        assert_eq!(
            parse_frame(&frame(&[b"alice", b"", b"", b""])).unwrap_err(),
            FrameError::Empty
        );
        assert_eq!(
            parse_frame(&frame(&[b"", b"", b"", b""])).unwrap_err(),
            FrameError::Empty
        );
    }

    #[test]
    fn fields_are_capped_at_256_bytes() {
        let max = vec![b'x'; MAX_FIELD];
        assert!(parse_frame(&frame(&[&max, &max, &max, &max]))
            .unwrap()
            .is_some());
        let long = vec![b'x'; MAX_FIELD + 1];
        assert_eq!(
            parse_frame(&frame(&[b"alice", &long, b"", b""])).unwrap_err(),
            FrameError::FieldTooLong("password")
        );
        // The announced length alone is enough to refuse: no need to wait for the bytes.
        assert_eq!(
            parse_frame(&[0xff, 0xff]).unwrap_err(),
            FrameError::FieldTooLong("login")
        );
    }

    #[test]
    fn non_utf8_is_refused_and_the_error_shows_no_secret() {
        let err = parse_frame(&frame(&[b"alice", b"\xffsecret", b"", b""])).unwrap_err();
        assert_eq!(err, FrameError::NotUtf8("password"));
        assert!(!err.to_string().contains("secret"));
    }

    #[test]
    fn replies_carry_their_length() {
        assert_eq!(encode_reply("OK"), b"\x00\x02OK");
        assert_eq!(encode_reply("NO busy"), b"\x00\x07NO busy");
    }

    #[test]
    fn realm_list() {
        assert!(realm_accepted(&[], "anything"));
        let list = vec!["example.org".to_owned()];
        assert!(realm_accepted(&list, "Example.ORG"));
        assert!(!realm_accepted(&list, "other.org"));
        assert!(!realm_accepted(&list, ""));
    }

    #[test]
    fn debug_output_hides_the_password() {
        let request = parse_frame(&frame(&[b"alice", b"hunter2", b"", b""]))
            .unwrap()
            .unwrap();
        assert!(!format!("{request:?}").contains("hunter2"));
    }
}
