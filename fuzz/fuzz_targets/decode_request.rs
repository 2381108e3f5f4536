//! Fuzzes qamd's request decoder: any line must decode or be refused with
//! `bad_request`/`unknown_op`, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qam_client::wire::{decode_request, encode_request};
use qam_client::ErrorCode;

fuzz_target!(|line: &[u8]| {
    match decode_request(line) {
        Ok((_, request)) => {
            // What decodes re-encodes and decodes to the same request.
            let again = encode_request(None, &request);
            let (_, back) = decode_request(&again[..again.len() - 1]).expect("re-encoded request");
            assert_eq!(back, request);
        }
        Err(err) => assert!(matches!(
            err.error.code,
            ErrorCode::BadRequest | ErrorCode::UnknownOp
        )),
    }
});
