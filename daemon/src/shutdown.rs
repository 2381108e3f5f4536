//! The shutdown signal every task listens to: set once on SIGTERM/SIGINT, seen by the accept
//! loop (stop accepting) and by each connection between requests (finish, then close).

use tokio::sync::watch;

/// Sender side, held by `main`.
pub struct Trigger(watch::Sender<bool>);

/// Receiver side, cloned into every task.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A connected trigger and listener.
pub fn channel() -> (Trigger, Shutdown) {
    let (sender, receiver) = watch::channel(false);
    (Trigger(sender), Shutdown(receiver))
}

impl Trigger {
    pub fn fire(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// Resolves once shutdown has been asked for (at once if it already was).
    pub async fn recv(&mut self) {
        // An error means the trigger is gone, which also means: stop.
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    pub fn is_shutdown(&self) -> bool {
        *self.0.borrow()
    }
}
