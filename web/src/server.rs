//! Where qam-web listens (a socket systemd passed, a Unix socket it binds, or a loopback TCP
//! port) and the layers every request goes through: limits, timeout, guards, headers.

use crate::config::{ConfigError, Listen};
use crate::form::MAX_FORM_BYTES;
use crate::guard;
use axum::Router;
use nix::sys::socket::{getsockname, AddressFamily, SockaddrLike, SockaddrStorage};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

/// What can keep qam-web from serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("invalid socket activation environment: {0}")]
    Activation(std::io::Error),
    #[error("the socket systemd passed is neither a Unix nor a TCP listener")]
    PassedSocket,
    #[error("cannot listen on {what}: {source}")]
    Listen {
        what: String,
        source: std::io::Error,
    },
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: String },
    #[error("unknown group `{0}` in socket_group")]
    Group(String),
    #[error("serving failed: {0}")]
    Serve(std::io::Error),
}

/// A listener, ready to serve.
pub enum Listener {
    Unix(tokio::net::UnixListener),
    Tcp(tokio::net::TcpListener),
}

/// The routes with every layer on: the outermost runs first.
pub fn app(routes: Router, request_timeout: Duration) -> Router {
    routes
        .layer(axum::middleware::from_fn(guard::same_site_posts))
        .layer(RequestBodyLimitLayer::new(MAX_FORM_BYTES))
        .layer(axum::middleware::from_fn(guard::headers))
        .layer(axum::middleware::from_fn(guard::log))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
}

/// A socket systemd passed, not yet registered with the async runtime.
pub enum Passed {
    Unix(std::os::unix::net::UnixListener),
    Tcp(std::net::TcpListener),
}

impl Passed {
    /// The listener, registered with the runtime this is called in.
    pub fn into_listener(self) -> Result<Listener, ServeError> {
        let listen_error = |source| ServeError::Listen {
            what: "the socket systemd passed".into(),
            source,
        };
        match self {
            Passed::Unix(std) => {
                std.set_nonblocking(true).map_err(listen_error)?;
                tokio::net::UnixListener::from_std(std)
                    .map(Listener::Unix)
                    .map_err(listen_error)
            }
            Passed::Tcp(std) => {
                std.set_nonblocking(true).map_err(listen_error)?;
                tokio::net::TcpListener::from_std(std)
                    .map(Listener::Tcp)
                    .map_err(listen_error)
            }
        }
    }
}

/// The socket systemd passed (first one), if any; clears `LISTEN_*`. Call before threads start.
pub fn passed_listener() -> Result<Option<Passed>, ServeError> {
    // SAFETY: called from `main` before the runtime starts any other thread.
    let fds = unsafe { sd_notify::listen_fds_with_names_and_unset_env() }
        .map_err(ServeError::Activation)?;
    let Some((raw, _name)) = fds.into_iter().next() else {
        return Ok(None);
    };
    // SAFETY: systemd passed this descriptor to this process and nothing else refers to it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let family = getsockname::<SockaddrStorage>(fd.as_raw_fd())
        .map_err(|errno| ServeError::Activation(errno.into()))?
        .family();
    match family {
        Some(AddressFamily::Unix) => Ok(Some(Passed::Unix(fd.into()))),
        Some(AddressFamily::Inet | AddressFamily::Inet6) => Ok(Some(Passed::Tcp(fd.into()))),
        _ => Err(ServeError::PassedSocket),
    }
}

/// Binds `listen` itself. A Unix socket gets mode 0660, in `socket_group` when one is named
/// (the reverse proxy's group), replacing a stale socket left by an earlier run.
pub async fn bind(listen: &Listen, socket_group: Option<&str>) -> Result<Listener, ServeError> {
    match listen {
        Listen::Tcp(addr) => tokio::net::TcpListener::bind(addr)
            .await
            .map(Listener::Tcp)
            .map_err(|source| ServeError::Listen {
                what: addr.to_string(),
                source,
            }),
        Listen::Unix(path) => bind_unix(path, socket_group),
    }
}

fn bind_unix(path: &Path, socket_group: Option<&str>) -> Result<Listener, ServeError> {
    use std::os::unix::fs::FileTypeExt;
    let what = path.display().to_string();
    let listen_error = |source| ServeError::Listen {
        what: what.clone(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(listen_error)?
        }
        Ok(_) => return Err(ServeError::NotASocket { path: what }),
        Err(_) => {}
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(listen_error)?;
    if let Some(group) = socket_group {
        let gid = nix::unistd::Group::from_name(group)
            .ok()
            .flatten()
            .ok_or_else(|| ServeError::Group(group.to_owned()))?
            .gid;
        nix::unistd::chown(path, None, Some(gid))
            .map_err(|errno| listen_error(std::io::Error::from(errno)))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(listen_error)?;
    Ok(Listener::Unix(listener))
}

/// Serves until SIGTERM or SIGINT, then lets requests in flight finish.
pub async fn serve(listener: Listener, app: Router) -> Result<(), ServeError> {
    let shutdown = async {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    let served = match listener {
        Listener::Unix(listener) => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Listener::Tcp(listener) => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    };
    served.map_err(ServeError::Serve)
}
