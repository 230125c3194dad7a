//! The exchange: one request in, one decision out (STYLE §12). Every path, errors
//! included, ends in exactly one [`AuditRecord`].
//!
//! Order (SPEC §4): parse → subject → boundary → attestation → DPoP → scope and TTL →
//! mint. All checks that need no shared state run first; nonces, DPoP `jti`s and
//! single-use markers are consumed only once everything else has passed, so a refused
//! request burns nothing.

use std::borrow::Cow;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures_util::future::join;
use serde_json::{Map, Value};
use trust_bundles::{Clock, UnixTime, VerifyingKeys};

use crate::attestation::{CheckedEvidence, EvidenceContext, EvidenceVerifier};
use crate::audit::{AuditRecord, Decision};
use crate::dpop::{self, IAT_WINDOW, ProofTarget, VerifiedProof};
use crate::error::{ErrorCode, EvidenceError, ExchangeError};
use crate::keys::{KeyRing, SigningAlg};
use crate::mint::{self, AttestationRef, Claims, TokenShape};
use crate::nonce::NonceKey;
use crate::policy::{
    AttestationMode, Boundary, CrossingContext, OutputType, Policy, PolicyError, TokenLimits,
};
use crate::request::{ExchangeRequest, RequestedTokenType};
use crate::revocation::{self, MAX_LINEAGE, TokenFacts};
use crate::state::{ReplayStore, RevocationStore};
use crate::subject::{DomainKind, MAX_ACT_DEPTH, TokenError, ValidatedToken, Validator};
use crate::types::{Nonce, TokenTypeUri};

/// How long a broker nonce is good for (SPEC §4 `expires_in`).
pub const NONCE_TTL: Duration = Duration::from_secs(60);

/// An HTTP request to the token endpoint, as far as the exchange cares.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    /// Decoded form pairs of the body: borrowed from it where nothing was escaped.
    pub form: &'a [(Cow<'a, str>, Cow<'a, str>)],
    /// Every `DPoP` header value.
    pub dpop: &'a [&'a str],
    /// Every `Runtime-Attestation` header value.
    pub evidence: &'a [&'a str],
}

/// The token response (RFC 8693 §2.2.1).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenResponse {
    access_token: String,
    pub issued_token_type: TokenTypeUri,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub scope: String,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"[redacted]")
            .field("issued_token_type", &self.issued_token_type)
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish()
    }
}

impl TokenResponse {
    pub fn access_token(&self) -> &str {
        &self.access_token
    }

    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "access_token": self.access_token,
            "issued_token_type": self.issued_token_type.as_str(),
            "token_type": self.token_type,
            "expires_in": self.expires_in,
            "scope": self.scope,
        })
    }

    /// [`Self::to_json`], serialised: the same bytes, without building a map first (the
    /// token is copied once, into the body).
    pub fn to_json_string(&self) -> String {
        // Fields in the order a `Value` map writes them (sorted), so the two agree.
        #[derive(serde::Serialize)]
        struct Body<'a> {
            access_token: &'a str,
            expires_in: u64,
            issued_token_type: &'a str,
            scope: &'a str,
            token_type: &'a str,
        }
        serde_json::to_string(&Body {
            access_token: &self.access_token,
            expires_in: self.expires_in,
            issued_token_type: self.issued_token_type.as_str(),
            scope: &self.scope,
            token_type: self.token_type,
        })
        .unwrap_or_default()
    }
}

/// Why no token was issued, and what the client needs to try again.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub error: ExchangeError,
    /// For `use_dpop_nonce`, `use_fresh_attestation` and `use_attestation_challenge`:
    /// a fresh nonce for the `DPoP-Nonce` header.
    pub fresh_nonce: Option<Nonce>,
}

impl Refusal {
    pub fn code(&self) -> ErrorCode {
        self.error.code()
    }
}

/// The decision and its audit record.
#[derive(Debug)]
pub struct Outcome {
    pub result: Result<TokenResponse, Refusal>,
    pub audit: AuditRecord,
}

/// Fixed settings of the exchange.
#[derive(Debug, Clone)]
pub struct ExchangeSettings {
    pub issuer: String,
    pub limits: TokenLimits,
    pub skew: Duration,
}

impl ExchangeSettings {
    /// The token endpoint as `htu` must name it (SPEC §11).
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer.trim_end_matches('/'))
    }
}

/// The stores the exchange consumes from.
#[derive(Clone)]
pub struct Stores {
    /// The key nonces are minted and checked under: handing one out writes nothing (see
    /// [`crate::nonce`]). Replicas that share `nonces` share it.
    pub nonce_key: Arc<NonceKey>,
    /// Spent nonces, each kept until it expires (and the clock skew after).
    pub nonces: Arc<dyn ReplayStore>,
    /// DPoP proof `jti`s: as short-lived as the nonces they ride with.
    pub replay: Arc<dyn ReplayStore>,
    /// Subject-token `jti`s of `single_use` boundaries: they must outlive a restart for
    /// as long as the subject token is valid, so the broker backs this durably.
    pub single_use: Arc<dyn ReplayStore>,
    /// Revocations: consulted for every subject and actor token, and by introspection.
    pub revocations: Arc<dyn RevocationStore>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

/// What the exchange decides by: who is trusted, and what may cross.
#[derive(Debug)]
pub struct Rules {
    pub validator: Validator,
    pub policy: Policy,
}

/// The exchange, ready to serve.
pub struct Exchanger {
    settings: ExchangeSettings,
    token_endpoint: String,
    /// Trust domains and boundaries: replaced whole when admin objects change; each
    /// request decides under one snapshot.
    rules: RwLock<Arc<Rules>>,
    ring: Arc<RwLock<KeyRing>>,
    stores: Stores,
    evidence: Arc<dyn EvidenceVerifier>,
    /// Verifiers for the DPoP keys seen lately (see [`dpop::verify_proof_with`]).
    dpop_keys: VerifyingKeys,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Exchanger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchanger")
            .field("settings", &self.settings)
            .field("rules", &self.rules())
            .finish_non_exhaustive()
    }
}

impl Exchanger {
    pub fn new(
        settings: ExchangeSettings,
        validator: Validator,
        policy: Policy,
        ring: Arc<RwLock<KeyRing>>,
        stores: Stores,
        evidence: Arc<dyn EvidenceVerifier>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            token_endpoint: settings.token_endpoint(),
            settings,
            rules: RwLock::new(Arc::new(Rules { validator, policy })),
            ring,
            stores,
            evidence,
            dpop_keys: VerifyingKeys::new(),
            clock,
        }
    }

    /// The rules in force now.
    pub fn rules(&self) -> Arc<Rules> {
        self.rules
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the trust domains and boundaries; requests already deciding finish
    /// under the rules they started with.
    pub fn replace_rules(&self, rules: Rules) {
        *self.rules.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(rules);
    }

    pub fn revocations(&self) -> &dyn RevocationStore {
        self.stores.revocations.as_ref()
    }

    pub fn settings(&self) -> &ExchangeSettings {
        &self.settings
    }

    /// A fresh nonce (`POST /attest/challenge`, and with nonce errors). Nothing is
    /// stored: anyone may ask, as often as they like.
    pub fn challenge(&self) -> Result<Nonce, ExchangeError> {
        let now = self.clock.now();
        let expires = now.checked_add(NONCE_TTL).unwrap_or(now);
        self.stores
            .nonce_key
            .mint(expires)
            .map_err(|_| ExchangeError::Signing(crate::keys::KeyError::Generate))
    }

    /// Decides one token exchange.
    pub async fn exchange(&self, inbound: Inbound<'_>) -> Outcome {
        let mut audit = AuditRecord::new("token_exchange");
        let result = self.decide(inbound, &mut audit).await;
        match result {
            Ok(response) => {
                audit.decision = Decision::Allow;
                audit.reason = "ok";
                Outcome {
                    result: Ok(response),
                    audit,
                }
            }
            Err(error) => {
                let code = error.code();
                audit.decision = Decision::Deny;
                audit.reason = code.as_str();
                audit.detail = Some(error.to_string());
                let wants_nonce = matches!(
                    code,
                    ErrorCode::UseDpopNonce
                        | ErrorCode::UseFreshAttestation
                        | ErrorCode::UseAttestationChallenge
                );
                // A nonce that cannot be made (no randomness) leaves the header off; the
                // refusal itself stands.
                let fresh_nonce = if wants_nonce {
                    self.challenge().ok()
                } else {
                    None
                };
                Outcome {
                    result: Err(Refusal { error, fresh_nonce }),
                    audit,
                }
            }
        }
    }

    async fn decide(
        &self,
        inbound: Inbound<'_>,
        audit: &mut AuditRecord,
    ) -> Result<TokenResponse, ExchangeError> {
        let now = self.clock.now();
        let rules = self.rules();

        // Parse.
        let req = ExchangeRequest::from_form(inbound.form)?;
        audit.audience = Some(req.audience.to_string());
        audit.scope_requested = req.scope.as_ref().map(ToString::to_string);

        // Subject token.
        let subject = rules
            .validator
            .validate(&req.subject, now)
            .await
            .map_err(ExchangeError::Subject)?;
        audit.subject = Some(subject.subject.clone());
        audit.from = Some(subject.domain.clone());
        audit.jti_in = subject.jti.clone();

        let mut lineage = subject.lineage.clone();
        lineage.push(subject.token_id.clone());

        // Delegation (RFC 8693 §4.1, §4.4).
        let mut actor = None;
        let act = match &req.actor {
            None => subject.act.clone(),
            Some(presented) => {
                let a = rules
                    .validator
                    .validate(presented, now)
                    .await
                    .map_err(ExchangeError::Actor)?;
                audit.actor = Some(a.subject.clone());
                check_may_act(&subject, &a)?;
                for id in a.lineage.iter().chain([&a.token_id]) {
                    if !lineage.contains(id) {
                        lineage.push(id.clone());
                    }
                }
                let act = nest_act(&a, subject.act.as_ref())?;
                actor = Some(a);
                Some(act)
            }
        };
        if lineage.len() > MAX_LINEAGE {
            return Err(ExchangeError::LineageTooLong { max: MAX_LINEAGE });
        }

        // Boundary.
        let boundary = rules.policy.select(&subject, &req.audience)?;
        audit.boundary = Some(boundary.name.clone());
        let shape = match (req.requested_token_type, boundary.token_type) {
            (RequestedTokenType::AccessToken, OutputType::AccessToken) => TokenShape::AccessToken,
            (RequestedTokenType::Jwt, OutputType::Jwt) => TokenShape::Jwt,
            (_, issues) => {
                return Err(PolicyError::WrongOutputType {
                    boundary: boundary.name.clone(),
                    issues,
                }
                .into());
            }
        };
        if boundary.single_use && subject.jti.is_none() {
            return Err(PolicyError::SingleUseWithoutJti {
                boundary: boundary.name.clone(),
            }
            .into());
        }

        // Attestation routing.
        let evidence = match inbound.evidence {
            [] => None,
            [one] => Some(*one),
            _ => {
                return Err(ExchangeError::Evidence(EvidenceError::Invalid(
                    "more than one Runtime-Attestation header".into(),
                )));
            }
        };
        if evidence.is_none() && boundary.attestation == AttestationMode::Required {
            return Err(ExchangeError::AttestationRequired);
        }

        // DPoP: required when evidence is required or presented, or the subject is bound.
        let proof = match inbound.dpop {
            [] => None,
            [one] => Some(dpop::verify_proof_with(
                one,
                &ProofTarget {
                    method: "POST",
                    uri: &self.token_endpoint,
                    now,
                    skew: self.settings.skew,
                },
                &self.dpop_keys,
            )?),
            _ => return Err(dpop::DpopError::MultipleProofs.into()),
        };
        let dpop_required = evidence.is_some()
            || boundary.attestation == AttestationMode::Required
            || subject.cnf_jkt.is_some();
        if dpop_required && proof.is_none() {
            return Err(ExchangeError::DpopRequired);
        }
        let nonce_error = ExchangeError::Nonce {
            evidence_presented: evidence.is_some(),
        };
        // Whether this broker minted the nonce, and until when: checked here, before any
        // state is touched (spent with the rest, below). No nonce is minted for longer than
        // its TTL: one that claims more came from a clock far ahead, and its spent mark
        // would be kept that long.
        let latest = now
            .checked_add(NONCE_TTL + self.settings.skew)
            .unwrap_or(now);
        let nonce_expiry = match &proof {
            Some(p) => Some(
                p.nonce
                    .as_deref()
                    .and_then(|n| self.stores.nonce_key.open(n, now))
                    .filter(|expires| *expires <= latest)
                    .ok_or_else(|| nonce_error.clone())?,
            ),
            None => None,
        };
        if let Some(p) = &proof
            && subject
                .cnf_jkt
                .as_ref()
                .is_some_and(|bound| *bound != p.jkt)
        {
            return Err(ExchangeError::DpopKeyMismatch);
        }

        // Evidence, the local half.
        let checked = match (evidence, &proof) {
            (Some(ev), Some(p)) => Some(self.check_evidence(ev, &subject, boundary, p, now)?),
            _ => None,
        };
        audit.node = checked.as_ref().map(|c| c.claims().node.clone());

        // Scope and lifetime.
        let down = crate::policy::downscope(
            &subject,
            boundary,
            &CrossingContext {
                asked: req.scope.as_ref(),
                attested: checked.is_some(),
                limits: self.settings.limits,
                issuer: &self.settings.issuer,
                now,
            },
        )?;

        // Shared state, last, every question at once (one round trip to Redis): the
        // subject and actor not revoked, the node still enrolled, the nonce consumed, the
        // proof's `jti` marked. A request refused here has spent its nonce and its proof.
        // Answers are judged in that order, so the refusal is the same as if they had
        // been asked one by one.
        let (revoked, (node, spent)) = join(
            join(self.check_revoked(&subject, "subject", now), async {
                match &actor {
                    Some(a) => self.check_revoked(a, "actor", now).await,
                    None => Ok(()),
                }
            }),
            join(
                async {
                    match checked {
                        Some(c) => self.evidence.confirm(c).await.map(Some),
                        None => Ok(None),
                    }
                },
                async {
                    match (&proof, nonce_expiry) {
                        (Some(p), Some(until)) => self.spend(p, until, now, nonce_error).await,
                        (None, _) => Ok(()),
                        // A proof whose nonce was not checked spends nothing and passes
                        // nothing.
                        (Some(_), None) => Err(nonce_error),
                    }
                },
            ),
        )
        .await;
        revoked.0?;
        revoked.1?;
        let verified = node.map_err(ExchangeError::Evidence)?;
        spent?;

        // The single-use subject only once the rest has passed: a refused request must
        // not burn it.
        if boundary.single_use
            && let Some(jti) = &subject.jti
        {
            let key = format!("sub:{}:{jti}", subject.domain);
            if !self
                .stores
                .single_use
                .check_and_mark(&key, subject.exp, now)
                .await?
            {
                return Err(ExchangeError::SubjectReplayed);
            }
        }

        // Mint.
        let bound = proof.as_ref().map(|p| &p.jkt);
        let att = verified.as_ref().map(|v| AttestationRef {
            node: v.node.clone(),
            evd: v.digest.clone(),
        });
        let claims = Claims {
            issuer: &self.settings.issuer,
            subject: &subject.subject,
            audience: &req.audience,
            scope: &down.scope,
            now,
            ttl: down.ttl,
            cnf: bound,
            act,
            crossings: &down.crossings,
            att: att.as_ref(),
            lineage: &lineage,
        };
        let alg = match shape {
            TokenShape::AccessToken => SigningAlg::ES256,
            TokenShape::Jwt => SigningAlg::RS256,
        };
        let minted = {
            let ring = self.ring.read().unwrap_or_else(PoisonError::into_inner);
            let key = ring.signer(alg, now)?;
            mint::mint(shape, &claims, key)?
        };
        audit.jti_out = Some(minted.jti.clone());
        audit.scope_granted = Some(down.scope.to_string());

        let (issued_token_type, token_type) = match shape {
            TokenShape::AccessToken if bound.is_some() => (TokenTypeUri::AccessToken, "DPoP"),
            TokenShape::AccessToken => (TokenTypeUri::AccessToken, "Bearer"),
            // RFC 8693 §2.2.1: N_A for tokens that are not access tokens.
            TokenShape::Jwt => (TokenTypeUri::Jwt, "N_A"),
        };
        Ok(TokenResponse {
            access_token: minted.token,
            issued_token_type,
            token_type,
            expires_in: down.ttl.as_secs(),
            scope: down.scope.to_string(),
        })
    }

    fn check_evidence(
        &self,
        evidence: &str,
        subject: &ValidatedToken,
        boundary: &Boundary,
        proof: &VerifiedProof,
        now: UnixTime,
    ) -> Result<CheckedEvidence, ExchangeError> {
        let checked = self
            .evidence
            .check(&EvidenceContext {
                evidence,
                subject,
                boundary,
                now,
            })
            .map_err(ExchangeError::Evidence)?;
        let v = checked.claims();
        // SPEC §11: the evidence and the proof carry the same broker nonce.
        if proof.nonce.as_deref() != Some(v.nonce.as_str()) {
            return Err(ExchangeError::Evidence(EvidenceError::NonceMismatch));
        }
        // SPEC §6: the evidence binds the DPoP key.
        if v.jkt != proof.jkt.as_str() {
            return Err(ExchangeError::Evidence(EvidenceError::KeyMismatch));
        }
        // SPEC §6: the workload is the subject, or for OIDC subjects the boundary's
        // `workload`.
        let expected = match subject.kind {
            DomainKind::Oidc => boundary.workload.as_ref().map(ToString::to_string),
            DomainKind::Spiffe | DomainKind::Broker | DomainKind::Local => {
                Some(subject.subject.clone())
            }
        };
        if expected.as_deref() != Some(v.workload.as_str()) {
            return Err(ExchangeError::Evidence(EvidenceError::Invalid(
                "evidence `sub` is not the subject's workload".into(),
            )));
        }
        Ok(checked)
    }

    /// Refuses a token that a revocation covers (SPEC §4: "not revoked").
    async fn check_revoked(
        &self,
        token: &ValidatedToken,
        which: &'static str,
        now: UnixTime,
    ) -> Result<(), ExchangeError> {
        let facts = TokenFacts {
            id: &token.token_id,
            lineage: &token.lineage,
            subject: &token.subject,
            node: token.node.as_deref(),
            jkt: token.cnf_jkt.as_ref().map(|j| j.as_str()),
            iat: token.iat,
        };
        match revocation::check(self.stores.revocations.as_ref(), &facts, now).await? {
            None => Ok(()),
            Some(target) => Err(ExchangeError::Revoked {
                which,
                by: target.kind(),
            }),
        }
    }

    /// Spends the proof's nonce (checked to be this broker's, good until `nonce_expiry`)
    /// and marks its `jti`, both at once; a spent nonce is the refusal when both fail.
    async fn spend(
        &self,
        proof: &VerifiedProof,
        nonce_expiry: UnixTime,
        now: UnixTime,
        nonce_error: ExchangeError,
    ) -> Result<(), ExchangeError> {
        let nonce = proof.nonce.as_deref().ok_or_else(|| nonce_error.clone())?;
        // Kept past the nonce's expiry by the skew: a replica whose clock is behind still
        // takes it for unexpired a little longer.
        let spent_until = nonce_expiry
            .checked_add(self.settings.skew)
            .unwrap_or(nonce_expiry);
        // RFC 9449 §11.1: a proof is single use for as long as its `iat` is acceptable.
        let until = now
            .checked_add(IAT_WINDOW + self.settings.skew)
            .unwrap_or(now);
        let key = format!("dpop:{}:{}", proof.jkt, proof.jti);
        let (fresh, first) = join(
            self.stores
                .nonces
                .check_and_mark(&format!("nonce:{nonce}"), spent_until, now),
            self.stores.replay.check_and_mark(&key, until, now),
        )
        .await;
        if !fresh? {
            return Err(nonce_error);
        }
        if !first? {
            return Err(ExchangeError::DpopReplayed);
        }
        Ok(())
    }
}

/// RFC 8693 §4.4: when the subject names who may act for it, the actor must be that one.
fn check_may_act(subject: &ValidatedToken, actor: &ValidatedToken) -> Result<(), ExchangeError> {
    let Some(may) = &subject.may_act else {
        return Ok(());
    };
    let sub_ok = match may.get("sub") {
        Some(Value::String(s)) => {
            *s == actor.subject || actor.claims.get("sub").and_then(Value::as_str) == Some(s)
        }
        _ => false,
    };
    let iss_ok = match may.get("iss") {
        None => true,
        Some(Value::String(i)) => actor.claims.get("iss").and_then(Value::as_str) == Some(i),
        Some(_) => false,
    };
    if sub_ok && iss_ok {
        Ok(())
    } else {
        Err(ExchangeError::ActorNotAllowed)
    }
}

/// RFC 8693 §4.1: the current actor outermost, earlier actors nested inside.
fn nest_act(
    actor: &ValidatedToken,
    prior: Option<&Map<String, Value>>,
) -> Result<Map<String, Value>, ExchangeError> {
    let mut act = Map::new();
    act.insert("sub".into(), actor.subject.clone().into());
    let mut depth = 1;
    if let Some(prior) = prior {
        let mut cur = Some(prior);
        while let Some(c) = cur {
            depth += 1;
            cur = c.get("act").and_then(Value::as_object);
        }
        if depth > MAX_ACT_DEPTH {
            return Err(ExchangeError::Actor(TokenError::BadClaim("act")));
        }
        act.insert("act".into(), Value::Object(prior.clone()));
    }
    Ok(act)
}
