//! Foreign issuers and workload keys made per run, and the wire helpers tests need.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use trust_bundles::{Clock, Jwk, SystemClock, jws};

pub const TE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const AT_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const ID_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";

pub fn now() -> u64 {
    SystemClock.now().as_secs()
}

pub fn b64u(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// An issuer key: ES256 (SPIFFE domains) or RS256 (OIDC issuers).
pub enum IssuerKey {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

impl std::fmt::Debug for IssuerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.alg())
    }
}

impl IssuerKey {
    pub fn es256() -> Self {
        Self::Ec(EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap())
    }

    pub fn rs256() -> Self {
        Self::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).unwrap())
    }

    pub fn alg(&self) -> &'static str {
        match self {
            Self::Ec(_) => "ES256",
            Self::Rsa(_) => "RS256",
        }
    }

    pub fn public_jwk(&self) -> Value {
        match self {
            Self::Ec(k) => ec_jwk(k.public_key().as_ref()),
            Self::Rsa(k) => {
                let der = k.public_key().as_ref();
                // SEQUENCE(0x30 0x82 LL LL) { INTEGER(0x02 0x82 LL LL) n, INTEGER e }.
                let n_len = ((der[6] as usize) << 8) | der[7] as usize;
                let n = &der[8..8 + n_len];
                let n = &n[n.iter().position(|&b| b != 0).unwrap()..];
                let e_at = 8 + n_len;
                let e = &der[e_at + 2..e_at + 2 + der[e_at + 1] as usize];
                json!({"kty": "RSA", "n": b64u(n), "e": b64u(e)})
            }
        }
    }

    pub fn sign(&self, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Self::Ec(k) => k.sign(&rng, input).unwrap().as_ref().to_vec(),
            Self::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, input, &mut sig)
                    .unwrap();
                sig
            }
        }
    }

    pub fn token(&self, header: &Value, claims: &Value) -> String {
        let input = jws::signing_input(header, claims);
        jws::compact(&input, &self.sign(input.as_bytes()))
    }

    /// A SPIFFE bundle with this key as the jwt-svid authority `kid`.
    pub fn bundle_json(&self, kid: &str) -> String {
        let mut k = self.public_jwk();
        k["use"] = "jwt-svid".into();
        k["kid"] = kid.into();
        json!({"keys": [k], "spiffe_sequence": 1, "spiffe_refresh_hint": 300}).to_string()
    }

    /// A JWKS with this key under `kid`.
    pub fn jwks_json(&self, kid: &str) -> String {
        let mut k = self.public_jwk();
        k["kid"] = kid.into();
        k["alg"] = self.alg().into();
        json!({"keys": [k]}).to_string()
    }
}

pub fn ec_jwk(point: &[u8]) -> Value {
    json!({"kty": "EC", "crv": "P-256", "x": b64u(&point[1..33]), "y": b64u(&point[33..65])})
}

/// A workload's DPoP key.
pub struct DpopKey {
    key: EcdsaKeyPair,
    pub jkt: String,
}

impl std::fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpopKey")
            .field("jkt", &self.jkt)
            .finish_non_exhaustive()
    }
}

impl Default for DpopKey {
    fn default() -> Self {
        Self::new()
    }
}

impl DpopKey {
    pub fn new() -> Self {
        let key = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let jkt = Jwk::from_json(&ec_jwk(key.public_key().as_ref()))
            .unwrap()
            .thumbprint_sha256();
        Self { key, jkt }
    }

    /// A proof for `htu` with `nonce` and `jti`.
    pub fn proof(&self, htu: &str, nonce: Option<&str>, jti: &str) -> String {
        let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": ec_jwk(self.key.public_key().as_ref())});
        let mut claims = json!({"jti": jti, "htm": "POST", "htu": htu, "iat": now()});
        if let Some(n) = nonce {
            claims["nonce"] = n.into();
        }
        let input = jws::signing_input(&header, &claims);
        let sig = self
            .key
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        jws::compact(&input, sig.as_ref())
    }
}

/// Decodes a JWS part without verifying.
pub fn decode_part(token: &str, i: usize) -> Value {
    let p = token.split('.').nth(i).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
}
