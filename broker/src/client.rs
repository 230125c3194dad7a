//! The workload side of an attested exchange (`trustbroker exchange`, and the demo):
//! nonce → DPoP key → evidence from the local enforcer → token request.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use trust_bundles::{Clock, Jwk, SystemClock, jws};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("broker unreachable: {0}")]
    Http(String),
    #[error("enforcer at {socket}: {why}")]
    Enforcer { socket: String, why: String },
    #[error("enforcer refused: {status} {body}")]
    EnforcerRefused { status: u16, body: String },
    #[error("key: {0}")]
    Key(String),
}

/// A DPoP key (ephemeral unless loaded).
pub struct DpopKey {
    key: EcdsaKeyPair,
    jwk: Value,
    pub jkt: String,
}

impl std::fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpopKey")
            .field("jkt", &self.jkt)
            .finish_non_exhaustive()
    }
}

impl DpopKey {
    pub fn generate() -> Result<Self, ClientError> {
        let key = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|e| ClientError::Key(e.to_string()))?;
        Self::from_key(key)
    }

    /// Loads a PKCS#8 P-256 key (DER, or base64 of it).
    pub fn load(path: &Path) -> Result<Self, ClientError> {
        let bytes = std::fs::read(path)
            .map_err(|e| ClientError::Key(format!("{}: {e}", path.display())))?;
        let der = base64::engine::general_purpose::STANDARD
            .decode(String::from_utf8_lossy(&bytes).trim())
            .unwrap_or(bytes);
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der)
            .map_err(|e| ClientError::Key(e.to_string()))?;
        Self::from_key(key)
    }

    fn from_key(key: EcdsaKeyPair) -> Result<Self, ClientError> {
        let public = Jwk::from_ec_point(key.public_key().as_ref())
            .map_err(|e| ClientError::Key(e.to_string()))?;
        Ok(Self {
            jkt: public.thumbprint_sha256(),
            jwk: Value::Object(public.to_json()),
            key,
        })
    }

    /// A proof for `POST htu` with `nonce` (RFC 9449 §4.2).
    pub fn proof(&self, htu: &str, nonce: Option<&str>) -> Result<String, ClientError> {
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti).map_err(|e| ClientError::Key(e.to_string()))?;
        let mut claims = json!({
            "jti": URL_SAFE_NO_PAD.encode(jti), "htm": "POST", "htu": htu,
            "iat": SystemClock.now().as_secs(),
        });
        if let (Some(n), Some(obj)) = (nonce, claims.as_object_mut()) {
            obj.insert("nonce".into(), n.into());
        }
        let input = jws::signing_input(
            &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk}),
            &claims,
        );
        let sig = self
            .key
            .sign(&SystemRandom::new(), input.as_bytes())
            .map_err(|e| ClientError::Key(e.to_string()))?;
        Ok(jws::compact(&input, sig.as_ref()))
    }
}

/// The broker's answer: HTTP status and JSON body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub dpop_nonce: Option<String>,
}

fn http() -> Result<reqwest::blocking::Client, ClientError> {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ClientError::Http(e.to_string()))
}

/// `POST /attest/challenge` → a fresh nonce.
pub fn challenge(broker: &str) -> Result<String, ClientError> {
    let v: Value = http()?
        .post(format!("{broker}/attest/challenge"))
        .send()
        .and_then(|r| r.json())
        .map_err(|e| ClientError::Http(e.to_string()))?;
    v.get("nonce")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| ClientError::Http("no nonce in the challenge".into()))
}

/// Asks the local enforcer for evidence over its Unix socket.
pub fn evidence(socket: &Path, nonce: &str, jkt: &str) -> Result<String, ClientError> {
    let err = |why: String| ClientError::Enforcer {
        socket: socket.display().to_string(),
        why,
    };
    let mut s = UnixStream::connect(socket).map_err(|e| err(e.to_string()))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| err(e.to_string()))?;
    let body = json!({"nonce": nonce, "jkt": jkt}).to_string();
    write!(
        s,
        "POST /v1/evidence HTTP/1.1\r\nHost: enforcer\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| err(e.to_string()))?;
    let mut resp = String::new();
    s.take(64 * 1024)
        .read_to_string(&mut resp)
        .map_err(|e| err(e.to_string()))?;
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .ok_or_else(|| err("malformed reply".into()))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| err("malformed status".into()))?;
    if status != 200 {
        return Err(ClientError::EnforcerRefused {
            status,
            body: body.to_owned(),
        });
    }
    let v: Value = serde_json::from_str(body).map_err(|e| err(e.to_string()))?;
    v.get("evidence")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| err("no evidence in the reply".into()))
}

/// `POST /token` with the given form, DPoP proof and evidence.
pub fn token(
    broker: &str,
    form: &[(&str, &str)],
    dpop: Option<&str>,
    evidence: Option<&str>,
) -> Result<Answer, ClientError> {
    let mut req = http()?.post(format!("{broker}/token")).form(form);
    if let Some(p) = dpop {
        req = req.header("DPoP", p);
    }
    if let Some(e) = evidence {
        req = req.header("Runtime-Attestation", e);
    }
    let resp = req.send().map_err(|e| ClientError::Http(e.to_string()))?;
    let status = resp.status().as_u16();
    let dpop_nonce = resp
        .headers()
        .get("DPoP-Nonce")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.json().map_err(|e| ClientError::Http(e.to_string()))?;
    Ok(Answer {
        status,
        body,
        dpop_nonce,
    })
}

/// What `trustbroker exchange` asks for.
#[derive(Debug, Clone)]
pub struct ExchangeArgs<'a> {
    pub broker: &'a str,
    pub subject_token: &'a str,
    pub subject_token_type: &'a str,
    pub audience: &'a str,
    pub scope: Option<&'a str>,
    pub requested_token_type: Option<&'a str>,
    pub enforcer_socket: Option<&'a Path>,
}

/// The whole workload-side flow.
pub fn exchange(args: &ExchangeArgs<'_>, key: &DpopKey) -> Result<Answer, ClientError> {
    let broker = args.broker.trim_end_matches('/');
    let nonce = challenge(broker)?;
    let ev = match args.enforcer_socket {
        Some(s) => Some(evidence(s, &nonce, &key.jkt)?),
        None => None,
    };
    let proof = key.proof(&format!("{broker}/token"), Some(&nonce))?;
    let mut form = vec![
        (
            "grant_type",
            token_exchange::request::GRANT_TYPE_TOKEN_EXCHANGE,
        ),
        ("subject_token", args.subject_token),
        ("subject_token_type", args.subject_token_type),
        ("audience", args.audience),
    ];
    if let Some(s) = args.scope {
        form.push(("scope", s));
    }
    if let Some(t) = args.requested_token_type {
        form.push(("requested_token_type", t));
    }
    token(broker, &form, Some(&proof), ev.as_deref())
}
