//! Compact JWS (RFC 7515 §7.1) parsing and verification, careful about what it trusts.
//!
//! Parsing enforces what holds for every JWS this workspace reads: a size budget, exactly
//! three canonical base64url parts, header and payload that are JSON objects without
//! duplicate members, an `alg` from the closed set of [`JwsAlgorithm`] (never `none`, never
//! HMAC), and no `crit` (we implement no extension, so RFC 7515 §4.1.11 says refuse).
//! Which key-carrying headers (`jwk`, `x5c`, `jku`, `x5u`) are acceptable depends on the
//! kind of token and is left to the caller; nothing here ever fetches anything.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::json::{StrictJsonError, parse_strict};

use crate::jwk::{AlgError, Jwk, JwsAlgorithm, VerifyError, VerifyingKey, VerifyingKeys};

/// Why a compact JWS is refused before or during verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    #[error("JWS is {len} bytes, over the {max}-byte budget")]
    TooLarge { len: usize, max: usize },
    #[error("JWS is not three dot-separated parts")]
    NotCompact,
    #[error("JWS {0} is not canonical unpadded base64url")]
    BadBase64(&'static str),
    #[error("JWS {part} is not valid JSON: {error}")]
    BadJson {
        part: &'static str,
        error: StrictJsonError,
    },
    #[error("JWS {0} is not a JSON object")]
    NotAnObject(&'static str),
    #[error("JWS header has no string `alg`")]
    MissingAlg,
    #[error("JWS `alg` refused: {0}")]
    Alg(AlgError),
    #[error("JWS header carries `crit`, and no extension is understood")]
    Crit,
    #[error("JWS signature does not verify: {0}")]
    Signature(VerifyError),
}

/// A parsed, not yet verified, compact JWS.
#[derive(Debug, Clone)]
pub struct UnverifiedJws {
    alg: JwsAlgorithm,
    header: Map<String, Value>,
    payload: Map<String, Value>,
    signing_input_len: usize,
    compact: String,
    signature: Vec<u8>,
}

impl UnverifiedJws {
    /// Parses `compact` (no surrounding whitespace) if it is at most `max_len` bytes.
    pub fn parse(compact: &str, max_len: usize) -> Result<Self, JwsError> {
        if compact.len() > max_len {
            return Err(JwsError::TooLarge {
                len: compact.len(),
                max: max_len,
            });
        }
        let mut parts = compact.split('.');
        let (Some(h64), Some(p64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwsError::NotCompact);
        };
        let header = decode_object(h64, "header")?;
        let alg = match header.get("alg") {
            Some(Value::String(alg)) => alg.parse::<JwsAlgorithm>().map_err(JwsError::Alg)?,
            _ => return Err(JwsError::MissingAlg),
        };
        // RFC 7515 §4.1.11: a recipient that does not understand every `crit` extension
        // must refuse the JWS. We understand none.
        if header.contains_key("crit") {
            return Err(JwsError::Crit);
        }
        let payload = decode_object(p64, "payload")?;
        let signature = URL_SAFE_NO_PAD
            .decode(s64)
            .map_err(|_| JwsError::BadBase64("signature"))?;
        Ok(Self {
            alg,
            header,
            payload,
            signing_input_len: h64.len() + 1 + p64.len(),
            compact: compact.to_owned(),
            signature,
        })
    }

    pub fn alg(&self) -> JwsAlgorithm {
        self.alg
    }

    pub fn header(&self) -> &Map<String, Value> {
        &self.header
    }

    /// A header member as a string, if it is one.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(Value::as_str)
    }

    /// The claims, unverified: use them only to decide which key to verify with.
    pub fn unverified_payload(&self) -> &Map<String, Value> {
        &self.payload
    }

    /// The compact serialization, as received.
    pub fn compact(&self) -> &str {
        &self.compact
    }

    fn signing_input(&self) -> &[u8] {
        self.compact
            .as_bytes()
            .get(..self.signing_input_len)
            .unwrap_or_default()
    }

    /// Verifies the signature with `jwk` (its family and any pinned `alg` must fit the
    /// header's `alg`) and returns the payload.
    pub fn verify(self, jwk: &Jwk) -> Result<Map<String, Value>, JwsError> {
        let key = jwk.verifying_key(self.alg).map_err(JwsError::Signature)?;
        self.verify_with(&key)
    }

    /// [`Self::verify`], with the verifier for `jwk` taken from `keys` when one was built
    /// before, and remembered there once it has verified this signature.
    pub fn verify_remembering(
        self,
        jwk: &Jwk,
        keys: &VerifyingKeys,
    ) -> Result<Map<String, Value>, JwsError> {
        let alg = self.alg;
        if let Some(known) = keys.find(jwk, alg) {
            return self.verify_with(&known);
        }
        let built = Arc::new(jwk.verifying_key(alg).map_err(JwsError::Signature)?);
        let payload = self.verify_with(&built)?;
        keys.remember(jwk, alg, built);
        Ok(payload)
    }

    /// Verifies with a prepared key, which must be for the header's `alg`.
    pub fn verify_with(self, key: &VerifyingKey) -> Result<Map<String, Value>, JwsError> {
        if key.algorithm() != self.alg {
            return Err(JwsError::Signature(VerifyError::AlgMismatch {
                alg: self.alg,
            }));
        }
        key.verify(self.signing_input(), &self.signature)
            .map_err(JwsError::Signature)?;
        Ok(self.payload)
    }
}

fn decode_object(b64: &str, part: &'static str) -> Result<Map<String, Value>, JwsError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| JwsError::BadBase64(part))?;
    match parse_strict(&bytes).map_err(|error| JwsError::BadJson { part, error })? {
        Value::Object(map) => Ok(map),
        _ => Err(JwsError::NotAnObject(part)),
    }
}

/// Encodes `header` and `payload` and returns the JWS signing input `b64(h).b64(p)`.
pub fn signing_input(header: &Value, payload: &Value) -> String {
    let enc = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap_or_default());
    format!("{}.{}", enc(header), enc(payload))
}

/// Appends a signature to a signing input, giving the compact serialization.
pub fn compact(signing_input: &str, signature: &[u8]) -> String {
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair};
    use serde_json::json;

    use super::*;

    fn new_key() -> EcdsaKeyPair {
        EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap()
    }

    fn jwk_of(key: &EcdsaKeyPair) -> Jwk {
        let p = key.public_key().as_ref();
        Jwk::from_json(&json!({
            "kty": "EC", "crv": "P-256", "kid": "k1",
            "x": URL_SAFE_NO_PAD.encode(&p[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&p[33..65]),
        }))
        .unwrap()
    }

    fn signed_by(key: &EcdsaKeyPair) -> UnverifiedJws {
        let input = signing_input(&json!({"alg": "ES256", "kid": "k1"}), &json!({"sub": "s"}));
        let sig = key.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        UnverifiedJws::parse(&compact(&input, sig.as_ref()), 4096).unwrap()
    }

    #[test]
    fn only_a_verifier_that_verified_a_signature_is_remembered() {
        let (issuer, forger) = (new_key(), new_key());
        let jwk = jwk_of(&issuer);
        let keys = VerifyingKeys::new();

        // A forgery naming the issuer's key: refused, and nothing remembered.
        assert!(matches!(
            signed_by(&forger).verify_remembering(&jwk, &keys),
            Err(JwsError::Signature(VerifyError::BadSignature))
        ));
        assert!(keys.is_empty());

        assert_eq!(
            signed_by(&issuer).verify_remembering(&jwk, &keys).unwrap()["sub"],
            "s"
        );
        assert_eq!(keys.len(), 1);

        // The remembered verifier refuses the forgery just the same.
        assert!(signed_by(&forger).verify_remembering(&jwk, &keys).is_err());
        assert!(signed_by(&issuer).verify_remembering(&jwk, &keys).is_ok());
        assert_eq!(keys.len(), 1);
    }
}
