//! `/introspect` (RFC 7662), `/revoke` (RFC 7009) and `/admin/v1/revocations`.
//!
//! Resource servers authenticate with HTTP Basic as a `[[client]]` (RFC 6749 §2.3.1), or
//! with the admin bearer token. Secrets are compared in constant time and never logged;
//! audit lines name tokens by their revocation id, a digest.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use serde_json::{Value, json};
use token_exchange::ErrorCode;
use token_exchange::revocation::{Target, TokenId};
use token_exchange::state::StateError;
use trust_bundles::UnixTime;

use crate::server::AppState;

/// Largest form or JSON body accepted here.
const MAX_BODY: usize = 64 * 1024;
/// Longest `token` accepted (SPEC §4: tokens over 16 KiB are refused).
const MAX_TOKEN: usize = 16 * 1024;
/// Longest subject, node, `jti`, issuer or `jkt` in an admin revocation.
const MAX_NAME: usize = 2048;
/// How long an admin revocation is kept when the broker cannot tell when what it covers
/// expires (foreign tokens, subjects, nodes, keys): a week outlives any token it accepts
/// with a `max_token_age`, and every token it issues.
pub const ADMIN_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

fn oauth(status: StatusCode, code: &str, description: &str) -> HttpResponse {
    let mut b = HttpResponse::build(status);
    b.insert_header((header::CACHE_CONTROL, "no-store"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        b.insert_header((header::RETRY_AFTER, "1"));
    }
    b.json(json!({"error": code, "error_description": description}))
}

fn unavailable(state: &AppState, e: &StateError) -> HttpResponse {
    tracing::error!(error = %e, "revocation store unavailable");
    state.metrics.state_error();
    oauth(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::TemporarilyUnavailable.as_str(),
        "state backend unavailable",
    )
}

/// Who called: a registered client or the admin.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Caller {
    Client(String),
    Admin,
}

impl Caller {
    fn name(&self) -> &str {
        match self {
            Self::Client(id) => id,
            Self::Admin => "admin",
        }
    }
}

fn ct_eq(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

/// RFC 6749 §2.3.1 Basic credentials (form-urlencoded, then base64), or the admin bearer.
fn authenticate(req: &HttpRequest, state: &AppState) -> Result<Caller, Box<HttpResponse>> {
    let refuse = || {
        let mut resp = oauth(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"trustbroker\""),
        );
        Box::new(resp)
    };
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(refuse)?;
    if let Some(bearer) = auth.strip_prefix("Bearer ") {
        return match &state.admin_token {
            Some(admin) if ct_eq(bearer, admin.secret()) => Ok(Caller::Admin),
            _ => Err(refuse()),
        };
    }
    let b64 = auth.strip_prefix("Basic ").ok_or_else(refuse)?.trim();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(refuse)?;
    let (id, secret) = decoded.split_once(':').ok_or_else(refuse)?;
    let unescape = |s: &str| -> String {
        form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let (id, secret) = (unescape(id), unescape(secret));
    // Every registered client is compared, so timing does not reveal which ids exist.
    let mut matched = None;
    for c in &state.clients {
        if ct_eq(&id, &c.id) & ct_eq(&secret, &c.secret.0) {
            matched = Some(c.id.clone());
        }
    }
    matched.map(Caller::Client).ok_or_else(refuse)
}

/// The `token` parameter of a form body.
async fn token_param(payload: web::Payload) -> Result<String, Box<HttpResponse>> {
    let bad = |d: &str| Box::new(oauth(StatusCode::BAD_REQUEST, "invalid_request", d));
    let body = match payload.to_bytes_limited(MAX_BODY).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return Err(bad("body could not be read")),
        Err(_) => {
            return Err(Box::new(oauth(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                "body over 64 KiB",
            )));
        }
    };
    let mut tokens = form_urlencoded::parse(&body).filter(|(k, _)| k == "token");
    let token = tokens.next().ok_or_else(|| bad("`token` is required"))?.1;
    if tokens.next().is_some() {
        return Err(bad("`token` is repeated"));
    }
    let token = token.trim();
    if token.len() > MAX_TOKEN {
        return Err(bad("token over 16 KiB"));
    }
    Ok(token.to_owned())
}

fn audit_revoke(
    caller: &Caller,
    decision: &str,
    reason: &str,
    target: Option<&Target>,
    detail: &str,
) {
    let (kind, key) = match target {
        Some(t) => (Some(t.kind()), Some(t.storage_key())),
        None => (None, None),
    };
    tracing::info!(
        target: "audit",
        event = "revoke",
        decision,
        reason,
        caller = caller.name(),
        revoked = kind,
        revocation_key = key.as_deref(),
        detail,
        "revocation"
    );
}

/// Stores a revocation; a backend failure is audited and answered 503.
async fn record(
    state: &AppState,
    caller: &Caller,
    target: &Target,
    now: UnixTime,
    keep: UnixTime,
) -> Result<(), Box<HttpResponse>> {
    state
        .exchanger
        .revoke(target, now, keep)
        .await
        .map_err(|e| {
            let detail = e.to_string();
            audit_revoke(
                caller,
                "deny",
                "temporarily_unavailable",
                Some(target),
                &detail,
            );
            Box::new(unavailable(state, &e))
        })
}

/// `POST /introspect` (RFC 7662).
pub async fn introspect(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(resp) = authenticate(&req, &state) {
        return *resp;
    }
    let token = match token_param(payload).await {
        Ok(t) => t,
        Err(resp) => return *resp,
    };
    match state.exchanger.introspect(&token, state.clock.now()).await {
        Ok(answer) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(answer.to_json()),
        Err(e) => unavailable(&state, &e),
    }
}

/// `POST /revoke` (RFC 7009): tokens this broker issued. Anything else is answered 200
/// too (§2.2: an invalid token is not an error, and the answer says nothing about it).
pub async fn revoke(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let caller = match authenticate(&req, &state) {
        Ok(c) => c,
        Err(resp) => return *resp,
    };
    let token = match token_param(payload).await {
        Ok(t) => t,
        Err(resp) => return *resp,
    };
    let now = state.clock.now();
    let own = match state.exchanger.verify_own(&token, now).await {
        Ok(own) => own,
        Err(e) => return unavailable(&state, &e),
    };
    if let Some(own) = own {
        let target = Target::Token(own.id.clone());
        let keep = keep_until(own.exp, state.exchanger.settings().skew);
        if let Err(resp) = record(&state, &caller, &target, now, keep).await {
            return *resp;
        }
        audit_revoke(
            &caller,
            "allow",
            "ok",
            Some(&target),
            "token and every token minted from it",
        );
    } else {
        audit_revoke(
            &caller,
            "deny",
            "not_ours",
            None,
            "not a live token of this broker",
        );
    }
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// `POST /admin/v1/revocations`: exactly one of `token`, `jti` (with `issuer`, default
/// this broker's), `subject`, `node` (a name or SPIFFE ID), `jkt`.
pub async fn admin_revoke(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(resp) = crate::nodes::check_admin(&req, &state) {
        return *resp;
    }
    let caller = Caller::Admin;
    let invalid = |path: &str, message: &str| {
        HttpResponse::BadRequest().json(json!({
            "error": "invalid_object",
            "details": [{"path": path, "message": message}],
        }))
    };
    if body.len() > MAX_BODY {
        return invalid("", "body over 64 KiB");
    }
    let Ok(Value::Object(obj)) = trust_bundles::json::parse_strict(&body) else {
        return invalid("", "a JSON object is required");
    };
    const FIELDS: [&str; 6] = ["token", "jti", "issuer", "subject", "node", "jkt"];
    if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return invalid(k, "unknown field");
    }
    let mut strings = Vec::new();
    for (k, v) in &obj {
        let Some(s) = v.as_str() else {
            return invalid(k, "must be a string");
        };
        let max = if k == "token" { MAX_TOKEN } else { MAX_NAME };
        if s.is_empty() || s.len() > max {
            return invalid(k, "must be a non-empty string within its size limit");
        }
        strings.push((k.as_str(), s));
    }
    let get = |k: &str| strings.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
    let kinds: Vec<&str> = ["token", "jti", "subject", "node", "jkt"]
        .into_iter()
        .filter(|k| get(k).is_some())
        .collect();
    if kinds.len() != 1 {
        return invalid(
            "",
            "exactly one of token, jti, subject, node, jkt is required",
        );
    }
    if get("issuer").is_some() && get("jti").is_none() {
        return invalid("issuer", "applies to jti only");
    }
    let now = state.clock.now();
    let mut keep = now.checked_add(ADMIN_RETENTION).unwrap_or(now);
    let target = match kinds.first().copied() {
        Some("token") => {
            let token = get("token").unwrap_or_default();
            match state.exchanger.verify_own(token, now).await {
                Ok(Some(own)) => {
                    keep = own.exp;
                    Target::Token(own.id)
                }
                // A foreign token: its id from its own claims (the admin is trusted, and
                // revoking what does not exist harms nothing).
                Ok(None) => match foreign_token_id(token) {
                    Some(id) => Target::Token(id),
                    None => return invalid("token", "not a compact JWS"),
                },
                Err(e) => return unavailable(&state, &e),
            }
        }
        Some("jti") => {
            let issuer = get("issuer").unwrap_or(&state.issuer);
            Target::Token(TokenId::new(issuer, get("jti"), ""))
        }
        Some("subject") => Target::Subject(get("subject").unwrap_or_default().to_owned()),
        Some("node") => {
            let node = get("node").unwrap_or_default();
            if node.starts_with("spiffe://") {
                Target::Node(node.to_owned())
            } else {
                Target::Node(format!(
                    "spiffe://{}/enforcer/{node}",
                    state.local_trust_domain
                ))
            }
        }
        _ => Target::Jkt(get("jkt").unwrap_or_default().to_owned()),
    };
    if let Err(resp) = record(&state, &caller, &target, now, keep).await {
        return *resp;
    }
    audit_revoke(&caller, "allow", "ok", Some(&target), "admin revocation");
    HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({
            "kind": target.kind(),
            "revocation_key": target.storage_key(),
            "revoked_at": now.as_secs(),
            "kept_until": keep.as_secs(),
        }))
}

/// A foreign token's revocation id, from its unverified claims (see [`TokenId::new`]).
fn foreign_token_id(token: &str) -> Option<TokenId> {
    let jws = trust_bundles::jws::UnverifiedJws::parse(token.trim(), MAX_TOKEN).ok()?;
    let claims = jws.unverified_payload();
    let jti = claims.get("jti").and_then(Value::as_str);
    let namespace = match claims.get("iss").and_then(Value::as_str) {
        Some(iss) => iss.to_owned(),
        None => {
            let sub: trust_bundles::SpiffeId = claims.get("sub")?.as_str()?.parse().ok()?;
            format!("spiffe://{}", sub.trust_domain())
        }
    };
    Some(TokenId::new(&namespace, jti, jws.compact()))
}

/// When the revocation of a token that expires at `exp` may be forgotten.
fn keep_until(exp: UnixTime, skew: Duration) -> UnixTime {
    exp.checked_add(skew).unwrap_or(exp)
}
