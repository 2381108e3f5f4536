//! The two libpam functions pam-bindings 0.4 does not wrap — `pam_get_authtok` and
//! `pam_syslog` — declared here with safe wrappers that never panic.

use libc::{c_char, c_int};
use pam::constants::PamResultCode;
use pam::module::PamHandle;
use qam_client::Password;
use std::ffi::{CStr, CString};

/// `PAM_AUTHTOK` item: the (new) password.
pub const PAM_AUTHTOK: c_int = 6;
/// `PAM_OLDAUTHTOK` item: the current password during a password change.
pub const PAM_OLDAUTHTOK: c_int = 7;

#[link(name = "pam")]
extern "C" {
    fn pam_get_authtok(
        pamh: *mut PamHandle,
        item: c_int,
        authtok: *mut *const c_char,
        prompt: *const c_char,
    ) -> c_int;

    fn pam_syslog(pamh: *const PamHandle, priority: c_int, fmt: *const c_char, ...);
}

/// Reads a password item, prompting through the conversation when it is not set yet.
/// libpam itself honours `use_first_pass`, `try_first_pass` and `use_authtok` from the
/// module's arguments and, during a password change, asks twice for the new one.
pub fn get_authtok(pamh: &mut PamHandle, item: c_int) -> Result<Password, PamResultCode> {
    let mut token: *const c_char = std::ptr::null();
    // SAFETY: pamh is the live handle libpam gave this call; `token` receives a pointer to a
    // string owned by libpam, valid until the item changes; the prompt may be null.
    let rc = unsafe { pam_get_authtok(pamh, item, &mut token, std::ptr::null()) };
    if rc != 0 {
        return Err(PamResultCode::try_from(rc).unwrap_or(PamResultCode::PAM_SYSTEM_ERR));
    }
    if token.is_null() {
        return Err(PamResultCode::PAM_AUTHTOK_ERR);
    }
    // SAFETY: libpam returned success and a non-null, NUL-terminated string.
    let bytes = unsafe { CStr::from_ptr(token) }.to_bytes();
    // qam passwords are UTF-8 (they travel in JSON); anything else cannot match.
    let text = std::str::from_utf8(bytes).map_err(|_| PamResultCode::PAM_AUTH_ERR)?;
    Ok(Password::from(text))
}

/// Writes one line to the system log, prefixed by libpam with the service and module name.
pub fn syslog(pamh: &PamHandle, priority: c_int, message: &str) {
    let Ok(line) = CString::new(message.replace('\0', " ")) else {
        return;
    };
    // SAFETY: a valid handle, a constant "%s" format and one NUL-terminated argument.
    unsafe { pam_syslog(pamh, priority, c"%s".as_ptr(), line.as_ptr()) };
}
