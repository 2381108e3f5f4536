//! The page's side of qamd: one short connection per form, the requests the pages send, and
//! qamd's refusals turned into the sentences a person reads.

use qam_client::wire::{NameInfo, StatusInfo};
use qam_client::{AsyncClient, ClientError, ClientOptions, ErrorCode, Password, Request};

/// What went wrong, in words for the person at the browser; the HTTP status goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status of the page that shows the message.
    pub status: u16,
    /// The sentence shown above the form.
    pub message: String,
}

impl Refusal {
    pub fn new(status: u16, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
        }
    }
}

/// Shown for an unknown user and a wrong password alike.
pub const WRONG_LOGIN: &str = "Wrong username or password.";

/// Shown for any token qamd does not accept (unknown, used, expired or revoked).
pub const DEAD_LINK: &str =
    "This link does not work: it may have been used already, have expired or been withdrawn. \
     Ask an admin for a new one.";

/// Turns a failed call into the person's message; qamd's own words are used where they are
/// meant for people (name rules, password advice), never for internal failures.
pub fn refusal(err: &ClientError) -> Refusal {
    let ClientError::Server(wire) = err else {
        tracing::warn!(error = %err, "qamd could not be asked");
        return Refusal::new(
            503,
            "The account service is not reachable right now. Try again in a few minutes.",
        );
    };
    match wire.code {
        ErrorCode::Denied => Refusal::new(403, WRONG_LOGIN),
        ErrorCode::NotFound => Refusal::new(403, WRONG_LOGIN),
        ErrorCode::Throttled => Refusal::new(
            429,
            "Too many wrong attempts for this name. Wait a minute, then try again.",
        ),
        ErrorCode::Exists => Refusal::new(409, "That username is taken. Choose another one."),
        ErrorCode::InvalidUsername => Refusal::new(400, format!("{}.", wire.message)),
        ErrorCode::InvalidPassword | ErrorCode::WeakPassword => {
            Refusal::new(400, wire.message.clone())
        }
        ErrorCode::RegistrationClosed => Refusal::new(
            403,
            "Registration is closed. Ask an admin of this host for an invite link.",
        ),
        ErrorCode::InvalidToken => Refusal::new(404, DEAD_LINK),
        ErrorCode::Busy => Refusal::new(
            503,
            "The server is busy. Wait a moment, then send the form again.",
        ),
        _ => {
            tracing::warn!(code = %wire.code, "qamd refused a page's request");
            Refusal::new(
                500,
                "Something went wrong on the server. Try again later, or tell an admin.",
            )
        }
    }
}

/// How the page reaches qamd.
#[derive(Clone)]
pub struct Qamd {
    /// Socket, timeout and trusted daemon uids.
    options: ClientOptions,
}

impl Qamd {
    pub fn new(options: ClientOptions) -> Qamd {
        Qamd { options }
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        request: Request,
    ) -> Result<T, ClientError> {
        let mut client = AsyncClient::connect(&self.options).await?;
        client.call(&request).await
    }

    /// Whether qamd takes registrations without an invite.
    pub async fn registration_open(&self) -> Result<bool, ClientError> {
        let status: StatusInfo = self.call(Request::Status).await?;
        Ok(status.registration_open)
    }

    /// Open registration.
    pub async fn register(&self, user: String, password: Password) -> Result<String, ClientError> {
        let request = Request::Register {
            user,
            password,
            force: false,
            reuse_name: false,
        };
        let made: NameInfo = self.call(request).await?;
        Ok(made.name)
    }

    /// Registration with an invite token.
    pub async fn register_invite(
        &self,
        token: Password,
        user: String,
        password: Password,
    ) -> Result<String, ClientError> {
        let request = Request::RegisterInvite {
            token,
            user,
            password,
        };
        let made: NameInfo = self.call(request).await?;
        Ok(made.name)
    }

    /// Whether an invite token still works.
    pub async fn invite_info(&self, token: Password) -> Result<(), ClientError> {
        let _: qam_client::wire::Done = self.call(Request::InviteInfo { token }).await?;
        Ok(())
    }

    /// The account a reset token is for.
    pub async fn reset_info(&self, token: Password) -> Result<String, ClientError> {
        let info: NameInfo = self.call(Request::ResetInfo { token }).await?;
        Ok(info.name)
    }

    /// Sets a new password with a reset token.
    pub async fn reset_password(
        &self,
        token: Password,
        password: Password,
    ) -> Result<String, ClientError> {
        let done: NameInfo = self
            .call(Request::ResetPassword { token, password })
            .await?;
        Ok(done.name)
    }

    /// Changes a password knowing the current one.
    pub async fn change_password(
        &self,
        user: String,
        old_password: Password,
        new_password: Password,
    ) -> Result<(), ClientError> {
        let request = Request::ChangePassword {
            user,
            old_password,
            new_password,
        };
        let _: qam_client::wire::Done = self.call(request).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qam_client::WireError;

    fn server(code: ErrorCode) -> ClientError {
        ClientError::Server(WireError::new(code, "no account named `bob`"))
    }

    #[test]
    fn unknown_user_and_wrong_password_read_the_same() {
        assert_eq!(
            refusal(&server(ErrorCode::Denied)),
            refusal(&server(ErrorCode::NotFound))
        );
        assert!(!refusal(&server(ErrorCode::NotFound))
            .message
            .contains("bob"));
    }

    #[test]
    fn internal_details_stay_out_of_the_page() {
        let page = refusal(&server(ErrorCode::Internal));
        assert!(!page.message.contains("bob"));
        assert_eq!(page.status, 500);
        assert_eq!(refusal(&ClientError::Timeout).status, 503);
    }
}
