//! The one place internal reasons become wire errors (STYLE §10): an exhaustive match with
//! no wildcard arm, so a new reason cannot compile until someone decides its code.

use std::fmt;

use crate::dpop::DpopError;
use crate::keys::KeyError;
use crate::policy::PolicyError;
use crate::request::RequestError;
use crate::state::StateError;
use crate::subject::TokenError;

/// The error codes the token endpoint sends (SPEC §4). Closed: we emit nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidTarget,
    InvalidScope,
    UnsupportedGrantType,
    UseDpopNonce,
    InvalidDpopProof,
    UseAttestationChallenge,
    UseFreshAttestation,
    InvalidClient,
    TemporarilyUnavailable,
    ServerError,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidTarget => "invalid_target",
            Self::InvalidScope => "invalid_scope",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::UseDpopNonce => "use_dpop_nonce",
            Self::InvalidDpopProof => "invalid_dpop_proof",
            Self::UseAttestationChallenge => "use_attestation_challenge",
            Self::UseFreshAttestation => "use_fresh_attestation",
            Self::InvalidClient => "invalid_client",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::ServerError => "server_error",
        }
    }

    /// HTTP status for the code: 400 for everything the client can fix (RFC 6749 §5.2),
    /// 401 for failed client authentication, 503 when state is unreachable, 500 only for
    /// faults of our own.
    pub fn status(self) -> u16 {
        match self {
            Self::InvalidClient => 401,
            Self::TemporarilyUnavailable => 503,
            Self::ServerError => 500,
            Self::InvalidRequest
            | Self::InvalidTarget
            | Self::InvalidScope
            | Self::UnsupportedGrantType
            | Self::UseDpopNonce
            | Self::InvalidDpopProof
            | Self::UseAttestationChallenge
            | Self::UseFreshAttestation => 400,
        }
    }

    /// The short fixed description sent with the code: nothing about which key or rule.
    pub fn description(self) -> &'static str {
        match self {
            Self::InvalidRequest => "the request or a token in it is not acceptable",
            Self::InvalidTarget => "the audience is not allowed, or not exactly one",
            Self::InvalidScope => "nothing of the requested scope may be granted",
            Self::UnsupportedGrantType => "only token exchange is supported",
            Self::UseDpopNonce => "a DPoP proof with the nonce in DPoP-Nonce is required",
            Self::InvalidDpopProof => "the DPoP proof is missing or invalid",
            Self::UseAttestationChallenge => "runtime attestation evidence is required",
            Self::UseFreshAttestation => "the attestation nonce is stale or was used",
            Self::InvalidClient => "client authentication failed",
            Self::TemporarilyUnavailable => "try again later",
            Self::ServerError => "internal error",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why attestation evidence was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    #[error("evidence verification is not available on this broker")]
    Unsupported,
    #[error("evidence is invalid: {0}")]
    Invalid(String),
    #[error("evidence `nonce` differs from the DPoP proof's")]
    NonceMismatch,
    #[error("evidence `cnf.jkt` differs from the DPoP key")]
    KeyMismatch,
    #[error("evidence is stale")]
    Stale,
    #[error("node status unavailable: {0}")]
    Unavailable(StateError),
}

/// Every reason an exchange can end without a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    #[error("request: {0}")]
    Request(#[from] RequestError),
    #[error("subject token: {0}")]
    Subject(TokenError),
    #[error("actor token: {0}")]
    Actor(TokenError),
    #[error("the subject's `may_act` does not name this actor")]
    ActorNotAllowed,
    #[error("the subject token was already used at a single-use boundary")]
    SubjectReplayed,
    /// RFC 8693 §2.2.2: a revoked subject or actor token is an invalid one.
    #[error("the {which} token is revoked (by {by})")]
    Revoked {
        which: &'static str,
        by: &'static str,
    },
    #[error("the token's lineage would exceed {max} ancestors")]
    LineageTooLong { max: usize },
    #[error("policy: {0}")]
    Policy(#[from] PolicyError),
    #[error("the boundary requires attestation evidence and none came")]
    AttestationRequired,
    #[error("evidence: {0}")]
    Evidence(EvidenceError),
    #[error("a DPoP proof is required here")]
    DpopRequired,
    #[error("DPoP: {0}")]
    Dpop(#[from] DpopError),
    #[error("the DPoP key is not the key the subject token is bound to")]
    DpopKeyMismatch,
    #[error("the DPoP proof's `jti` was already used")]
    DpopReplayed,
    #[error("the nonce is missing, unknown, expired or used")]
    Nonce { evidence_presented: bool },
    #[error("{0}")]
    State(#[from] StateError),
    #[error("signing: {0}")]
    Signing(#[from] KeyError),
}

impl ExchangeError {
    /// The wire code. Exhaustive, no wildcard; each arm cites its source.
    pub fn code(&self) -> ErrorCode {
        use ErrorCode as C;
        match self {
            Self::Request(r) => match r {
                // RFC 6749 §5.2.
                RequestError::UnsupportedGrantType(_) => C::UnsupportedGrantType,
                // RFC 8693 §2.2.2 / RFC 8707 §2; SPEC §11: not exactly one target.
                RequestError::MultipleTargets
                | RequestError::NoTarget
                | RequestError::BadTarget { .. } => C::InvalidTarget,
                // RFC 6749 §5.2: malformed scope.
                RequestError::BadScope(_) => C::InvalidScope,
                // RFC 6749 §5.2: malformed, missing or repeated parameter.
                RequestError::TooManyParameters
                | RequestError::DuplicateParameter(_)
                | RequestError::MissingParameter(_)
                | RequestError::UnsupportedTokenType { .. }
                | RequestError::ActorTypeMismatch
                | RequestError::TokenTooLarge { .. } => C::InvalidRequest,
            },
            Self::Subject(t) | Self::Actor(t) => match t {
                // Keys could not be fetched or read: fail closed, like any state outage.
                TokenError::Keys(_) => C::TemporarilyUnavailable,
                // RFC 8693 §2.2.2: an invalid, expired or unacceptable token.
                TokenError::Jws(_)
                | TokenError::ForbiddenHeader(_)
                | TokenError::UnknownIssuer
                | TokenError::AlgNotAllowed(_)
                | TokenError::BadTyp { .. }
                | TokenError::MissingKid
                | TokenError::UnknownKid
                | TokenError::MissingClaim(_)
                | TokenError::BadClaim(_)
                | TokenError::AudienceMismatch
                | TokenError::Expired { .. }
                | TokenError::NotYetValid { .. }
                | TokenError::IssuedInFuture { .. }
                | TokenError::TooOld { .. }
                | TokenError::BadSubject => C::InvalidRequest,
            },
            // RFC 8693 §2.2.2: unacceptable by policy, or replayed.
            Self::ActorNotAllowed
            | Self::SubjectReplayed
            | Self::Revoked { .. }
            | Self::LineageTooLong { .. } => C::InvalidRequest,
            Self::Policy(p) => match p {
                // SPEC §11: no boundary for from + subject; max_hops exceeded.
                PolicyError::NoBoundary
                | PolicyError::MaxHops { .. }
                | PolicyError::NoLifetime
                | PolicyError::WrongOutputType { .. }
                | PolicyError::SingleUseWithoutJti { .. } => C::InvalidRequest,
                // RFC 8693 §2.2.2: audience not allowed.
                PolicyError::AudienceNotAllowed { .. } => C::InvalidTarget,
                // RFC 6749 §5.2.
                PolicyError::NoScope { .. } => C::InvalidScope,
            },
            // Attestation-based client authentication draft: evidence required.
            Self::AttestationRequired => C::UseAttestationChallenge,
            Self::Evidence(e) => match e {
                // Same draft: stale evidence.
                EvidenceError::Stale => C::UseFreshAttestation,
                // SPEC §4: fail closed when state is unreachable.
                EvidenceError::Unavailable(_) => C::TemporarilyUnavailable,
                // SPEC §11: evidence that fails §6 is invalid_request.
                EvidenceError::Unsupported
                | EvidenceError::Invalid(_)
                | EvidenceError::NonceMismatch
                | EvidenceError::KeyMismatch => C::InvalidRequest,
            },
            // RFC 9449 §5, §7.1.
            Self::DpopRequired | Self::Dpop(_) | Self::DpopKeyMismatch | Self::DpopReplayed => {
                C::InvalidDpopProof
            }
            // RFC 9449 §8; SPEC §11 picks the attestation code when evidence came.
            Self::Nonce {
                evidence_presented: true,
            } => C::UseFreshAttestation,
            Self::Nonce {
                evidence_presented: false,
            } => C::UseDpopNonce,
            // SPEC §4: fail closed when state is unreachable.
            Self::State(_) => C::TemporarilyUnavailable,
            // Our own fault; never caused by input.
            Self::Signing(_) => C::ServerError,
        }
    }
}
