//! The reference node enforcer of trustbroker: it enrolls with the broker's node CA and,
//! on a local Unix socket, vouches for the processes that call it — identified by the
//! kernel (SO_PEERCRED) and `/proc`, matched against `enforcer.toml` registrations — with
//! short-lived evidence bound to a broker nonce and the workload's DPoP key (SPEC §6).
//!
//! What it will not do: trust anything a caller says about itself, or serve anything but
//! its Unix socket.

pub mod cli;
pub mod config;
pub mod identity;
pub mod procfs;
pub mod server;
pub mod watch;
