//! Fuzzes qam-extauth's framing (ejabberd length frames and generic lines) and its command
//! parser on whatever frames the bytes form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qam_extauth::command::Command;
use qam_extauth::frame::{Frame, Protocol, MAX_REQUEST};
use std::io::Cursor;

fuzz_target!(|bytes: &[u8]| {
    for protocol in [Protocol::Ejabberd, Protocol::Generic] {
        let mut input = Cursor::new(bytes);
        let mut frames = 0;
        while let Ok(Some(frame)) = protocol.read(&mut input) {
            frames += 1;
            assert!(frames <= bytes.len() + 1, "frames without progress");
            if let Frame::Request(request) = frame {
                assert!(request.len() <= MAX_REQUEST);
                let _ = Command::parse(&request);
            }
        }
    }
});
