//! Public JSON Web Keys (RFC 7517/7518): parsing with the checks a verifier needs, RFC 7638
//! thumbprints, and conversion to aws-lc-rs verifying keys for the JWS algorithms we accept.
//!
//! Only public keys exist here. A JWK that carries private members is refused outright:
//! publishing a private key is an incident, not a format variation.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

use aws_lc_rs::digest;
use aws_lc_rs::signature::{self, ParsedPublicKey, VerificationAlgorithm};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

/// RSA moduli below this many bits are refused (SPEC §7, RFC 8725 §3.5 via NIST SP 800-57).
pub const MIN_RSA_BITS: usize = 2048;
/// RSA moduli above this many bits are refused: a verification budget, and aws-lc's limit.
pub const MAX_RSA_BITS: usize = 8192;
/// Longest `kid` we keep; longer ones are refused rather than indexed.
pub const MAX_KID_LEN: usize = 256;

/// JWK members that only a private (or symmetric) key has. RFC 7518 §6.2.2, §6.3.2, §6.4.1;
/// RFC 8037 §2.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Why a JWK cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwkError {
    #[error("JWK is not a JSON object")]
    NotAnObject,
    #[error("JWK carries private key member `{0}`")]
    PrivateMaterial(&'static str),
    #[error("JWK `kty` is missing")]
    MissingKty,
    #[error("JWK `kty` {0:?} is not supported")]
    UnsupportedKty(String),
    #[error("JWK curve {0:?} is not supported")]
    UnsupportedCurve(String),
    #[error("JWK `alg` {0:?} is not a supported signature algorithm")]
    UnsupportedAlg(String),
    #[error("JWK `alg` {0:?} is never accepted (none or HMAC)")]
    ForbiddenAlg(String),
    #[error("JWK member `{0}` is missing or not a string")]
    MissingMember(&'static str),
    #[error("JWK member `{0}` is not canonical unpadded base64url")]
    BadBase64(&'static str),
    #[error("JWK member `{member}` has {got} bytes, expected {expected}")]
    BadLength {
        member: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("JWK member `{0}` is not a minimal unsigned integer")]
    NonMinimalInteger(&'static str),
    #[error("RSA modulus of {bits} bits is outside [{MIN_RSA_BITS}, {MAX_RSA_BITS}]")]
    RsaKeySize { bits: usize },
    #[error("RSA public key is invalid")]
    BadRsaKey,
    #[error("EC point is not on curve {0}")]
    PointNotOnCurve(&'static str),
    #[error("Ed25519 public key is invalid")]
    BadEd25519Key,
    #[error("JWK `kid` is invalid: {0}")]
    BadKid(KidError),
}

impl JwkError {
    /// Whether a SPIFFE bundle skips (and reports) a key with this error instead of refusing
    /// the whole bundle: keys of a type or algorithm we do not know may be meant for other
    /// consumers (SPIFFE Trust Domain and Bundle §4.2).
    pub fn is_skippable(&self) -> bool {
        matches!(
            self,
            Self::UnsupportedKty(_) | Self::UnsupportedCurve(_) | Self::UnsupportedAlg(_)
        )
    }
}

/// A key ID. Compared byte for byte; never interpreted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kid(String);

/// Why a string is not an acceptable `kid`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KidError {
    #[error("empty")]
    Empty,
    #[error("longer than {MAX_KID_LEN} bytes")]
    TooLong,
    #[error("contains a control character")]
    Control,
}

impl Kid {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Kid {
    type Err = KidError;
    fn from_str(s: &str) -> Result<Self, KidError> {
        if s.is_empty() {
            return Err(KidError::Empty);
        }
        if s.len() > MAX_KID_LEN {
            return Err(KidError::TooLong);
        }
        if s.chars().any(char::is_control) {
            return Err(KidError::Control);
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for Kid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The JWS signature algorithms we verify (RFC 7518 §3.1, RFC 8037 §3.1). A closed set:
/// `none` and the HMAC family are not "unsupported", they are forbidden (RFC 8725 §3.1-3.2),
/// and parsing says so distinctly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwsAlgorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

/// Why an `alg` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlgError {
    #[error("`alg` none is never accepted")]
    None,
    #[error("symmetric `alg` {0} is never accepted")]
    Symmetric(String),
    #[error("`alg` {0:?} is not supported")]
    Unsupported(String),
}

impl JwsAlgorithm {
    pub const ALL: [Self; 9] = [
        Self::RS256,
        Self::RS384,
        Self::RS512,
        Self::PS256,
        Self::PS384,
        Self::PS512,
        Self::ES256,
        Self::ES384,
        Self::EdDSA,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::PS256 => "PS256",
            Self::PS384 => "PS384",
            Self::PS512 => "PS512",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::EdDSA => "EdDSA",
        }
    }

    fn verification(self) -> &'static dyn VerificationAlgorithm {
        match self {
            Self::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Self::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Self::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            Self::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
            Self::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
            Self::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
            // RFC 7518 §3.4: JWS ECDSA signatures are R || S, fixed width.
            Self::ES256 => &signature::ECDSA_P256_SHA256_FIXED,
            Self::ES384 => &signature::ECDSA_P384_SHA384_FIXED,
            Self::EdDSA => &signature::ED25519,
        }
    }
}

impl FromStr for JwsAlgorithm {
    type Err = AlgError;
    fn from_str(s: &str) -> Result<Self, AlgError> {
        if let Some(alg) = Self::ALL.into_iter().find(|a| a.as_str() == s) {
            return Ok(alg);
        }
        // Compared case-insensitively so that `None` or `hs256` cannot slip through as
        // merely "unsupported" in a message an operator skims.
        match s.to_ascii_lowercase().as_str() {
            "none" => Err(AlgError::None),
            "hs256" | "hs384" | "hs512" => Err(AlgError::Symmetric(s.to_owned())),
            _ => Err(AlgError::Unsupported(s.to_owned())),
        }
    }
}

impl fmt::Display for JwsAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An elliptic curve we verify on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EcCurve {
    P256,
    P384,
}

impl EcCurve {
    pub fn name(self) -> &'static str {
        match self {
            Self::P256 => "P-256",
            Self::P384 => "P-384",
        }
    }

    fn coordinate_len(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
        }
    }

    /// The one JWS algorithm for keys on this curve (RFC 7518 §3.4).
    pub fn algorithm(self) -> JwsAlgorithm {
        match self {
            Self::P256 => JwsAlgorithm::ES256,
            Self::P384 => JwsAlgorithm::ES384,
        }
    }
}

/// Public key material, validated: RSA sizes in range, EC points on their curve.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PublicKey {
    /// Big-endian modulus and exponent, minimal (no leading zero octets).
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// Affine coordinates, each exactly the curve's field width.
    Ec {
        curve: EcCurve,
        x: Vec<u8>,
        y: Vec<u8>,
    },
    /// RFC 8037 Ed25519 public key.
    Ed25519 { x: [u8; 32] },
}

impl PublicKey {
    /// aws-lc's checks of the key material, which every parsed key passes before it is
    /// used: an EC point is on its curve and not the identity (invalid-curve attacks);
    /// an RSA exponent is odd, 3 ≤ e < 2^33, and the modulus sound. For Ed25519 aws-lc
    /// checks only the length, it does not decompress the point: a non-point never
    /// verifies a signature, so nothing is trusted that should not be.
    fn check(&self) -> Result<(), JwkError> {
        let parsed = match self {
            Self::Rsa { .. } => {
                ParsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, self.spki_bytes())
                    .map_err(|_| JwkError::BadRsaKey)
            }
            Self::Ec { curve, .. } => {
                ParsedPublicKey::new(curve.algorithm().verification(), self.spki_bytes())
                    .map_err(|_| JwkError::PointNotOnCurve(curve.name()))
            }
            Self::Ed25519 { x } => {
                ParsedPublicKey::new(&signature::ED25519, x).map_err(|_| JwkError::BadEd25519Key)
            }
        };
        parsed.map(drop)
    }

    /// The encoding aws-lc-rs (and an X.509 SubjectPublicKeyInfo's BIT STRING) uses: a DER
    /// `RSAPublicKey`, an uncompressed SEC1 point, or the raw Ed25519 key.
    pub fn spki_bytes(&self) -> Vec<u8> {
        match self {
            Self::Rsa { n, e } => der_rsa_public_key(n, e),
            Self::Ec { x, y, .. } => {
                let mut point = Vec::with_capacity(1 + x.len() + y.len());
                point.push(0x04);
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                point
            }
            Self::Ed25519 { x } => x.to_vec(),
        }
    }

    /// Whether `alg` belongs to this key's family (and, for EC, to its curve).
    pub fn fits(&self, alg: JwsAlgorithm) -> bool {
        use JwsAlgorithm as A;
        match self {
            Self::Rsa { .. } => matches!(
                alg,
                A::RS256 | A::RS384 | A::RS512 | A::PS256 | A::PS384 | A::PS512
            ),
            Self::Ec { curve, .. } => curve.algorithm() == alg,
            Self::Ed25519 { .. } => alg == A::EdDSA,
        }
    }

    /// Modulus size in bits for RSA keys.
    pub fn rsa_bits(&self) -> Option<usize> {
        match self {
            Self::Rsa { n, .. } => Some(bit_len(n)),
            _ => None,
        }
    }
}

/// A validated public JWK.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Jwk {
    pub key: PublicKey,
    pub kid: Option<Kid>,
    /// The JWK's own `alg`, when given: it pins the one algorithm the key may verify.
    pub alg: Option<JwsAlgorithm>,
}

/// Why a signature does not verify with a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("`alg` {alg} does not fit the key")]
    AlgMismatch { alg: JwsAlgorithm },
    #[error("key was refused by the crypto provider")]
    KeyRejected,
    #[error("signature does not verify")]
    BadSignature,
}

/// A key ready to verify signatures of one algorithm. Build it once, verify many times.
pub struct VerifyingKey {
    alg: JwsAlgorithm,
    key: ParsedPublicKey,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    pub fn algorithm(&self) -> JwsAlgorithm {
        self.alg
    }

    /// Verifies `signature` over `message` (for JWS: the ASCII signing input).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), VerifyError> {
        self.key
            .verify_sig(message, signature)
            .map_err(|_| VerifyError::BadSignature)
    }
}

/// Verifiers already built, by the JWK and `alg` they were built for (see
/// [`crate::jws::UnverifiedJws::verify_remembering`]). An issuer's keys verify token after
/// token, and building a verifier from a JWK (decoding the point or the modulus, checking
/// it) is paid again each time otherwise. Keyed by the whole JWK — key material, `kid`
/// and any pinned `alg` — so a key replaced under the same `kid` never finds the old
/// verifier, and a verifier is only ever returned for the exact `alg` it was built for.
/// Narrowing that key would open algorithm confusion. Bounded: past
/// [`VerifyingKeys::MAX`] keys it starts over.
#[derive(Default)]
pub struct VerifyingKeys {
    built: Mutex<HashMap<Jwk, PerAlg>>,
}

/// A key's verifiers, one per `alg` it was asked for (one, nearly always).
type PerAlg = Vec<(JwsAlgorithm, Arc<VerifyingKey>)>;

impl fmt::Debug for VerifyingKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKeys")
            .field("keys", &self.len())
            .finish()
    }
}

impl VerifyingKeys {
    /// Most keys remembered.
    pub const MAX: usize = 256;

    pub fn new() -> Self {
        Self::default()
    }

    /// [`Jwk::from_json`] for a key about to verify an `alg` signature, with the verifier
    /// remembered for it and `alg`, if any. A remembered key's material was checked when
    /// its verifier was built, and a hit is that key member for member, so only a key not
    /// remembered pays for aws-lc's checks (a workload presents the same DPoP key with
    /// every proof).
    pub fn parse(
        &self,
        value: &Value,
        alg: JwsAlgorithm,
    ) -> Result<(Jwk, Option<Arc<VerifyingKey>>), JwkError> {
        let jwk = Jwk::from_json_checking(value, false)?;
        if let Some(known) = self.find(&jwk, alg) {
            return Ok((jwk, Some(known)));
        }
        jwk.key.check()?;
        Ok((jwk, None))
    }

    /// The verifier remembered for `jwk` and `alg`, if any.
    pub fn find(&self, jwk: &Jwk, alg: JwsAlgorithm) -> Option<Arc<VerifyingKey>> {
        self.built
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(jwk)
            .and_then(|per_alg| per_alg.iter().find(|(a, _)| *a == alg))
            .map(|(_, key)| key.clone())
    }

    /// Remembers `key`, built by `jwk.verifying_key(alg)`. Callers remember a verifier
    /// only once it has verified a signature: forged tokens naming many keys cannot
    /// churn what is remembered. Crate-private: [`Self::parse`] trusts that a remembered
    /// key's material was checked, which only a verifier built from it proves.
    pub(crate) fn remember(&self, jwk: &Jwk, alg: JwsAlgorithm, key: Arc<VerifyingKey>) {
        let mut built = self.built.lock().unwrap_or_else(PoisonError::into_inner);
        if built.len() >= Self::MAX && !built.contains_key(jwk) {
            built.clear();
        }
        let per_alg = built.entry(jwk.clone()).or_default();
        if !per_alg.iter().any(|(a, _)| *a == alg) {
            per_alg.push((alg, key));
        }
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.built
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Jwk {
    /// Parses a public JWK from a JSON object. Members other than those of the key type,
    /// `kid` and `alg` (such as `use`, `key_ops`, `x5c`) are left to the caller.
    pub fn from_json(value: &Value) -> Result<Self, JwkError> {
        Self::from_json_checking(value, true)
    }

    /// [`Self::from_json`]; `check_material` false leaves aws-lc's checks of the key
    /// material ([`PublicKey::check`]) to the caller, for a key it knows.
    fn from_json_checking(value: &Value, check_material: bool) -> Result<Self, JwkError> {
        let obj = value.as_object().ok_or(JwkError::NotAnObject)?;
        if let Some(member) = PRIVATE_MEMBERS.into_iter().find(|m| obj.contains_key(*m)) {
            return Err(JwkError::PrivateMaterial(member));
        }
        let kty = obj
            .get("kty")
            .and_then(Value::as_str)
            .ok_or(JwkError::MissingKty)?;
        let key = match kty {
            "RSA" => parse_rsa(obj)?,
            "EC" => parse_ec(obj)?,
            "OKP" => parse_okp(obj)?,
            other => return Err(JwkError::UnsupportedKty(other.to_owned())),
        };
        if check_material {
            key.check()?;
        }
        let alg = match obj.get("alg") {
            None => None,
            Some(Value::String(s)) => match s.parse::<JwsAlgorithm>() {
                Ok(alg) if key.fits(alg) => Some(alg),
                // RFC 8725 §3.1-3.2: a key published for `none` or HMAC is a mistake worth
                // refusing the bundle over, not a key some other consumer may understand.
                Err(AlgError::None | AlgError::Symmetric(_)) => {
                    return Err(JwkError::ForbiddenAlg(s.clone()));
                }
                _ => return Err(JwkError::UnsupportedAlg(s.clone())),
            },
            Some(_) => return Err(JwkError::MissingMember("alg")),
        };
        let kid = match obj.get("kid") {
            None => None,
            Some(Value::String(s)) => Some(s.parse().map_err(JwkError::BadKid)?),
            Some(_) => return Err(JwkError::MissingMember("kid")),
        };
        Ok(Self { key, kid, alg })
    }

    /// A JWK for an uncompressed SEC1 point (`04 || x || y`) on P-256 or P-384, the form
    /// aws-lc and X.509 use; the point is validated like a parsed one.
    pub fn from_ec_point(point: &[u8]) -> Result<Self, JwkError> {
        let curve = match point.len() {
            65 => EcCurve::P256,
            97 => EcCurve::P384,
            got => {
                return Err(JwkError::BadLength {
                    member: "point",
                    expected: 65,
                    got,
                });
            }
        };
        let coords = point.get(1..).unwrap_or_default();
        let (x, y) = coords.split_at(curve.coordinate_len());
        let key = PublicKey::Ec {
            curve,
            x: x.to_vec(),
            y: y.to_vec(),
        };
        if key.spki_bytes() != point {
            return Err(JwkError::PointNotOnCurve(curve.name()));
        }
        key.check()?;
        Ok(Self {
            key,
            kid: None,
            alg: None,
        })
    }

    /// The key as a JSON object with `kty`, its public members, `kid` and `alg` when set.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        for (name, value) in self.required_members() {
            m.insert(name.to_owned(), Value::String(value));
        }
        if let Some(kid) = &self.kid {
            m.insert("kid".into(), Value::String(kid.0.clone()));
        }
        if let Some(alg) = self.alg {
            m.insert("alg".into(), Value::String(alg.as_str().into()));
        }
        m
    }

    /// RFC 7638 §3.2 required members, in lexicographic order, values as they appear in JSON.
    fn required_members(&self) -> Vec<(&'static str, String)> {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        match &self.key {
            PublicKey::Rsa { n, e } => vec![("e", b64(e)), ("kty", "RSA".into()), ("n", b64(n))],
            PublicKey::Ec { curve, x, y } => vec![
                ("crv", curve.name().into()),
                ("kty", "EC".into()),
                ("x", b64(x)),
                ("y", b64(y)),
            ],
            PublicKey::Ed25519 { x } => vec![
                ("crv", "Ed25519".into()),
                ("kty", "OKP".into()),
                ("x", b64(x)),
            ],
        }
    }

    /// The RFC 7638 JWK SHA-256 thumbprint, base64url without padding: the `jkt` of
    /// RFC 9449 §6.1.
    pub fn thumbprint_sha256(&self) -> String {
        // RFC 7638 §3.1: no whitespace, members in lexicographic order. The member values
        // are base64url or fixed names, so they need no JSON escaping. One buffer, no
        // `format!`: a DPoP key's thumbprint is taken on every request.
        let mut canonical = String::with_capacity(160);
        for (name, value) in self.required_members() {
            canonical.push_str(if canonical.is_empty() { "{\"" } else { ",\"" });
            canonical.push_str(name);
            canonical.push_str("\":\"");
            canonical.push_str(&value);
            canonical.push('"');
        }
        canonical.push('}');
        URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, canonical.as_bytes()))
    }

    /// A verifier for `alg`, which must fit the key's family and, when the JWK names an
    /// `alg`, be exactly that one (RFC 7517 §4.4; RFC 8725 §3.1).
    pub fn verifying_key(&self, alg: JwsAlgorithm) -> Result<VerifyingKey, VerifyError> {
        if !self.key.fits(alg) || self.alg.is_some_and(|pinned| pinned != alg) {
            return Err(VerifyError::AlgMismatch { alg });
        }
        let key = ParsedPublicKey::new(alg.verification(), self.key.spki_bytes())
            .map_err(|_| VerifyError::KeyRejected)?;
        Ok(VerifyingKey { alg, key })
    }
}

fn member<'a>(obj: &'a Map<String, Value>, name: &'static str) -> Result<&'a str, JwkError> {
    obj.get(name)
        .and_then(Value::as_str)
        .ok_or(JwkError::MissingMember(name))
}

fn b64_member(obj: &Map<String, Value>, name: &'static str) -> Result<Vec<u8>, JwkError> {
    URL_SAFE_NO_PAD
        .decode(member(obj, name)?)
        .map_err(|_| JwkError::BadBase64(name))
}

/// RFC 7518 §2 "Base64urlUInt": the minimum number of octets, zero as a single zero octet.
fn uint_member(obj: &Map<String, Value>, name: &'static str) -> Result<Vec<u8>, JwkError> {
    let bytes = b64_member(obj, name)?;
    match bytes.as_slice() {
        [] | [0, _, ..] => Err(JwkError::NonMinimalInteger(name)),
        _ => Ok(bytes),
    }
}

fn bit_len(n: &[u8]) -> usize {
    match n.first() {
        // INVARIANT: minimal integers have a non-zero first octet.
        Some(&first) => n.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

fn parse_rsa(obj: &Map<String, Value>) -> Result<PublicKey, JwkError> {
    let n = uint_member(obj, "n")?;
    let e = uint_member(obj, "e")?;
    let bits = bit_len(&n);
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(JwkError::RsaKeySize { bits });
    }
    Ok(PublicKey::Rsa { n, e })
}

fn parse_ec(obj: &Map<String, Value>) -> Result<PublicKey, JwkError> {
    let curve = match member(obj, "crv")? {
        "P-256" => EcCurve::P256,
        "P-384" => EcCurve::P384,
        other => return Err(JwkError::UnsupportedCurve(other.to_owned())),
    };
    let width = curve.coordinate_len();
    let x = b64_member(obj, "x")?;
    let y = b64_member(obj, "y")?;
    // RFC 7518 §6.2.1.2-3: coordinates are the full field width, never shortened.
    for (name, c) in [("x", &x), ("y", &y)] {
        if c.len() != width {
            return Err(JwkError::BadLength {
                member: name,
                expected: width,
                got: c.len(),
            });
        }
    }
    Ok(PublicKey::Ec { curve, x, y })
}

fn parse_okp(obj: &Map<String, Value>) -> Result<PublicKey, JwkError> {
    match member(obj, "crv")? {
        "Ed25519" => {}
        other => return Err(JwkError::UnsupportedCurve(other.to_owned())),
    }
    let x = b64_member(obj, "x")?;
    let got = x.len();
    let x: [u8; 32] = x.try_into().map_err(|_| JwkError::BadLength {
        member: "x",
        expected: 32,
        got,
    })?;
    Ok(PublicKey::Ed25519 { x })
}

/// DER `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }` (RFC 8017 A.1.1).
fn der_rsa_public_key(n: &[u8], e: &[u8]) -> Vec<u8> {
    let mut body = der_uint(n);
    body.extend(der_uint(e));
    der_tlv(0x30, &body)
}

fn der_uint(v: &[u8]) -> Vec<u8> {
    let v = match v.iter().position(|&b| b != 0) {
        Some(i) => v.get(i..).unwrap_or_default(),
        None => &[0u8][..],
    };
    let mut content = Vec::with_capacity(v.len() + 1);
    if v.first().is_some_and(|&b| b & 0x80 != 0) {
        content.push(0); // keep it positive
    }
    content.extend_from_slice(v);
    der_tlv(0x02, &content)
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let len_bytes = len.to_be_bytes();
        let skip = len_bytes.iter().take_while(|&&b| b == 0).count();
        let significant = len_bytes.get(skip..).unwrap_or_default();
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::signature::RsaKeyPair;
    use serde_json::json;

    use super::*;

    /// RFC 7638 §3.1's example key and thumbprint.
    #[test]
    fn rfc7638_thumbprint_vector() {
        let jwk = Jwk::from_json(&json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        }))
        .unwrap();
        assert_eq!(
            jwk.thumbprint_sha256(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        assert_eq!(jwk.key.rsa_bits(), Some(2048));
        assert_eq!(jwk.kid.as_ref().map(Kid::as_str), Some("2011-04-29"));
    }

    /// RFC 9449 §6.1: the `jkt` of the example proof key of §4.1.
    #[test]
    fn rfc9449_ec_thumbprint_vector() {
        let jwk = Jwk::from_json(&json!({
            "kty": "EC",
            "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
            "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
            "crv": "P-256"
        }))
        .unwrap();
        assert_eq!(
            jwk.thumbprint_sha256(),
            "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
        );
    }

    /// RFC 8037 appendix A.3: the thumbprint of the Ed25519 example key.
    #[test]
    fn rfc8037_okp_thumbprint_vector() {
        let jwk = Jwk::from_json(&json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        }))
        .unwrap();
        assert_eq!(
            jwk.thumbprint_sha256(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    fn es256_jwk(key: &aws_lc_rs::signature::EcdsaKeyPair, kid: &str) -> Jwk {
        use aws_lc_rs::signature::KeyPair;
        let p = key.public_key().as_ref();
        Jwk::from_json(&json!({
            "kty": "EC", "crv": "P-256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&p[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&p[33..65]),
        }))
        .unwrap()
    }

    /// What `UnverifiedJws::verify_remembering` does, without a JWS.
    fn verifier(keys: &VerifyingKeys, jwk: &Jwk, alg: JwsAlgorithm) -> Arc<VerifyingKey> {
        keys.find(jwk, alg).unwrap_or_else(|| {
            let built = Arc::new(jwk.verifying_key(alg).unwrap());
            keys.remember(jwk, alg, built.clone());
            built
        })
    }

    #[test]
    fn remembered_verifiers_follow_the_key_not_the_kid() {
        use aws_lc_rs::signature::EcdsaKeyPair;
        let new_key =
            || EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let (a, b) = (new_key(), new_key());
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let sig_a = a.sign(&rng, b"m").unwrap();
        let sig_b = b.sign(&rng, b"m").unwrap();
        let (jwk_a, jwk_b) = (es256_jwk(&a, "k1"), es256_jwk(&b, "k1"));
        let keys = VerifyingKeys::new();

        let va = verifier(&keys, &jwk_a, JwsAlgorithm::ES256);
        assert!(va.verify(b"m", sig_a.as_ref()).is_ok());
        let again = keys.find(&jwk_a, JwsAlgorithm::ES256).unwrap();
        assert!(Arc::ptr_eq(&va, &again));

        // The same `kid`, another key: its own verifier, never the remembered one.
        assert!(keys.find(&jwk_b, JwsAlgorithm::ES256).is_none());
        let vb = verifier(&keys, &jwk_b, JwsAlgorithm::ES256);
        assert_eq!(
            vb.verify(b"m", sig_a.as_ref()),
            Err(VerifyError::BadSignature)
        );
        assert!(vb.verify(b"m", sig_b.as_ref()).is_ok());
        assert_eq!(keys.len(), 2);

        // The same key with `alg` pinned is another entry.
        let mut pinned = jwk_a.clone();
        pinned.alg = Some(JwsAlgorithm::ES256);
        assert!(keys.find(&pinned, JwsAlgorithm::ES256).is_none());
    }

    /// `VerifyingKeys::parse` checks the material of every key it does not remember: an
    /// off-curve point is refused though a key with the same `x` is remembered, and a
    /// remembered key comes back with its verifier.
    #[test]
    fn parse_checks_what_it_does_not_remember() {
        use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair};
        let key = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let p = key.public_key().as_ref();
        let json_of = |y: &[u8]| {
            json!({"kty": "EC", "crv": "P-256",
                   "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(y)})
        };
        let good = json_of(&p[33..65]);
        let mut y = p[33..65].to_vec();
        y[31] ^= 1;
        let off_curve = json_of(&y);
        let keys = VerifyingKeys::new();
        // Nothing remembered: both are checked, the good one passes.
        assert!(keys.parse(&good, JwsAlgorithm::ES256).unwrap().1.is_none());
        assert_eq!(
            keys.parse(&off_curve, JwsAlgorithm::ES256).err(),
            Some(JwkError::PointNotOnCurve("P-256"))
        );
        assert_eq!(
            Jwk::from_json(&off_curve).err(),
            Some(JwkError::PointNotOnCurve("P-256"))
        );

        let jwk = Jwk::from_json(&good).unwrap();
        let built = verifier(&keys, &jwk, JwsAlgorithm::ES256);
        let (parsed, known) = keys.parse(&good, JwsAlgorithm::ES256).unwrap();
        assert_eq!(parsed, jwk);
        assert!(Arc::ptr_eq(&known.unwrap(), &built));
        // Remembered for ES256 only; and the off-curve twin is still refused.
        assert!(keys.parse(&good, JwsAlgorithm::ES384).unwrap().1.is_none());
        assert_eq!(
            keys.parse(&off_curve, JwsAlgorithm::ES256).err(),
            Some(JwkError::PointNotOnCurve("P-256"))
        );
        // Private members are refused whatever is remembered.
        for m in PRIVATE_MEMBERS {
            let mut private = good.clone();
            private[m] = json!("AAAA");
            assert_eq!(
                keys.parse(&private, JwsAlgorithm::ES256).err(),
                Some(JwkError::PrivateMaterial(m))
            );
        }
        // `from_json` checks the material before `alg`: an off-curve key published for an
        // algorithm it does not fit is refused for its point, never skipped for its alg.
        let mut pinned = off_curve.clone();
        pinned["alg"] = json!("ES512");
        assert_eq!(
            Jwk::from_json(&pinned).err(),
            Some(JwkError::PointNotOnCurve("P-256"))
        );
    }

    /// A SEC1 point (an X.509 leaf's key) gets the same checks as a parsed JWK.
    #[test]
    fn from_ec_point_checks_the_point() {
        use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair};
        let key = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let mut point = key.public_key().as_ref().to_vec();
        assert!(Jwk::from_ec_point(&point).is_ok());
        point[64] ^= 1;
        assert_eq!(
            Jwk::from_ec_point(&point).err(),
            Some(JwkError::PointNotOnCurve("P-256"))
        );
    }

    /// An RSA key `VerifyingKeys::parse` does not remember gets aws-lc's checks: an even
    /// exponent is refused.
    #[test]
    fn parse_checks_an_unknown_rsa_key() {
        let kp = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let (n, _) = rsa_members(&kp);
        let keys = VerifyingKeys::new();
        let good = json!({"kty": "RSA", "n": n, "e": "AQAB"});
        assert!(keys.parse(&good, JwsAlgorithm::RS256).is_ok());
        let even = json!({"kty": "RSA", "n": n, "e": "AQAA"});
        assert_eq!(
            keys.parse(&even, JwsAlgorithm::RS256).err(),
            Some(JwkError::BadRsaKey)
        );
        assert_eq!(Jwk::from_json(&even).err(), Some(JwkError::BadRsaKey));
    }

    /// A 2048-bit key's JWK `n` and `e`, from its DER `RSAPublicKey ::= SEQUENCE {
    /// INTEGER n, INTEGER e }` (2-byte lengths at this size).
    fn rsa_members(kp: &RsaKeyPair) -> (String, String) {
        use aws_lc_rs::signature::KeyPair;
        let der = kp.public_key().as_ref();
        let n_len = (usize::from(der[6]) << 8) | usize::from(der[7]);
        let n = &der[8..8 + n_len];
        let e = &der[8 + n_len + 2..8 + n_len + 2 + usize::from(der[8 + n_len + 1])];
        (
            URL_SAFE_NO_PAD.encode(&n[n.iter().position(|&b| b != 0).unwrap()..]),
            URL_SAFE_NO_PAD.encode(e),
        )
    }

    #[test]
    fn an_rsa_key_has_one_verifier_per_alg() {
        use aws_lc_rs::signature::RSA_PKCS1_SHA256;
        let kp = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let (n, e) = rsa_members(&kp);
        let jwk = Jwk::from_json(&json!({"kty": "RSA", "n": n, "e": e})).unwrap();
        let mut sig = vec![0; kp.public_modulus_len()];
        kp.sign(
            &RSA_PKCS1_SHA256,
            &aws_lc_rs::rand::SystemRandom::new(),
            b"m",
            &mut sig,
        )
        .unwrap();
        let keys = VerifyingKeys::new();
        let rs = verifier(&keys, &jwk, JwsAlgorithm::RS256);
        let ps = verifier(&keys, &jwk, JwsAlgorithm::PS256);
        assert!(rs.verify(b"m", &sig).is_ok());
        // A PKCS#1 v1.5 signature never verifies under the PS256 verifier of that key.
        assert_eq!(ps.verify(b"m", &sig), Err(VerifyError::BadSignature));
        assert_eq!(ps.algorithm(), JwsAlgorithm::PS256);
        assert_eq!(keys.len(), 1);
    }

    #[test]
    fn remembered_verifiers_are_bounded() {
        use aws_lc_rs::signature::EcdsaKeyPair;
        let keys = VerifyingKeys::new();
        for i in 0..=VerifyingKeys::MAX {
            let k = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
            verifier(&keys, &es256_jwk(&k, &format!("k{i}")), JwsAlgorithm::ES256);
            assert!(keys.len() <= VerifyingKeys::MAX);
        }
        assert_eq!(keys.len(), 1, "started over at the bound");
    }

    #[test]
    fn alg_names() {
        for alg in JwsAlgorithm::ALL {
            assert_eq!(alg.as_str().parse::<JwsAlgorithm>(), Ok(alg));
        }
        assert_eq!("none".parse::<JwsAlgorithm>(), Err(AlgError::None));
        assert_eq!("NONE".parse::<JwsAlgorithm>(), Err(AlgError::None));
        assert!(matches!(
            "HS256".parse::<JwsAlgorithm>(),
            Err(AlgError::Symmetric(_))
        ));
        assert!(matches!(
            "hs512".parse::<JwsAlgorithm>(),
            Err(AlgError::Symmetric(_))
        ));
        assert!(matches!(
            "ES512".parse::<JwsAlgorithm>(),
            Err(AlgError::Unsupported(_))
        ));
        assert!(matches!(
            "es256".parse::<JwsAlgorithm>(),
            Err(AlgError::Unsupported(_))
        ));
    }

    #[test]
    fn der_lengths() {
        assert_eq!(der_tlv(0x04, &[1, 2]), vec![0x04, 2, 1, 2]);
        let long = der_tlv(0x04, &[0; 300]);
        assert_eq!(long.get(..4), Some(&[0x04, 0x82, 0x01, 0x2c][..]));
        assert_eq!(der_uint(&[0x80]), vec![0x02, 2, 0, 0x80]);
        assert_eq!(der_uint(&[1, 0, 1]), vec![0x02, 3, 1, 0, 1]);
    }

    #[test]
    fn kid_rules() {
        assert_eq!("".parse::<Kid>(), Err(KidError::Empty));
        assert_eq!("a\nb".parse::<Kid>(), Err(KidError::Control));
        assert!("k".repeat(MAX_KID_LEN).parse::<Kid>().is_ok());
        assert_eq!(
            "k".repeat(MAX_KID_LEN + 1).parse::<Kid>(),
            Err(KidError::TooLong)
        );
    }
}
