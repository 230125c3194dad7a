//! Node enrollment (SPEC §6): the broker's node CA (rcgen), single-use join tokens,
//! `POST /v1/enroll`, renewal with the current certificate, and `/admin/v1/nodes`.

use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};
use serde::Deserialize;
use serde_json::json;
use token_exchange::attestation::{NODE_PATH_PREFIX, NodeStatus, cert_sha256};
use token_exchange::state::{BoxFuture, StateError};
use trust_bundles::bundle::X509Authority;
use trust_bundles::jws::UnverifiedJws;
use trust_bundles::x509::{SvidUsage, leaf_public_key, verify_x509_svid};
use trust_bundles::{JwsAlgorithm, SpiffeBundle, TrustDomain, UnixTime};

use crate::backend::Backend;
use crate::server::AppState;
use crate::store::{JoinTokenRecord, NodeCert, NodeRecord, Revocation, StoreError, StoredCa};

/// Lifetime of node certificates: short, renewed by the enforcer at half-life.
pub const NODE_CERT_TTL: Duration = Duration::from_secs(3600);
/// Lifetime of the node CA.
const NODE_CA_TTL: Duration = Duration::from_secs(5 * 365 * 24 * 3600);
/// Join tokens live this long unless asked otherwise, and never longer than the maximum.
const JOIN_TOKEN_DEFAULT_TTL: Duration = Duration::from_secs(600);
const JOIN_TOKEN_MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// Renewal requests are single-use JWSs valid this long.
const RENEWAL_MAX_AGE: u64 = 60;
/// `typ` of a renewal request.
pub const RENEWAL_TYP: &str = "node-renewal+jwt";
/// Largest enrollment or renewal body.
pub const MAX_ENROLL_BODY: usize = 16 * 1024;

/// The broker's node CA.
pub struct NodeCa {
    issuer: Issuer<'static, KeyPair>,
    cert: CertificateDer<'static>,
    trust_domain: TrustDomain,
}

impl std::fmt::Debug for NodeCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCa")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

fn datetime(secs: u64) -> Result<time::OffsetDateTime, String> {
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or_else(|| "time out of range".to_owned())
}

fn random_token(bytes: usize) -> Result<String, String> {
    let mut buf = vec![0u8; bytes];
    aws_lc_rs::rand::fill(&mut buf).map_err(|_| "randomness unavailable".to_owned())?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

/// Hex SHA-256 of a secret, the form in which it is stored and logged.
pub fn digest_hex(secret: &str) -> String {
    digest::digest(&digest::SHA256, secret.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl NodeCa {
    /// Loads the node CA from the store, making one on first start.
    pub async fn load_or_create(
        store: &Backend,
        trust_domain: &TrustDomain,
        now: UnixTime,
    ) -> Result<Self, String> {
        let stored = match store.node_ca().await.map_err(|e| e.to_string())? {
            Some(ca) => ca,
            None => {
                let key = KeyPair::generate().map_err(|e| e.to_string())?;
                let mut p = CertificateParams::default();
                p.distinguished_name.push(
                    DnType::CommonName,
                    format!("trustbroker node CA ({trust_domain})"),
                );
                p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
                p.key_usages = vec![
                    KeyUsagePurpose::KeyCertSign,
                    KeyUsagePurpose::CrlSign,
                    KeyUsagePurpose::DigitalSignature,
                ];
                p.not_before = datetime(now.as_secs().saturating_sub(60))?;
                p.not_after = datetime(now.as_secs().saturating_add(NODE_CA_TTL.as_secs()))?;
                let cert = p.self_signed(&key).map_err(|e| e.to_string())?;
                let fresh = StoredCa {
                    pkcs8_b64: STANDARD.encode(key.serialize_der()),
                    cert_der_b64: STANDARD.encode(cert.der().as_ref()),
                };
                store
                    .init_node_ca(&fresh)
                    .await
                    .map_err(|e| e.to_string())?
            }
        };
        let key_der = STANDARD
            .decode(&stored.pkcs8_b64)
            .map_err(|e| e.to_string())?;
        let key = KeyPair::try_from(key_der.as_slice()).map_err(|e| e.to_string())?;
        let cert = CertificateDer::from(
            STANDARD
                .decode(&stored.cert_der_b64)
                .map_err(|e| e.to_string())?,
        );
        let issuer = Issuer::from_ca_cert_der(&cert, key).map_err(|e| e.to_string())?;
        Ok(Self {
            issuer,
            cert,
            trust_domain: trust_domain.clone(),
        })
    }

    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The node CA as a SPIFFE bundle authority.
    pub fn authority(&self) -> Result<X509Authority, String> {
        Ok(X509Authority {
            certificate: self.cert.clone(),
            jwk: leaf_public_key(&self.cert).map_err(|e| e.to_string())?,
        })
    }

    /// A bundle holding only the node CA, for verifying node chains.
    pub fn bundle(&self) -> Result<SpiffeBundle, String> {
        SpiffeBundle::new(
            None,
            Duration::from_secs(300),
            vec![self.authority()?],
            Vec::new(),
        )
        .map_err(|e| e.to_string())
    }

    /// Parses a CSR, verifying its signature (proof of possession) and that the key is
    /// P-256, the node-key algorithm.
    pub fn parse_csr(csr_der: &[u8]) -> Result<CertificateSigningRequestParams, String> {
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(|e| format!("csr: {e}"))?;
        if !std::ptr::eq(csr.public_key.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256) {
            return Err("csr: the node key must be EC P-256".into());
        }
        Ok(csr)
    }

    /// Issues a node certificate for the key in `csr`, naming
    /// `spiffe://<td>/enforcer/<node>` whatever the CSR asks for.
    pub fn issue(
        &self,
        csr: &CertificateSigningRequestParams,
        node: &str,
        now: UnixTime,
    ) -> Result<(CertificateDer<'static>, u64), String> {
        let id = format!("spiffe://{}{NODE_PATH_PREFIX}{node}", self.trust_domain);
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, node);
        p.subject_alt_names = vec![SanType::URI(id.try_into().map_err(|_| "bad node id")?)];
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let not_after = now.as_secs().saturating_add(NODE_CERT_TTL.as_secs());
        p.not_before = datetime(now.as_secs().saturating_sub(60))?;
        p.not_after = datetime(not_after)?;
        let cert = p
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|e| e.to_string())?;
        Ok((cert.der().clone(), not_after))
    }
}

/// Node names are one SPIFFE path segment, short and plain.
pub fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name != "."
        && name != ".."
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
}

/// Node status from the backend: read at every verification, so a node deleted on one
/// replica is refused on all of them at once.
#[derive(Debug)]
pub struct StoreNodeStatus {
    pub store: Backend,
    pub trust_domain: TrustDomain,
}

impl NodeStatus for StoreNodeStatus {
    fn is_active<'a>(
        &'a self,
        node: &'a str,
        cert_sha256: &'a str,
    ) -> BoxFuture<'a, Result<bool, StateError>> {
        Box::pin(async move {
            let prefix = format!("spiffe://{}{NODE_PATH_PREFIX}", self.trust_domain);
            match node.strip_prefix(&prefix) {
                None => Ok(false),
                Some(name) => self
                    .store
                    .node_has_cert(name, cert_sha256)
                    .await
                    .map_err(|e| StateError(e.to_string())),
            }
        })
    }
}

// ---- HTTP -------------------------------------------------------------------------

fn json_error(status: actix_web::http::StatusCode, error: &str, description: &str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({"error": error, "error_description": description}))
}

fn bad_request(description: &str) -> HttpResponse {
    json_error(
        actix_web::http::StatusCode::BAD_REQUEST,
        "invalid_request",
        description,
    )
}

fn unavailable(e: &StoreError) -> HttpResponse {
    tracing::error!(error = %e, "state store failed");
    json_error(
        actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "try again later",
    )
}

/// Checks the admin bearer token in constant time. The API is off when no token is set.
pub fn check_admin(req: &HttpRequest, state: &AppState) -> Result<(), Box<HttpResponse>> {
    let Some(expected) = &state.admin_token else {
        return Err(Box::new(json_error(
            actix_web::http::StatusCode::FORBIDDEN,
            "admin_disabled",
            "no admin token is configured",
        )));
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if aws_lc_rs::constant_time::verify_slices_are_equal(
        presented.as_bytes(),
        expected.secret().as_bytes(),
    )
    .is_ok()
    {
        Ok(())
    } else {
        let mut resp = json_error(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "invalid_token",
            "admin bearer token required",
        );
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        Err(Box::new(resp))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinTokenRequest {
    node: String,
    ttl: Option<String>,
}

/// `POST /admin/v1/join-tokens`.
pub async fn create_join_token(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(resp) = check_admin(&req, &state) {
        return *resp;
    }
    let Ok(r) = serde_json::from_slice::<JoinTokenRequest>(&body) else {
        return bad_request("body must be {\"node\": \"…\", \"ttl\": \"10m\"}");
    };
    if !valid_node_name(&r.node) {
        return bad_request("node must be 1-63 of [a-z0-9._-]");
    }
    let ttl = match r.ttl.as_deref().map(humantime::parse_duration) {
        None => JOIN_TOKEN_DEFAULT_TTL,
        Some(Ok(d)) if d >= Duration::from_secs(1) && d <= JOIN_TOKEN_MAX_TTL => d,
        Some(_) => return bad_request("ttl must be a duration between 1s and 24h"),
    };
    let Ok(token) = random_token(32) else {
        return json_error(
            actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal error",
        );
    };
    let expires_at = state.clock.now().as_secs().saturating_add(ttl.as_secs());
    let record = JoinTokenRecord {
        node: r.node.clone(),
        expires_at,
    };
    let id = digest_hex(&token);
    if let Err(e) = state.backend.put_join_token(&id, &record).await {
        return unavailable(&e);
    }
    tracing::info!(event = "join_token", node = %r.node, id = %id, expires_at, "join token created");
    HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({"id": id, "token": token, "node": r.node, "expires_at": expires_at}))
}

/// `DELETE /admin/v1/join-tokens/{id}`: withdraws a join token not yet used. The `id` is
/// the token's SHA-256 (hex), as creation answered; 404 once used, expired or withdrawn.
pub async fn delete_join_token(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    if let Err(resp) = check_admin(&req, &state) {
        return *resp;
    }
    let id = id.into_inner();
    if id.len() != 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return json_error(StatusCode::NOT_FOUND, "not_found", "no such join token");
    }
    match state.backend.take_join_token(&id).await {
        Ok(Some(record)) => {
            tracing::info!(event = "join_token", node = %record.node, id = %id, "join token withdrawn");
            HttpResponse::NoContent().finish()
        }
        Ok(None) => json_error(StatusCode::NOT_FOUND, "not_found", "no such join token"),
        Err(e) => unavailable(&e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollRequest {
    join_token: String,
    /// Base64 DER PKCS#10 request for the node key.
    csr: String,
}

fn issued(state: &AppState, node: &str, cert: &CertificateDer<'_>, not_after: u64) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({
            "node": node,
            "spiffe_id": format!("spiffe://{}{NODE_PATH_PREFIX}{node}", state.local_trust_domain),
            "certificate": STANDARD.encode(cert.as_ref()),
            "ca": STANDARD.encode(state.node_ca.certificate().as_ref()),
            "expires_at": not_after,
        }))
}

fn audit_enroll(event: &'static str, decision: &'static str, node: Option<&str>, reason: &str) {
    tracing::info!(event, decision, reason, node, "node enrollment");
}

/// `POST /v1/enroll`: a join token and a CSR in, a node certificate out. The token is
/// consumed in one store transaction, so two uses — even concurrent ones — enroll once.
pub async fn enroll(body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    if body.len() > MAX_ENROLL_BODY {
        return bad_request("body too large");
    }
    let Ok(r) = serde_json::from_slice::<EnrollRequest>(&body) else {
        audit_enroll("enroll", "deny", None, "invalid_request");
        return bad_request("body must be {\"join_token\": \"…\", \"csr\": \"<base64 DER>\"}");
    };
    let Ok(csr) = STANDARD.decode(&r.csr) else {
        audit_enroll("enroll", "deny", None, "invalid_request");
        return bad_request("csr is not base64");
    };
    // The CSR is checked before the token is taken, so a client's malformed request does
    // not spend its single-use token.
    let csr = match NodeCa::parse_csr(&csr) {
        Ok(c) => c,
        Err(why) => {
            audit_enroll("enroll", "deny", None, "invalid_request");
            tracing::info!(error = %why, "enrollment refused");
            return bad_request("the CSR is not acceptable");
        }
    };
    let now = state.clock.now();
    let token = match state
        .backend
        .take_join_token(&digest_hex(&r.join_token))
        .await
    {
        Ok(Some(t)) if t.expires_at > now.as_secs() => t,
        Ok(_) => {
            audit_enroll("enroll", "deny", None, "invalid_grant");
            return json_error(
                actix_web::http::StatusCode::UNAUTHORIZED,
                "invalid_grant",
                "the join token is unknown, expired or used",
            );
        }
        Err(e) => return unavailable(&e),
    };
    let (cert, not_after) = match state.node_ca.issue(&csr, &token.node, now) {
        Ok(c) => c,
        Err(why) => {
            audit_enroll("enroll", "deny", Some(&token.node), "invalid_request");
            tracing::info!(node = %token.node, error = %why, "enrollment refused");
            return bad_request("the CSR is not acceptable");
        }
    };
    let fp = cert_sha256(&cert);
    let spiffe_id = format!(
        "spiffe://{}{NODE_PATH_PREFIX}{}",
        state.local_trust_domain, token.node
    );
    let node = token.node.clone();
    let floor = match state.backend.last_node_version(&token.node).await {
        Ok(v) => v,
        Err(e) => return unavailable(&e),
    };
    let stored = state
        .backend
        .update_node(&token.node, |current| {
            // A new enrollment replaces the old one entirely: certificates issued before it
            // stop counting at once. Versions never repeat, so a stale If-Match cannot act on it.
            let version = current.map_or(floor, |c| c.version).saturating_add(1);
            let rec = NodeRecord {
                name: node.clone(),
                spiffe_id: spiffe_id.clone(),
                enrolled_at: now.as_secs(),
                version,
                certs: vec![NodeCert {
                    sha256: fp.clone(),
                    not_after,
                }],
            };
            Ok((Some(rec), ()))
        })
        .await;
    if let Err(e) = stored {
        return unavailable(&e);
    }
    audit_enroll("enroll", "allow", Some(&token.node), "ok");
    issued(&state, &token.node, &cert, not_after)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RenewalClaims {
    csr: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RenewRequest {
    renewal: String,
}

/// Why a node-signed request was not accepted.
enum NodeRequestError {
    Refused(String),
    Unavailable(StoreError),
}

/// What a verified node-signed request carries.
struct NodeClaims {
    /// SHA-256 of the certificate it was signed with.
    fp: String,
    claims: serde_json::Map<String, serde_json::Value>,
}

/// Verifies a request a node signed with its current key: ES256, `typ`, its current
/// certificate (one, in `x5c`) chaining to the node CA and still the node's, the
/// signature, `iat`/`exp` fresh, and never seen before. Returns the node's name and the
/// other claims.
async fn verify_node_request(
    state: &AppState,
    compact: &str,
    typ: &str,
    now: UnixTime,
) -> Result<(String, NodeClaims), NodeRequestError> {
    let refuse = |why: &str| NodeRequestError::Refused(why.to_owned());
    let jws = UnverifiedJws::parse(compact, MAX_ENROLL_BODY)
        .map_err(|e| NodeRequestError::Refused(e.to_string()))?;
    if jws.alg() != JwsAlgorithm::ES256 || jws.header_str("typ") != Some(typ) {
        return Err(refuse("alg or typ"));
    }
    let chain: Vec<CertificateDer<'static>> =
        match jws.header().get("x5c").and_then(|v| v.as_array()) {
            Some(items) if items.len() == 1 => items
                .iter()
                .filter_map(|v| v.as_str().and_then(|s| STANDARD.decode(s).ok()))
                .map(CertificateDer::from)
                .collect(),
            _ => return Err(refuse("x5c")),
        };
    let leaf = chain.first().ok_or_else(|| refuse("x5c"))?;
    let bundle = state.node_ca.bundle().map_err(|e| refuse(&e))?;
    let id = verify_x509_svid(
        &chain,
        &bundle,
        &state.local_trust_domain,
        now,
        SvidUsage::Client,
    )
    .map_err(|e| refuse(&e.to_string()))?;
    let name = id
        .path()
        .strip_prefix(NODE_PATH_PREFIX)
        .map(str::to_owned)
        .ok_or_else(|| refuse("not a node"))?;
    let fp = cert_sha256(leaf);
    match state.node_status.is_active(id.as_str(), &fp).await {
        Ok(true) => {}
        Ok(false) => return Err(refuse("node revoked or certificate replaced")),
        Err(e) => return Err(NodeRequestError::Unavailable(StoreError::Db(e.0))),
    }
    let key = leaf_public_key(leaf).map_err(|e| refuse(&e.to_string()))?;
    let mut claims = jws.verify(&key).map_err(|_| refuse("signature"))?;
    // Fresh (at most a minute of life, not from the future) and used once.
    let secs = |v: Option<serde_json::Value>| v.and_then(|v| v.as_u64());
    let (Some(iat), Some(exp)) = (secs(claims.remove("iat")), secs(claims.remove("exp"))) else {
        return Err(refuse("iat and exp are required"));
    };
    let n = now.as_secs();
    if exp <= iat || exp - iat > RENEWAL_MAX_AGE || n >= exp || iat > n + 30 {
        return Err(refuse("stale"));
    }
    match token_exchange::state::ReplayStore::check_and_mark(
        state.renewals.as_ref(),
        &format!("{typ}:{}", digest_hex(compact)),
        UnixTime::from_secs(exp),
        now,
    )
    .await
    {
        Ok(true) => {}
        Ok(false) => return Err(refuse("replayed")),
        Err(e) => return Err(NodeRequestError::Unavailable(StoreError::Db(e.0))),
    }
    Ok((name, NodeClaims { fp, claims }))
}

/// `POST /v1/renew`: a JWS signed by the node's current key, its current certificate in
/// `x5c`, carrying a CSR for the next certificate.
pub async fn renew(body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    let refuse = |why: &str| {
        audit_enroll("renew", "deny", None, "invalid_request");
        tracing::info!(error = %why, "renewal refused");
        bad_request("the renewal request is not acceptable")
    };
    if body.len() > MAX_ENROLL_BODY {
        return refuse("too large");
    }
    let Ok(r) = serde_json::from_slice::<RenewRequest>(&body) else {
        return refuse("not {\"renewal\": \"<jws>\"}");
    };
    let now = state.clock.now();
    let (name, claims) = match verify_node_request(&state, &r.renewal, RENEWAL_TYP, now).await {
        Ok(v) => v,
        Err(NodeRequestError::Unavailable(e)) => return unavailable(&e),
        Err(NodeRequestError::Refused(why)) => return refuse(&why),
    };
    let fp = claims.fp;
    let Ok(claims) =
        serde_json::from_value::<RenewalClaims>(serde_json::Value::Object(claims.claims))
    else {
        return refuse("claims");
    };
    let Ok(csr) = STANDARD.decode(&claims.csr) else {
        return refuse("csr base64");
    };
    let csr = match NodeCa::parse_csr(&csr) {
        Ok(c) => c,
        Err(e) => return refuse(&e),
    };
    let (cert, not_after) = match state.node_ca.issue(&csr, &name, now) {
        Ok(c) => c,
        Err(e) => return refuse(&e),
    };
    let new_fp = cert_sha256(&cert);
    let updated = state
        .backend
        .update_node(&name, |current| match current {
            // Only the newest certificate renews: a superseded (possibly leaked) one cannot
            // push the node's current key out. Revoked since the check: refuse.
            Some(mut rec) if rec.certs.last().is_some_and(|c| c.sha256 == fp) => {
                rec.certs
                    .retain(|c| c.sha256 == fp && c.not_after > now.as_secs());
                rec.certs.push(NodeCert {
                    sha256: new_fp.clone(),
                    not_after,
                });
                rec.version = rec.version.saturating_add(1);
                Ok((Some(rec), true))
            }
            other => Ok((other, false)),
        })
        .await;
    match updated {
        Ok(true) => {
            audit_enroll("renew", "allow", Some(&name), "ok");
            issued(&state, &name, &cert, not_after)
        }
        Ok(false) => refuse("node revoked during renewal"),
        Err(e) => unavailable(&e),
    }
}

/// `typ` of the events a node reports.
pub const EVENTS_TYP: &str = "node-events+jwt";
/// Most workload exits one report may carry.
pub const MAX_EXITS_PER_REPORT: usize = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsRequest {
    events: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsClaims {
    exited: Vec<Exited>,
}

/// A workload process the node attested has exited.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Exited {
    /// The DPoP key its evidence bound.
    jkt: String,
    pid: u32,
    start_time: u64,
}

/// `POST /v1/nodes/events`: a node reports that workloads it attested have exited; the
/// tokens bound to their keys are revoked (issued up to now), on every replica.
///
/// Signed like a renewal, by the node's current key. A node can only make tokens *less*
/// usable this way, never more.
pub async fn events(body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    let refuse = |why: &str| {
        audit_enroll("node_events", "deny", None, "invalid_request");
        tracing::info!(error = %why, "node events refused");
        bad_request("the events report is not acceptable")
    };
    if body.len() > MAX_ENROLL_BODY {
        return refuse("too large");
    }
    let Ok(r) = serde_json::from_slice::<EventsRequest>(&body) else {
        return refuse("not {\"events\": \"<jws>\"}");
    };
    let now = state.clock.now();
    let (name, claims) = match verify_node_request(&state, &r.events, EVENTS_TYP, now).await {
        Ok(v) => v,
        Err(NodeRequestError::Unavailable(e)) => return unavailable(&e),
        Err(NodeRequestError::Refused(why)) => return refuse(&why),
    };
    let Ok(claims) =
        serde_json::from_value::<EventsClaims>(serde_json::Value::Object(claims.claims))
    else {
        return refuse("claims");
    };
    if claims.exited.len() > MAX_EXITS_PER_REPORT
        || claims
            .exited
            .iter()
            .any(|e| e.jkt.parse::<token_exchange::types::Jkt>().is_err())
    {
        return refuse("exited");
    }
    // Tokens bound to these keys were issued with at most max_ttl to live.
    let settings = state.exchanger.settings();
    let keep = now
        .checked_add(settings.limits.max_ttl + settings.skew)
        .unwrap_or(now);
    for e in &claims.exited {
        let target = token_exchange::revocation::Target::Jkt(e.jkt.clone());
        if let Err(err) = state.exchanger.revoke(&target, now, keep).await {
            return unavailable(&StoreError::Db(err.0));
        }
        tracing::info!(
            target: "audit",
            event = "revoke",
            decision = "allow",
            reason = "workload_exited",
            node = %name,
            pid = e.pid,
            start_time = e.start_time,
            revoked = "jkt",
            revocation_key = %target.storage_key(),
            "tokens of an exited workload revoked"
        );
    }
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({"revoked": claims.exited.len()}))
}

fn node_json(rec: &NodeRecord) -> serde_json::Value {
    json!({
        "name": rec.name,
        "spiffe_id": rec.spiffe_id,
        "enrolled_at": rec.enrolled_at,
        "version": rec.version,
        "expires_at": rec.certs.iter().map(|c| c.not_after).max(),
    })
}

/// `GET /admin/v1/nodes`.
pub async fn list_nodes(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Err(resp) = check_admin(&req, &state) {
        return *resp;
    }
    match state.backend.nodes().await {
        Ok(nodes) => HttpResponse::Ok()
            .json(json!({"nodes": nodes.iter().map(node_json).collect::<Vec<_>>()})),
        Err(e) => unavailable(&e),
    }
}

/// `GET /admin/v1/nodes/{name}` with `ETag: "<version>"`.
pub async fn get_node(
    req: HttpRequest,
    name: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(resp) = check_admin(&req, &state) {
        return *resp;
    }
    match state.backend.node(&name).await {
        Ok(Some(rec)) => HttpResponse::Ok()
            .insert_header((header::ETAG, format!("\"{}\"", rec.version)))
            .json(node_json(&rec)),
        Ok(None) => json_error(
            actix_web::http::StatusCode::NOT_FOUND,
            "not_found",
            "no such node",
        ),
        Err(e) => unavailable(&e),
    }
}

/// `DELETE /admin/v1/nodes/{name}`: revokes the node at once (SPEC §6). Requires
/// `If-Match: "<version>"` (SPEC §11): missing → 428, stale → 412.
pub async fn delete_node(
    req: HttpRequest,
    name: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    if let Err(resp) = check_admin(&req, &state) {
        return *resp;
    }
    let Some(if_match) = req
        .headers()
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().trim_matches('"').to_owned())
    else {
        return json_error(
            StatusCode::PRECONDITION_REQUIRED,
            "precondition_required",
            "If-Match is required",
        );
    };
    let result = state.backend.revoke_node(&name, &if_match).await;
    match result {
        Ok(Revocation::Revoked) => {
            tracing::info!(event = "revoke", decision = "allow", reason = "ok", node = %name.as_str(), "node revoked");
            HttpResponse::NoContent().finish()
        }
        Ok(Revocation::Missing) => json_error(StatusCode::NOT_FOUND, "not_found", "no such node"),
        Ok(Revocation::Stale) => json_error(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            "the node changed; GET it again",
        ),
        Err(e) => unavailable(&e),
    }
}
