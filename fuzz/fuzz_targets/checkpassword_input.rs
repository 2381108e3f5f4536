//! Fuzzes qam-checkpassword's fd 3 reader (`login NUL password NUL ...`): the bounded read,
//! then the parse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qam_checkpassword::input;

fuzz_target!(|bytes: &[u8]| {
    let Ok(read) = input::read(bytes) else {
        return;
    };
    assert!(read.len() <= input::MAX_INPUT + 1);
    if let Ok(credentials) = input::parse(&read) {
        assert!(read.len() <= input::MAX_INPUT);
        assert!(!credentials.login.contains('\0'));
    }
});
