//! Any DPoP header value is verified or refused; never a panic.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use token_exchange::dpop::{ProofTarget, verify_proof};
use trust_bundles::UnixTime;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let target = ProofTarget {
            method: "POST",
            uri: "https://broker.example/token",
            now: UnixTime::from_secs(1_800_000_000),
            skew: Duration::from_secs(30),
        };
        let _ = verify_proof(s, &target);
    }
});
