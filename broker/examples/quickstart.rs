//! Makes a throwaway SPIFFE trust domain for trying the broker by hand: a signing key, its
//! bundle, a broker config that trusts it, and one JWT-SVID to exchange.
//!
//!     cargo run -q -p broker --example quickstart -- /tmp/tb
//!
//! The key lives only in this process; rerun to get a fresh token (and a fresh domain).

use std::error::Error;
use std::path::PathBuf;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair};
use serde_json::json;
use trust_bundles::{Clock, SystemClock, jws};

const DOMAIN: &str = "example.org";
const ISSUER: &str = "http://127.0.0.1:8080";

fn main() -> Result<(), Box<dyn Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).ok_or("usage: quickstart DIR")?);
    std::fs::create_dir_all(&dir)?;

    let key = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)?;
    let mut jwk = trust_bundles::Jwk::from_ec_point(key.public_key().as_ref())?.to_json();
    jwk.insert("use".into(), "jwt-svid".into());
    jwk.insert("kid".into(), "quickstart".into());
    let bundle = json!({"keys": [jwk], "spiffe_sequence": 1});
    std::fs::write(
        dir.join("example.bundle.json"),
        serde_json::to_vec_pretty(&bundle)?,
    )?;

    let config = format!(
        r#"# A broker that trusts the quickstart domain `{DOMAIN}` and lets its payments
# workloads reach the payments API without attestation (plain RFC 8693 clients).
issuer = "{ISSUER}"
listen = "127.0.0.1:8080"

[state]
path = "state"

[[trust_domain]]
name = "{DOMAIN}"
kind = "spiffe"
bundle_file = "example.bundle.json"

[[boundary]]
name = "example-to-payments"
from = "{DOMAIN}"
subjects = ["spiffe://{DOMAIN}/ns/payments/sa/*"]
audiences = ["https://payments.example/api"]
scopes = ["payments.read", "payments.write"]
max_ttl = "10m"
attestation = "none"
"#
    );
    std::fs::write(dir.join("broker.toml"), config)?;

    let now = SystemClock.now().as_secs();
    let claims = json!({
        "sub": format!("spiffe://{DOMAIN}/ns/payments/sa/api"),
        "aud": [ISSUER],
        "iat": now,
        "exp": now + 3600,
    });
    let input = jws::signing_input(
        &json!({"alg": "ES256", "kid": "quickstart", "typ": "JWT"}),
        &claims,
    );
    let sig = key.sign(&SystemRandom::new(), input.as_bytes())?;
    std::fs::write(
        dir.join("svid.jwt"),
        format!("{}\n", jws::compact(&input, sig.as_ref())),
    )?;

    println!(
        "wrote {0}/broker.toml, {0}/example.bundle.json and {0}/svid.jwt (valid 1h)",
        dir.display()
    );
    Ok(())
}
