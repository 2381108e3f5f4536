//! qam-hooks' side of the qamd protocol: `events`, `deletion_step`, `deletion_finish`, over a
//! connection that is made again (with backoff up to 5 s) whenever qamd is away.

use qam_client::wire::{
    DeleteInfo, DeletionInfo, Done, EventPage, LookupInfo, MAX_EVENT_WAIT_SECONDS,
};
use qam_client::{Client, ClientError, ClientOptions, Request};
use std::thread;
use std::time::Duration;

/// How long one `events` call waits for an event.
pub const EVENT_WAIT: Duration = Duration::from_secs(MAX_EVENT_WAIT_SECONDS);

/// Bound on one request's round trip: an `events` wait plus room for a busy qamd.
const ROUND_TRIP: Duration = Duration::from_secs(MAX_EVENT_WAIT_SECONDS + 15);

/// The first pause before connecting again; it doubles up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The longest pause between two attempts to reach qamd.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the event loop asks of qamd. Errors are qamd's answers (e.g. `not_found`);
/// [`SocketQamd`] waits for an absent qamd instead of failing.
pub trait Qamd {
    /// The events after `since` of `epoch` (every pending deletion for another epoch or none).
    fn events(&mut self, epoch: Option<&str>, since: Option<u64>)
        -> Result<EventPage, ClientError>;
    /// Where the account's deletion stands; `None` when it is not (or no longer) being deleted.
    fn deletion(&mut self, user: &str) -> Result<Option<DeletionInfo>, ClientError>;
    /// Records one delete hook's outcome.
    fn step(
        &mut self,
        user: &str,
        hook: &str,
        ok: bool,
        detail: Option<String>,
    ) -> Result<(), ClientError>;
    /// Ends a round of delete hooks; true when qamd erased the account.
    fn finish(&mut self, user: &str) -> Result<bool, ClientError>;
}

/// The real qamd, reached over its socket.
pub struct SocketQamd {
    /// The socket and the daemon uids trusted; the timeout is set to `ROUND_TRIP`.
    options: ClientOptions,
    /// The open connection; `None` after it failed (qamd closes idle ones after 30 s).
    client: Option<Client>,
}

impl SocketQamd {
    /// A client of the qamd at `options.socket`; connects at the first request.
    pub fn new(options: ClientOptions) -> Self {
        SocketQamd {
            options: options.with_timeout(ROUND_TRIP),
            client: None,
        }
    }

    /// Connects, waiting as long as qamd is away; says so once per outage.
    fn connect(&mut self) -> Client {
        let mut pause = FIRST_BACKOFF;
        let mut away = false;
        loop {
            match Client::connect(&self.options) {
                Ok(client) => {
                    if away {
                        tracing::info!("qamd is reachable again");
                    }
                    return client;
                }
                Err(err) => {
                    if !away {
                        tracing::warn!(
                            "qamd is away ({err}); trying again every {} s at most",
                            MAX_BACKOFF.as_secs()
                        );
                        away = true;
                    }
                    thread::sleep(pause);
                    pause = (pause * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Sends `request`, again on a new connection while the transport fails. Each request
    /// qam-hooks sends may be repeated: a step is recorded again, a repeated finish answers
    /// `not_found` once the account is erased, `events` with the same `since` answers the same.
    fn call<T: serde::de::DeserializeOwned>(
        &mut self,
        request: &Request,
    ) -> Result<T, ClientError> {
        loop {
            let mut client = match self.client.take() {
                Some(client) => client,
                None => self.connect(),
            };
            match client.call(request) {
                Ok(answer) => {
                    self.client = Some(client);
                    return Ok(answer);
                }
                Err(err) if err.is_unavailable() => {
                    tracing::debug!("request to qamd failed ({err}); connecting again");
                }
                Err(err) => {
                    self.client = Some(client);
                    return Err(err);
                }
            }
        }
    }
}

impl Qamd for SocketQamd {
    fn events(
        &mut self,
        epoch: Option<&str>,
        since: Option<u64>,
    ) -> Result<EventPage, ClientError> {
        self.call(&Request::Events {
            epoch: epoch.map(str::to_owned),
            since,
            wait_seconds: Some(EVENT_WAIT.as_secs()),
        })
    }

    fn deletion(&mut self, user: &str) -> Result<Option<DeletionInfo>, ClientError> {
        self.call::<LookupInfo>(&Request::Lookup { user: user.into() })
            .map(|info| info.account.and_then(|account| account.deletion))
    }

    fn step(
        &mut self,
        user: &str,
        hook: &str,
        ok: bool,
        detail: Option<String>,
    ) -> Result<(), ClientError> {
        self.call::<Done>(&Request::DeletionStep {
            user: user.into(),
            hook: hook.into(),
            ok,
            detail,
        })
        .map(|_| ())
    }

    fn finish(&mut self, user: &str) -> Result<bool, ClientError> {
        self.call::<DeleteInfo>(&Request::DeletionFinish { user: user.into() })
            .map(|info| info.erased)
    }
}
