//! Start-up and shutdown of the whole daemon: data dir, store, hashing pool, socket, signal
//! handling, periodic full sync, and the final flush before exit.

use crate::accounts::{Accounts, Settings};
use crate::config::Config;
use crate::cpu_budget::CpuBudgets;
use crate::hasher::{HashError, Hasher};
use crate::policy::Policy;
use crate::reload::{self, ReloadSource, Reloader};
use crate::saslauthd;
use crate::server::{self, Listener};
use crate::shutdown::{self, Shutdown, Trigger};
use crate::socket::{self, SetupError};
use crate::state::State;
use crate::store::{Store, StoreError};
use crate::systemd::{self, PassedSockets};
use crate::uids::{UidError, Uids};
use crate::userdb;
use std::sync::Arc;
use std::time::Duration;

/// Everything that stops qamd from starting; printed as one line, exit code 1.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start the hashing pool: {0}")]
    Hasher(#[from] HashError),
    #[error("invalid username pattern: {0}")]
    Pattern(#[from] regex::Error),
    #[error("cannot listen: {0}")]
    Listen(std::io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Uids(#[from] UidError),
    #[error("the userdb socket's path has no file name to serve as its service name")]
    UserdbName,
}

/// Runs qamd until SIGTERM or SIGINT, then stops gracefully. Serves the sockets systemd
/// passed when there are any, else binds its own; SIGHUP reloads the config from `reload`.
pub async fn run(
    config: Config,
    passed: PassedSockets,
    reload: ReloadSource,
) -> Result<(), StartError> {
    socket::prepare_data_dir(&config.data_dir)?;
    let store = Store::open(&config.data_dir)?;
    let hasher = Hasher::start(&config.hash, &config.peers)?;
    let settings = Settings::from_config(&config)?;
    let uids = Arc::new(Uids::open(&config.data_dir, &config.nss)?);
    let upgraded = uids.upgrade(&store).await?;
    if upgraded > 0 {
        tracing::info!(accounts = upgraded, "accounts of an older store given uids");
    }
    let accounts = Accounts::new(store.clone(), hasher, &config, settings, uids);
    let policy = Policy::new(&config.permissions, &config.admin_group);
    let state = Arc::new(State::new(accounts, policy, reload.log_level()));
    let activated = passed.main.is_some();
    let std_listener = match passed.main {
        Some(listener) => listener,
        None => socket::bind(
            &config.socket,
            socket::socket_gid(config.socket_group.as_deref())?,
        )?,
    };
    let listener = socket::into_async(std_listener).map_err(StartError::Listen)?;

    let (trigger, shutdown) = shutdown::channel();
    spawn_signal_handler(trigger)?;
    let reloader = Reloader::new(reload, config.clone(), Arc::clone(&state));
    reload::spawn_on_sighup(reloader, shutdown.clone()).map_err(StartError::Signals)?;
    let saslauthd = saslauthd::start(&config, passed.saslauthd, &state, shutdown.clone())?;
    let userdb = userdb::start(&config, &state, shutdown.clone())?;
    tokio::spawn(sync_periodically(
        store.clone(),
        config.data_dir.clone(),
        Duration::from_secs(config.sync_interval_seconds.max(1)),
        shutdown.clone(),
    ));
    tracing::info!(
        socket = %config.socket.display(),
        data_dir = %config.data_dir.display(),
        workers = state.accounts.hasher().workers(),
        "qamd {} ready",
        env!("CARGO_PKG_VERSION")
    );
    systemd::notify_ready(&format!(
        "serving {}{}",
        config.socket.display(),
        if activated { " (socket-activated)" } else { "" }
    ));
    // A waiting `events` call (qam-hooks) must not hold the stop up.
    let mut stopping = shutdown.clone();
    let waits = Arc::clone(&state);
    tokio::spawn(async move {
        stopping.recv().await;
        waits.accounts.end_event_waits();
    });
    Listener::new(
        listener,
        Arc::clone(&state),
        server::seat_limits(&config),
        CpuBudgets::new(
            config.peers.request_cpu_percent,
            state.accounts.hasher().clone(),
        ),
        server::Lifetimes::of(&config),
        shutdown,
    )
    .run()
    .await;
    saslauthd.close().await;
    userdb.close().await;

    tracing::info!("stopping: flushing the store");
    systemd::notify_stopping("stopping: flushing the store");
    let dir = config.data_dir.clone();
    match tokio::task::spawn_blocking(move || store.sync_all(&dir)).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::error!(error = %err, "final store sync failed"),
        Err(err) => tracing::error!(error = %err, "final store sync did not run"),
    }
    // A passed socket belongs to systemd, which keeps listening on it for the next start.
    if !activated {
        if let Err(err) = std::fs::remove_file(&config.socket) {
            tracing::warn!(error = %err, "socket file not removed");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

fn spawn_signal_handler(trigger: Trigger) -> Result<(), StartError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).map_err(StartError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(StartError::Signals)?;
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
        }
        trigger.fire();
    });
    Ok(())
}

/// sled's flush is `sync_file_range`; an fsync of its files now and then closes the gap.
async fn sync_periodically(
    store: Store,
    dir: std::path::PathBuf,
    every: Duration,
    mut shutdown: Shutdown,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.recv() => return,
        }
        let (store, dir) = (store.clone(), dir.clone());
        if let Ok(Err(err)) = tokio::task::spawn_blocking(move || store.sync_all(&dir)).await {
            tracing::warn!(error = %err, "periodic store sync failed");
        }
    }
}
