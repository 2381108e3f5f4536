//! Fuzzes qam-checkpassword's fd 3 reader (`login NUL password NUL ...`). The binary crate's
//! module is included by path.
#![no_main]

#[allow(dead_code)]
#[path = "../../adapters/checkpassword/src/input.rs"]
mod input;

use libfuzzer_sys::fuzz_target;
use zeroize::Zeroizing;

fuzz_target!(|bytes: &[u8]| {
    let bytes = Zeroizing::new(bytes.to_vec());
    if let Ok(credentials) = input::parse(&bytes) {
        assert!(bytes.len() <= input::MAX_INPUT);
        assert!(!credentials.login.contains('\0'));
    }
});
