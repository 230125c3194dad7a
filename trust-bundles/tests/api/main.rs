//! Integration tests of `trust-bundles`: spec vectors as data, rcgen-made chains, and
//! property tests. One binary, one module per area (STYLE §20).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests fail loudly by design"
)]

mod bundle;
mod jwk;
mod jws;
mod refusals;
mod roundtrip;
mod spiffe_id;
mod support;
mod x509;
