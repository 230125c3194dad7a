//! The broker's signing keys: generation, rotation on schedule, publication ahead of use,
//! and retirement only after every token a key signed has expired.
//!
//! Timeline of one key (per algorithm): published at `publish_at`, signs from `activate_at`
//! for `rotate_every`, then stops signing at `deactivate_at` and stays in the JWKS until
//! `deactivate_at + max_token_ttl`, when no token it signed can still be valid.

use std::fmt;
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use std::sync::{Arc, PoisonError, RwLock};

use trust_bundles::{Clock, Jwk, JwsAlgorithm, UnixTime};

use crate::state::{BoxFuture, KeySource, StateError};

/// Most keys the JWKS publishes (SPEC/issue budget); the oldest retired go first.
pub const MAX_PUBLISHED_KEYS: usize = 100;

/// Algorithms the broker signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum SigningAlg {
    ES256,
    RS256,
}

impl SigningAlg {
    pub fn jws(self) -> JwsAlgorithm {
        match self {
            Self::ES256 => JwsAlgorithm::ES256,
            Self::RS256 => JwsAlgorithm::RS256,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key generation failed")]
    Generate,
    #[error("stored key {kid} does not load")]
    Load { kid: String },
    #[error("signing failed")]
    Sign,
    #[error("no active {0:?} key")]
    NoActiveKey(SigningAlg),
}

/// A key as persisted. The PKCS#8 document is secret: `Debug` redacts it.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyRecord {
    pub kid: String,
    pub alg: SigningAlg,
    pub pkcs8_b64: String,
    pub publish_at: u64,
    pub activate_at: u64,
    pub deactivate_at: u64,
}

impl fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRecord")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("pkcs8_b64", &"[redacted]")
            .field("publish_at", &self.publish_at)
            .field("activate_at", &self.activate_at)
            .field("deactivate_at", &self.deactivate_at)
            .finish()
    }
}

enum Private {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A loaded key: record, public JWK and a parsed private key ready to sign.
pub struct SigningKey {
    record: KeyRecord,
    jwk: Jwk,
    private: Private,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    pub fn kid(&self) -> &str {
        &self.record.kid
    }

    pub fn alg(&self) -> SigningAlg {
        self.record.alg
    }

    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    pub fn record(&self) -> &KeyRecord {
        &self.record
    }

    /// Signs a JWS signing input.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = SystemRandom::new();
        match &self.private {
            Private::Ec(k) => k
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| KeyError::Sign),
            Private::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .map_err(|_| KeyError::Sign)?;
                Ok(sig)
            }
        }
    }

    fn load(record: KeyRecord) -> Result<Self, KeyError> {
        let load_err = || KeyError::Load {
            kid: record.kid.clone(),
        };
        let der = URL_SAFE_NO_PAD
            .decode(&record.pkcs8_b64)
            .map_err(|_| load_err())?;
        let (private, public) = match record.alg {
            SigningAlg::ES256 => {
                let k = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                    .map_err(|_| load_err())?;
                let jwk = Jwk::from_ec_point(k.public_key().as_ref()).map_err(|_| load_err())?;
                (Private::Ec(k), serde_json::Value::Object(jwk.to_json()))
            }
            SigningAlg::RS256 => {
                let k = RsaKeyPair::from_pkcs8(&der).map_err(|_| load_err())?;
                let (n, e) = rsa_components(k.public_key().as_ref()).ok_or_else(load_err)?;
                let jwk = json!({"kty":"RSA","n":URL_SAFE_NO_PAD.encode(n),"e":URL_SAFE_NO_PAD.encode(e)});
                (Private::Rsa(k), jwk)
            }
        };
        let mut public = public;
        if let Some(obj) = public.as_object_mut() {
            obj.insert("kid".into(), record.kid.clone().into());
            obj.insert("alg".into(), record.alg.jws().as_str().into());
        }
        let jwk = Jwk::from_json(&public).map_err(|_| load_err())?;
        Ok(Self {
            record,
            jwk,
            private,
        })
    }

    fn generate(
        alg: SigningAlg,
        publish_at: u64,
        activate_at: u64,
        deactivate_at: u64,
    ) -> Result<Self, KeyError> {
        let der = match alg {
            SigningAlg::ES256 => {
                EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
                    .and_then(|k| k.to_pkcs8v1())
                    .map(|d| d.as_ref().to_vec())
            }
            SigningAlg::RS256 => RsaKeyPair::generate(KeySize::Rsa2048)
                .and_then(|k| {
                    aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&k)
                })
                .map(|d| d.as_ref().to_vec()),
        }
        .map_err(|_| KeyError::Generate)?;
        let id: [u8; 12] = aws_lc_rs::rand::generate(&SystemRandom::new())
            .map_err(|_| KeyError::Generate)?
            .expose();
        Self::load(KeyRecord {
            kid: URL_SAFE_NO_PAD.encode(id),
            alg,
            pkcs8_b64: URL_SAFE_NO_PAD.encode(der),
            publish_at,
            activate_at,
            deactivate_at,
        })
    }
}

/// Splits a DER `RSAPublicKey` into (n, e), minimal big-endian.
fn rsa_components(der: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    fn tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (&t, rest) = input.split_first()?;
        if t != tag {
            return None;
        }
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return None;
            }
            let (bytes, rest) = rest.split_at_checked(n)?;
            (
                bytes
                    .iter()
                    .fold(0usize, |acc, b| (acc << 8) | usize::from(*b)),
                rest,
            )
        };
        rest.split_at_checked(len)
    }
    let (seq, _) = tlv(der, 0x30)?;
    let (n, rest) = tlv(seq, 0x02)?;
    let (e, _) = tlv(rest, 0x02)?;
    let strip = |v: &[u8]| {
        v.iter()
            .position(|&b| b != 0)
            .map(|i| v.get(i..).unwrap_or_default().to_vec())
    };
    Some((strip(n)?, strip(e)?))
}

/// Rotation settings (SPEC §3 `[keys]`).
#[derive(Debug, Clone, Copy)]
pub struct RotationPolicy {
    pub rotate_every: Duration,
    pub publish_ahead: Duration,
    /// The longest lifetime any issued token can have (`[tokens].max_ttl`).
    pub max_token_ttl: Duration,
}

/// All signing keys, of every algorithm.
#[derive(Debug, Default)]
pub struct KeyRing {
    keys: Vec<SigningKey>,
}

impl KeyRing {
    /// Loads persisted keys.
    pub fn from_records(records: impl IntoIterator<Item = KeyRecord>) -> Result<Self, KeyError> {
        let keys = records
            .into_iter()
            .map(SigningKey::load)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { keys })
    }

    pub fn records(&self) -> Vec<KeyRecord> {
        self.keys.iter().map(|k| k.record.clone()).collect()
    }

    /// Brings the ring up to date at `now` for `algs`: makes sure each has an active key
    /// and, within `publish_ahead` of its rotation, a published successor; drops keys no
    /// valid token can reference. Returns whether anything changed (so the caller
    /// persists).
    pub fn maintain(
        &mut self,
        algs: &[SigningAlg],
        policy: &RotationPolicy,
        now: UnixTime,
    ) -> Result<bool, KeyError> {
        let now = now.as_secs();
        let rotate = policy.rotate_every.as_secs().max(1);
        let ahead = policy.publish_ahead.as_secs().min(rotate);
        let mut changed = false;
        for &alg in algs {
            let active_until = self
                .keys
                .iter()
                .filter(|k| k.record.alg == alg && k.record.activate_at <= now)
                .map(|k| k.record.deactivate_at)
                .filter(|&until| until > now)
                .max();
            let until = match active_until {
                Some(until) => until,
                None => {
                    // Nothing signs now: a key active at once (first start, or a broker
                    // that was down through a rotation).
                    let k = SigningKey::generate(alg, now, now, now.saturating_add(rotate))?;
                    let until = k.record.deactivate_at;
                    self.keys.push(k);
                    changed = true;
                    until
                }
            };
            let has_successor = self
                .keys
                .iter()
                .any(|k| k.record.alg == alg && k.record.activate_at >= until);
            if !has_successor && now.saturating_add(ahead) >= until {
                self.keys.push(SigningKey::generate(
                    alg,
                    now,
                    until,
                    until.saturating_add(rotate),
                )?);
                changed = true;
            }
        }
        let ttl = policy.max_token_ttl.as_secs();
        let before = self.keys.len();
        self.keys
            .retain(|k| k.record.deactivate_at.saturating_add(ttl) > now);
        changed |= self.keys.len() != before;
        Ok(changed)
    }

    /// The key that signs `alg` tokens now: the most recently activated one.
    pub fn signer(&self, alg: SigningAlg, now: UnixTime) -> Result<&SigningKey, KeyError> {
        let now = now.as_secs();
        self.keys
            .iter()
            .filter(|k| {
                k.record.alg == alg && k.record.activate_at <= now && now < k.record.deactivate_at
            })
            .max_by_key(|k| k.record.activate_at)
            .ok_or(KeyError::NoActiveKey(alg))
    }

    /// Keys to publish at `now`: published and not yet past retirement, newest first,
    /// at most [`MAX_PUBLISHED_KEYS`].
    pub fn published(&self, now: UnixTime) -> Vec<&SigningKey> {
        let now = now.as_secs();
        let mut keys: Vec<&SigningKey> = self
            .keys
            .iter()
            .filter(|k| k.record.publish_at <= now)
            .collect();
        // Newest first; ties broken by kid so every replica publishes the same order.
        keys.sort_by(|a, b| {
            b.record
                .activate_at
                .cmp(&a.record.activate_at)
                .then_with(|| a.record.kid.cmp(&b.record.kid))
        });
        keys.truncate(MAX_PUBLISHED_KEYS);
        keys
    }

    /// A published key by `kid` (for re-exchanged broker tokens).
    pub fn verification_key(&self, kid: &str, now: UnixTime) -> Option<&Jwk> {
        self.published(now)
            .into_iter()
            .find(|k| k.kid() == kid)
            .map(SigningKey::jwk)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Keys for subject-token validation: this broker's own published keys under its local
/// trust domain name, and every other domain's from `federated`.
pub struct BrokerKeySource {
    local_domain: String,
    ring: Arc<RwLock<KeyRing>>,
    clock: Arc<dyn Clock>,
    federated: Arc<dyn KeySource>,
}

impl fmt::Debug for BrokerKeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerKeySource")
            .field("local_domain", &self.local_domain)
            .finish_non_exhaustive()
    }
}

impl BrokerKeySource {
    pub fn new(
        local_domain: String,
        ring: Arc<RwLock<KeyRing>>,
        clock: Arc<dyn Clock>,
        federated: Arc<dyn KeySource>,
    ) -> Self {
        Self {
            local_domain,
            ring,
            clock,
            federated,
        }
    }
}

impl KeySource for BrokerKeySource {
    fn jwt_key<'a>(
        &'a self,
        domain: &'a str,
        kid: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<Jwk>>, StateError>> {
        if domain == self.local_domain {
            let ring = self.ring.read().unwrap_or_else(PoisonError::into_inner);
            let found = ring
                .verification_key(kid, self.clock.now())
                .cloned()
                .map(Arc::new);
            return Box::pin(async move { Ok(found) });
        }
        self.federated.jwt_key(domain, kid)
    }
}
