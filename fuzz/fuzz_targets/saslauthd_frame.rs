//! Fuzzes the saslauthd door's framing: any bytes ask for more, decode, or are refused.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(Some(request)) = qamd::saslauthd::parse_frame(bytes) {
        assert!(!request.login.is_empty() && !request.password.is_empty());
        assert!(request.login.len() <= qamd::saslauthd::MAX_FIELD);
    }
});
