//! One request line in, one answer line out: decode, authorize against the peer's grants,
//! run the operation on `Accounts`, encode. Each request runs in a span without secrets.

use crate::accounts::ImportBatch;
use crate::policy::{Grants, Peer};
use crate::state::State;
use crate::throttle::Source;
use qam_client::wire::{
    decode_request, encode_error, encode_success, Answer, DebugInfo, DeleteInfo, Done, EventPage,
    ExistsInfo, ExportPage, ExportRecord, HelloInfo, ImportInfo, InviteList, LinkInfo, ListPage,
    LookupInfo, NameInfo, Serve, StatusInfo, MAX_DEBUG_SECONDS, PROTOCOL_VERSION,
};
use qam_client::{ClientKey, ErrorCode, Password, Request, WireError};
use std::time::Duration;
use tracing::Instrument;

/// Answers one request line (newline stripped) from `peer`.
pub async fn answer_line(state: &State, peer: Peer, grants: &Grants, line: &[u8]) -> Vec<u8> {
    let (id, request) = match decode_request(line) {
        Ok(decoded) => decoded,
        Err(err) => {
            tracing::debug!(peer_uid = peer.uid, code = %err.error.code, "request refused");
            return encode_error(err.id.as_ref(), &err.error);
        }
    };
    let op = request.op();
    let span = tracing::debug_span!("request", op = %op, peer_uid = peer.uid);
    let result = execute(state, peer, grants, request).instrument(span).await;
    match result {
        Ok(answer) => encode_success(id.as_ref(), &answer),
        Err(err) => encode_error(id.as_ref(), &err),
    }
}

async fn execute(
    state: &State,
    peer: Peer,
    grants: &Grants,
    request: Request,
) -> Result<Answer, WireError> {
    let op = request.op();
    if !grants.allows(op) {
        tracing::info!(peer_uid = peer.uid, op = %op, "operation forbidden");
        return Err(WireError::new(
            ErrorCode::Forbidden,
            format!(
                "uid {} may not call `{op}` (see [permissions] in qamd's config)",
                peer.uid
            ),
        ));
    }
    if op.is_audited() {
        tracing::info!(peer_uid = peer.uid, op = %op, user = request.user(), "admin operation");
    }
    request
        .serve(&Call {
            state,
            peer,
            grants,
        })
        .await
}

/// One authorized request on its way to the accounts.
struct Call<'a> {
    /// The accounts and the server's figures.
    state: &'a State,
    /// The caller: its uid is part of the source failed logins count against.
    peer: Peer,
    /// The caller's grants: an admin may register while registration is closed.
    grants: &'a Grants,
}

impl Serve for Call<'_> {
    async fn hello(&self) -> Result<HelloInfo, WireError> {
        Ok(HelloInfo {
            protocol: PROTOCOL_VERSION,
            server: format!("qamd {}", env!("CARGO_PKG_VERSION")),
        })
    }

    async fn verify(
        &self,
        user: String,
        password: Password,
        client: Option<ClientKey>,
    ) -> Result<NameInfo, WireError> {
        let source = Source {
            peer_uid: self.peer.uid,
            client: client.as_ref().map(ClientKey::expose),
        };
        self.state.accounts.verify(&user, password, source).await
    }

    async fn exists(&self, user: String) -> Result<ExistsInfo, WireError> {
        self.state.accounts.exists(&user)
    }

    async fn lookup(&self, user: String) -> Result<LookupInfo, WireError> {
        self.state.accounts.lookup(&user, self.grants.is_admin())
    }

    async fn register(
        &self,
        user: String,
        password: Password,
        force: bool,
        reuse_name: bool,
    ) -> Result<NameInfo, WireError> {
        let admin = self.grants.is_admin();
        let accounts = &self.state.accounts;
        accounts
            .register(&user, password, admin, force, reuse_name)
            .await
    }

    async fn change_password(
        &self,
        user: String,
        old_password: Password,
        new_password: Password,
    ) -> Result<Done, WireError> {
        let accounts = &self.state.accounts;
        accounts
            .change_password(
                &user,
                old_password,
                new_password,
                Source::peer(self.peer.uid),
            )
            .await
    }

    async fn register_invite(
        &self,
        token: Password,
        user: String,
        password: Password,
    ) -> Result<NameInfo, WireError> {
        let accounts = &self.state.accounts;
        accounts.register_invite(&token, &user, password).await
    }

    async fn invite_info(&self, token: Password) -> Result<Done, WireError> {
        self.state.accounts.invite_info(&token)
    }

    async fn reset_info(&self, token: Password) -> Result<NameInfo, WireError> {
        self.state.accounts.reset_info(&token)
    }

    async fn reset_password(
        &self,
        token: Password,
        password: Password,
    ) -> Result<NameInfo, WireError> {
        self.state.accounts.reset_password(&token, password).await
    }

    async fn invite_create(
        &self,
        expires_seconds: Option<u64>,
        uses: Option<u32>,
        note: Option<String>,
    ) -> Result<LinkInfo, WireError> {
        let accounts = &self.state.accounts;
        accounts.invite_create(expires_seconds, uses, note).await
    }

    async fn invite_list(&self) -> Result<InviteList, WireError> {
        self.state.accounts.invite_list().await
    }

    async fn invite_revoke(&self, invite: String) -> Result<Done, WireError> {
        self.state.accounts.invite_revoke(&invite).await
    }

    async fn reset_create(
        &self,
        user: String,
        expires_seconds: Option<u64>,
    ) -> Result<LinkInfo, WireError> {
        self.state
            .accounts
            .reset_create(&user, expires_seconds)
            .await
    }

    async fn set_password(&self, user: String, password: Password) -> Result<Done, WireError> {
        self.state.accounts.set_password(&user, password).await
    }

    async fn delete(&self, user: String) -> Result<DeleteInfo, WireError> {
        self.state.accounts.delete(&user).await
    }

    async fn lock(&self, user: String) -> Result<Done, WireError> {
        self.state.accounts.set_locked(&user, true).await
    }

    async fn unlock(&self, user: String) -> Result<Done, WireError> {
        self.state.accounts.set_locked(&user, false).await
    }

    async fn list(&self, after: Option<String>, limit: Option<u32>) -> Result<ListPage, WireError> {
        self.state.accounts.list(after.as_deref(), limit)
    }

    async fn status(&self) -> Result<StatusInfo, WireError> {
        self.state.accounts.status(self.state.figures()).await
    }

    async fn export(
        &self,
        after: Option<String>,
        limit: Option<u32>,
    ) -> Result<ExportPage, WireError> {
        self.state.accounts.export(after.as_deref(), limit)
    }

    async fn events(
        &self,
        epoch: Option<String>,
        since: Option<u64>,
        wait_seconds: Option<u64>,
    ) -> Result<EventPage, WireError> {
        let accounts = &self.state.accounts;
        accounts.events(epoch, since, wait_seconds).await
    }

    async fn deletion_step(
        &self,
        user: String,
        hook: String,
        ok: bool,
        detail: Option<String>,
    ) -> Result<Done, WireError> {
        let accounts = &self.state.accounts;
        accounts.deletion_step(&user, &hook, ok, detail).await
    }

    async fn deletion_finish(&self, user: String) -> Result<DeleteInfo, WireError> {
        self.state.accounts.deletion_finish(&user).await
    }

    async fn debug(&self, seconds: Option<u64>) -> Result<DebugInfo, WireError> {
        let seconds = seconds.unwrap_or(0);
        if seconds > MAX_DEBUG_SECONDS {
            return Err(WireError::new(
                ErrorCode::BadRequest,
                "a debug window lasts at most a day (86400 seconds)",
            ));
        }
        let level = &self.state.log_level;
        if seconds == 0 {
            level.close_window(None);
            return Ok(DebugInfo { until: None });
        }
        let until = level
            .open_window(Duration::from_secs(seconds))
            .map_err(|err| {
                tracing::error!(error = %err, "no debug window");
                WireError::new(
                    ErrorCode::Internal,
                    "the log level cannot be changed; see qamd's log",
                )
            })?;
        Ok(DebugInfo { until: Some(until) })
    }

    async fn import(
        &self,
        records: Vec<ExportRecord>,
        replace: bool,
        dry_run: bool,
        allow_weak: bool,
        system_users: bool,
    ) -> Result<ImportInfo, WireError> {
        let batch = ImportBatch {
            records,
            replace,
            dry_run,
            allow_weak,
            system_users,
        };
        self.state.accounts.import(batch).await
    }
}
