//! The running log level: the configured one, or for a window an admin opened (`debug`),
//! debug, back to the configured level by itself when the window ends.

use crate::logging::{parse_filter, LevelHandle};
use crate::store::{rfc3339, unix_now};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The level debug windows log at (sled stays quiet, as `parse_filter` keeps it).
const DEBUG_LEVEL: &str = "debug";

/// Why a level cannot be set.
#[derive(Debug, thiserror::Error)]
pub enum LevelError {
    #[error("{0}")]
    Filter(String),
    #[error("the log level cannot be changed: {0}")]
    Reload(String),
}

/// The log filter of the running subscriber and who decides it now.
pub struct LogLevel {
    /// Changes the subscriber's filter.
    handle: LevelHandle,
    /// The configured level and the open window.
    state: Mutex<LevelState>,
}

struct LevelState {
    /// The level of the config (or `--log-level`, `RUST_LOG`) in force.
    configured: String,
    /// The open window: when it ends (unix time) and the number of the timer that ends it
    /// (a later window's timer replaces an earlier one's).
    window: Option<(u64, u64)>,
    /// Numbers the windows, so only the latest window's timer closes it.
    windows_opened: u64,
}

impl LogLevel {
    pub fn new(handle: LevelHandle, configured: String) -> LogLevel {
        LogLevel {
            handle,
            state: Mutex::new(LevelState {
                configured,
                window: None,
                windows_opened: 0,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LevelState> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn apply(&self, level: &str) -> Result<(), LevelError> {
        let filter = parse_filter(level).map_err(LevelError::Filter)?;
        self.handle
            .reload(filter)
            .map_err(|err| LevelError::Reload(err.to_string()))
    }

    /// A reload's level: applied now, or when an open window ends.
    pub fn set_configured(&self, level: String) -> Result<(), LevelError> {
        parse_filter(&level).map_err(LevelError::Filter)?;
        let mut state = self.state();
        if state.window.is_none() {
            self.apply(&level)?;
        }
        state.configured = level;
        Ok(())
    }

    /// Logs at debug for `length`, then at the configured level again; answers when the
    /// window ends (RFC 3339).
    pub fn open_window(self: &Arc<Self>, length: Duration) -> Result<String, LevelError> {
        let until = unix_now() + length.as_secs();
        let number = {
            let mut state = self.state();
            self.apply(DEBUG_LEVEL)?;
            state.windows_opened += 1;
            state.window = Some((until, state.windows_opened));
            state.windows_opened
        };
        tracing::info!(until = %rfc3339(until), "debug logging window opened");
        let level = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(length).await;
            level.close_window(Some(number));
        });
        Ok(rfc3339(until))
    }

    /// Ends the window numbered `number` (any window: `None`), back to the configured level.
    pub fn close_window(&self, number: Option<u64>) {
        let mut state = self.state();
        let Some((_, open)) = state.window else {
            return;
        };
        if number.is_some_and(|number| number != open) {
            return;
        }
        state.window = None;
        if let Err(err) = self.apply(&state.configured) {
            tracing::error!(error = %err, "the configured log level could not be restored");
        }
        drop(state);
        tracing::info!("debug logging window closed");
    }

    /// When the open window ends, RFC 3339; `None` when none is open.
    pub fn window_until(&self) -> Option<String> {
        self.state().window.map(|(until, _)| rfc3339(until))
    }
}
