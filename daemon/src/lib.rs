//! qamd as a library: every module of the credential daemon, so the binary, the man-page
//! generator and the benchmarks share one definition. `main.rs` only wires them together.

pub mod accounts;
pub mod cli;
pub mod config;
pub mod connection;
pub mod daemon;
pub mod dispatch;
pub mod hasher;
pub mod logging;
pub mod policy;
pub mod reload;
pub mod rules;
pub mod saslauthd;
pub mod server;
pub mod shutdown;
pub mod socket;
pub mod state;
pub mod store;
pub mod systemd;
pub mod throttle;
