//! The attestation stage's interface (SPEC §6). Verifying enforcer evidence is its own
//! piece of work; the exchange already requires and routes it through this trait, and a
//! broker without a verifier refuses every piece of evidence (fail closed).

use trust_bundles::UnixTime;

use crate::error::EvidenceError;
use crate::policy::Boundary;
use crate::state::BoxFuture;
use crate::subject::ValidatedToken;

/// What the verifier is asked to judge.
#[derive(Debug, Clone, Copy)]
pub struct EvidenceContext<'a> {
    /// The compact JWS from the `Runtime-Attestation` header.
    pub evidence: &'a str,
    pub subject: &'a ValidatedToken,
    pub boundary: &'a Boundary,
    pub now: UnixTime,
}

/// Evidence whose chain, signature, freshness and `require` facts hold. The exchange
/// then checks `nonce`, `jkt` and `sub` against the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedEvidence {
    /// The node's SPIFFE ID (the certificate's URI SAN).
    pub node: String,
    /// The workload SPIFFE ID the enforcer vouches for.
    pub workload: String,
    pub nonce: String,
    pub jkt: String,
    /// SHA-256 of the compact serialization, base64url (SPEC §11 `att.evd`).
    pub digest: String,
}

pub trait EvidenceVerifier: Send + Sync {
    fn verify<'a>(
        &'a self,
        ctx: EvidenceContext<'a>,
    ) -> BoxFuture<'a, Result<VerifiedEvidence, EvidenceError>>;
}

/// Refuses all evidence: the verifier of a broker that cannot check it.
#[derive(Debug, Default, Clone, Copy)]
pub struct RefuseAllEvidence;

impl EvidenceVerifier for RefuseAllEvidence {
    fn verify<'a>(
        &'a self,
        _ctx: EvidenceContext<'a>,
    ) -> BoxFuture<'a, Result<VerifiedEvidence, EvidenceError>> {
        Box::pin(async { Err(EvidenceError::Unsupported) })
    }
}
