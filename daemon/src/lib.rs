//! qamd as a library: the credential daemon's modules, so the binary, the man-page generator,
//! the benchmarks, the fuzz targets and the tests share one definition.
//!
//! Only what they use is public; `main.rs` only wires the public parts together.

mod accounts;
pub mod cli;
pub mod config;
mod connection;
mod cpu_budget;
pub mod daemon;
mod dispatch;
mod events;
pub mod framing;
mod hash_queue;
pub mod hasher;
mod legacy;
pub mod log_level;
pub mod logging;
mod policy;
pub mod reload;
mod reloadable;
mod rules;
pub mod saslauthd;
pub mod scheduling;
mod seats;
mod served;
mod server;
mod shutdown;
mod socket;
mod state;
pub mod store;
mod system_names;
pub mod systemd;
pub mod throttle;
mod trusted_path;
mod uids;
pub mod userdb;
