//! Fuzzes qam-extauth's framing (ejabberd length frames and generic lines) and its command
//! parser on whatever frames the bytes form. The binary crate's modules are included by path.
#![no_main]

#[allow(dead_code)]
#[path = "../../adapters/extauth/src/command.rs"]
mod command;
#[allow(dead_code)]
#[path = "../../adapters/extauth/src/frame.rs"]
mod frame;

use frame::{Frame, Protocol};
use libfuzzer_sys::fuzz_target;
use std::io::Cursor;

fuzz_target!(|bytes: &[u8]| {
    for protocol in [Protocol::Ejabberd, Protocol::Generic] {
        let mut input = Cursor::new(bytes);
        let mut frames = 0;
        while let Ok(Some(frame)) = protocol.read(&mut input) {
            frames += 1;
            assert!(frames <= bytes.len() + 1, "frames without progress");
            if let Frame::Request(request) = frame {
                assert!(request.len() <= frame::MAX_REQUEST);
                let _ = command::Command::parse(&request);
            }
        }
    }
});
