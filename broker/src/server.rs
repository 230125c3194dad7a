//! The HTTP surface (SPEC §8) on actix-web: the token endpoint, nonces, metadata, keys,
//! health. Handlers translate HTTP to the core's types and back; nothing is decided here.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};
use token_exchange::audit::{AuditRecord, Decision};
use token_exchange::exchange::NONCE_TTL;
use token_exchange::keys::{KeyRing, SigningAlg};
use token_exchange::{ErrorCode, Exchanger, Inbound};
use trust_bundles::bundle::JwtAuthority;
use trust_bundles::{Clock, SpiffeBundle, Stopwatch};

/// Largest `/token` body accepted (SPEC §4).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The admin bearer token. `Debug` redacts it; compare with [`crate::nodes::check_admin`].
#[derive(Clone)]
pub struct AdminToken(String);

impl AdminToken {
    pub fn new(token: String) -> Option<Self> {
        (!token.is_empty()).then_some(Self(token))
    }

    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken([redacted])")
    }
}

/// Shared state of every worker.
pub struct AppState {
    pub exchanger: Exchanger,
    pub ring: Arc<RwLock<KeyRing>>,
    pub backend: crate::backend::Backend,
    pub clock: Arc<dyn Clock>,
    pub issuer: String,
    pub local_trust_domain: trust_bundles::TrustDomain,
    pub bundle_sequence: AtomicU64,
    pub node_ca: Arc<crate::nodes::NodeCa>,
    pub node_status: Arc<crate::nodes::StoreNodeStatus>,
    pub admin_token: Option<AdminToken>,
    /// Renewal request `jti`s, single use (shared by replicas on Redis).
    pub renewals: Arc<dyn token_exchange::state::ReplayStore>,
    pub live: Arc<crate::federated::LiveBundles>,
    /// Resource servers that may call `/introspect` and `/revoke`.
    pub clients: Vec<crate::config::ClientConfig>,
    pub metrics: crate::metrics::Metrics,
    /// Configured keys of foreign domains (swapped when admin objects change).
    pub federated: Arc<crate::federated::FederatedKeys>,
    /// The configuration from the file; admin objects are validated against it.
    pub base: crate::config::Config,
    pub admin: crate::admin::AdminRuntime,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/token", web::post().to(token))
        .route("/attest/challenge", web::post().to(challenge))
        .route("/.well-known/openid-configuration", web::get().to(metadata))
        .route(
            "/.well-known/oauth-authorization-server",
            web::get().to(metadata),
        )
        .route("/jwks", web::get().to(jwks))
        .route("/bundle", web::get().to(bundle))
        .route(
            "/introspect",
            web::post().to(crate::revocations::introspect),
        )
        .route("/revoke", web::post().to(crate::revocations::revoke))
        .route(
            "/admin/v1/revocations",
            web::post().to(crate::revocations::admin_revoke),
        )
        .route("/healthz", web::get().to(healthz))
        .route("/metrics", web::get().to(metrics))
        .route("/readyz", web::get().to(readyz))
        .route("/v1/enroll", web::post().to(crate::nodes::enroll))
        .route("/v1/renew", web::post().to(crate::nodes::renew))
        .route("/v1/nodes/events", web::post().to(crate::nodes::events))
        .route(
            "/admin/v1/join-tokens",
            web::post().to(crate::nodes::create_join_token),
        )
        .route(
            "/admin/v1/join-tokens/{id}",
            web::delete().to(crate::nodes::delete_join_token),
        )
        .route("/admin/v1/nodes", web::get().to(crate::nodes::list_nodes))
        .route("/admin/v1/trust-domains", web::get().to(crate::admin::list))
        .route(
            "/admin/v1/trust-domains",
            web::post().to(crate::admin::create),
        )
        .route(
            "/admin/v1/trust-domains/{name}",
            web::get().to(crate::admin::get),
        )
        .route(
            "/admin/v1/trust-domains/{name}",
            web::put().to(crate::admin::replace),
        )
        .route(
            "/admin/v1/trust-domains/{name}",
            web::delete().to(crate::admin::delete),
        )
        .route(
            "/admin/v1/trust-domains/{name}/bundle",
            web::get().to(crate::admin::get_bundle),
        )
        .route(
            "/admin/v1/trust-domains/{name}/bundle",
            web::put().to(crate::admin::put_bundle),
        )
        .route("/admin/v1/boundaries", web::get().to(crate::admin::list))
        .route("/admin/v1/boundaries", web::post().to(crate::admin::create))
        .route(
            "/admin/v1/boundaries/{name}",
            web::get().to(crate::admin::get),
        )
        .route(
            "/admin/v1/boundaries/{name}",
            web::put().to(crate::admin::replace),
        )
        .route(
            "/admin/v1/boundaries/{name}",
            web::delete().to(crate::admin::delete),
        )
        .route(
            "/admin/v1/nodes/{name}",
            web::get().to(crate::nodes::get_node),
        )
        .route(
            "/admin/v1/nodes/{name}",
            web::delete().to(crate::nodes::delete_node),
        );
}

fn no_store(mut resp: HttpResponse) -> HttpResponse {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// An OAuth error response (RFC 6749 §5.2) with the code's status.
fn oauth_error(code: ErrorCode, status: StatusCode, nonce: Option<&str>) -> HttpResponse {
    let mut builder = HttpResponse::build(status);
    if let Some(n) = nonce
        && let Ok(v) = HeaderValue::from_str(n)
    {
        builder.insert_header(("DPoP-Nonce", v));
    }
    if code == ErrorCode::TemporarilyUnavailable {
        builder.insert_header((header::RETRY_AFTER, "1"));
    }
    no_store(builder.json(json!({"error": code.as_str(), "error_description": code.description()})))
}

fn status_of(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.status()).unwrap_or(StatusCode::BAD_REQUEST)
}

/// Writes the audit line (SPEC §9): one flat JSON object per decision, on stdout.
pub fn emit_audit(r: &AuditRecord, watch: &Stopwatch) {
    let latency_us = u64::try_from(watch.elapsed().as_micros()).unwrap_or(u64::MAX);
    let decision = match r.decision {
        Decision::Allow => "allow",
        Decision::Deny => "deny",
    };
    tracing::info!(
        target: "audit",
        event = r.event,
        decision,
        reason = r.reason,
        detail = r.detail.as_deref(),
        subject = r.subject.as_deref(),
        from = r.from.as_deref(),
        audience = r.audience.as_deref(),
        scope_requested = r.scope_requested.as_deref(),
        scope_granted = r.scope_granted.as_deref(),
        boundary = r.boundary.as_deref(),
        node = r.node.as_deref(),
        actor = r.actor.as_deref(),
        jti_in = r.jti_in.as_deref(),
        jti_out = r.jti_out.as_deref(),
        latency_us,
    );
}

/// Every value of header `name`, each visible ASCII, space or tab (RFC 9110 §5.5);
/// anything else (obs-text) refuses the request.
fn header_values<'a>(headers: &'a HeaderMap, name: &str) -> Result<Vec<&'a str>, ()> {
    headers
        .get_all(name)
        .map(|v| visible_ascii(v.as_bytes()))
        .collect()
}

/// `bytes` as text when each is visible ASCII, space or tab: what `HeaderValue::to_str`
/// accepts, checked without an early exit so that it compiles to vector code (evidence
/// is kilobytes long: byte at a time, this was 1 % of an attested exchange).
fn visible_ascii(bytes: &[u8]) -> Result<&str, ()> {
    let outside = bytes.iter().fold(false, |outside, &b| {
        outside | (b.wrapping_sub(0x20) >= 0x5f && b != b'\t')
    });
    if outside {
        return Err(());
    }
    std::str::from_utf8(bytes).map_err(|_| ())
}

/// The pairs of an `application/x-www-form-urlencoded` body, exactly as
/// `form_urlencoded::parse` gives them. A pair with neither `+` nor `%` in it needs no
/// decoding, and the body is known to be UTF-8, so it is borrowed as it is after one
/// vectorisable look; the rest go through `form_urlencoded`. A subject token is most of
/// an exchange's body and never has either (base64url and dots): byte at a time, five
/// passes over it were 1 % of an attested exchange.
fn parse_form(body: &[u8]) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
    body.split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let plain = !pair
                .iter()
                .fold(false, |seen, &b| seen | (b == b'+') | (b == b'%'));
            match (plain, std::str::from_utf8(pair)) {
                (true, Ok(text)) => {
                    let (name, value) = text.split_once('=').unwrap_or((text, ""));
                    Some((Cow::Borrowed(name), Cow::Borrowed(value)))
                }
                _ => form_urlencoded::parse(pair).next(),
            }
        })
        .collect()
}

/// A request refused before it reached the core still gets its audit line.
fn refuse_early(
    state: &AppState,
    code: ErrorCode,
    status: StatusCode,
    detail: &str,
    watch: &Stopwatch,
) -> HttpResponse {
    let mut r = AuditRecord::new("token_exchange");
    r.decision = Decision::Deny;
    r.reason = code.as_str();
    r.detail = Some(detail.to_owned());
    emit_audit(&r, watch);
    state.metrics.exchange("deny", r.reason, watch.elapsed());
    oauth_error(code, status, None)
}

async fn token(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let watch = Stopwatch::start();
    let bad = StatusCode::BAD_REQUEST;

    // RFC 6749 §3.2: form-encoded body.
    let form_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if form_type != Some(true) {
        return refuse_early(
            &state,
            ErrorCode::InvalidRequest,
            bad,
            "content type is not application/x-www-form-urlencoded",
            &watch,
        );
    }
    let too_large = StatusCode::PAYLOAD_TOO_LARGE;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return refuse_early(
            &state,
            ErrorCode::InvalidRequest,
            too_large,
            "body over 64 KiB",
            &watch,
        );
    }
    // Chunked bodies have no Content-Length: the limit is enforced while reading too.
    let body = match payload.to_bytes_limited(MAX_BODY_BYTES).await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => {
            return refuse_early(
                &state,
                ErrorCode::InvalidRequest,
                bad,
                "body could not be read",
                &watch,
            );
        }
        Err(_) => {
            return refuse_early(
                &state,
                ErrorCode::InvalidRequest,
                too_large,
                "body over 64 KiB",
                &watch,
            );
        }
    };
    if std::str::from_utf8(&body).is_err() {
        return refuse_early(
            &state,
            ErrorCode::InvalidRequest,
            bad,
            "body is not UTF-8",
            &watch,
        );
    }
    let form = parse_form(&body);
    let (Ok(dpop), Ok(evidence)) = (
        header_values(req.headers(), "DPoP"),
        header_values(req.headers(), "Runtime-Attestation"),
    ) else {
        return refuse_early(
            &state,
            ErrorCode::InvalidRequest,
            bad,
            "a header is not visible ASCII",
            &watch,
        );
    };

    let outcome = state
        .exchanger
        .exchange(Inbound {
            form: &form,
            dpop: &dpop,
            evidence: &evidence,
        })
        .await;
    emit_audit(&outcome.audit, &watch);
    let decision = match outcome.audit.decision {
        Decision::Allow => "allow",
        Decision::Deny => "deny",
    };
    state
        .metrics
        .exchange(decision, outcome.audit.reason, watch.elapsed());
    match outcome.result {
        Ok(resp) => no_store(
            HttpResponse::Ok()
                .content_type("application/json")
                .body(resp.to_json_string()),
        ),
        Err(refusal) => {
            let code = refusal.code();
            oauth_error(
                code,
                status_of(code),
                refusal.fresh_nonce.as_ref().map(|n| n.as_str()),
            )
        }
    }
}

async fn challenge(state: web::Data<AppState>) -> HttpResponse {
    match state.exchanger.challenge() {
        Ok(nonce) => {
            let mut resp = no_store(HttpResponse::Ok().json(json!({
                "nonce": nonce.as_str(),
                "expires_in": NONCE_TTL.as_secs(),
            })));
            if let Ok(v) = HeaderValue::from_str(nonce.as_str()) {
                resp.headers_mut()
                    .insert(header::HeaderName::from_static("dpop-nonce"), v);
            }
            resp
        }
        Err(e) => {
            let code = e.code();
            if code == ErrorCode::TemporarilyUnavailable {
                state.metrics.state_error();
            }
            oauth_error(code, status_of(code), None)
        }
    }
}

async fn metadata(state: web::Data<AppState>) -> HttpResponse {
    let iss = &state.issuer;
    let dpop_algs: Vec<&str> = trust_bundles::JwsAlgorithm::ALL
        .iter()
        .map(|a| a.as_str())
        .collect();
    HttpResponse::Ok().json(json!({
        "issuer": iss,
        "jwks_uri": format!("{iss}/jwks"),
        "token_endpoint": format!("{iss}/token"),
        "introspection_endpoint": format!("{iss}/introspect"),
        "revocation_endpoint": format!("{iss}/revoke"),
        "grant_types_supported": [token_exchange::request::GRANT_TYPE_TOKEN_EXCHANGE],
        "token_endpoint_auth_methods_supported": ["none"],
        "dpop_signing_alg_values_supported": dpop_algs,
        "id_token_signing_alg_values_supported": ["ES256", "RS256"],
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "scopes_supported": [],
    }))
}

fn published_keys(state: &AppState) -> Vec<trust_bundles::Jwk> {
    let ring = state.ring.read().unwrap_or_else(PoisonError::into_inner);
    ring.published(state.clock.now())
        .into_iter()
        .map(|k| k.jwk().clone())
        .collect()
}

async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    let keys: Vec<Value> = published_keys(&state)
        .iter()
        .map(|k| {
            let mut v = k.to_json();
            v.insert("use".into(), "sig".into());
            Value::Object(v)
        })
        .collect();
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=60"))
        .json(json!({ "keys": keys }))
}

async fn bundle(state: web::Data<AppState>) -> HttpResponse {
    let authorities = published_keys(&state)
        .into_iter()
        .filter_map(|jwk| jwk.kid.clone().map(|kid| JwtAuthority { kid, jwk }))
        .collect();
    let seq = state.bundle_sequence.load(Ordering::SeqCst);
    // SPEC §7: jwt-svid keys for our tokens, x509-svid for the node CA.
    let x509 = state.node_ca.authority().into_iter().collect();
    match SpiffeBundle::new(Some(seq), Duration::from_secs(300), x509, authorities) {
        Ok(b) => HttpResponse::Ok()
            .content_type("application/json")
            .body(b.to_json()),
        Err(e) => {
            tracing::error!(error = %e, "own bundle is inconsistent");
            HttpResponse::ServiceUnavailable().finish()
        }
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let now = state.clock.now();
    let body = state
        .metrics
        .render(&state.live.status(now), state.backend.memory_sizes());
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let store_ok = state.backend.ping().await.is_ok();
    let keys_ok = {
        let ring = state.ring.read().unwrap_or_else(PoisonError::into_inner);
        ring.signer(SigningAlg::ES256, state.clock.now()).is_ok()
    };
    let body = json!({"store": store_ok, "keys": keys_ok});
    if store_ok && keys_ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `visible_ascii` takes exactly what `HeaderValue::to_str` takes, every byte value
    /// at the start, in the middle (inside and outside a vector lane) and at the end.
    #[test]
    fn visible_ascii_is_to_str() {
        for b in 0..=u8::MAX {
            for at in [0, 15, 16, 33, 99] {
                let mut value = vec![b'a'; 100];
                value[at] = b;
                let expected = b == b'\t' || (0x20..0x7f).contains(&b);
                assert_eq!(
                    visible_ascii(&value).is_ok(),
                    expected,
                    "byte {b:#x} at {at}"
                );
                if let Ok(header) = HeaderValue::from_bytes(&value) {
                    assert_eq!(header.to_str().is_ok(), expected, "byte {b:#x} at {at}");
                }
            }
        }
        assert_eq!(visible_ascii(b""), Ok(""));
    }

    proptest::proptest! {
        /// `parse_form` is `form_urlencoded::parse`, pair for pair, on bodies made of the
        /// characters that matter to it (separators, `+`, `%` with and without hex,
        /// multibyte text, bytes that are not UTF-8).
        #[test]
        fn parse_form_is_form_urlencoded(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    "&", "=", "+", "%", "%2", "%3A", "%2B", "%zz", "%C3%A9", "%FF", "a", "Z",
                    "0", "-", "_", ".", "~", "é", "✓", " ", "eyJhbGciOiJFUzI1NiJ9",
                ]),
                0..40,
            ),
            raw in proptest::option::of(proptest::sample::select(vec![0xffu8, 0xc3, 0x80])),
        ) {
            let mut body = parts.concat().into_bytes();
            if let Some(b) = raw {
                body.insert(body.len() / 2, b);
            }
            let ours = parse_form(&body);
            let theirs: Vec<_> = form_urlencoded::parse(&body).collect();
            proptest::prop_assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn parse_form_borrows_plain_pairs_and_decodes_the_rest() {
        let body = b"subject_token=eyJ.e30.sig&&grant_type=urn%3Aietf&scope=a+b&flag&=v&k=v=w";
        let form = parse_form(body);
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (&**k, &**v)).collect();
        assert_eq!(
            pairs,
            [
                ("subject_token", "eyJ.e30.sig"),
                ("grant_type", "urn:ietf"),
                ("scope", "a b"),
                ("flag", ""),
                ("", "v"),
                ("k", "v=w"),
            ]
        );
        assert!(matches!(form[0].1, Cow::Borrowed(_)));
        assert!(matches!(form[1].1, Cow::Owned(_)));
    }
}
