//! Fuzzes the reader of XEP-0227 exports (`ejabberdctl export_piefxis`), which `qamctl import
//! --from ejabberd` runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let (reading, includes) = qamctl::migrate::ejabberd::read(bytes);
    assert!(reading.accounts.len() + reading.unreadable.len() + includes.len() <= bytes.len());
});
