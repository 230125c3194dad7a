//! Boundary rules (SPEC §3 `[[boundary]]`) and the downscoping decision: which rule a
//! crossing falls under, what scope and lifetime it may carry, and the chain it records.
//! Nothing here can widen: scope is an intersection, lifetime a minimum, crossings append.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use trust_bundles::{SpiffeId, UnixTime};

use crate::glob::Glob;
use crate::subject::{Crossing, ValidatedToken};
use crate::types::{Audience, ScopeSet, Ttl};

/// How a boundary treats runtime attestation (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttestationMode {
    Required,
    Optional,
    None,
}

/// What a boundary issues (SPEC §3 `token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputType {
    AccessToken,
    Jwt,
}

/// Runtime facts the evidence must show (SPEC §3 `require`); each list is "one of".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequiredFacts {
    pub exe_sha256: Vec<String>,
    pub uid: Vec<u32>,
    pub gid: Vec<u32>,
    pub exe: Vec<String>,
    pub container_id: Vec<String>,
}

/// One validated `[[boundary]]`.
#[derive(Debug, Clone)]
pub struct Boundary {
    pub name: String,
    /// The configured name of the trust domain the subject comes from.
    pub from: String,
    pub subjects: Vec<Glob>,
    pub audiences: Vec<String>,
    pub scopes: ScopeSet,
    pub max_ttl: Option<Duration>,
    pub attestation: AttestationMode,
    pub unattested_scopes: ScopeSet,
    pub require: RequiredFacts,
    /// Globs on the foreign token's claims, all of which must match.
    pub claims: BTreeMap<String, Glob>,
    /// For OIDC subjects: the enforcer registration that stands behind them.
    pub workload: Option<SpiffeId>,
    pub max_hops: usize,
    pub single_use: bool,
    pub token_type: OutputType,
}

impl Boundary {
    fn admits(&self, subject: &ValidatedToken) -> bool {
        self.from == subject.domain
            && self.subjects.iter().any(|g| g.matches(&subject.subject))
            && self.claims.iter().all(|(name, glob)| {
                subject
                    .claims
                    .get(name)
                    .and_then(claim_as_str)
                    .is_some_and(|v| glob.matches(v))
            })
    }
}

/// Claims globs match string claims only; a number or list never matches a glob.
fn claim_as_str(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// Lifetime caps that are not per boundary (SPEC §3 `[tokens]`).
#[derive(Debug, Clone, Copy)]
pub struct TokenLimits {
    pub default_ttl: Duration,
    pub max_ttl: Duration,
}

/// Why policy refuses a crossing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("no boundary admits this subject from this domain")]
    NoBoundary,
    #[error("boundary {boundary} does not issue for this audience")]
    AudienceNotAllowed { boundary: String },
    #[error("nothing of the asked scope may cross boundary {boundary}")]
    NoScope { boundary: String },
    #[error("{hops} crossings exceed max_hops {max} of boundary {boundary}")]
    MaxHops {
        boundary: String,
        hops: usize,
        max: usize,
    },
    #[error("the subject token has no lifetime left")]
    NoLifetime,
    #[error("boundary {boundary} issues {issues:?}, not the requested token type")]
    WrongOutputType {
        boundary: String,
        issues: OutputType,
    },
    #[error("boundary {boundary} requires a `jti` for single use")]
    SingleUseWithoutJti { boundary: String },
}

/// The boundary set, in configuration order.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    boundaries: Vec<Boundary>,
}

impl Policy {
    pub fn new(boundaries: Vec<Boundary>) -> Self {
        Self { boundaries }
    }

    pub fn boundaries(&self) -> &[Boundary] {
        &self.boundaries
    }

    /// SPEC §4, §11: the first rule admitting `from` + subject + claims that also issues
    /// for `audience`. None admitting → `NoBoundary`; admitted but no audience → refused
    /// as a target.
    pub fn select(
        &self,
        subject: &ValidatedToken,
        audience: &Audience,
    ) -> Result<&Boundary, PolicyError> {
        let mut admitted = self
            .boundaries
            .iter()
            .filter(|b| b.admits(subject))
            .peekable();
        let first = admitted.peek().map(|b| b.name.clone());
        admitted
            .find(|b| b.audiences.iter().any(|a| a == audience.as_str()))
            .ok_or(match first {
                None => PolicyError::NoBoundary,
                Some(boundary) => PolicyError::AudienceNotAllowed { boundary },
            })
    }
}

/// What a crossing may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downscoped {
    pub scope: ScopeSet,
    pub ttl: Ttl,
    pub crossings: Vec<Crossing>,
}

/// Inputs of the downscoping decision that are not the subject or the boundary.
#[derive(Debug, Clone)]
pub struct CrossingContext<'a> {
    pub asked: Option<&'a ScopeSet>,
    /// Whether verified attestation evidence stands behind this request.
    pub attested: bool,
    pub limits: TokenLimits,
    pub issuer: &'a str,
    pub now: UnixTime,
}

/// Scope = asked ∩ subject's scope ∩ boundary scopes (∩ `unattested_scopes` without
/// evidence); lifetime = min(boundary, `[tokens].max_ttl`, subject's remaining life);
/// crossings = subject's + this one, at most `max_hops`.
pub fn downscope(
    subject: &ValidatedToken,
    boundary: &Boundary,
    ctx: &CrossingContext<'_>,
) -> Result<Downscoped, PolicyError> {
    let mut hops = subject.crossings.clone();
    hops.push(Crossing {
        from: subject.domain.clone(),
        boundary: boundary.name.clone(),
        iss: ctx.issuer.to_owned(),
    });
    if hops.len() > boundary.max_hops {
        return Err(PolicyError::MaxHops {
            boundary: boundary.name.clone(),
            hops: hops.len(),
            max: boundary.max_hops,
        });
    }

    let mut scope = boundary.scopes.clone();
    if let Some(own) = &subject.scope {
        scope = scope.intersect(own);
    }
    if let Some(asked) = ctx.asked {
        scope = scope.intersect(asked);
    }
    if !ctx.attested {
        scope = match boundary.attestation {
            AttestationMode::None => scope,
            // SPEC §3: without evidence, only `unattested_scopes` cross. (`Required`
            // never reaches here unattested; narrowing anyway keeps this fail-closed.)
            AttestationMode::Optional | AttestationMode::Required => {
                scope.intersect(&boundary.unattested_scopes)
            }
        };
    }
    if scope.is_empty() {
        return Err(PolicyError::NoScope {
            boundary: boundary.name.clone(),
        });
    }

    let remaining = subject.exp.saturating_since(ctx.now);
    let cap = boundary
        .max_ttl
        .unwrap_or(ctx.limits.default_ttl)
        .min(ctx.limits.max_ttl)
        .min(remaining);
    let ttl = Ttl::from_duration(cap).ok_or(PolicyError::NoLifetime)?;

    Ok(Downscoped {
        scope,
        ttl,
        crossings: hops,
    })
}
