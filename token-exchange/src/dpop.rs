//! DPoP proof verification (RFC 9449 §4.3). Pure: the caller consumes the nonce and marks
//! the `jti` in its stores, with the values this returns.

use std::cell::RefCell;
use std::time::Duration;

use serde_json::Value;
use trust_bundles::jwk::JwkError;
use trust_bundles::jws::{JwsError, UnverifiedJws};
use trust_bundles::{UnixTime, VerifyingKeys};

use crate::types::Jkt;

/// Largest DPoP proof accepted, in bytes.
pub const MAX_PROOF_BYTES: usize = 8 * 1024;
/// Longest `jti` accepted.
pub const MAX_JTI_LEN: usize = 256;
/// How old a proof's `iat` may be (RFC 9449 §11.1 leaves the window to the server).
pub const IAT_WINDOW: Duration = Duration::from_secs(60);

/// Why a DPoP proof is refused (all `invalid_dpop_proof`, RFC 9449 §7.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    #[error("DPoP header is repeated")]
    MultipleProofs,
    #[error(transparent)]
    Jws(#[from] JwsError),
    #[error("`typ` is not dpop+jwt")]
    BadTyp,
    #[error("header has no `jwk`")]
    MissingJwk,
    #[error("header `jwk` is unusable: {0}")]
    BadJwk(JwkError),
    #[error("header `{0}` is not allowed in a DPoP proof")]
    ForbiddenHeader(&'static str),
    #[error("claim `{0}` is missing or malformed")]
    BadClaim(&'static str),
    #[error("`htm` does not match the request method")]
    MethodMismatch,
    #[error("`htu` does not match the token endpoint")]
    UriMismatch,
    #[error("`iat` {iat} is outside the accepted window (now {now})")]
    IatOutOfWindow { iat: u64, now: u64 },
}

/// A proof whose signature, shape, method, URI and time all check out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    pub jkt: Jkt,
    pub jti: String,
    pub nonce: Option<String>,
    pub iat: UnixTime,
}

/// What the proof must be for.
#[derive(Debug, Clone)]
pub struct ProofTarget<'a> {
    pub method: &'a str,
    /// The token endpoint URL as the configured issuer names it (SPEC §11), not as the
    /// Host header says.
    pub uri: &'a str,
    pub now: UnixTime,
    pub skew: Duration,
}

/// RFC 9449 §4.3 checks 2-11 (one header, check 1, is the caller's; nonce and `jti`
/// uniqueness, checks 10 and 12, use the returned values).
pub fn verify_proof(proof: &str, target: &ProofTarget<'_>) -> Result<VerifiedProof, DpopError> {
    verify_proof_with(proof, target, &VerifyingKeys::new())
}

/// [`verify_proof`], with verifiers for keys seen before taken from `keys`: a workload
/// keeps its DPoP key for its lifetime, so the broker sees the same few keys again and
/// again. Give DPoP a cache of its own: proofs with fresh keys (anyone can make them)
/// then never push an issuer's key out of the subject validator's.
pub fn verify_proof_with(
    proof: &str,
    target: &ProofTarget<'_>,
    keys: &VerifyingKeys,
) -> Result<VerifiedProof, DpopError> {
    // 2, 5: a compact JWS with an asymmetric `alg` (none/HMAC refused at parse).
    let jws = UnverifiedJws::parse(proof, MAX_PROOF_BYTES)?;
    // 4.
    if !jws
        .header_str("typ")
        .is_some_and(|t| t.eq_ignore_ascii_case("dpop+jwt"))
    {
        return Err(DpopError::BadTyp);
    }
    // The key travels in `jwk` and nowhere else: nothing is fetched or chained.
    for h in ["x5c", "x5u", "jku"] {
        if jws.header().contains_key(h) {
            return Err(DpopError::ForbiddenHeader(h));
        }
    }
    // 7: the key is public (private members refuse it in `VerifyingKeys::parse`).
    let jwk_value = jws.header().get("jwk").ok_or(DpopError::MissingJwk)?;
    let (jwk, known) = keys
        .parse(jwk_value, jws.alg())
        .map_err(DpopError::BadJwk)?;
    // 6.
    let claims = match known {
        Some(key) => jws.verify_with(&key)?,
        None => jws.verify_remembering(&jwk, keys)?,
    };

    // 3.
    let jti = match claims.get("jti") {
        Some(Value::String(j)) if !j.is_empty() && j.len() <= MAX_JTI_LEN => j.clone(),
        _ => return Err(DpopError::BadClaim("jti")),
    };
    let htm = claims
        .get("htm")
        .and_then(Value::as_str)
        .ok_or(DpopError::BadClaim("htm"))?;
    let htu = claims
        .get("htu")
        .and_then(Value::as_str)
        .ok_or(DpopError::BadClaim("htu"))?;
    let iat = claims
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or(DpopError::BadClaim("iat"))?;
    let nonce = match claims.get("nonce") {
        None => None,
        Some(Value::String(n)) => Some(n.clone()),
        Some(_) => return Err(DpopError::BadClaim("nonce")),
    };

    // 8.
    if htm != target.method {
        return Err(DpopError::MethodMismatch);
    }
    // 9: RFC 9449 §4.3 — compared without query and fragment, after syntax-based
    // normalisation (scheme and host case, default port, dot segments).
    // The common case, the endpoint spelled exactly as configured, compares as strings;
    // the target must still be a URL for it to match.
    if !htu_matches(htu, target.uri) {
        return Err(DpopError::UriMismatch);
    }
    // 11.
    let now = target.now.as_secs();
    let oldest = now.saturating_sub(IAT_WINDOW.as_secs());
    let newest = now.saturating_add(target.skew.as_secs());
    if iat < oldest || iat > newest {
        return Err(DpopError::IatOutOfWindow { iat, now });
    }

    Ok(VerifiedProof {
        jkt: Jkt::of(&jwk),
        jti,
        nonce,
        iat: UnixTime::from_secs(iat),
    })
}

thread_local! {
    /// The last target seen on this thread, normalised (`None`: not a URL). The target is
    /// the configured token endpoint, the same on every call, and parsing it again was a
    /// measurable share of a proof's checks.
    static TARGET: RefCell<Option<(String, Option<String>)>> = const { RefCell::new(None) };
}

/// Check 9: `htu` names `target`. The target must itself be an http(s) URL.
fn htu_matches(htu: &str, target: &str) -> bool {
    TARGET.with_borrow_mut(|memo| {
        let (_, expected) = match memo {
            Some(m) if m.0 == target => m,
            _ => memo.insert((target.to_owned(), normalise_htu(target))),
        };
        expected.as_deref().is_some_and(|expected| {
            htu == target || normalise_htu(htu).as_deref() == Some(expected)
        })
    })
}

fn normalise_htu(s: &str) -> Option<String> {
    let mut u = url::Url::parse(s).ok()?;
    if !matches!(u.scheme(), "https" | "http") {
        return None;
    }
    u.set_query(None);
    u.set_fragment(None);
    Some(u.to_string())
}
