//! End-to-end scenarios against real `trustbroker` processes on loopback, as numbered
//! steps that include the refusals (STYLE §20).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests fail loudly by design"
)]

mod admin;
mod attestation;
mod contract;
mod federate;
mod fetch;
mod google_auth;
mod hostile;
mod live;
mod replicas;
mod revoke;
mod serve;
mod terraform;
#[allow(
    dead_code,
    reason = "a shared fixture: not every scenario uses every item"
)]
mod world;
