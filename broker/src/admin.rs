//! Trust domains and boundaries managed through `/admin/v1` (SPEC §8, §11), beside the
//! ones in the config file.
//!
//! An admin object is the JSON form of a config table (`[[trust_domain]]`,
//! `[[boundary]]`), validated by the very code that validates the file: the file's text
//! and every admin object are put together and checked as one configuration, so a
//! boundary naming a domain that does not exist is refused the same way everywhere.
//! Objects are durable in the backend with a version (optimistic concurrency through
//! `If-Match`); every replica polls the backend's admin generation and applies changes
//! within a quarter of a second. Objects from the config file are read-only here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Map, Value, json};
use token_exchange::exchange::Rules;
use token_exchange::policy::Policy;

use crate::config::{Config, EndpointConfig, Problems, ProcessEnv};
use crate::server::AppState;
use crate::store::{AdminRecord, AdminWrite, StoreError};

/// How often a replica looks for admin changes made elsewhere.
pub const POLL_EVERY: Duration = Duration::from_millis(250);
/// Largest admin request body.
const MAX_BODY: usize = 256 * 1024;
/// Config keys that name files on the broker's disk: set in the config file, not here.
const FILE_KEYS: [&str; 5] = [
    "bundle_file",
    "jwks_file",
    "enforcer_ca",
    "tls_ca",
    "secret_env",
];

/// The two kinds of admin object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    TrustDomain,
    Boundary,
}

impl Kind {
    /// The config table (and problem-path prefix).
    fn table(self) -> &'static str {
        match self {
            Self::TrustDomain => "trust_domain",
            Self::Boundary => "boundary",
        }
    }

    fn key(self, name: &str) -> String {
        format!("{}/{name}", self.table())
    }
}

/// Runtime state of admin objects on this replica.
#[derive(Debug, Default)]
pub struct AdminRuntime {
    /// The generation last applied here.
    applied: AtomicU64,
    /// Refresher tasks of live domains: domain → (what it fetches, the task).
    refreshers: Mutex<HashMap<String, (String, actix_web::rt::task::JoinHandle<()>)>>,
    /// Serialises applies on this replica.
    apply_lock: tokio::sync::Mutex<()>,
}

impl AdminRuntime {
    /// Stops every refresher (shutdown).
    pub fn stop(&self) {
        let mut r = self
            .refreshers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (_, (_, task)) in r.drain() {
            task.abort();
        }
    }
}

/// The config tables of the file, as JSON objects.
fn file_objects(base: &Config, kind: Kind) -> Vec<Map<String, Value>> {
    let Ok(doc) = base.text.parse::<toml::Table>() else {
        return Vec::new();
    };
    match doc.get(kind.table()) {
        Some(toml::Value::Array(items)) => items
            .iter()
            .filter_map(|t| serde_json::to_value(t).ok())
            .filter_map(|v| match v {
                Value::Object(m) => Some(m),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn name_of(o: &Map<String, Value>) -> Option<&str> {
    o.get("name").and_then(Value::as_str)
}

/// The file's text with `records` appended as config tables.
fn combined_text(base: &Config, records: &[AdminRecord]) -> Result<String, String> {
    let mut table = toml::Table::new();
    for kind in [Kind::TrustDomain, Kind::Boundary] {
        let items: Vec<toml::Value> = records
            .iter()
            .filter(|r| r.key.starts_with(&format!("{}/", kind.table())))
            .map(|r| toml::Value::try_from(strip_nulls(r.object.clone())))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        if !items.is_empty() {
            table.insert(kind.table().to_owned(), toml::Value::Array(items));
        }
    }
    let extra = toml::to_string(&table).map_err(|e| e.to_string())?;
    Ok(format!("{}\n\n# admin objects\n{extra}", base.text))
}

fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

/// Validates the file plus `records` as one configuration.
fn validate(base: &Config, records: &[AdminRecord]) -> Result<Config, Vec<(String, String)>> {
    let text = combined_text(base, records).map_err(|e| vec![(String::new(), e)])?;
    Config::parse_str(&text, base.source.as_deref(), &ProcessEnv).map_err(|Problems(ps)| {
        ps.into_iter()
            .map(|p| (admin_path(base, &p.path), p.message))
            .collect()
    })
}

/// A problem's path in terms an API caller knows: `boundary[7].max_ttl` → the admin
/// object's `boundary.max_ttl` (file objects keep their index).
fn admin_path(base: &Config, path: &str) -> String {
    for kind in [Kind::TrustDomain, Kind::Boundary] {
        let prefix = format!("{}[", kind.table());
        let Some(rest) = path.strip_prefix(&prefix) else {
            continue;
        };
        let Some((idx, tail)) = rest.split_once(']') else {
            continue;
        };
        let Ok(idx) = idx.parse::<usize>() else {
            continue;
        };
        let in_file = match kind {
            Kind::TrustDomain => base.file_objects.0,
            Kind::Boundary => base.file_objects.1,
        };
        if idx >= in_file {
            return format!("{}{tail}", kind.table());
        }
    }
    path.to_owned()
}

/// Puts `cfg`'s trust domains, keys, boundaries and live endpoints into force here.
fn put_in_force(state: &AppState, cfg: &Config) {
    let old = state.exchanger.rules();
    state.exchanger.replace_rules(Rules {
        validator: old.validator.with_domains(cfg.domains.clone()),
        policy: Policy::new(cfg.boundaries.clone()),
    });
    state.federated.set_fixed(cfg.static_keys.clone());
    state.live.sync_domains(
        cfg.endpoints
            .iter()
            .map(|e| (e.domain.clone(), e.bootstrap.clone())),
        state.clock.now(),
    );
    sync_refreshers(state, cfg);
}

/// Starts a refresher for every live domain that has none (or fetches elsewhere now),
/// and stops the ones of domains that went away.
pub fn sync_refreshers(state: &AppState, cfg: &Config) {
    let policies = match crate::serve::fetch_policies(cfg) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "live domains: fetch policies unreadable");
            return;
        }
    };
    let mut running = state
        .admin
        .refreshers
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let wanted: HashMap<String, (EndpointConfig, federation::fetch::FetchPolicy)> = policies
        .into_iter()
        .map(|(ep, p)| (ep.domain.clone(), (ep, p)))
        .collect();
    running.retain(|domain, (fingerprint, task)| {
        let keep = wanted
            .get(domain)
            .is_some_and(|(ep, p)| fingerprint_of(ep, p) == *fingerprint);
        if !keep {
            task.abort();
        }
        keep
    });
    for (domain, (ep, policy)) in wanted {
        if running.contains_key(&domain) {
            continue;
        }
        let fingerprint = fingerprint_of(&ep, &policy);
        let task = actix_web::rt::spawn(crate::federated::refresh_loop(
            state.live.clone(),
            ep,
            policy,
            state.clock.clone(),
        ));
        running.insert(domain, (fingerprint, task));
    }
}

fn fingerprint_of(ep: &EndpointConfig, p: &federation::fetch::FetchPolicy) -> String {
    format!(
        "{:?}|{:?}|{}|{}",
        ep.source, ep.tls_ca, p.allow_private, p.allow_http_loopback
    )
}

/// Reads the admin objects and puts them in force if they changed since the last apply
/// here (or always, with `force`).
pub async fn refresh(state: &AppState, force: bool) -> Result<(), StoreError> {
    let _one_at_a_time = state.admin.apply_lock.lock().await;
    let generation = state.backend.admin_generation().await?;
    if !force && generation == state.admin.applied.load(Ordering::SeqCst) {
        return Ok(());
    }
    let (generation, records) = state.backend.admin_list().await?;
    match validate(&state.base, &records) {
        Ok(cfg) => {
            put_in_force(state, &cfg);
            state.admin.applied.store(generation, Ordering::SeqCst);
            tracing::info!(
                admin_generation = generation,
                admin_objects = records.len(),
                "admin objects in force"
            );
        }
        // Stored objects were validated when written; a file edited since can make them
        // inconsistent. Keep what is in force and say so.
        Err(problems) => tracing::error!(
            ?problems,
            "stored admin objects no longer validate with the config file; keeping the rules in force"
        ),
    }
    Ok(())
}

/// Polls for admin changes made on other replicas, forever.
pub async fn poll_loop(state: Arc<AppState>) {
    let mut tick = actix_web::rt::time::interval(POLL_EVERY);
    loop {
        tick.tick().await;
        if let Err(e) = refresh(&state, false).await {
            tracing::warn!(error = %e, "admin objects: backend unavailable; rules unchanged");
        }
    }
}

// ---- HTTP -------------------------------------------------------------------------

fn error(status: StatusCode, code: &str, description: &str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({"error": code, "error_description": description}))
}

fn invalid(details: &[(String, String)]) -> HttpResponse {
    let details: Vec<Value> = details
        .iter()
        .map(|(path, message)| json!({"path": path, "message": message}))
        .collect();
    HttpResponse::BadRequest()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({"error": "invalid_object", "details": details}))
}

fn unavailable(e: &StoreError) -> HttpResponse {
    tracing::error!(error = %e, "admin: state backend unavailable");
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "state backend unavailable",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

fn with_etag(mut resp: HttpResponse, version: u64) -> HttpResponse {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

/// `If-Match: "<version>"`: missing → 428, malformed → 412.
fn if_match(req: &HttpRequest) -> Result<u64, Box<HttpResponse>> {
    let Some(v) = req.headers().get(header::IF_MATCH) else {
        return Err(Box::new(error(
            StatusCode::PRECONDITION_REQUIRED,
            "precondition_required",
            "If-Match with the object's version is required",
        )));
    };
    v.to_str()
        .ok()
        .map(|s| s.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            Box::new(error(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                "If-Match does not name a version",
            ))
        })
}

/// An object as the API shows it.
fn shown(kind: Kind, mut o: Map<String, Value>, version: u64, source: &str) -> Value {
    if kind == Kind::TrustDomain {
        o.remove("bundle");
    }
    o.insert("version".into(), version.into());
    o.insert("source".into(), source.into());
    Value::Object(o)
}

async fn records(state: &AppState) -> Result<Vec<AdminRecord>, StoreError> {
    Ok(state.backend.admin_list().await?.1)
}

fn api_object<'r>(records: &'r [AdminRecord], kind: Kind, name: &str) -> Option<&'r AdminRecord> {
    let key = kind.key(name);
    records.iter().find(|r| r.key == key)
}

fn in_file(state: &AppState, kind: Kind, name: &str) -> Option<Map<String, Value>> {
    file_objects(&state.base, kind)
        .into_iter()
        .find(|o| name_of(o) == Some(name))
}

/// The checks before changing an object: the admin token, not from the config file, and
/// the version it must still have (`If-Match`).
fn writable(
    req: &HttpRequest,
    state: &AppState,
    kind: Kind,
    name: &str,
) -> Result<u64, Box<HttpResponse>> {
    crate::nodes::check_admin(req, state)?;
    if in_file(state, kind, name).is_some() {
        return Err(Box::new(read_only()));
    }
    if_match(req)
}

fn read_only() -> HttpResponse {
    error(
        StatusCode::CONFLICT,
        "read_only",
        "objects from the config file are read-only through the API",
    )
}

/// Parses a body into the object to store: the config table's keys, nothing that names
/// a file, `version`/`source` ignored.
fn parse_body(
    kind: Kind,
    body: &[u8],
    path_name: Option<&str>,
) -> Result<Map<String, Value>, Box<HttpResponse>> {
    let table = kind.table();
    if body.len() > MAX_BODY {
        return Err(Box::new(invalid(&[(
            String::new(),
            "body over 256 KiB".into(),
        )])));
    }
    let Ok(Value::Object(mut o)) = trust_bundles::json::parse_strict(body) else {
        return Err(Box::new(invalid(&[(
            table.into(),
            "a JSON object is required".into(),
        )])));
    };
    o.remove("version");
    o.remove("source");
    if kind == Kind::TrustDomain {
        o.remove("bundle");
    }
    if let Some(k) = FILE_KEYS.iter().find(|k| o.contains_key(**k)) {
        return Err(Box::new(invalid(&[(
            format!("{table}.{k}"),
            "names a file on the broker: set it in the config file".into(),
        )])));
    }
    match (path_name, name_of(&o)) {
        (Some(p), Some(n)) if p != n => {
            return Err(Box::new(invalid(&[(
                format!("{table}.name"),
                "differs from the name in the path (rename = delete and create)".into(),
            )])));
        }
        (Some(p), None) => {
            o.insert("name".into(), p.into());
        }
        (None, None) => {
            return Err(Box::new(invalid(&[(
                format!("{table}.name"),
                "is required".into(),
            )])));
        }
        _ => {}
    }
    Ok(o)
}

/// `?dry_run=true`: validate as for a write, answer as for a write (`version` 0), write
/// nothing. What the Terraform provider calls at plan time.
fn dry_run(req: &HttpRequest) -> bool {
    form_urlencoded::parse(req.query_string().as_bytes())
        .any(|(k, v)| k == "dry_run" && v == "true")
}

/// Validates `records` with `change` applied, writes it, and puts it in force here.
async fn write(
    state: &AppState,
    kind: Kind,
    name: &str,
    expected: Option<u64>,
    object: Option<Map<String, Value>>,
) -> HttpResponse {
    write_or_check(state, kind, name, expected, object, false).await
}

async fn write_or_check(
    state: &AppState,
    kind: Kind,
    name: &str,
    expected: Option<u64>,
    object: Option<Map<String, Value>>,
    dry_run: bool,
) -> HttpResponse {
    let current = match records(state).await {
        Ok(r) => r,
        Err(e) => return unavailable(&e),
    };
    let key = kind.key(name);
    let mut candidate: Vec<AdminRecord> =
        current.iter().filter(|r| r.key != key).cloned().collect();
    if let Some(o) = &object {
        candidate.push(AdminRecord {
            key: key.clone(),
            version: 0,
            object: Value::Object(o.clone()),
        });
    }
    if let Err(problems) = validate(&state.base, &candidate) {
        return if object.is_none() {
            // A delete that leaves something dangling (a boundary naming this domain).
            HttpResponse::Conflict().json(json!({
                "error": "conflict",
                "details": problems.iter().map(|(p, m)| json!({"path": p, "message": m})).collect::<Vec<_>>(),
            }))
        } else {
            invalid(&problems)
        };
    }
    if dry_run {
        if expected.is_none() && current.iter().any(|r| r.key == key) {
            return error(
                StatusCode::CONFLICT,
                "exists",
                "an object with this name exists",
            );
        }
        return match object {
            Some(o) => HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .json(shown(kind, o, 0, "api")),
            None => HttpResponse::NoContent().finish(),
        };
    }
    let value = object.map(Value::Object);
    let outcome = match state
        .backend
        .admin_write(&key, expected, value.as_ref())
        .await
    {
        Ok(o) => o,
        Err(e) => return unavailable(&e),
    };
    let audit = |decision: &str, reason: &str| {
        tracing::info!(
            target: "audit",
            event = "admin",
            decision,
            reason,
            object = %key,
            "admin change"
        );
    };
    match outcome {
        AdminWrite::Written { version } => {
            audit("allow", "ok");
            if let Err(e) = refresh(state, true).await {
                tracing::warn!(error = %e, "admin: written, but not yet in force here");
            }
            match value {
                Some(Value::Object(o)) => {
                    let mut status = if expected.is_none() {
                        HttpResponse::Created()
                    } else {
                        HttpResponse::Ok()
                    };
                    with_etag(status.json(shown(kind, o, version, "api")), version)
                }
                _ => HttpResponse::NoContent().finish(),
            }
        }
        AdminWrite::Exists => {
            audit("deny", "exists");
            error(
                StatusCode::CONFLICT,
                "exists",
                "an object with this name exists",
            )
        }
        AdminWrite::Missing => error(StatusCode::NOT_FOUND, "not_found", "no such object"),
        AdminWrite::Stale | AdminWrite::Ok => {
            audit("deny", "stale");
            error(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                "the object changed since that version",
            )
        }
    }
}

fn kind_of(req: &HttpRequest) -> Kind {
    if req.path().starts_with("/admin/v1/boundaries") {
        Kind::Boundary
    } else {
        Kind::TrustDomain
    }
}

/// `GET /admin/v1/{trust-domains,boundaries}`.
pub async fn list(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Err(resp) = crate::nodes::check_admin(&req, &state) {
        return *resp;
    }
    let kind = kind_of(&req);
    let recs = match records(&state).await {
        Ok(r) => r,
        Err(e) => return unavailable(&e),
    };
    let mut items: Vec<Value> = file_objects(&state.base, kind)
        .into_iter()
        .map(|o| shown(kind, o, 0, "config"))
        .collect();
    items.extend(
        recs.iter()
            .filter(|r| r.key.starts_with(&format!("{}/", kind.table())))
            .filter_map(|r| Some(shown(kind, r.object.as_object()?.clone(), r.version, "api"))),
    );
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({"items": items}))
}

/// `GET /admin/v1/{trust-domains,boundaries}/{name}`.
pub async fn get(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(resp) = crate::nodes::check_admin(&req, &state) {
        return *resp;
    }
    let kind = kind_of(&req);
    let name = path.into_inner();
    if let Some(o) = in_file(&state, kind, &name) {
        return with_etag(HttpResponse::Ok().json(shown(kind, o, 0, "config")), 0);
    }
    match records(&state).await {
        Ok(recs) => match api_object(&recs, kind, &name) {
            Some(r) => match r.object.as_object() {
                Some(o) => with_etag(
                    HttpResponse::Ok().json(shown(kind, o.clone(), r.version, "api")),
                    r.version,
                ),
                None => error(StatusCode::NOT_FOUND, "not_found", "no such object"),
            },
            None => error(StatusCode::NOT_FOUND, "not_found", "no such object"),
        },
        Err(e) => unavailable(&e),
    }
}

/// `POST /admin/v1/{trust-domains,boundaries}`: create (exists → 409).
pub async fn create(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(resp) = crate::nodes::check_admin(&req, &state) {
        return *resp;
    }
    let kind = kind_of(&req);
    let o = match parse_body(kind, &body, None) {
        Ok(o) => o,
        Err(resp) => return *resp,
    };
    let mut o = o;
    let name = name_of(&o).unwrap_or_default().to_owned();
    // A domain whose keys come later (PUT …/bundle) starts with none: it accepts nothing
    // until then.
    if kind == Kind::TrustDomain && !o.contains_key("bundle_endpoint") && !o.contains_key("issuer")
    {
        o.insert("bundle".into(), Value::String(r#"{"keys":[]}"#.into()));
    }
    if in_file(&state, kind, &name).is_some() {
        return error(
            StatusCode::CONFLICT,
            "exists",
            "an object with this name is in the config file",
        );
    }
    write_or_check(&state, kind, &name, None, Some(o), dry_run(&req)).await
}

/// `PUT /admin/v1/{trust-domains,boundaries}/{name}`: replace (If-Match required, but for
/// a dry run).
pub async fn replace(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    let kind = kind_of(&req);
    let name = path.into_inner();
    let checked = if dry_run(&req) {
        crate::nodes::check_admin(&req, &state).and_then(|()| match in_file(&state, kind, &name) {
            Some(_) => Err(Box::new(read_only())),
            None => Ok(0),
        })
    } else {
        writable(&req, &state, kind, &name)
    };
    let expected = match checked {
        Ok(v) => v,
        Err(resp) => return *resp,
    };
    let mut o = match parse_body(kind, &body, Some(&name)) {
        Ok(o) => o,
        Err(resp) => return *resp,
    };
    // A trust domain keeps the bundle set through its bundle resource.
    if kind == Kind::TrustDomain {
        match records(&state).await {
            Ok(recs) => {
                if let Some(b) = api_object(&recs, kind, &name).and_then(|r| r.object.get("bundle"))
                {
                    o.insert("bundle".into(), b.clone());
                }
            }
            Err(e) => return unavailable(&e),
        }
    }
    write_or_check(&state, kind, &name, Some(expected), Some(o), dry_run(&req)).await
}

/// `DELETE /admin/v1/{trust-domains,boundaries}/{name}` (If-Match required).
pub async fn delete(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let kind = kind_of(&req);
    let name = path.into_inner();
    let expected = match writable(&req, &state, kind, &name) {
        Ok(v) => v,
        Err(resp) => return *resp,
    };
    write(&state, kind, &name, Some(expected), None).await
}

/// `GET /admin/v1/trust-domains/{name}/bundle`: the domain's configured bundle.
pub async fn get_bundle(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(resp) = crate::nodes::check_admin(&req, &state) {
        return *resp;
    }
    let name = path.into_inner();
    let recs = match records(&state).await {
        Ok(r) => r,
        Err(e) => return unavailable(&e),
    };
    let Some(r) = api_object(&recs, Kind::TrustDomain, &name) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such admin trust domain",
        );
    };
    let bundle = r
        .object
        .get("bundle")
        .and_then(Value::as_str)
        .and_then(|b| serde_json::from_str::<Value>(b).ok());
    match bundle {
        Some(b) => with_etag(HttpResponse::Ok().json(b), r.version),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "this trust domain has no bundle",
        ),
    }
}

/// `PUT /admin/v1/trust-domains/{name}/bundle`: sets (or replaces) the domain's bundle,
/// a SPIFFE bundle (If-Match: the domain's version).
pub async fn put_bundle(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    let name = path.into_inner();
    let expected = match writable(&req, &state, Kind::TrustDomain, &name) {
        Ok(v) => v,
        Err(resp) => return *resp,
    };
    if body.len() > MAX_BODY {
        return invalid(&[("bundle".into(), "body over 256 KiB".into())]);
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return invalid(&[("bundle".into(), "not UTF-8".into())]);
    };
    let recs = match records(&state).await {
        Ok(r) => r,
        Err(e) => return unavailable(&e),
    };
    let Some(r) = api_object(&recs, Kind::TrustDomain, &name) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such admin trust domain",
        );
    };
    let Some(mut o) = r.object.as_object().cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such admin trust domain",
        );
    };
    o.insert("bundle".into(), Value::String(text.to_owned()));
    write(&state, Kind::TrustDomain, &name, Some(expected), Some(o)).await
}
