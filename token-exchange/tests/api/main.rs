//! Integration tests of `token-exchange`, driven in-process with real keys and a manual
//! clock. One binary, one module per stage (STYLE §20).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests fail loudly by design"
)]

mod attest_support;
mod attestation;
mod dpop;
mod exchange;
mod keys;
mod policy;
mod subject;
mod support;
