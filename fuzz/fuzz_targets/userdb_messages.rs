//! Fuzzes the userdb door's input side: any bytes, split at any point, give bounded messages,
//! and every message decodes to a call or to the error its reply names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qamd::framing::{Framer, Next};
use qamd::userdb::varlink::{decode_call, encode_error, MAX_MESSAGE};

fuzz_target!(|bytes: &[u8]| {
    let cut = bytes.first().map_or(0, |&b| usize::from(b)).min(bytes.len());
    let mut framer = Framer::new(0, MAX_MESSAGE);
    for piece in [&bytes[..cut], &bytes[cut..]] {
        framer.push(piece);
        loop {
            match framer.next_message() {
                Next::Message(message) => {
                    assert!(message.len() <= MAX_MESSAGE && !message.contains(&0));
                    if let Err(error) = decode_call(message, "io.qam") {
                        let mut reply = Vec::new();
                        encode_error(&mut reply, &error);
                        assert_eq!(reply.iter().filter(|&&b| b == 0).count(), 1);
                    }
                }
                Next::NeedMore => break,
                Next::TooLarge => return,
            }
        }
    }
});
