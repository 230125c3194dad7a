//! The SPIFFE bundle format (SPIFFE Trust Domain and Bundle §4): a JWKS whose keys carry a
//! `use` of `x509-svid` (an X.509 authority in `x5c`) or `jwt-svid` (a JWT-SVID signing
//! key, found by `kid`), plus `spiffe_sequence` and `spiffe_refresh_hint`.
//!
//! Parsing is strict where a mistake could widen trust and lenient only where the standard
//! asks for it: keys of an unknown `use` or `kty` are skipped and reported, everything
//! else that is wrong refuses the whole bundle (SPEC §11).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::CertificateDer;
use serde_json::{Map, Value};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::json::{StrictJsonError, parse_strict};
use crate::jwk::{Jwk, JwkError, Kid};
use crate::spiffe_id::TrustDomain;

/// Largest bundle document accepted, in bytes.
pub const MAX_BUNDLE_BYTES: usize = 1024 * 1024;
/// Most keys one bundle may list, counting the skipped ones.
pub const MAX_BUNDLE_KEYS: usize = 1000;
/// Refresh hint used when a bundle gives none (SPEC §7).
pub const DEFAULT_REFRESH_HINT: Duration = Duration::from_secs(300);
/// Hints are clamped into this range (SPEC §11): a hint of 0 must not become a fetch loop,
/// and a hint of a year must not pin stale keys.
pub const MIN_REFRESH_HINT: Duration = Duration::from_secs(30);
pub const MAX_REFRESH_HINT: Duration = Duration::from_secs(24 * 60 * 60);

const USE_X509: &str = "x509-svid";
const USE_JWT: &str = "jwt-svid";

/// Why a bundle document is refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("bundle is {len} bytes, over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("bundle is not valid JSON: {0}")]
    Json(#[from] StrictJsonError),
    #[error("bundle is not a JSON object")]
    NotAnObject,
    #[error("bundle has no `keys` array")]
    MissingKeys,
    #[error("bundle lists {count} keys, over the limit of {max}")]
    TooManyKeys { count: usize, max: usize },
    #[error("`spiffe_sequence` is not an unsigned integer")]
    BadSequence,
    #[error("`spiffe_refresh_hint` is not a number")]
    BadRefreshHint,
    #[error("keys[{index}]: {error}")]
    Key { index: usize, error: JwkError },
    #[error("keys[{index}]: `use` is not a string")]
    BadUse { index: usize },
    #[error(
        "keys[{index}]: x509-svid key must carry exactly one certificate in `x5c`, found {count}"
    )]
    X509CertificateCount { index: usize, count: usize },
    #[error("keys[{index}]: x509-svid key must not carry a `kid`")]
    X509WithKid { index: usize },
    #[error("keys[{index}]: `x5c` certificate is not valid base64 DER: {reason}")]
    BadCertificate { index: usize, reason: String },
    #[error("keys[{index}]: the JWK does not match the public key of its `x5c` certificate")]
    X509KeyMismatch { index: usize },
    #[error("keys[{index}]: jwt-svid key has no `kid`")]
    JwtWithoutKid { index: usize },
    #[error("`kid` {kid:?} appears more than once")]
    DuplicateKid { kid: String },
}

/// A key the parser left out, and why. Bundles report these so operators see them in the
/// audit log; they never make a key usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    pub index: usize,
    pub reason: SkipReason,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    #[error("`use` is missing")]
    MissingUse,
    #[error("`use` {0:?} is not x509-svid or jwt-svid")]
    UnknownUse(String),
    #[error("{0}")]
    Unsupported(JwkError),
}

/// An X.509 authority: a CA certificate that X.509-SVIDs of the trust domain chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X509Authority {
    pub certificate: CertificateDer<'static>,
    pub jwk: Jwk,
}

/// A JWT authority: a key that signs JWT-SVIDs, looked up by `kid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtAuthority {
    pub kid: Kid,
    pub jwk: Jwk,
}

/// A parsed SPIFFE bundle for one trust domain. The bundle document does not name its
/// trust domain; whoever holds it does (see [`TrustBundles`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeBundle {
    sequence: Option<u64>,
    refresh_hint: Duration,
    x509_authorities: Vec<X509Authority>,
    jwt_authorities: Vec<JwtAuthority>,
    skipped: Vec<SkippedKey>,
}

impl SpiffeBundle {
    /// A bundle from parts; `refresh_hint` is clamped like a parsed one. Duplicate `kid`s
    /// are refused here too, so a built bundle obeys the same rules as a parsed one.
    pub fn new(
        sequence: Option<u64>,
        refresh_hint: Duration,
        x509_authorities: Vec<X509Authority>,
        jwt_authorities: Vec<JwtAuthority>,
    ) -> Result<Self, BundleError> {
        check_unique_kids(jwt_authorities.iter().map(|a| &a.kid))?;
        Ok(Self {
            sequence,
            refresh_hint: refresh_hint.clamp(MIN_REFRESH_HINT, MAX_REFRESH_HINT),
            x509_authorities,
            jwt_authorities,
            skipped: Vec::new(),
        })
    }

    /// Parses a SPIFFE bundle document.
    pub fn parse(bytes: &[u8]) -> Result<Self, BundleError> {
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(BundleError::TooLarge {
                len: bytes.len(),
                max: MAX_BUNDLE_BYTES,
            });
        }
        let doc = parse_strict(bytes)?;
        let obj = doc.as_object().ok_or(BundleError::NotAnObject)?;
        let keys = obj
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(BundleError::MissingKeys)?;
        if keys.len() > MAX_BUNDLE_KEYS {
            return Err(BundleError::TooManyKeys {
                count: keys.len(),
                max: MAX_BUNDLE_KEYS,
            });
        }
        let sequence = match obj.get("spiffe_sequence") {
            None => None,
            Some(v) => Some(v.as_u64().ok_or(BundleError::BadSequence)?),
        };
        let refresh_hint = match obj.get("spiffe_refresh_hint") {
            None => DEFAULT_REFRESH_HINT,
            Some(v) => clamp_hint(v.as_f64().ok_or(BundleError::BadRefreshHint)?),
        };

        let mut bundle = Self {
            sequence,
            refresh_hint,
            x509_authorities: Vec::new(),
            jwt_authorities: Vec::new(),
            skipped: Vec::new(),
        };
        for (index, key) in keys.iter().enumerate() {
            bundle.add_key(index, key)?;
        }
        check_unique_kids(bundle.jwt_authorities.iter().map(|a| &a.kid))?;
        Ok(bundle)
    }

    fn add_key(&mut self, index: usize, key: &Value) -> Result<(), BundleError> {
        let fatal = |error| BundleError::Key { index, error };
        let obj = key.as_object().ok_or(fatal(JwkError::NotAnObject))?;
        let use_ = match obj.get("use") {
            None => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => return Err(BundleError::BadUse { index }),
        };
        // Parse the key before looking at `use`, so that private material is refused even
        // in a key we would otherwise skip.
        let jwk = match Jwk::from_json(key) {
            Ok(jwk) => jwk,
            Err(error) if error.is_skippable() && use_.is_some() => {
                return self.skip(index, SkipReason::Unsupported(error));
            }
            Err(error @ JwkError::PrivateMaterial(_)) => return Err(fatal(error)),
            Err(error) => match use_ {
                // An unknown `use` is skipped before its key material is judged: it may be
                // a key type some other consumer understands.
                Some(u) if u != USE_X509 && u != USE_JWT => {
                    return self.skip(index, SkipReason::UnknownUse(u.to_owned()));
                }
                None => return self.skip(index, SkipReason::MissingUse),
                Some(_) => return Err(fatal(error)),
            },
        };
        match use_ {
            Some(USE_X509) => {
                let certificate = single_certificate(index, obj)?;
                if jwk.kid.is_some() {
                    return Err(BundleError::X509WithKid { index });
                }
                check_cert_matches(index, &certificate, &jwk)?;
                self.x509_authorities
                    .push(X509Authority { certificate, jwk });
            }
            Some(USE_JWT) => {
                let kid = jwk
                    .kid
                    .clone()
                    .ok_or(BundleError::JwtWithoutKid { index })?;
                self.jwt_authorities.push(JwtAuthority { kid, jwk });
            }
            Some(other) => return self.skip(index, SkipReason::UnknownUse(other.to_owned())),
            None => return self.skip(index, SkipReason::MissingUse),
        }
        Ok(())
    }

    fn skip(&mut self, index: usize, reason: SkipReason) -> Result<(), BundleError> {
        self.skipped.push(SkippedKey { index, reason });
        Ok(())
    }

    /// Serializes the bundle. Skipped keys are not written; the refresh hint always is.
    pub fn to_json(&self) -> Vec<u8> {
        let mut keys = Vec::with_capacity(self.x509_authorities.len() + self.jwt_authorities.len());
        for a in &self.x509_authorities {
            let mut k = a.jwk.to_json();
            k.insert("use".into(), USE_X509.into());
            k.insert(
                "x5c".into(),
                Value::Array(vec![Value::String(STANDARD.encode(a.certificate.as_ref()))]),
            );
            keys.push(Value::Object(k));
        }
        for a in &self.jwt_authorities {
            let mut k = a.jwk.to_json();
            k.insert("use".into(), USE_JWT.into());
            keys.push(Value::Object(k));
        }
        let mut doc = Map::new();
        doc.insert("keys".into(), Value::Array(keys));
        doc.insert(
            "spiffe_refresh_hint".into(),
            self.refresh_hint.as_secs().into(),
        );
        if let Some(seq) = self.sequence {
            doc.insert("spiffe_sequence".into(), seq.into());
        }
        // Serializing a Value built from strings and integers cannot fail.
        serde_json::to_vec(&Value::Object(doc)).unwrap_or_default()
    }

    pub fn sequence(&self) -> Option<u64> {
        self.sequence
    }

    /// The clamped refresh hint.
    pub fn refresh_hint(&self) -> Duration {
        self.refresh_hint
    }

    pub fn x509_authorities(&self) -> &[X509Authority] {
        &self.x509_authorities
    }

    pub fn jwt_authorities(&self) -> &[JwtAuthority] {
        &self.jwt_authorities
    }

    /// Keys the parser skipped, for the audit log.
    pub fn skipped(&self) -> &[SkippedKey] {
        &self.skipped
    }

    /// The JWT-SVID key with this `kid`, in this bundle only.
    pub fn jwt_authority(&self, kid: &str) -> Option<&Jwk> {
        self.jwt_authorities
            .iter()
            .find(|a| a.kid.as_str() == kid)
            .map(|a| &a.jwk)
    }

    /// A bundle with no keys at all: a valid bundle that revokes every key of its domain.
    pub fn is_empty(&self) -> bool {
        self.x509_authorities.is_empty() && self.jwt_authorities.is_empty()
    }
}

fn clamp_hint(secs: f64) -> Duration {
    // NaN cannot come from JSON; negative and huge values clamp like any absurd hint.
    let clamped = secs.clamp(
        MIN_REFRESH_HINT.as_secs_f64(),
        MAX_REFRESH_HINT.as_secs_f64(),
    );
    Duration::from_secs(clamped as u64)
}

fn check_unique_kids<'a>(kids: impl Iterator<Item = &'a Kid>) -> Result<(), BundleError> {
    let mut seen = HashSet::new();
    for kid in kids {
        if !seen.insert(kid) {
            return Err(BundleError::DuplicateKid {
                kid: kid.as_str().to_owned(),
            });
        }
    }
    Ok(())
}

fn single_certificate(
    index: usize,
    obj: &Map<String, Value>,
) -> Result<CertificateDer<'static>, BundleError> {
    let certs = match obj.get("x5c") {
        None => &[][..],
        Some(Value::Array(certs)) => certs.as_slice(),
        Some(_) => {
            return Err(BundleError::BadCertificate {
                index,
                reason: "`x5c` is not an array".into(),
            });
        }
    };
    let [Value::String(b64)] = certs else {
        return Err(match certs {
            [_] => BundleError::BadCertificate {
                index,
                reason: "`x5c` entry is not a string".into(),
            },
            _ => BundleError::X509CertificateCount {
                index,
                count: certs.len(),
            },
        });
    };
    // RFC 7517 §4.7: x5c entries are standard (not URL-safe) base64 DER.
    let der = STANDARD
        .decode(b64)
        .map_err(|e| BundleError::BadCertificate {
            index,
            reason: e.to_string(),
        })?;
    Ok(CertificateDer::from(der))
}

fn check_cert_matches(
    index: usize,
    cert: &CertificateDer<'_>,
    jwk: &Jwk,
) -> Result<(), BundleError> {
    let (rest, parsed) =
        X509Certificate::from_der(cert.as_ref()).map_err(|e| BundleError::BadCertificate {
            index,
            reason: e.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(BundleError::BadCertificate {
            index,
            reason: "trailing bytes after the certificate".into(),
        });
    }
    let spki_key = parsed.public_key().subject_public_key.data.as_ref();
    if spki_key != jwk.key.spki_bytes().as_slice() {
        return Err(BundleError::X509KeyMismatch { index });
    }
    Ok(())
}

/// Bundles by trust domain. Lookups never cross domains: a `kid` is only meaningful within
/// the issuer's own domain, so a key of domain A can never verify a token claiming B.
#[derive(Debug, Clone, Default)]
pub struct TrustBundles {
    bundles: HashMap<TrustDomain, SpiffeBundle>,
}

/// Why no key was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("no bundle is held for trust domain {0}")]
    UnknownTrustDomain(TrustDomain),
    #[error("trust domain {trust_domain} has no JWT authority with kid {kid:?}")]
    UnknownKid {
        trust_domain: TrustDomain,
        kid: String,
    },
}

impl TrustBundles {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the bundle of `td`, returning the one it replaces.
    pub fn insert(&mut self, td: TrustDomain, bundle: SpiffeBundle) -> Option<SpiffeBundle> {
        self.bundles.insert(td, bundle)
    }

    pub fn remove(&mut self, td: &TrustDomain) -> Option<SpiffeBundle> {
        self.bundles.remove(td)
    }

    pub fn get(&self, td: &TrustDomain) -> Option<&SpiffeBundle> {
        self.bundles.get(td)
    }

    /// The JWT-SVID key `kid` of trust domain `td`, looked up in that domain's bundle only.
    pub fn jwt_key(&self, td: &TrustDomain, kid: &str) -> Result<&Jwk, LookupError> {
        let bundle = self
            .bundles
            .get(td)
            .ok_or_else(|| LookupError::UnknownTrustDomain(td.clone()))?;
        bundle
            .jwt_authority(kid)
            .ok_or_else(|| LookupError::UnknownKid {
                trust_domain: td.clone(),
                kid: kid.to_owned(),
            })
    }
}
