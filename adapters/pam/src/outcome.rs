//! How qamd's answers and failures become PAM return codes and messages for the user: one
//! pure table per PAM phase, so the hooks in lib.rs stay a straight line.

use pam::constants::PamResultCode;
use qam_client::{ClientError, ErrorCode};

/// Which PAM management group a failure happened in (their valid return codes differ).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// `pam_sm_authenticate` and `pam_sm_acct_mgmt`.
    Login,
    /// `pam_sm_chauthtok`.
    ChangePassword,
}

/// The PAM code for a call that failed with `err`.
pub fn failure_code(err: &ClientError, phase: Phase) -> PamResultCode {
    let unavailable = match phase {
        Phase::Login => PamResultCode::PAM_AUTHINFO_UNAVAIL,
        Phase::ChangePassword => PamResultCode::PAM_TRY_AGAIN,
    };
    match err.code() {
        None => unavailable,
        Some(ErrorCode::Denied) => PamResultCode::PAM_AUTH_ERR,
        Some(ErrorCode::Throttled) => PamResultCode::PAM_MAXTRIES,
        Some(ErrorCode::InvalidPassword) => PamResultCode::PAM_AUTHTOK_ERR,
        Some(ErrorCode::InvalidUsername | ErrorCode::NotFound) => PamResultCode::PAM_USER_UNKNOWN,
        Some(ErrorCode::Forbidden) if phase == Phase::ChangePassword => {
            PamResultCode::PAM_PERM_DENIED
        }
        Some(_) => unavailable,
    }
}

/// Whether the account qamd answered for is PAM_USER itself: byte for byte, since qamd folds
/// ASCII case and unix user names do not (`KATE` must never log in as the account `kate`).
pub fn same_account(pam_user: &str, answered: &str) -> bool {
    pam_user.as_bytes() == answered.as_bytes()
}

/// What the user is told through the conversation when a password change fails.
pub fn change_failure_message(err: &ClientError) -> String {
    match (err.code(), err) {
        (Some(ErrorCode::InvalidPassword), ClientError::Server(wire)) => {
            format!("New password refused: {}", wire.message)
        }
        (Some(ErrorCode::Denied), _) => "The current password is wrong.".to_owned(),
        (Some(ErrorCode::Throttled), _) => "Too many failed attempts; try again later.".to_owned(),
        (Some(ErrorCode::Forbidden), _) => {
            "This service may not change passwords; ask the administrator.".to_owned()
        }
        _ => "The account service is unavailable; try again later.".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qam_client::WireError;

    fn server(code: ErrorCode) -> ClientError {
        ClientError::Server(WireError::new(code, "at least 8 characters"))
    }

    #[test]
    fn unreachable_daemon_is_authinfo_unavailable_at_login() {
        assert_eq!(
            failure_code(&ClientError::Timeout, Phase::Login),
            PamResultCode::PAM_AUTHINFO_UNAVAIL
        );
        assert_eq!(
            failure_code(&ClientError::Closed, Phase::Login),
            PamResultCode::PAM_AUTHINFO_UNAVAIL
        );
        assert_eq!(
            failure_code(&server(ErrorCode::Busy), Phase::Login),
            PamResultCode::PAM_AUTHINFO_UNAVAIL
        );
        assert_eq!(
            failure_code(&server(ErrorCode::Forbidden), Phase::Login),
            PamResultCode::PAM_AUTHINFO_UNAVAIL
        );
    }

    #[test]
    fn unreachable_daemon_is_try_again_when_changing() {
        assert_eq!(
            failure_code(&ClientError::Timeout, Phase::ChangePassword),
            PamResultCode::PAM_TRY_AGAIN
        );
        assert_eq!(
            failure_code(&server(ErrorCode::Forbidden), Phase::ChangePassword),
            PamResultCode::PAM_PERM_DENIED
        );
    }

    #[test]
    fn refusals_map_to_their_own_codes() {
        assert_eq!(
            failure_code(&server(ErrorCode::Denied), Phase::Login),
            PamResultCode::PAM_AUTH_ERR
        );
        assert_eq!(
            failure_code(&server(ErrorCode::Throttled), Phase::Login),
            PamResultCode::PAM_MAXTRIES
        );
        assert_eq!(
            failure_code(&server(ErrorCode::InvalidPassword), Phase::ChangePassword),
            PamResultCode::PAM_AUTHTOK_ERR
        );
    }

    #[test]
    fn only_the_exact_name_is_the_same_account() {
        assert!(same_account("kate", "kate"));
        for other in ["KATE", "Kate", "kate.", "\u{212a}ate"] {
            assert!(!same_account(other, "kate"), "{other}");
        }
    }

    #[test]
    fn policy_message_reaches_the_user() {
        let text = change_failure_message(&server(ErrorCode::InvalidPassword));
        assert!(text.contains("at least 8 characters"), "{text}");
        assert!(change_failure_message(&ClientError::Timeout).contains("unavailable"));
    }
}
