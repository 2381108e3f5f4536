//! Fuzzes the reader of Prosody's Lua data files (`return { ... };`), which `qamctl import
//! --from prosody` runs on files it never executes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = qamctl::migrate::lua::parse_data_file(bytes);
});
