//! trustbroker, the broker: configuration, durable state, the HTTP surface and the CLI.
//! `main.rs` only parses arguments and calls [`cli::run`].
//!
//! What it will not do: decide anything about tokens itself. Every decision is the
//! `token-exchange` core's; this crate wires it to HTTP, storage and the audit log.

pub mod admin;
pub mod backend;
pub mod cli;
pub mod client;
pub mod config;
pub mod demo;
pub mod federated;
pub mod logging;
pub mod metrics;
pub mod nodes;
pub mod redis_state;
pub mod revocations;
pub mod serve;
pub mod server;
pub mod store;
