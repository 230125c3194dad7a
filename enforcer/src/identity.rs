//! The node's identity in its data directory: key, certificate, and how it was obtained
//! (enrollment with a join token) and is kept fresh (renewal with the current certificate).

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use serde_json::json;
use trust_bundles::{Clock, jws};

/// One file holds key and certificate, replaced atomically, so a crash never leaves a
/// key beside another key's certificate.
const IDENTITY_FILE: &str = "node.json";

#[derive(Serialize, Deserialize)]
struct Stored {
    /// PKCS#8, base64. Secret: the file is 0600.
    key: String,
    #[serde(flatten)]
    state: NodeState,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("data directory {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("stored identity is corrupt: {0}")]
    Corrupt(String),
    #[error("key: {0}")]
    Key(String),
    #[error("broker refused: {status} {body}")]
    Refused { status: u16, body: String },
    #[error("broker unreachable: {0}")]
    Http(String),
    #[error("broker URL must be https (plain http only to a loopback address): {0}")]
    InsecureBroker(String),
}

/// Join tokens and node keys travel only over TLS, except to this machine.
fn check_broker_url(broker: &str) -> Result<(), IdentityError> {
    let insecure = || IdentityError::InsecureBroker(broker.to_owned());
    let rest = match broker.split_once("://") {
        Some(("https", _)) => return Ok(()),
        Some(("http", rest)) => rest,
        _ => return Err(insecure()),
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let loopback = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback { Ok(()) } else { Err(insecure()) }
}

/// What is stored next to the key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeState {
    pub broker: String,
    pub node: String,
    pub spiffe_id: String,
    /// Base64 DER node certificate.
    pub certificate: String,
    /// Base64 DER node CA certificate (for information; the broker is the verifier).
    pub ca: String,
    pub issued_at: u64,
    pub expires_at: u64,
}

/// A loaded identity: key and certificate.
pub struct Identity {
    pub key: EcdsaKeyPair,
    pub state: NodeState,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("node", &self.state.node)
            .field("expires_at", &self.state.expires_at)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
struct Issued {
    node: String,
    spiffe_id: String,
    certificate: String,
    ca: String,
    expires_at: u64,
}

fn io(dir: &Path) -> impl Fn(std::io::Error) -> IdentityError + '_ {
    move |e| IdentityError::Io(dir.to_path_buf(), e)
}

/// Writes `bytes` to `path` atomically (temp file + rename), private to the owner.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn new_key() -> Result<(EcdsaKeyPair, Vec<u8>), IdentityError> {
    let key = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
        .map_err(|e| IdentityError::Key(e.to_string()))?;
    let der = key
        .to_pkcs8v1()
        .map_err(|e| IdentityError::Key(e.to_string()))?
        .as_ref()
        .to_vec();
    Ok((key, der))
}

/// A PKCS#10 request for `pkcs8`'s key, signed by it.
fn csr(pkcs8: &[u8], node_hint: &str) -> Result<String, IdentityError> {
    let kp = rcgen::KeyPair::try_from(pkcs8).map_err(|e| IdentityError::Key(e.to_string()))?;
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, node_hint);
    let req = p
        .serialize_request(&kp)
        .map_err(|e| IdentityError::Key(e.to_string()))?;
    Ok(STANDARD.encode(req.der().as_ref()))
}

fn post(url: &str, body: &serde_json::Value) -> Result<Issued, IdentityError> {
    let text = post_ok(url, body)?;
    serde_json::from_str(&text).map_err(|e| IdentityError::Corrupt(e.to_string()))
}

/// POSTs JSON; the body of a 200, or the refusal.
fn post_ok(url: &str, body: &serde_json::Value) -> Result<String, IdentityError> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| IdentityError::Http(e.to_string()))?;
    let resp = client
        .post(url)
        .json(body)
        .send()
        .map_err(|e| IdentityError::Http(e.to_string()))?;
    let status = resp.status().as_u16();
    let text = resp
        .text()
        .map_err(|e| IdentityError::Http(e.to_string()))?;
    if status != 200 {
        return Err(IdentityError::Refused { status, body: text });
    }
    Ok(text)
}

impl Identity {
    /// `trustbroker-enforcer enroll`: a fresh key, a CSR, a join token, a certificate.
    pub fn enroll(
        broker: &str,
        join_token: &str,
        dir: &Path,
        clock: &dyn Clock,
    ) -> Result<Self, IdentityError> {
        check_broker_url(broker)?;
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let (key, pkcs8) = new_key()?;
        let issued = post(
            &format!("{}/v1/enroll", broker.trim_end_matches('/')),
            &json!({"join_token": join_token, "csr": csr(&pkcs8, "enforcer")?}),
        )?;
        let state = NodeState {
            broker: broker.trim_end_matches('/').to_owned(),
            node: issued.node,
            spiffe_id: issued.spiffe_id,
            certificate: issued.certificate,
            ca: issued.ca,
            issued_at: clock.now().as_secs(),
            expires_at: issued.expires_at,
        };
        Self::save(dir, &pkcs8, &state)?;
        Ok(Self { key, state })
    }

    fn save(dir: &Path, pkcs8: &[u8], state: &NodeState) -> Result<(), IdentityError> {
        let stored = Stored {
            key: STANDARD.encode(pkcs8),
            state: state.clone(),
        };
        let json = serde_json::to_vec_pretty(&stored)
            .map_err(|e| IdentityError::Corrupt(e.to_string()))?;
        write_private(&dir.join(IDENTITY_FILE), &json).map_err(io(dir))
    }

    /// Loads the identity saved by `enroll` (or the last renewal).
    pub fn load(dir: &Path) -> Result<Self, IdentityError> {
        let bytes = std::fs::read(dir.join(IDENTITY_FILE)).map_err(io(dir))?;
        let stored: Stored =
            serde_json::from_slice(&bytes).map_err(|e| IdentityError::Corrupt(e.to_string()))?;
        let pkcs8 = STANDARD
            .decode(stored.key.trim())
            .map_err(|e| IdentityError::Corrupt(e.to_string()))?;
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8)
            .map_err(|e| IdentityError::Key(e.to_string()))?;
        Ok(Self {
            key,
            state: stored.state,
        })
    }

    pub fn chain(&self) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
        let der = STANDARD
            .decode(&self.state.certificate)
            .map_err(|e| IdentityError::Corrupt(e.to_string()))?;
        Ok(vec![CertificateDer::from(der)])
    }

    /// Signs with the node key (ES256, fixed-width).
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, IdentityError> {
        self.key
            .sign(&SystemRandom::new(), msg)
            .map(|s| s.as_ref().to_vec())
            .map_err(|e| IdentityError::Key(e.to_string()))
    }

    /// Whether the certificate has used half its life.
    pub fn wants_renewal(&self, clock: &dyn Clock) -> bool {
        let half =
            self.state.issued_at + (self.state.expires_at.saturating_sub(self.state.issued_at)) / 2;
        clock.now().as_secs() >= half
    }

    /// A request signed with the node key, its certificate in `x5c` (as the broker's
    /// `/v1/renew` and `/v1/nodes/events` expect).
    fn signed(&self, typ: &str, claims: &serde_json::Value) -> Result<String, IdentityError> {
        let header = json!({"alg": "ES256", "typ": typ, "x5c": [self.state.certificate]});
        let input = jws::signing_input(&header, claims);
        Ok(jws::compact(&input, &self.sign(input.as_bytes())?))
    }

    /// Reports workloads that exited to the broker, which revokes their tokens.
    pub fn report_exits(
        &self,
        exited: &[crate::watch::Exited],
        clock: &dyn Clock,
    ) -> Result<(), IdentityError> {
        let now = clock.now().as_secs();
        let events = self.signed(
            "node-events+jwt",
            &json!({"exited": exited, "iat": now, "exp": now + 60}),
        )?;
        post_ok(
            &format!("{}/v1/nodes/events", self.state.broker),
            &json!({"events": events}),
        )
        .map(|_| ())
    }

    /// Renews with the current certificate: a new key, its CSR inside a JWS signed by the
    /// current key with the current certificate in `x5c`.
    pub fn renew(&self, dir: &Path, clock: &dyn Clock) -> Result<Self, IdentityError> {
        let (key, pkcs8) = new_key()?;
        let now = clock.now().as_secs();
        let claims = json!({"csr": csr(&pkcs8, &self.state.node)?, "iat": now, "exp": now + 60});
        let renewal = self.signed("node-renewal+jwt", &claims)?;
        let issued = post(
            &format!("{}/v1/renew", self.state.broker),
            &json!({"renewal": renewal}),
        )?;
        let state = NodeState {
            certificate: issued.certificate,
            ca: issued.ca,
            issued_at: now,
            expires_at: issued.expires_at,
            ..self.state.clone()
        };
        Self::save(dir, &pkcs8, &state)?;
        Ok(Self { key, state })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brokers_are_reached_over_tls_unless_on_this_machine() {
        for ok in [
            "https://broker.example",
            "http://127.0.0.1:8080",
            "http://localhost:1/x",
            "http://[::1]:80",
        ] {
            assert!(check_broker_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://broker.example",
            "http://10.0.0.1:8080",
            "ftp://x",
            "broker.example",
            "http://127.0.0.1.evil.com",
        ] {
            assert!(check_broker_url(bad).is_err(), "{bad}");
        }
    }
}
