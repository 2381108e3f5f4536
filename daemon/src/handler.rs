//! One request line in, one answer line out: decode, authorize against the peer's grants,
//! run the operation on `Accounts`, encode. Each request runs in a span without secrets.

use crate::accounts::Accounts;
use crate::policy::{Grants, Peer};
use qam_client::wire::{
    decode_request, encode_error, encode_success, Done, ExistsInfo, ExportPage, HelloInfo,
    ImportInfo, ListPage, LookupInfo, NameInfo, Op, StatusInfo, PROTOCOL_VERSION,
};
use qam_client::{ErrorCode, Request, WireError};
use serde::Serialize;
use tracing::Instrument;

/// Every success body, serialized flat into the answer object.
#[derive(Serialize)]
#[serde(untagged)]
enum Answer {
    Hello(HelloInfo),
    Name(NameInfo),
    Exists(ExistsInfo),
    Lookup(LookupInfo),
    Done(Done),
    List(ListPage),
    Status(Box<StatusInfo>),
    Export(ExportPage),
    Import(ImportInfo),
}

/// Answers one request line (newline stripped) from `peer`.
pub async fn answer_line(accounts: &Accounts, peer: Peer, grants: &Grants, line: &[u8]) -> Vec<u8> {
    let (id, request) = match decode_request(line) {
        Ok(decoded) => decoded,
        Err(err) => {
            tracing::debug!(peer_uid = peer.uid, code = %err.error.code, "request refused");
            return encode_error(err.id.as_ref(), &err.error);
        }
    };
    let op = request.op();
    let span = tracing::debug_span!("request", op = %op, peer_uid = peer.uid);
    let result = execute(accounts, peer, grants, request)
        .instrument(span)
        .await;
    match result {
        Ok(answer) => encode_success(id.as_ref(), &answer),
        Err(err) => encode_error(id.as_ref(), &err),
    }
}

async fn execute(
    accounts: &Accounts,
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
    if is_audited(op) {
        tracing::info!(peer_uid = peer.uid, op = %op, user = request.user(), "admin operation");
    }
    Ok(match request {
        Request::Hello => Answer::Hello(HelloInfo {
            protocol: PROTOCOL_VERSION,
            server: format!("qamd {}", env!("CARGO_PKG_VERSION")),
        }),
        Request::Verify { user, password } => Answer::Name(accounts.verify(&user, password).await?),
        Request::Exists { user } => Answer::Exists(accounts.exists(&user)?),
        Request::Lookup { user } => Answer::Lookup(accounts.lookup(&user)?),
        Request::Register { user, password } => Answer::Name(
            accounts
                .register(&user, password, grants.is_admin())
                .await?,
        ),
        Request::ChangePassword {
            user,
            old_password,
            new_password,
        } => Answer::Done(
            accounts
                .change_password(&user, old_password, new_password)
                .await?,
        ),
        Request::SetPassword { user, password } => {
            Answer::Done(accounts.set_password(&user, password).await?)
        }
        Request::Delete { user } => Answer::Done(accounts.delete(&user).await?),
        Request::Lock { user } => Answer::Done(accounts.set_locked(&user, true).await?),
        Request::Unlock { user } => Answer::Done(accounts.set_locked(&user, false).await?),
        Request::List { after, limit } => Answer::List(accounts.list(after.as_deref(), limit)?),
        Request::Status => Answer::Status(Box::new(accounts.status().await?)),
        Request::Export { after, limit } => {
            Answer::Export(accounts.export(after.as_deref(), limit)?)
        }
        Request::Import {
            records,
            replace,
            dry_run,
        } => Answer::Import(accounts.import(records, replace, dry_run).await?),
    })
}

/// Operations that change or reveal accounts wholesale: logged with the peer for the audit trail.
fn is_audited(op: Op) -> bool {
    matches!(
        op,
        Op::SetPassword | Op::Delete | Op::Lock | Op::Unlock | Op::Export | Op::Import
    )
}
