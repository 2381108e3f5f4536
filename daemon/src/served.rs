//! A socket served beside the main one (the saslauthd door, the userdb door) as its `start`
//! leaves it: the accept loop's task to wait for at shutdown, and the path qamd bound itself.

use crate::server::STOP_GRACE;
use std::path::PathBuf;
use tokio::task::JoinHandle;

/// A side socket's task and path, for the daemon to close at shutdown.
#[must_use = "close() waits for the connections and removes the socket"]
pub struct Served {
    /// The accept loop; it ends after shutdown once its connections are done.
    task: Option<JoinHandle<()>>,
    /// The socket path qamd bound itself (a passed socket belongs to systemd).
    bound: Option<PathBuf>,
    /// Which socket, for the log.
    what: &'static str,
}

impl Served {
    /// A socket that is not configured: nothing to wait for.
    pub fn nothing(what: &'static str) -> Served {
        Served {
            task: None,
            bound: None,
            what,
        }
    }

    pub fn new(task: JoinHandle<()>, bound: Option<PathBuf>, what: &'static str) -> Served {
        Served {
            task: Some(task),
            bound,
            what,
        }
    }

    /// After shutdown: waits for the accept loop (at most [`STOP_GRACE`]), then removes the
    /// socket qamd bound.
    pub async fn close(self) {
        if let Some(task) = self.task {
            if tokio::time::timeout(STOP_GRACE, task).await.is_err() {
                tracing::warn!(
                    socket = self.what,
                    "stopping without waiting longer for requests in flight"
                );
            }
        }
        if let Some(path) = self.bound {
            if let Err(err) = std::fs::remove_file(&path) {
                tracing::warn!(error = %err, socket = self.what, "socket file not removed");
            }
        }
    }
}
