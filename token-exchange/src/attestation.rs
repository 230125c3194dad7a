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

/// Evidence whose local checks hold (shape, chain, signature, freshness, `require`), still
/// to be confirmed against shared state: that its node is enrolled with this certificate
/// now. Only [`EvidenceVerifier::confirm`] turns it into [`VerifiedEvidence`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedEvidence {
    evidence: VerifiedEvidence,
    /// SHA-256 (hex) of the node certificate, for nodes enrolled at this broker; `None`
    /// for nodes of a foreign `enforcer_ca` (their domain revokes them).
    enrolled_cert: Option<String>,
}

impl CheckedEvidence {
    /// What the evidence says; the exchange matches it against the request before the
    /// node is confirmed.
    pub fn claims(&self) -> &VerifiedEvidence {
        &self.evidence
    }
}

/// Verifies evidence in two halves, so the exchange can check everything local first and
/// then ask shared state all its questions at once (one round trip to Redis).
pub trait EvidenceVerifier: Send + Sync {
    /// Everything that needs no shared state.
    fn check(&self, ctx: &EvidenceContext<'_>) -> Result<CheckedEvidence, EvidenceError>;

    /// The state half: the node has not been revoked and this is its current
    /// certificate.
    fn confirm<'a>(
        &'a self,
        checked: CheckedEvidence,
    ) -> BoxFuture<'a, Result<VerifiedEvidence, EvidenceError>>;

    /// Both halves, one after the other.
    fn verify<'a>(
        &'a self,
        ctx: EvidenceContext<'a>,
    ) -> BoxFuture<'a, Result<VerifiedEvidence, EvidenceError>> {
        let checked = self.check(&ctx);
        Box::pin(async move { self.confirm(checked?).await })
    }
}

/// Refuses all evidence: the verifier of a broker that cannot check it.
#[derive(Debug, Default, Clone, Copy)]
pub struct RefuseAllEvidence;

impl EvidenceVerifier for RefuseAllEvidence {
    fn check(&self, _ctx: &EvidenceContext<'_>) -> Result<CheckedEvidence, EvidenceError> {
        Err(EvidenceError::Unsupported)
    }

    fn confirm<'a>(
        &'a self,
        _checked: CheckedEvidence,
    ) -> BoxFuture<'a, Result<VerifiedEvidence, EvidenceError>> {
        Box::pin(async { Err(EvidenceError::Unsupported) })
    }
}

// ---- evidence format (SPEC §6) and its verification ------------------------------

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use trust_bundles::jws::UnverifiedJws;
use trust_bundles::x509::{SvidUsage, chain_validity, leaf_public_key, verify_x509_svid};
use trust_bundles::{JwsAlgorithm, SpiffeBundle, SpiffeId, TrustDomain};

use crate::policy::RequiredFacts;
use crate::state::StateError;
use crate::subject::DomainKind;

/// `typ` of evidence (SPEC §6).
pub const EVIDENCE_TYP: &str = "runtime-attestation+jwt";
/// Longest evidence lifetime (`exp - iat`) accepted, and how old `iat` may be.
pub const MAX_EVIDENCE_AGE: Duration = Duration::from_secs(60);
/// Largest evidence accepted, in bytes (the node chain rides along in `x5c`).
pub const MAX_EVIDENCE_BYTES: usize = 24 * 1024;
/// Most certificates in `x5c`.
pub const MAX_EVIDENCE_CHAIN: usize = 5;
/// Path prefix of node SPIFFE IDs issued by this broker's node CA.
pub const NODE_PATH_PREFIX: &str = "/enforcer/";

/// What the enforcer learned about the calling process from the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcFacts {
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start_time: u64,
    pub uid: u32,
    pub gid: u32,
    pub exe: String,
    pub exe_sha256: String,
    pub cgroup: String,
    pub container_id: Option<String>,
}

/// `cnf` of evidence: the DPoP key it binds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceCnf {
    pub jkt: String,
}

/// The claims of evidence (SPEC §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceClaims {
    pub iss: String,
    pub sub: String,
    pub nonce: String,
    pub cnf: EvidenceCnf,
    pub iat: u64,
    pub exp: u64,
    pub proc: ProcFacts,
}

/// Builds compact evidence: header with `x5c` = `chain`, signed by `sign` (ES256, the
/// node key). Used by the enforcer; here so both sides share one format.
pub fn encode_evidence(
    claims: &EvidenceClaims,
    chain: &[CertificateDer<'_>],
    sign: impl FnOnce(&[u8]) -> Vec<u8>,
) -> Result<String, serde_json::Error> {
    let x5c: Vec<String> = chain.iter().map(|c| STANDARD.encode(c.as_ref())).collect();
    let header = serde_json::json!({"alg": "ES256", "typ": EVIDENCE_TYP, "x5c": x5c});
    let input = trust_bundles::jws::signing_input(&header, &serde_json::to_value(claims)?);
    let sig = sign(input.as_bytes());
    Ok(trust_bundles::jws::compact(&input, &sig))
}

/// SPEC §11 `att.evd`: SHA-256 of the compact serialization, base64url.
pub fn evidence_digest(compact: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, compact.as_bytes()))
}

/// Which node CAs may vouch for whom.
#[derive(Debug, Clone)]
pub struct NodeAuthorities {
    /// This broker's trust domain and node CA: nodes enrolled here.
    pub local_domain: TrustDomain,
    pub local: SpiffeBundle,
    /// Per configured trust domain name: its own trust domain and `enforcer_ca`.
    pub foreign: HashMap<String, (TrustDomain, SpiffeBundle)>,
}

/// Whether an enrolled node and its certificate still stand (SPEC §6: a revoked node is
/// refused "from that moment on every replica"). Asked for nodes of this broker's own
/// node CA only; `cert_sha256` (hex) pins the certificates issued to the current
/// enrollment, so a certificate from before a revocation never comes back.
pub trait NodeStatus: Send + Sync {
    fn is_active<'a>(
        &'a self,
        node: &'a str,
        cert_sha256: &'a str,
    ) -> BoxFuture<'a, Result<bool, StateError>>;
}

/// Lowercase hex SHA-256 of a DER certificate.
pub fn cert_sha256(cert: &CertificateDer<'_>) -> String {
    digest::digest(&digest::SHA256, cert.as_ref())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Verifies evidence as SPEC §6 lists; the exchange then checks nonce, `cnf.jkt` and
/// `sub` against the request.
pub struct X509EvidenceVerifier {
    authorities: Arc<RwLock<NodeAuthorities>>,
    nodes: Arc<dyn NodeStatus>,
    skew: Duration,
    chains: ChainCache,
}

/// Most node chains remembered as verified; when full, it starts over.
pub const MAX_CACHED_CHAINS: usize = 4096;

/// Node chains that verified against the local node CA, so that a node's every piece of
/// evidence does not pay for path building, X.509 parsing and a signature check again
/// (nor for decoding `x5c`). Keyed by SHA-256 over the node CA's certificates and the
/// chain's `x5c` text, so a different CA or a byte of difference misses: only the very
/// text that decoded and verified before hits. A hit holds only inside every
/// certificate's validity. Revocation is not cached: it is asked on every piece of
/// evidence.
#[derive(Default)]
struct ChainCache {
    entries: std::sync::Mutex<HashMap<[u8; 32], VerifiedChain>>,
}

#[derive(Clone)]
struct VerifiedChain {
    node: SpiffeId,
    key: Arc<trust_bundles::jwk::VerifyingKey>,
    fingerprint: Arc<str>,
    valid_from: u64,
    valid_until: u64,
}

impl ChainCache {
    fn key(local: &SpiffeBundle, x5c: &[&str]) -> [u8; 32] {
        let mut ctx = digest::Context::new(&digest::SHA256);
        let mut put = |bytes: &[u8]| {
            ctx.update(&(bytes.len() as u64).to_be_bytes());
            ctx.update(bytes);
        };
        for a in local.x509_authorities() {
            put(a.certificate.as_ref());
        }
        put(b"x5c");
        for c in x5c {
            put(c.as_bytes());
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    fn get(&self, key: &[u8; 32], now: u64) -> Option<VerifiedChain> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(key)
            .filter(|v| v.valid_from <= now && now < v.valid_until)
            .cloned()
    }

    fn put(&self, key: [u8; 32], v: VerifiedChain) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MAX_CACHED_CHAINS {
            entries.clear();
        }
        entries.insert(key, v);
    }
}

impl std::fmt::Debug for X509EvidenceVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X509EvidenceVerifier")
            .field("skew", &self.skew)
            .finish_non_exhaustive()
    }
}

fn invalid(msg: impl Into<String>) -> EvidenceError {
    EvidenceError::Invalid(msg.into())
}

impl X509EvidenceVerifier {
    pub fn new(
        authorities: Arc<RwLock<NodeAuthorities>>,
        nodes: Arc<dyn NodeStatus>,
        skew: Duration,
    ) -> Self {
        Self {
            authorities,
            nodes,
            skew,
            chains: ChainCache::default(),
        }
    }

    /// 1. shape, 2. chain to a node CA, 4. signature, 5. `iss` = SAN, 6. freshness,
    /// 7. `require` facts. (3. revocation is asynchronous: [`EvidenceVerifier::confirm`].)
    fn check_local(
        &self,
        ctx: &EvidenceContext<'_>,
    ) -> Result<(SpiffeId, bool, String, EvidenceClaims), EvidenceError> {
        // 1.
        let jws = UnverifiedJws::parse(ctx.evidence, MAX_EVIDENCE_BYTES)
            .map_err(|e| invalid(format!("not a compact JWS: {e}")))?;
        if jws.alg() != JwsAlgorithm::ES256 {
            return Err(invalid("alg is not ES256"));
        }
        if jws.header_str("typ") != Some(EVIDENCE_TYP) {
            return Err(invalid("typ is not runtime-attestation+jwt"));
        }
        for h in ["jku", "x5u", "jwk"] {
            if jws.header().contains_key(h) {
                return Err(invalid(format!("header {h} is not allowed")));
            }
        }
        let x5c = match jws.header().get("x5c") {
            Some(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_EVIDENCE_CHAIN => {
                items
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .ok_or_else(|| invalid("x5c entry is not base64 DER"))
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
            _ => return Err(invalid("x5c is missing or not 1-5 certificates")),
        };

        // 2. The node chains to this broker's node CA, or to the subject's domain's
        // `enforcer_ca`. 4a. Its key.
        let now = ctx.now.as_secs();
        let (node, local, key, fingerprint) = {
            let auth = self
                .authorities
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let cache_key = ChainCache::key(&auth.local, &x5c);
            if let Some(hit) = self.chains.get(&cache_key, now) {
                (hit.node, true, hit.key, hit.fingerprint)
            } else {
                let chain = x5c
                    .iter()
                    .map(|s| {
                        STANDARD
                            .decode(s)
                            .map(CertificateDer::from)
                            .map_err(|_| invalid("x5c entry is not base64 DER"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let leaf = chain.first().ok_or_else(|| invalid("empty chain"))?;
                let verified = match verify_x509_svid(
                    &chain,
                    &auth.local,
                    &auth.local_domain,
                    ctx.now,
                    SvidUsage::Client,
                ) {
                    Ok(id) if id.path().starts_with(NODE_PATH_PREFIX) => (id, true),
                    Ok(_) => return Err(invalid("node certificate is not an enforcer identity")),
                    Err(local_err) => {
                        let foreign = (ctx.subject.kind != DomainKind::Local)
                            .then(|| auth.foreign.get(&ctx.subject.domain))
                            .flatten();
                        match foreign {
                            Some((td, bundle)) => {
                                let id = verify_x509_svid(
                                    &chain,
                                    bundle,
                                    td,
                                    ctx.now,
                                    SvidUsage::Client,
                                )
                                .map_err(|e| invalid(format!("node chain: {e}")))?;
                                // An `enforcer_ca` may be a domain's whole SPIRE CA: only
                                // its enforcer identities may attest, never any workload
                                // SVID.
                                if !id.path().starts_with(NODE_PATH_PREFIX) {
                                    return Err(invalid(
                                        "node certificate is not an enforcer identity",
                                    ));
                                }
                                (id, false)
                            }
                            None => return Err(invalid(format!("node chain: {local_err}"))),
                        }
                    }
                };
                let key = Arc::new(
                    leaf_public_key(leaf)
                        .map_err(|e| invalid(format!("node key: {e}")))?
                        .verifying_key(JwsAlgorithm::ES256)
                        .map_err(|e| invalid(format!("node key: {e}")))?,
                );
                let fingerprint: Arc<str> = cert_sha256(leaf).into();
                // Only what this broker's own node CA vouches for is remembered: a
                // foreign `enforcer_ca` is chosen by the subject's domain.
                if verified.1
                    && let Ok((valid_from, valid_until)) = chain_validity(&chain)
                {
                    self.chains.put(
                        cache_key,
                        VerifiedChain {
                            node: verified.0.clone(),
                            key: key.clone(),
                            fingerprint: fingerprint.clone(),
                            valid_from,
                            valid_until,
                        },
                    );
                }
                (verified.0, verified.1, key, fingerprint)
            }
        };

        // 4b.
        let payload = jws
            .verify_with(&key)
            .map_err(|e| invalid(format!("signature: {e}")))?;
        let claims: EvidenceClaims = serde_json::from_value(Value::Object(payload))
            .map_err(|e| invalid(format!("claims: {e}")))?;

        // 5.
        if claims.iss != node.as_str() {
            return Err(invalid("iss is not the node certificate's SPIFFE ID"));
        }

        // 6. SPEC §6: exp - iat ≤ 60 s, and fresh now.
        if claims.exp <= claims.iat || claims.exp - claims.iat > MAX_EVIDENCE_AGE.as_secs() {
            return Err(invalid("lifetime is not within 60 s"));
        }
        if claims.iat > now.saturating_add(self.skew.as_secs()) {
            return Err(invalid("issued in the future"));
        }
        if now >= claims.exp || now.saturating_sub(claims.iat) > MAX_EVIDENCE_AGE.as_secs() {
            return Err(EvidenceError::Stale);
        }

        // 7.
        check_required(&ctx.boundary.require, &claims.proc)?;
        Ok((node, local, fingerprint.to_string(), claims))
    }
}

/// SPEC §3 `require`: every listed fact must hold; each list means "one of".
fn check_required(req: &RequiredFacts, p: &ProcFacts) -> Result<(), EvidenceError> {
    fn one_of<T: PartialEq>(list: &[T], v: &T, what: &str) -> Result<(), EvidenceError> {
        if list.is_empty() || list.contains(v) {
            Ok(())
        } else {
            Err(invalid(format!("required {what} does not match")))
        }
    }
    one_of(&req.exe_sha256, &p.exe_sha256, "exe_sha256")?;
    one_of(&req.uid, &p.uid, "uid")?;
    one_of(&req.gid, &p.gid, "gid")?;
    one_of(&req.exe, &p.exe, "exe")?;
    match &p.container_id {
        Some(id) => one_of(&req.container_id, id, "container_id"),
        None if req.container_id.is_empty() => Ok(()),
        None => Err(invalid("required container_id does not match")),
    }
}

impl EvidenceVerifier for X509EvidenceVerifier {
    fn check(&self, ctx: &EvidenceContext<'_>) -> Result<CheckedEvidence, EvidenceError> {
        let (node, local, fingerprint, claims) = self.check_local(ctx)?;
        Ok(CheckedEvidence {
            evidence: VerifiedEvidence {
                node: node.to_string(),
                workload: claims.sub,
                nonce: claims.nonce,
                jkt: claims.cnf.jkt,
                digest: evidence_digest(ctx.evidence),
            },
            enrolled_cert: local.then_some(fingerprint),
        })
    }

    fn confirm<'a>(
        &'a self,
        checked: CheckedEvidence,
    ) -> BoxFuture<'a, Result<VerifiedEvidence, EvidenceError>> {
        Box::pin(async move {
            // 3. Revocation, after the chain proves which node this is. Nodes of a foreign
            // `enforcer_ca` are not enrolled here; their domain revokes them.
            if let Some(fingerprint) = &checked.enrolled_cert
                && !self
                    .nodes
                    .is_active(&checked.evidence.node, fingerprint)
                    .await
                    .map_err(EvidenceError::Unavailable)?
            {
                return Err(invalid("node is revoked or its certificate was replaced"));
            }
            Ok(checked.evidence)
        })
    }
}
