//! pam_qam.so: a PAM module that checks passwords with qamd (`auth`), reports unknown and
//! locked accounts (`account`) and changes passwords (`password`) through the blocking client.
//!
//! No threads, no async runtime, nothing on stdout; every hook runs behind pam-bindings'
//! `catch_unwind`, and no code path here unwraps. Messages go to syslog via `pam_syslog`.

mod args;
mod ffi;
mod outcome;

use args::ModuleArgs;
use outcome::{change_failure_message, failure_code, same_account, Phase};
use pam::constants::{PamFlag, PamResultCode, PAM_ERROR_MSG, PAM_SILENT};
use pam::conv::Conv;
use pam::items::RHost;
use pam::module::{PamHandle, PamHooks};
use qam_client::wire::{Account, Done, LookupInfo, NameInfo};
use qam_client::{Client, ClientError, ClientOptions, ErrorCode, Password, Request, TrustedDaemon};
use std::ffi::CStr;

/// `pam_sm_chauthtok` flag: first pass, check that a change is possible.
const PAM_PRELIM_CHECK: PamFlag = 0x4000;
/// `pam_sm_chauthtok` flag: second pass, change the password.
const PAM_UPDATE_AUTHTOK: PamFlag = 0x2000;

const LOG_ERR: libc::c_int = libc::LOG_ERR;
const LOG_WARNING: libc::c_int = libc::LOG_WARNING;
const LOG_DEBUG: libc::c_int = libc::LOG_DEBUG;

struct QamPam;
pam::pam_hooks!(QamPam);

impl PamHooks for QamPam {
    fn sm_authenticate(pamh: &mut PamHandle, args: Vec<&CStr>, flags: PamFlag) -> PamResultCode {
        Hook::new(pamh, &args, flags).authenticate()
    }

    fn sm_setcred(_pamh: &mut PamHandle, _args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        PamResultCode::PAM_SUCCESS
    }

    fn acct_mgmt(pamh: &mut PamHandle, args: Vec<&CStr>, flags: PamFlag) -> PamResultCode {
        Hook::new(pamh, &args, flags).account()
    }

    fn sm_chauthtok(pamh: &mut PamHandle, args: Vec<&CStr>, flags: PamFlag) -> PamResultCode {
        let mut hook = Hook::new(pamh, &args, flags);
        if flags & PAM_PRELIM_CHECK != 0 {
            hook.prelim_check()
        } else if flags & PAM_UPDATE_AUTHTOK != 0 {
            hook.change_password()
        } else {
            PamResultCode::PAM_SERVICE_ERR
        }
    }
}

/// One hook call: libpam's handle, the pam.d arguments and whether the user may be talked to.
struct Hook<'a> {
    /// libpam's handle: the user name, the password and the conversation come from it, and
    /// syslog lines go through it.
    pamh: &'a mut PamHandle,
    /// The pam.d line's arguments: qamd's socket, the timeout and whether to log debug
    /// lines.
    args: ModuleArgs,
    /// `PAM_SILENT` was passed: no message is shown to the user.
    silent: bool,
}

impl<'a> Hook<'a> {
    fn new(pamh: &'a mut PamHandle, raw: &[&CStr], flags: PamFlag) -> Self {
        let args = ModuleArgs::parse(raw.iter().map(|arg| arg.to_str().unwrap_or("<non-UTF-8>")));
        let hook = Hook {
            pamh,
            args,
            silent: flags & PAM_SILENT != 0,
        };
        for unknown in &hook.args.unknown {
            hook.log(
                LOG_WARNING,
                &format!("ignoring unknown or invalid argument `{unknown}`"),
            );
        }
        hook
    }

    fn log(&self, priority: libc::c_int, message: &str) {
        ffi::syslog(self.pamh, priority, message);
    }

    fn debug(&self, message: &str) {
        if self.args.debug {
            self.log(LOG_DEBUG, message);
        }
    }

    /// Shows an error line to the user through the application's conversation function.
    fn tell(&self, message: &str) {
        if self.silent {
            return;
        }
        if let Ok(Some(conv)) = self.pamh.get_item::<Conv>() {
            let _ = conv.send(PAM_ERROR_MSG, message);
        }
    }

    fn user(&mut self) -> Result<String, PamResultCode> {
        self.pamh.get_user(None).inspect_err(|code| {
            self.log(LOG_ERR, &format!("cannot get the user name: {code:?}"));
        })
    }

    fn connect(&self, phase: Phase) -> Result<Client, PamResultCode> {
        let options = ClientOptions::new(&self.args.socket)
            .with_timeout(self.args.timeout)
            .with_trusted(TrustedDaemon::default_set());
        Client::connect(&options).map_err(|err| {
            if phase == Phase::ChangePassword {
                self.tell(&change_failure_message(&err));
            }
            self.failed("connect", &err, phase)
        })
    }

    /// Logs a failed call and turns it into a PAM code. The attempted user name is never
    /// logged: people type passwords into the name prompt.
    fn failed(&self, op: &str, err: &ClientError, phase: Phase) -> PamResultCode {
        let code = failure_code(err, phase);
        let priority = if err.code().is_some() {
            LOG_WARNING
        } else {
            LOG_ERR
        };
        self.log(priority, &format!("{op}: {err} -> {code:?}"));
        code
    }

    /// The remote host sshd (or another application) put in PAM_RHOST, if any: qamd throttles
    /// each client key apart, so a stranger's guesses never lock out the owner's own host.
    fn client_key(&self) -> Option<Password> {
        match self.pamh.get_item::<RHost>() {
            Ok(Some(host)) => host.to_str().ok().map(Password::from),
            _ => None,
        }
    }

    /// The qam account that is exactly PAM_USER, byte for byte (qamd folds ASCII case, PAM
    /// users do not): `Postgres` is not the account `postgres`.
    fn exact_account(
        &self,
        client: &mut Client,
        user: &str,
        phase: Phase,
    ) -> Result<Option<Account>, PamResultCode> {
        let info: LookupInfo = client
            .call(&Request::Lookup {
                user: user.to_owned(),
            })
            .map_err(|err| self.failed("lookup", &err, phase))?;
        Ok(info
            .account
            .filter(|account| same_account(user, &account.name)))
    }

    fn authenticate(&mut self) -> PamResultCode {
        self.try_authenticate().unwrap_or_else(|code| code)
    }

    fn try_authenticate(&mut self) -> Result<PamResultCode, PamResultCode> {
        let user = self.user()?;
        let password = ffi::get_authtok(self.pamh, ffi::PAM_AUTHTOK)?;
        let mut client = self.connect(Phase::Login)?;
        let request = Request::Verify {
            user: user.clone(),
            password,
            client: self.client_key(),
        };
        let code = match client.call::<NameInfo>(&request) {
            Ok(info) if same_account(&user, &info.name) => PamResultCode::PAM_SUCCESS,
            // The password is right for another spelling of the name: not this PAM user.
            Ok(_) => PamResultCode::PAM_USER_UNKNOWN,
            // Usernames are public on a qam host: telling "unknown" from "wrong" leaks nothing.
            Err(err) if err.code() == Some(ErrorCode::Denied) => {
                match self.exact_account(&mut client, &user, Phase::Login) {
                    Ok(None) => PamResultCode::PAM_USER_UNKNOWN,
                    _ => PamResultCode::PAM_AUTH_ERR,
                }
            }
            // qamd's daemon-wide bound on verifies of names without an account answers
            // `throttled` while someone sprays names: a unix-only user (root) must still fall
            // through to pam_unix, never get "too many tries".
            Err(err) if err.code() == Some(ErrorCode::Throttled) => {
                match self.exact_account(&mut client, &user, Phase::Login) {
                    Ok(None) => PamResultCode::PAM_USER_UNKNOWN,
                    _ => return Err(self.failed("verify", &err, Phase::Login)),
                }
            }
            Err(err) => return Err(self.failed("verify", &err, Phase::Login)),
        };
        self.debug(&format!("verify: {code:?}"));
        Ok(code)
    }

    fn account(&mut self) -> PamResultCode {
        self.try_account().unwrap_or_else(|code| code)
    }

    fn try_account(&mut self) -> Result<PamResultCode, PamResultCode> {
        let user = self.user()?;
        let mut client = self.connect(Phase::Login)?;
        let code = match self.exact_account(&mut client, &user, Phase::Login)? {
            None => PamResultCode::PAM_USER_UNKNOWN,
            Some(account) if account.locked => PamResultCode::PAM_ACCT_EXPIRED,
            Some(_) => PamResultCode::PAM_SUCCESS,
        };
        self.debug(&format!("account: {code:?}"));
        Ok(code)
    }

    fn prelim_check(&mut self) -> PamResultCode {
        self.try_prelim_check().unwrap_or_else(|code| code)
    }

    /// First pass of a password change: the daemon answers and knows the user.
    fn try_prelim_check(&mut self) -> Result<PamResultCode, PamResultCode> {
        let user = self.user()?;
        let mut client = self.connect(Phase::ChangePassword)?;
        Ok(
            match self.exact_account(&mut client, &user, Phase::ChangePassword)? {
                Some(_) => PamResultCode::PAM_SUCCESS,
                None => PamResultCode::PAM_USER_UNKNOWN,
            },
        )
    }

    fn change_password(&mut self) -> PamResultCode {
        self.try_change_password().unwrap_or_else(|code| code)
    }

    /// Second pass: read the current and the new password (libpam prompts and double-checks
    /// the new one), then ask qamd to change it; refusals are shown to the user.
    fn try_change_password(&mut self) -> Result<PamResultCode, PamResultCode> {
        let user = self.user()?;
        let old_password: Password = ffi::get_authtok(self.pamh, ffi::PAM_OLDAUTHTOK)?;
        let new_password: Password = ffi::get_authtok(self.pamh, ffi::PAM_AUTHTOK)?;
        let request = Request::ChangePassword {
            user: user.clone(),
            old_password,
            new_password,
        };
        let mut client = self.connect(Phase::ChangePassword)?;
        client.call::<Done>(&request).map_err(|err| {
            self.tell(&change_failure_message(&err));
            self.failed("change_password", &err, Phase::ChangePassword)
        })?;
        self.debug("change_password: done");
        Ok(PamResultCode::PAM_SUCCESS)
    }
}
