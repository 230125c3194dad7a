//! Test harness for end-to-end scenarios: a real `trustbroker` process on a free loopback
//! port with a generated configuration, foreign issuers whose keys are made per run, and
//! workload-side DPoP keys. Only tests use this crate.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test harness: failing loudly is the point"
)]

pub mod broker;
pub mod issuers;
pub mod redis;
