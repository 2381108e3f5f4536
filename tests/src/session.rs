//! Connections a test holds open while something else should end them (a live XMPP session, an
//! IMAP IDLE): read on a thread of their own, with the moment the server ended them recorded.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

/// What the reading thread shares with the test.
#[derive(Default)]
struct Heard {
    /// Every byte the server sent since the hand-over, for waits and failure messages.
    bytes: Vec<u8>,
    /// When the server closed the connection or sent its closing words; `None` while open.
    ended: Option<Instant>,
}

/// An open connection to a server, read on a thread until the server ends it.
pub struct Watched {
    /// The write half (and the socket the drop shuts down).
    stream: TcpStream,
    /// What the reader heard so far.
    heard: Arc<Mutex<Heard>>,
    /// The reading thread, joined on drop.
    reader: Option<JoinHandle<()>>,
}

impl Watched {
    /// Watches `stream` (its handshake done); the server ended it when it closes the connection
    /// or sends `closing` (`</stream:stream>`, `* BYE`).
    pub fn new(stream: TcpStream, closing: &'static str) -> io::Result<Watched> {
        let mut reading = stream.try_clone()?;
        reading.set_read_timeout(None)?;
        let heard = Arc::new(Mutex::new(Heard::default()));
        let shared = Arc::clone(&heard);
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = reading.read(&mut buf).unwrap_or(0);
                let mut heard = shared.lock().unwrap_or_else(|e| e.into_inner());
                heard.bytes.extend_from_slice(&buf[..n]);
                let closed = n == 0 || String::from_utf8_lossy(&heard.bytes).contains(closing);
                if closed {
                    heard.ended.get_or_insert_with(Instant::now);
                }
                if n == 0 {
                    return;
                }
            }
        });
        Ok(Watched {
            stream,
            heard,
            reader: Some(reader),
        })
    }

    fn heard(&self) -> std::sync::MutexGuard<'_, Heard> {
        self.heard.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Everything the server sent so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.heard().bytes).into_owned()
    }

    /// When the server ended the connection, if it did.
    pub fn ended(&self) -> Option<Instant> {
        self.heard().ended
    }

    /// Waits until the server ended the connection or `deadline` passes.
    pub fn wait_ended(&self, deadline: Instant) -> Option<Instant> {
        crate::poll_until(deadline, || self.ended().is_some());
        self.ended()
    }

    /// Waits until the server's words hold `marker`; answers them (`None` past `deadline`).
    pub fn wait_for(&self, marker: &str, deadline: Instant) -> Option<String> {
        crate::poll_until(deadline, || self.text().contains(marker)).then(|| self.text())
    }

    /// Sends `text` to the server.
    pub fn send(&mut self, text: &str) -> io::Result<()> {
        self.stream.write_all(text.as_bytes())
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}
