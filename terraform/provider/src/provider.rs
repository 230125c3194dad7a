//! What each protocol call does: schemas, validation, plan, apply, read, import.

use std::sync::{Arc, RwLock};

use reqwest::Method;
use serde_json::{Value as Json, json};

use crate::api::{Api, ApiError};
use crate::proto::{self, Diagnostic, DynamicValue};
use crate::schema::{self, Mode, Schema};
use crate::value::{self, Ty, Val};

/// The resources, by what backs them on the broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    TrustDomain,
    TrustBundle,
    Boundary,
    JoinToken,
}

const RESOURCES: [(&str, Kind); 4] = [
    ("trustbroker_trust_domain", Kind::TrustDomain),
    ("trustbroker_trust_bundle", Kind::TrustBundle),
    ("trustbroker_boundary", Kind::Boundary),
    ("trustbroker_join_token", Kind::JoinToken),
];

const DATA_SOURCES: [&str; 2] = ["trustbroker_bundle", "trustbroker_openid_configuration"];

impl Kind {
    fn of(type_name: &str) -> Result<Self, Diagnostic> {
        RESOURCES
            .iter()
            .find(|(n, _)| *n == type_name)
            .map(|(_, k)| *k)
            .ok_or_else(|| error(format!("no resource type {type_name} in this provider"), ""))
    }

    fn schema(self) -> Schema {
        match self {
            Self::TrustDomain => schema::trust_domain(),
            Self::TrustBundle => schema::trust_bundle(),
            Self::Boundary => schema::boundary(),
            Self::JoinToken => schema::join_token(),
        }
    }

    /// The attribute that names the object, and from which `id` is derived.
    fn name_attr(self) -> &'static str {
        match self {
            Self::TrustDomain | Self::Boundary => "name",
            Self::TrustBundle => "trust_domain",
            Self::JoinToken => "node",
        }
    }

    /// The admin API collection of an admin object, and its config table (the first step
    /// of the broker's problem paths).
    fn collection(self) -> (&'static str, &'static str) {
        match self {
            Self::TrustDomain | Self::TrustBundle => ("trust-domains", "trust_domain"),
            Self::Boundary => ("boundaries", "boundary"),
            Self::JoinToken => ("join-tokens", "join_token"),
        }
    }
}

fn data_schema(type_name: &str) -> Result<Schema, Diagnostic> {
    match type_name {
        "trustbroker_bundle" => Ok(schema::bundle_data()),
        "trustbroker_openid_configuration" => Ok(schema::openid_configuration_data()),
        other => Err(error(
            format!("no data source {other} in this provider"),
            "",
        )),
    }
}

pub fn error(summary: impl Into<String>, detail: impl Into<String>) -> Diagnostic {
    Diagnostic {
        severity: proto::Severity::Error as i32,
        summary: summary.into(),
        detail: detail.into(),
        attribute: None,
    }
}

fn at(mut d: Diagnostic, path: proto::AttributePath) -> Diagnostic {
    d.attribute = Some(path);
    d
}

fn attr_path(name: &str) -> proto::AttributePath {
    proto::AttributePath {
        steps: vec![proto::Step {
            selector: Some(proto::Selector::AttributeName(name.to_owned())),
        }],
    }
}

/// A broker problem path (`boundary.require.uid`, `boundary.subjects[0]`) as an attribute
/// path of `schema`; `None` when it names no attribute (the diagnostic then has none).
fn problem_path(schema: &Schema, table: &str, path: &str) -> Option<proto::AttributePath> {
    let rest = path.strip_prefix(table)?.strip_prefix('.')?;
    let mut steps = Vec::new();
    for (i, seg) in rest.split('.').enumerate() {
        let (name, mut tail) = seg.split_once('[').map_or((seg, ""), |(n, t)| (n, t));
        if i == 0 && schema.attr(name).is_none() {
            return None;
        }
        steps.push(proto::Step {
            selector: Some(proto::Selector::AttributeName(name.to_owned())),
        });
        while let Some((idx, after)) = tail.split_once(']') {
            if let Ok(n) = idx.parse::<i64>() {
                steps.push(proto::Step {
                    selector: Some(proto::Selector::ElementKeyInt(n)),
                });
            }
            tail = after.trim_start_matches('[');
        }
    }
    Some(proto::AttributePath { steps })
}

/// An API error as diagnostics: problems land on their attributes.
fn api_diagnostics(kind: Kind, what: &str, e: &ApiError) -> Vec<Diagnostic> {
    let schema = kind.schema();
    let (_, table) = kind.collection();
    match e {
        ApiError::Invalid(problems) => problems
            .iter()
            .map(|(path, message)| {
                let d = error(
                    format!("trustbroker refused {what}"),
                    if path.is_empty() {
                        message.clone()
                    } else {
                        format!("{path}: {message}")
                    },
                );
                match problem_path(&schema, table, path) {
                    Some(p) => at(d, p),
                    None => d,
                }
            })
            .collect(),
        ApiError::Refused(409, code, desc) if code == "exists" => vec![error(
            format!("{what} already exists on the broker"),
            format!("{desc}. Bring it under Terraform with `terraform import`."),
        )],
        ApiError::Refused(409, code, desc) if code == "read_only" => vec![error(
            format!("{what} comes from the broker's config file"),
            format!("{desc}. Change it in the config file, or remove it from this configuration."),
        )],
        // The broker's bad_request answers (join tokens) name the field first.
        ApiError::Refused(400, _, desc) => {
            let d = error(format!("trustbroker refused {what}"), desc.clone());
            let field = desc.split_whitespace().next().unwrap_or_default();
            vec![match schema.attr(field) {
                Some(a) => at(d, attr_path(a.name)),
                None => d,
            }]
        }
        other => vec![error(format!("trustbroker: {what}"), other.to_string())],
    }
}

fn decode_dv(dv: Option<&DynamicValue>, ty: &Ty) -> Result<Val, Diagnostic> {
    let Some(dv) = dv else {
        return Ok(Val::Null);
    };
    let v = if !dv.msgpack.is_empty() {
        value::decode(&dv.msgpack, ty)
    } else if !dv.json.is_empty() {
        serde_json::from_slice::<Json>(&dv.json)
            .map_err(|e| value::TypeError(e.to_string()))
            .and_then(|j| value::from_json(&j, ty))
    } else {
        return Ok(Val::Null);
    };
    v.map_err(|e| error("undecodable value from Terraform", e.to_string()))
}

/// A change's resource kind, and its before and after values.
fn decode_change(
    type_name: &str,
    before: Option<&DynamicValue>,
    after: Option<&DynamicValue>,
) -> Result<(Kind, Val, Val), Diagnostic> {
    let kind = Kind::of(type_name)?;
    let ty = kind.schema().ty();
    Ok((kind, decode_dv(before, &ty)?, decode_dv(after, &ty)?))
}

fn encode_dv(v: &Val, ty: &Ty) -> Option<DynamicValue> {
    Some(DynamicValue {
        msgpack: value::encode(v, ty),
        json: Vec::new(),
    })
}

/// The object sent to the broker: every known, non-null attribute but `id`.
fn object_json(v: &Val) -> Json {
    let mut j = value::to_json(v).unwrap_or_else(|| json!({}));
    if let Some(o) = j.as_object_mut() {
        o.remove("id");
    }
    j
}

fn name_of(kind: Kind, v: &Val) -> Option<String> {
    v.get(kind.name_attr()).as_str().map(str::to_owned)
}

/// A path segment from a name: the broker refuses what is not a valid name anyway, this
/// only keeps `/`, `?` and `#` from changing the URL's meaning.
fn seg(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Debug, Default)]
pub struct Provider {
    api: RwLock<Option<Api>>,
}

type Diags = Vec<Diagnostic>;

impl Provider {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn encode_state(&self, type_name: &str, v: &Val) -> Option<DynamicValue> {
        encode_dv(v, &Kind::of(type_name).ok()?.schema().ty())
    }

    fn api(&self) -> Result<Api, Diagnostic> {
        self.api
            .read()
            .ok()
            .and_then(|a| a.clone())
            .ok_or_else(|| error("the trustbroker provider is not configured", ""))
    }

    pub fn schema(&self) -> proto::GetProviderSchemaResponse {
        proto::GetProviderSchemaResponse {
            provider: Some(schema::provider().to_proto()),
            resource_schemas: RESOURCES
                .iter()
                .map(|(n, k)| ((*n).to_owned(), k.schema().to_proto()))
                .collect(),
            data_source_schemas: DATA_SOURCES
                .iter()
                .filter_map(|n| Some(((*n).to_owned(), data_schema(n).ok()?.to_proto())))
                .collect(),
            diagnostics: Vec::new(),
            server_capabilities: Some(proto::ServerCapabilities::default()),
        }
    }

    pub fn configure(&self, config: Option<&DynamicValue>) -> Diags {
        let schema = schema::provider();
        let cfg = match decode_dv(config, &schema.ty()) {
            Ok(v) => v,
            Err(d) => return vec![d],
        };
        let setting = |name: &str, env: Option<&str>| -> Result<Option<String>, Diagnostic> {
            match cfg.get(name) {
                Val::String(s) => Ok(Some(s.clone())),
                Val::Unknown => Err(at(
                    error(
                        format!("{name} must be known when the provider is configured"),
                        "",
                    ),
                    attr_path(name),
                )),
                _ => Ok(env
                    .and_then(|e| std::env::var(e).ok())
                    .filter(|s| !s.is_empty())),
            }
        };
        let read = || -> Result<Api, Diagnostic> {
            let endpoint = setting("endpoint", Some("TRUSTBROKER_ENDPOINT"))?.ok_or_else(|| {
                at(
                    error(
                        "the broker's endpoint is not set",
                        "Set endpoint in the provider block, or TRUSTBROKER_ENDPOINT.",
                    ),
                    attr_path("endpoint"),
                )
            })?;
            let token =
                setting("admin_token", Some("TRUSTBROKER_ADMIN_TOKEN"))?.unwrap_or_default();
            let ca = setting("ca_certificate", None)?;
            Api::new(&endpoint, &token, ca.as_deref())
                .map_err(|e| at(error("invalid provider setting", e), attr_path("endpoint")))
        };
        match read() {
            Ok(api) => {
                if let Ok(mut slot) = self.api.write() {
                    *slot = Some(api);
                }
                Vec::new()
            }
            Err(d) => vec![d],
        }
    }

    pub fn validate_resource(&self, type_name: &str, config: Option<&DynamicValue>) -> Diags {
        let kind = match Kind::of(type_name) {
            Ok(k) => k,
            Err(d) => return vec![d],
        };
        let v = match decode_dv(config, &kind.schema().ty()) {
            Ok(v) => v,
            Err(d) => return vec![d],
        };
        let mut diags = Vec::new();
        match kind {
            Kind::JoinToken => {
                if let Val::String(ttl) = v.get("ttl") {
                    let ok = humantime::parse_duration(ttl).is_ok_and(|d| {
                        d >= std::time::Duration::from_secs(1)
                            && d <= std::time::Duration::from_secs(86_400)
                    });
                    if !ok {
                        diags.push(at(
                            error(
                                "invalid ttl",
                                format!("{ttl:?} is not a duration between 1s and 24h"),
                            ),
                            attr_path("ttl"),
                        ));
                    }
                }
            }
            Kind::TrustBundle => {
                if let Val::String(b) = v.get("bundle") {
                    let keys = serde_json::from_str::<Json>(b)
                        .ok()
                        .and_then(|j| j.get("keys").map(Json::is_array));
                    if keys != Some(true) {
                        diags.push(at(
                            error(
                                "invalid bundle",
                                "must be a SPIFFE bundle: a JSON object with a \"keys\" array",
                            ),
                            attr_path("bundle"),
                        ));
                    }
                }
            }
            // The broker validates the rest at plan time (a dry run), with the rules it
            // applies to its own config file.
            Kind::TrustDomain | Kind::Boundary => {}
        }
        diags
    }

    pub fn upgrade(&self, type_name: &str, raw_json: &[u8]) -> Result<DynamicValue, Diagnostic> {
        let ty = Kind::of(type_name)?.schema().ty();
        let j: Json = serde_json::from_slice(raw_json)
            .map_err(|e| error("unreadable state", e.to_string()))?;
        let v = value::from_json(&j, &ty).map_err(|e| error("unreadable state", e.to_string()))?;
        encode_dv(&v, &ty).ok_or_else(|| error("unencodable state", ""))
    }

    pub async fn plan(
        &self,
        req: &proto::PlanResourceChangeRequest,
    ) -> proto::PlanResourceChangeResponse {
        let mut resp = proto::PlanResourceChangeResponse::default();
        let (kind, prior, proposed) = match decode_change(
            &req.type_name,
            req.prior_state.as_ref(),
            req.proposed_new_state.as_ref(),
        ) {
            Ok(v) => v,
            Err(d) => {
                resp.diagnostics.push(d);
                return resp;
            }
        };
        let schema = kind.schema();
        let ty = schema.ty();
        let mut planned = proposed;
        if !planned.is_null() {
            for a in schema.attrs.iter().filter(|a| a.mode == Mode::Computed) {
                let v = match (&prior, a.name) {
                    (_, "id") if kind != Kind::JoinToken => planned.get(kind.name_attr()).clone(),
                    (Val::Null, _) => Val::Unknown,
                    (p, name) => p.get(name).clone(),
                };
                planned.set(a.name, v);
            }
            if !prior.is_null() {
                for a in schema.attrs.iter().filter(|a| a.force_new) {
                    if prior.get(a.name) != planned.get(a.name) {
                        resp.requires_replace.push(attr_path(a.name));
                    }
                }
            }
            let changed = prior != planned;
            if changed && resp.requires_replace.is_empty() && !planned.has_unknown() {
                resp.diagnostics = self.dry_run(kind, &prior, &planned).await;
            }
        }
        resp.planned_state = encode_dv(&planned, &ty);
        resp
    }

    /// Plan-time validation by the broker itself: the object, checked as a write would
    /// check it, written nowhere. A `from` naming a trust domain this same plan creates
    /// is checked at apply instead.
    async fn dry_run(&self, kind: Kind, prior: &Val, planned: &Val) -> Diags {
        if !matches!(kind, Kind::TrustDomain | Kind::Boundary) {
            return Vec::new();
        }
        let Ok(api) = self.api() else {
            return Vec::new();
        };
        let (coll, table) = kind.collection();
        let body = object_json(planned);
        let name = name_of(kind, planned).unwrap_or_default();
        let (method, path) = if prior.is_null() {
            (Method::POST, format!("/admin/v1/{coll}?dry_run=true"))
        } else {
            (
                Method::PUT,
                format!("/admin/v1/{coll}/{}?dry_run=true", seg(&name)),
            )
        };
        match api.call(method, &path, Some(&body), None, true).await {
            Ok(_) => Vec::new(),
            Err(ApiError::Invalid(problems)) => {
                let from = format!("{table}.from");
                let problems: Vec<_> = problems.into_iter().filter(|(p, _)| *p != from).collect();
                if problems.is_empty() {
                    return Vec::new();
                }
                api_diagnostics(
                    kind,
                    &format!("{table} {name:?}"),
                    &ApiError::Invalid(problems),
                )
            }
            Err(e @ ApiError::Refused(409, ..)) => {
                api_diagnostics(kind, &format!("{table} {name:?}"), &e)
            }
            // Unreachable or refusing: apply will say so; the plan shows the change.
            Err(_) => Vec::new(),
        }
    }

    pub async fn apply(
        &self,
        req: &proto::ApplyResourceChangeRequest,
    ) -> proto::ApplyResourceChangeResponse {
        let mut resp = proto::ApplyResourceChangeResponse::default();
        let (kind, prior, planned) = match decode_change(
            &req.type_name,
            req.prior_state.as_ref(),
            req.planned_state.as_ref(),
        ) {
            Ok(v) => v,
            Err(d) => {
                resp.diagnostics.push(d);
                return resp;
            }
        };
        let ty = kind.schema().ty();
        let api = match self.api() {
            Ok(a) => a,
            Err(d) => {
                resp.diagnostics.push(d);
                return resp;
            }
        };
        let result = if planned.is_null() {
            self.delete(&api, kind, &prior).await.map(|()| Val::Null)
        } else if prior.is_null() {
            self.create(&api, kind, planned).await
        } else {
            self.update(&api, kind, planned).await
        };
        match result {
            Ok(v) => resp.new_state = encode_dv(&v, &ty),
            Err(diags) => {
                resp.diagnostics = diags;
                // Nothing changed on the broker: the state stays what it was.
                resp.new_state = encode_dv(&prior, &ty);
            }
        }
        resp
    }

    async fn create(&self, api: &Api, kind: Kind, mut planned: Val) -> Result<Val, Diags> {
        let name = name_of(kind, &planned).unwrap_or_default();
        let (coll, table) = kind.collection();
        let what = format!("{table} {name:?}");
        let fail = |e: ApiError| api_diagnostics(kind, &what, &e);
        match kind {
            Kind::TrustDomain | Kind::Boundary => {
                api.call(
                    Method::POST,
                    &format!("/admin/v1/{coll}"),
                    Some(&object_json(&planned)),
                    None,
                    true,
                )
                .await
                .map_err(fail)?;
                planned.set("id", Val::str(name));
            }
            Kind::TrustBundle => {
                self.put_bundle(api, &name, planned.get("bundle"))
                    .await
                    .map_err(fail)?;
                planned.set("id", Val::str(name));
            }
            Kind::JoinToken => {
                let reply = api
                    .call(
                        Method::POST,
                        "/admin/v1/join-tokens",
                        Some(&object_json(&planned)),
                        None,
                        true,
                    )
                    .await
                    .map_err(fail)?;
                let body = reply.body.unwrap_or_default();
                let s = |k: &str| body.get(k).and_then(Json::as_str).map(Val::str);
                let (Some(id), Some(token), Some(exp)) = (
                    s("id"),
                    s("token"),
                    body.get("expires_at").and_then(Json::as_f64),
                ) else {
                    return Err(vec![error(
                        "trustbroker: join token answer without id, token or expires_at",
                        "",
                    )]);
                };
                planned.set("id", id);
                planned.set("token", token);
                planned.set("expires_at", Val::Number(exp));
            }
        }
        Ok(planned)
    }

    async fn update(&self, api: &Api, kind: Kind, planned: Val) -> Result<Val, Diags> {
        let name = name_of(kind, &planned).unwrap_or_default();
        let (coll, table) = kind.collection();
        let what = format!("{table} {name:?}");
        let fail = |e: ApiError| api_diagnostics(kind, &what, &e);
        match kind {
            Kind::TrustDomain | Kind::Boundary => {
                let path = format!("/admin/v1/{coll}/{}", seg(&name));
                let version = api.version(&path).await.map_err(fail)?;
                api.call(
                    Method::PUT,
                    &path,
                    Some(&object_json(&planned)),
                    Some(version),
                    true,
                )
                .await
                .map_err(fail)?;
            }
            Kind::TrustBundle => {
                self.put_bundle(api, &name, planned.get("bundle"))
                    .await
                    .map_err(fail)?;
            }
            // Every attribute replaces it.
            Kind::JoinToken => {}
        }
        Ok(planned)
    }

    async fn put_bundle(&self, api: &Api, domain: &str, bundle: &Val) -> Result<(), ApiError> {
        let Some(text) = bundle.as_str() else {
            return Err(ApiError::Invalid(vec![(
                "trust_domain.bundle".into(),
                "is required".into(),
            )]));
        };
        let body: Json = serde_json::from_str(text).map_err(|e| {
            ApiError::Invalid(vec![(
                "trust_domain.bundle".into(),
                format!("not JSON: {e}"),
            )])
        })?;
        let domain_path = format!("/admin/v1/trust-domains/{}", seg(domain));
        let version = api.version(&domain_path).await?;
        api.call(
            Method::PUT,
            &format!("{domain_path}/bundle"),
            Some(&body),
            Some(version),
            true,
        )
        .await
        .map(|_| ())
    }

    async fn delete(&self, api: &Api, kind: Kind, prior: &Val) -> Result<(), Diags> {
        let name = name_of(kind, prior).unwrap_or_default();
        let (coll, table) = kind.collection();
        let what = format!("{table} {name:?}");
        let fail = |e: ApiError| api_diagnostics(kind, &what, &e);
        let gone = |r: Result<(), ApiError>| match r {
            Ok(()) | Err(ApiError::NotFound) => Ok(()),
            Err(e) => Err(fail(e)),
        };
        match kind {
            Kind::TrustDomain | Kind::Boundary => {
                let path = format!("/admin/v1/{coll}/{}", seg(&name));
                let r = async {
                    let version = api.version(&path).await?;
                    api.call(Method::DELETE, &path, None, Some(version), true)
                        .await
                        .map(|_| ())
                }
                .await;
                gone(r)
            }
            // The domain keeps no keys: it accepts nothing until it gets new ones.
            Kind::TrustBundle => gone(
                self.put_bundle(api, &name, &Val::str(r#"{"keys":[]}"#))
                    .await,
            ),
            // An unused token is withdrawn; a used or expired one is gone already.
            Kind::JoinToken => {
                let id = prior.get("id").as_str().unwrap_or_default();
                gone(
                    api.call(
                        Method::DELETE,
                        &format!("/admin/v1/join-tokens/{}", seg(id)),
                        None,
                        None,
                        true,
                    )
                    .await
                    .map(|_| ()),
                )
            }
        }
    }

    pub async fn read(
        &self,
        type_name: &str,
        current: Option<&DynamicValue>,
    ) -> Result<Val, Diags> {
        let kind = Kind::of(type_name).map_err(|d| vec![d])?;
        let schema = kind.schema();
        let ty = schema.ty();
        let state = decode_dv(current, &ty).map_err(|d| vec![d])?;
        if state.is_null() {
            return Ok(state);
        }
        let name = name_of(kind, &state)
            .or_else(|| state.get("id").as_str().map(str::to_owned))
            .unwrap_or_default();
        let (coll, table) = kind.collection();
        let what = format!("{table} {name:?}");
        let api = self.api().map_err(|d| vec![d])?;
        match kind {
            Kind::TrustDomain | Kind::Boundary => {
                let reply = match api.get(&format!("/admin/v1/{coll}/{}", seg(&name))).await {
                    Ok(r) => r,
                    Err(ApiError::NotFound) => return Ok(Val::Null),
                    Err(e) => return Err(api_diagnostics(kind, &what, &e)),
                };
                let body = reply.body.unwrap_or_default();
                let mut v = value::from_json(&body, &ty)
                    .map_err(|e| vec![error(format!("trustbroker: {what}"), e.to_string())])?;
                v.set("id", Val::str(name));
                Ok(v)
            }
            Kind::TrustBundle => {
                let path = format!("/admin/v1/trust-domains/{}/bundle", seg(&name));
                let remote = match api.get(&path).await {
                    Ok(r) => r.body.unwrap_or_default(),
                    Err(ApiError::NotFound) => return Ok(Val::Null),
                    Err(e) => return Err(api_diagnostics(kind, &what, &e)),
                };
                let mut v = state.clone();
                v.set("id", Val::str(name.clone()));
                v.set("trust_domain", Val::str(name));
                // Same JSON, other spelling: keep the configuration's text.
                let same = state
                    .get("bundle")
                    .as_str()
                    .and_then(|s| serde_json::from_str::<Json>(s).ok())
                    .is_some_and(|local| local == remote);
                if !same {
                    v.set("bundle", Val::str(remote.to_string()));
                }
                Ok(v)
            }
            // The broker shows no join token back: it is a secret handed out once.
            Kind::JoinToken => Ok(state),
        }
    }

    pub fn import(&self, type_name: &str, id: &str) -> Result<proto::ImportedResource, Diags> {
        let kind = Kind::of(type_name).map_err(|d| vec![d])?;
        if kind == Kind::JoinToken {
            return Err(vec![error(
                "join tokens cannot be imported",
                "The broker never shows a join token again; create a new one.",
            )]);
        }
        let schema = kind.schema();
        let mut v = schema.empty();
        v.set("id", Val::str(id));
        v.set(kind.name_attr(), Val::str(id));
        Ok(proto::ImportedResource {
            type_name: type_name.to_owned(),
            state: encode_dv(&v, &schema.ty()),
            private: Vec::new(),
        })
    }

    pub async fn read_data(&self, type_name: &str) -> Result<DynamicValue, Diags> {
        let schema = data_schema(type_name).map_err(|d| vec![d])?;
        let api = self.api().map_err(|d| vec![d])?;
        let path = if type_name == "trustbroker_bundle" {
            "/bundle"
        } else {
            "/.well-known/openid-configuration"
        };
        let body = api
            .call(Method::GET, path, None, None, false)
            .await
            .map_err(|e| vec![error(format!("trustbroker: GET {path}"), e.to_string())])?
            .body
            .unwrap_or_default();
        let s = |k: &str| {
            body.get(k)
                .and_then(Json::as_str)
                .map_or(Val::Null, Val::str)
        };
        let mut v = schema.empty();
        if type_name == "trustbroker_bundle" {
            let seq = body.get("spiffe_sequence").and_then(Json::as_f64);
            let kids = body
                .get("keys")
                .and_then(Json::as_array)
                .map(|ks| {
                    ks.iter()
                        .filter_map(|k| k.get("kid")?.as_str())
                        .map(Val::str)
                        .collect()
                })
                .unwrap_or_default();
            v.set(
                "id",
                Val::str(seq.map_or_else(|| "bundle".to_owned(), |n| n.to_string())),
            );
            v.set("bundle", Val::str(body.to_string()));
            v.set("sequence", seq.map_or(Val::Null, Val::Number));
            v.set("key_ids", Val::List(kids));
        } else {
            for k in [
                "issuer",
                "jwks_uri",
                "token_endpoint",
                "introspection_endpoint",
                "revocation_endpoint",
            ] {
                v.set(k, s(k));
            }
            v.set("id", s("issuer"));
            v.set("document", Val::str(body.to_string()));
        }
        encode_dv(&v, &schema.ty()).ok_or_else(|| vec![error("unencodable data", "")])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn names(p: &proto::AttributePath) -> Vec<String> {
        p.steps
            .iter()
            .map(|s| match &s.selector {
                Some(proto::Selector::AttributeName(n)) => n.clone(),
                Some(proto::Selector::ElementKeyInt(i)) => format!("[{i}]"),
                Some(proto::Selector::ElementKeyString(k)) => format!("[{k:?}]"),
                None => String::new(),
            })
            .collect()
    }

    #[test]
    fn broker_problem_paths_land_on_attributes() {
        let s = schema::boundary();
        let p = |path| problem_path(&s, "boundary", path).map(|p| names(&p));
        assert_eq!(p("boundary.max_ttl"), Some(vec!["max_ttl".to_owned()]));
        assert_eq!(
            p("boundary.subjects[2]"),
            Some(vec!["subjects".to_owned(), "[2]".to_owned()])
        );
        assert_eq!(
            p("boundary.require.uid"),
            Some(vec!["require".to_owned(), "uid".to_owned()])
        );
        assert_eq!(p("boundary.nonsense"), None);
        assert_eq!(p("trust_domain.name"), None);
        assert_eq!(p(""), None);
    }

    #[test]
    fn path_segments_cannot_change_the_url() {
        assert_eq!(seg("a/b?c#d"), "a%2Fb%3Fc%23d");
        assert_eq!(seg("cluster-a.example"), "cluster-a.example");
    }
}
