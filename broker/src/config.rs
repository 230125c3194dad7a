//! Configuration: raw TOML → validated → typed (STYLE §17). Unknown keys are refused;
//! validation collects every problem with `file:line` and a dotted path, and `serve` and
//! `check-config` share this code, so a config that checks is a config that starts.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use token_exchange::glob::Glob;
use token_exchange::keys::SigningAlg;
use token_exchange::policy::{AttestationMode, Boundary, OutputType, RequiredFacts, TokenLimits};
use token_exchange::state::StaticKeys;
use token_exchange::subject::{DomainKind, DomainPolicy};
use token_exchange::types::{Audience, ScopeSet};
use trust_bundles::{Jwk, JwsAlgorithm, SpiffeBundle, SpiffeId, TrustDomain};

/// Default listen address and issuer of `serve` without `--config` (SPEC §3).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_ISSUER: &str = "http://127.0.0.1:8080";
pub const DEFAULT_TRUST_DOMAIN: &str = "trustbroker.local";
pub const DEFAULT_STATE_PATH: &str = ".trustbroker";
pub const DEFAULT_ADMIN_TOKEN_ENV: &str = "TRUSTBROKER_ADMIN_TOKEN";
/// Largest key file (bundle or JWKS) read from disk.
const MAX_KEY_FILE_BYTES: u64 = 1024 * 1024;

// ---- raw --------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    issuer: Option<String>,
    local_trust_domain: Option<String>,
    listen: Option<String>,
    tls: Option<RawTls>,
    state: Option<RawState>,
    keys: Option<RawKeys>,
    tokens: Option<RawTokens>,
    admin: Option<RawAdmin>,
    danger: Option<RawDanger>,
    #[serde(default)]
    trust_domain: Vec<RawTrustDomain>,
    #[serde(default)]
    boundary: Vec<RawBoundary>,
    #[serde(default)]
    client: Vec<RawClient>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: String,
    key: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    backend: Option<String>,
    path: Option<String>,
    url: Option<String>,
    on_unavailable: Option<String>,
    key_encryption_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    algorithms: Option<Vec<String>>,
    rotate_every: Option<String>,
    publish_ahead: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokens {
    default_ttl: Option<String>,
    max_ttl: Option<String>,
    clock_skew: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    token_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDanger {
    #[serde(default)]
    allow_http_fetch_to_loopback: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrustDomain {
    name: String,
    kind: Option<String>,
    bundle_endpoint: Option<RawBundleEndpoint>,
    bundle_file: Option<String>,
    /// The bundle itself (SPIFFE bundle JSON), instead of a file: how admin-API domains
    /// carry theirs.
    bundle: Option<String>,
    issuer: Option<String>,
    jwks_file: Option<String>,
    audiences: Option<Vec<String>>,
    enforcer_ca: Option<String>,
    tls_ca: Option<String>,
    max_token_age: Option<String>,
    algorithms: Option<Vec<String>>,
    allow_private_ranges: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBundleEndpoint {
    url: String,
    profile: String,
    spiffe_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBoundary {
    name: String,
    from: String,
    subjects: Vec<String>,
    audiences: Vec<String>,
    scopes: Vec<String>,
    max_ttl: Option<String>,
    attestation: Option<String>,
    #[serde(default)]
    unattested_scopes: Vec<String>,
    require: Option<RawRequire>,
    #[serde(default)]
    claims: BTreeMap<String, String>,
    workload: Option<String>,
    max_hops: Option<i64>,
    #[serde(default)]
    single_use: bool,
    token_type: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequire {
    #[serde(default)]
    exe_sha256: Vec<String>,
    #[serde(default)]
    uid: Vec<u32>,
    #[serde(default)]
    gid: Vec<u32>,
    #[serde(default)]
    exe: Vec<String>,
    #[serde(default)]
    container_id: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    id: String,
    secret_env: String,
}

// ---- typed ------------------------------------------------------------------------

/// TLS for the listener.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where durable state lives.
#[derive(Debug, Clone)]
pub enum StateConfig {
    Embedded {
        path: PathBuf,
    },
    /// Shared by every replica. `url` is `redis://…` or `redis+cluster://h1,h2,h3`.
    Redis {
        url: String,
        /// Encrypts signing keys and the node CA key at rest.
        key: StateKey,
    },
}

/// The 32-byte key that encrypts secrets in Redis; `Debug` redacts it.
#[derive(Clone)]
pub struct StateKey(pub [u8; 32]);

impl std::fmt::Debug for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateKey([redacted])")
    }
}

/// Default environment variable holding the Redis state key.
pub const DEFAULT_STATE_KEY_ENV: &str = "TRUSTBROKER_STATE_KEY";

/// Signing-key settings (SPEC §3 `[keys]`).
#[derive(Debug, Clone)]
pub struct KeysConfig {
    pub algorithms: Vec<SigningAlg>,
    pub rotate_every: Duration,
    pub publish_ahead: Duration,
}

/// A resource server allowed to call `/introspect` and `/revoke`.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub id: String,
    pub secret_env: String,
    /// Read from `secret_env` when the config is validated.
    pub secret: ClientSecret,
}

/// A client secret; `Debug` redacts it.
#[derive(Clone, Default)]
pub struct ClientSecret(pub String);

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecret([redacted])")
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: Option<PathBuf>,
    /// The text it was read from (admin objects are validated against it).
    pub text: String,
    /// How many `[[trust_domain]]` and `[[boundary]]` tables the text itself has.
    pub file_objects: (usize, usize),
    pub issuer: String,
    pub local_trust_domain: TrustDomain,
    pub listen: SocketAddr,
    pub tls: Option<TlsConfig>,
    pub state: StateConfig,
    pub keys: KeysConfig,
    pub limits: TokenLimits,
    pub clock_skew: Duration,
    pub admin_token_env: String,
    pub allow_http_fetch_to_loopback: bool,
    pub domains: Vec<DomainPolicy>,
    pub static_keys: StaticKeys,
    pub boundaries: Vec<Boundary>,
    pub clients: Vec<ClientConfig>,
    /// `enforcer_ca` files of SPIFFE domains, by domain name.
    pub enforcer_cas: Vec<(String, PathBuf)>,
    /// Domains whose bundles are fetched live.
    pub endpoints: Vec<EndpointConfig>,
}

/// A domain whose keys are fetched live.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    pub domain: String,
    pub source: EndpointSource,
    pub tls_ca: Option<PathBuf>,
    /// The configured bundle an `https_spiffe` endpoint is first authenticated with.
    pub bootstrap: Option<SpiffeBundle>,
    /// `allow_private_ranges`: the domain's endpoints may resolve to RFC 1918, shared
    /// (100.64/10) and unique-local addresses. Link-local and metadata never.
    pub allow_private: bool,
}

/// Where live keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointSource {
    /// A SPIFFE bundle endpoint: `https_web` (no `spiffe_id`) or `https_spiffe`.
    SpiffeBundle {
        url: String,
        spiffe_id: Option<SpiffeId>,
    },
    /// OIDC discovery at `<issuer>/.well-known/openid-configuration`, then `jwks_uri`.
    OidcDiscovery { issuer: String },
}

/// One problem, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: Option<String>,
    pub line: Option<usize>,
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{file}:{line}: ")?,
            (Some(file), None) => write!(f, "{file}: ")?,
            (None, _) => {}
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Read access to the environment, so tests pass a map instead of touching the process's.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// A path segment for locating problems.
#[derive(Debug, Clone)]
enum Seg {
    Key(&'static str),
    Index(usize),
}

struct Collector<'a> {
    file: Option<String>,
    doc: Option<toml_edit::Document<&'a str>>,
    text: &'a str,
    problems: Vec<Problem>,
}

impl Collector<'_> {
    fn push(&mut self, path: &[Seg], message: impl Into<String>) {
        let mut dotted = String::new();
        for seg in path {
            match seg {
                Seg::Key(k) => {
                    if !dotted.is_empty() {
                        dotted.push('.');
                    }
                    dotted.push_str(k);
                }
                Seg::Index(i) => dotted.push_str(&format!("[{i}]")),
            }
        }
        let line = self.line_of(path);
        self.problems.push(Problem {
            file: self.file.clone(),
            line,
            path: dotted,
            message: message.into(),
        });
    }

    /// The line of the deepest part of `path` present in the document.
    fn line_of(&self, path: &[Seg]) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let mut item = doc.as_item();
        let mut span = None;
        for seg in path {
            let next = match seg {
                Seg::Key(k) => item.get(*k),
                Seg::Index(i) => item.get(*i),
            };
            match next {
                Some(n) => {
                    item = n;
                    if let Some(s) = n.span() {
                        span = Some(s);
                    } else if let Some(t) = n.as_table()
                        && let Some(s) = t.span()
                    {
                        span = Some(s);
                    }
                }
                None => break,
            }
        }
        let offset = span.map(|s| s.start)?;
        Some(
            self.text
                .get(..offset)
                .unwrap_or_default()
                .matches('\n')
                .count()
                + 1,
        )
    }
}

fn duration(c: &mut Collector<'_>, path: &[Seg], raw: Option<&str>, default: Duration) -> Duration {
    match raw {
        None => default,
        Some(s) => match humantime::parse_duration(s) {
            Ok(d) if d >= Duration::from_secs(1) => d,
            Ok(_) => {
                c.push(path, "must be at least 1s");
                default
            }
            Err(e) => {
                c.push(
                    path,
                    format!("{s:?} is not a duration like \"5m\" or \"24h\": {e}"),
                );
                default
            }
        },
    }
}

fn is_loopback_host(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

impl Config {
    /// The configuration of `serve` without `--config` (SPEC §3).
    pub fn defaults() -> Result<Self, Problems> {
        Self::parse_str("", None, &ProcessEnv)
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path, env: &dyn Env) -> Result<Self, Problems> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Problems(vec![Problem {
                file: Some(path.display().to_string()),
                line: None,
                path: String::new(),
                message: format!("cannot read: {e}"),
            }])
        })?;
        Self::parse_str(&text, Some(path), env)
    }

    /// Validates config text; relative paths are resolved against `source`'s directory.
    pub fn parse_str(text: &str, source: Option<&Path>, env: &dyn Env) -> Result<Self, Problems> {
        let file = source.map(|p| p.display().to_string());
        let base = source
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let raw: RawConfig = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                let line = e.span().map(|s| {
                    text.get(..s.start)
                        .unwrap_or_default()
                        .matches('\n')
                        .count()
                        + 1
                });
                return Err(Problems(vec![Problem {
                    file,
                    line,
                    path: String::new(),
                    message: e.message().to_owned(),
                }]));
            }
        };
        let mut c = Collector {
            file,
            doc: toml_edit::Document::parse(text).ok(),
            text,
            problems: Vec::new(),
        };
        let cfg = validate(&mut c, raw, &base, env, source);
        match cfg {
            Some(mut cfg) if c.problems.is_empty() => {
                cfg.text = text.to_owned();
                Ok(cfg)
            }
            _ => Err(Problems(c.problems)),
        }
    }
}

fn validate(
    c: &mut Collector<'_>,
    raw: RawConfig,
    base: &Path,
    env: &dyn Env,
    source: Option<&Path>,
) -> Option<Config> {
    use Seg::{Index as I, Key as K};
    let resolve = |p: &str| -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };

    // Listener and issuer.
    let listen_raw = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen: SocketAddr = listen_raw.parse().unwrap_or_else(|_| {
        c.push(
            &[K("listen")],
            format!("{listen_raw:?} is not an address like \"127.0.0.1:8080\""),
        );
        SocketAddr::from(([127, 0, 0, 1], 8080))
    });
    let tls = raw.tls.map(|t| TlsConfig {
        cert: resolve(&t.cert),
        key: resolve(&t.key),
    });
    if let Some(t) = &tls {
        for (name, p) in [("cert", &t.cert), ("key", &t.key)] {
            if !p.is_file() {
                c.push(
                    &[K("tls"), K(name)],
                    format!("{} is not a readable file", p.display()),
                );
            }
        }
    }
    if !listen.ip().is_loopback() && tls.is_none() {
        c.push(
            &[K("listen")],
            "plain HTTP is allowed only on loopback: add [tls] to listen on other addresses",
        );
    }

    let issuer = raw
        .issuer
        .clone()
        .unwrap_or_else(|| DEFAULT_ISSUER.to_owned());
    match url::Url::parse(&issuer) {
        Ok(u) => {
            if u.scheme() != "https" && !(u.scheme() == "http" && is_loopback_host(&u)) {
                c.push(
                    &[K("issuer")],
                    "must be https unless it is a loopback address",
                );
            }
            if u.query().is_some() || u.fragment().is_some() || issuer.ends_with('/') {
                c.push(
                    &[K("issuer")],
                    "must have no query, fragment or trailing slash",
                );
            }
        }
        Err(e) => c.push(&[K("issuer")], format!("{issuer:?} is not a URL: {e}")),
    }

    let td_raw = raw
        .local_trust_domain
        .clone()
        .unwrap_or_else(|| DEFAULT_TRUST_DOMAIN.to_owned());
    let local_trust_domain: Option<TrustDomain> = match td_raw.parse() {
        Ok(td) => Some(td),
        Err(e) => {
            c.push(&[K("local_trust_domain")], format!("{td_raw:?}: {e}"));
            None
        }
    };

    // State.
    let st = raw.state.unwrap_or_default();
    let state = match st.backend.as_deref().unwrap_or("embedded") {
        "embedded" => {
            if st.url.is_some() {
                c.push(&[K("state"), K("url")], "applies to the redis backend only");
            }
            StateConfig::Embedded {
                path: resolve(st.path.as_deref().unwrap_or(DEFAULT_STATE_PATH)),
            }
        }
        "redis" => {
            if st.path.is_some() {
                c.push(
                    &[K("state"), K("path")],
                    "applies to the embedded backend only",
                );
            }
            let url = st.url.clone().unwrap_or_default();
            let scheme_ok = url.starts_with("redis://")
                || url.starts_with("rediss://")
                || url.starts_with("redis+cluster://");
            if !scheme_ok {
                c.push(
                    &[K("state"), K("url")],
                    "is required: redis://host:port or redis+cluster://h1,h2,h3",
                );
            }
            let env_name = st
                .key_encryption_env
                .clone()
                .unwrap_or_else(|| DEFAULT_STATE_KEY_ENV.to_owned());
            use base64::Engine as _;
            let key = env
                .var(&env_name)
                .and_then(|v| {
                    base64::engine::general_purpose::STANDARD
                        .decode(v.trim())
                        .ok()
                })
                .and_then(|b| <[u8; 32]>::try_from(b).ok());
            if key.is_none() {
                c.push(
                    &[K("state"), K("key_encryption_env")],
                    format!("environment variable {env_name} must hold 32 bytes, base64"),
                );
            }
            StateConfig::Redis {
                url,
                key: StateKey(key.unwrap_or([0; 32])),
            }
        }
        other => {
            c.push(
                &[K("state"), K("backend")],
                format!("{other:?} is not \"embedded\" or \"redis\""),
            );
            StateConfig::Embedded {
                path: resolve(DEFAULT_STATE_PATH),
            }
        }
    };
    if let Some(v) = st.on_unavailable.as_deref()
        && v != "fail-closed"
    {
        c.push(
            &[K("state"), K("on_unavailable")],
            "the only accepted value is \"fail-closed\"",
        );
    }
    if st.key_encryption_env.is_some() && matches!(state, StateConfig::Embedded { .. }) {
        c.push(
            &[K("state"), K("key_encryption_env")],
            "applies to the redis backend only",
        );
    }

    // Keys and token lifetimes.
    let rk = raw.keys.unwrap_or_default();
    let mut algorithms = Vec::new();
    for (i, a) in rk
        .algorithms
        .unwrap_or_else(|| vec!["ES256".into(), "RS256".into()])
        .iter()
        .enumerate()
    {
        match a.as_str() {
            "ES256" => algorithms.push(SigningAlg::ES256),
            "RS256" => algorithms.push(SigningAlg::RS256),
            other => c.push(
                &[K("keys"), K("algorithms"), I(i)],
                format!("{other:?} is not ES256 or RS256"),
            ),
        }
    }
    if !algorithms.contains(&SigningAlg::ES256) {
        c.push(
            &[K("keys"), K("algorithms")],
            "must include ES256, the access-token algorithm",
        );
    }
    let rotate_every = duration(
        c,
        &[K("keys"), K("rotate_every")],
        rk.rotate_every.as_deref(),
        Duration::from_secs(24 * 3600),
    );
    let publish_ahead = duration(
        c,
        &[K("keys"), K("publish_ahead")],
        rk.publish_ahead.as_deref(),
        Duration::from_secs(3600),
    );
    if publish_ahead >= rotate_every {
        c.push(
            &[K("keys"), K("publish_ahead")],
            "must be shorter than rotate_every",
        );
    }
    let rt = raw.tokens.unwrap_or_default();
    let default_ttl = duration(
        c,
        &[K("tokens"), K("default_ttl")],
        rt.default_ttl.as_deref(),
        Duration::from_secs(300),
    );
    let max_ttl = duration(
        c,
        &[K("tokens"), K("max_ttl")],
        rt.max_ttl.as_deref(),
        Duration::from_secs(3600),
    );
    let clock_skew = duration(
        c,
        &[K("tokens"), K("clock_skew")],
        rt.clock_skew.as_deref(),
        Duration::from_secs(30),
    );
    if default_ttl > max_ttl {
        c.push(&[K("tokens"), K("default_ttl")], "must not exceed max_ttl");
    }
    if clock_skew > Duration::from_secs(300) {
        c.push(&[K("tokens"), K("clock_skew")], "must be at most 5m");
    }

    // Trust domains.
    let mut domains = Vec::new();
    let mut static_keys = StaticKeys::new();
    let mut names = HashSet::new();
    let mut kinds = BTreeMap::new();
    let mut enforcer_cas = Vec::new();
    let mut endpoints = Vec::new();
    for (i, td) in raw.trust_domain.iter().enumerate() {
        let at = |k: &'static str| [K("trust_domain"), I(i), K(k)];
        if !names.insert(td.name.clone()) || td.name == td_raw {
            c.push(&at("name"), format!("{:?} is defined twice", td.name));
        }
        let kind = match td.kind.as_deref().unwrap_or("spiffe") {
            "spiffe" => DomainKind::Spiffe,
            "oidc" => DomainKind::Oidc,
            "broker" => DomainKind::Broker,
            other => {
                c.push(
                    &at("kind"),
                    format!("{other:?} is not \"spiffe\", \"oidc\" or \"broker\""),
                );
                DomainKind::Spiffe
            }
        };
        kinds.insert(td.name.clone(), kind);
        let allow_private = td.allow_private_ranges.unwrap_or(false);
        if kind == DomainKind::Spiffe {
            if let Err(e) = td.name.parse::<TrustDomain>() {
                c.push(
                    &at("name"),
                    format!("a spiffe domain's name is its trust domain: {e}"),
                );
            }
            if td.issuer.is_some() {
                c.push(&at("issuer"), "applies to oidc and broker domains only");
            }
        } else {
            match &td.issuer {
                None => c.push(&at("issuer"), "is required for oidc and broker domains"),
                Some(iss) => match url::Url::parse(iss) {
                    Ok(u) if u.scheme() == "https" || (u.scheme() == "http" && is_loopback_host(&u) && raw.danger.as_ref().is_some_and(|d| d.allow_http_fetch_to_loopback)) => {}
                    Ok(_) => c.push(&at("issuer"), "must be https (http only on loopback with [danger] allow_http_fetch_to_loopback)"),
                    Err(e) => c.push(&at("issuer"), format!("not a URL: {e}")),
                },
            }
        }
        // Keys: static files now; bundle endpoints and discovery come with federation.
        if td.bundle.is_some() && td.bundle_file.is_some() {
            c.push(&at("bundle"), "give bundle or bundle_file, not both");
        }
        let has_bundle = td.bundle_file.is_some() || td.bundle.is_some();
        let sources = [
            has_bundle,
            td.jwks_file.is_some(),
            td.bundle_endpoint.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        // https_spiffe bootstraps from a configured bundle: then bundle_file rides along.
        let spiffe_profile = td
            .bundle_endpoint
            .as_ref()
            .is_some_and(|e| e.profile == "https_spiffe");
        let bootstrap_allowed = usize::from(spiffe_profile && has_bundle);
        if sources > 1 + bootstrap_allowed {
            c.push(
                &at("bundle_file"),
                "give exactly one of bundle_file, jwks_file and bundle_endpoint (https_spiffe: bundle_endpoint and its bootstrap bundle_file)",
            );
        }
        let mut keys: Vec<Jwk> = Vec::new();
        let mut bootstrap = None;
        let bundle_source = match (&td.bundle, &td.bundle_file) {
            (Some(inline), _) => Some((
                "bundle",
                String::new(),
                if inline.len() as u64 > MAX_KEY_FILE_BYTES {
                    Err(format!("larger than {MAX_KEY_FILE_BYTES} bytes"))
                } else {
                    Ok(inline.clone().into_bytes())
                },
            )),
            (None, Some(f)) => Some(("bundle_file", format!("{f}: "), read_small(&resolve(f)))),
            (None, None) => None,
        };
        if let Some((key, what, bytes)) = bundle_source {
            match bytes.and_then(|b| SpiffeBundle::parse(&b).map_err(|e| e.to_string())) {
                Ok(b) => {
                    keys.extend(b.jwt_authorities().iter().map(|a| a.jwk.clone()));
                    bootstrap = Some(b);
                }
                Err(e) => c.push(&at(key), format!("{what}{e}")),
            }
        }
        if let Some(f) = &td.jwks_file {
            match read_small(&resolve(f)).and_then(|b| parse_jwks(&b)) {
                Ok(k) => keys.extend(k),
                Err(e) => c.push(&at("jwks_file"), format!("{f}: {e}")),
            }
        }
        if let Some(ep) = &td.bundle_endpoint {
            let danger = raw
                .danger
                .as_ref()
                .is_some_and(|d| d.allow_http_fetch_to_loopback);
            match url::Url::parse(&ep.url) {
                Ok(u) if u.scheme() == "https" || (u.scheme() == "http" && danger && is_loopback_host(&u)) => {}
                Ok(_) => c.push(&at("bundle_endpoint"), "url must be https (http only on loopback with [danger] allow_http_fetch_to_loopback)"),
                Err(e) => c.push(&at("bundle_endpoint"), format!("url: {e}")),
            }
            match ep.profile.as_str() {
                "https_web" => {
                    if ep.spiffe_id.is_some() {
                        c.push(
                            &at("bundle_endpoint"),
                            "spiffe_id applies to the https_spiffe profile only",
                        );
                    }
                    endpoints.push(EndpointConfig {
                        domain: td.name.clone(),
                        source: EndpointSource::SpiffeBundle {
                            url: ep.url.clone(),
                            spiffe_id: None,
                        },
                        tls_ca: td.tls_ca.as_deref().map(resolve),
                        bootstrap: None,
                        allow_private,
                    });
                }
                "https_spiffe" => {
                    let id = ep.spiffe_id.as_deref().map(str::parse::<SpiffeId>);
                    match (id, &bootstrap) {
                        (Some(Ok(id)), Some(b)) if id.trust_domain_str() == td.name && !b.x509_authorities().is_empty() => {
                            endpoints.push(EndpointConfig {
                                domain: td.name.clone(),
                                source: EndpointSource::SpiffeBundle {
                                    url: ep.url.clone(),
                                    spiffe_id: Some(id),
                                },
                                tls_ca: None,
                                bootstrap: bootstrap.clone(),
                                allow_private,
                            });
                        }
                        (Some(Ok(_)), Some(_)) => c.push(&at("bundle_endpoint"), "https_spiffe needs a spiffe_id in this trust domain and a bootstrap bundle_file with x509-svid authorities"),
                        (Some(Err(e)), _) => c.push(&at("bundle_endpoint"), format!("spiffe_id: {e}")),
                        (None, _) => c.push(&at("bundle_endpoint"), "https_spiffe needs the endpoint's spiffe_id"),
                        (_, None) => c.push(&at("bundle_file"), "https_spiffe needs a bootstrap bundle_file"),
                    }
                }
                other => c.push(
                    &at("bundle_endpoint"),
                    format!("profile {other:?} is not \"https_web\" or \"https_spiffe\""),
                ),
            }
        }
        if sources == 0 {
            match (&td.issuer, kind) {
                // OIDC issuers and peer brokers publish their keys through discovery.
                (Some(issuer), DomainKind::Oidc | DomainKind::Broker) => endpoints.push(EndpointConfig {
                    domain: td.name.clone(),
                    source: EndpointSource::OidcDiscovery { issuer: issuer.clone() },
                    tls_ca: td.tls_ca.as_deref().map(resolve),
                    bootstrap: None,
                    allow_private,
                }),
                (Some(_), _) | (None, _) => c.push(
                    &at("name"),
                    "needs keys: bundle_endpoint, bundle_file or jwks_file (or an issuer, for oidc and broker domains)",
                ),
            }
        }
        if td.allow_private_ranges.is_some()
            && !endpoints
                .iter()
                .any(|e: &EndpointConfig| e.domain == td.name)
        {
            c.push(
                &at("allow_private_ranges"),
                "applies to domains whose keys are fetched (bundle_endpoint or issuer)",
            );
        }
        static_keys.insert_domain(&td.name, keys);
        if let Some(ca) = &td.enforcer_ca {
            if kind == DomainKind::Spiffe {
                enforcer_cas.push((td.name.clone(), resolve(ca)));
            } else {
                c.push(
                    &at("enforcer_ca"),
                    "applies to spiffe domains only (their nodes are named in the domain)",
                );
            }
        }
        for (k, v) in [("enforcer_ca", &td.enforcer_ca), ("tls_ca", &td.tls_ca)] {
            if let Some(p) = v
                && !resolve(p).is_file()
            {
                c.push(&at(k), format!("{p} is not a readable file"));
            }
        }

        let audiences = td.audiences.clone().unwrap_or_else(|| vec![issuer.clone()]);
        if audiences.is_empty() {
            c.push(&at("audiences"), "must name at least one audience");
        }
        let mut algs = Vec::new();
        match &td.algorithms {
            None => algs.extend(JwsAlgorithm::ALL),
            Some(list) => {
                for (j, a) in list.iter().enumerate() {
                    match a.parse::<JwsAlgorithm>() {
                        Ok(alg) => algs.push(alg),
                        Err(e) => c.push(
                            &[K("trust_domain"), I(i), K("algorithms"), I(j)],
                            e.to_string(),
                        ),
                    }
                }
            }
        }
        let max_token_age = td.max_token_age.as_deref().map(|s| {
            duration(
                c,
                &at("max_token_age"),
                Some(s),
                Duration::from_secs(24 * 3600),
            )
        });
        domains.push(DomainPolicy {
            name: td.name.clone(),
            kind,
            issuer: td.issuer.clone(),
            audiences,
            algorithms: algs,
            max_token_age,
        });
    }
    // This broker's own tokens (SPEC §11): accepted when their `aud` is our issuer.
    domains.push(DomainPolicy {
        name: td_raw.clone(),
        kind: DomainKind::Local,
        issuer: Some(issuer.clone()),
        audiences: vec![issuer.clone()],
        algorithms: vec![JwsAlgorithm::ES256],
        max_token_age: None,
    });
    kinds.insert(td_raw.clone(), DomainKind::Local);

    // Boundaries.
    let mut boundaries = Vec::new();
    let mut bnames = HashSet::new();
    for (i, b) in raw.boundary.iter().enumerate() {
        let at = |k: &'static str| [K("boundary"), I(i), K(k)];
        if !bnames.insert(b.name.clone()) {
            c.push(&at("name"), format!("{:?} is defined twice", b.name));
        }
        let from_kind = kinds.get(&b.from).copied();
        if from_kind.is_none() {
            c.push(
                &at("from"),
                format!(
                    "{:?} is not a trust_domain name or the local_trust_domain",
                    b.from
                ),
            );
        }
        let mut subjects = Vec::new();
        if b.subjects.is_empty() {
            c.push(&at("subjects"), "must list at least one subject glob");
        }
        for (j, s) in b.subjects.iter().enumerate() {
            match Glob::new(s) {
                Ok(g) => subjects.push(g),
                Err(e) => c.push(&[K("boundary"), I(i), K("subjects"), I(j)], e.to_string()),
            }
        }
        if b.audiences.is_empty() {
            c.push(&at("audiences"), "must list at least one audience");
        }
        for (j, a) in b.audiences.iter().enumerate() {
            if let Err(e) = a.parse::<Audience>() {
                c.push(
                    &[K("boundary"), I(i), K("audiences"), I(j)],
                    format!("{a:?}: {e}"),
                );
            }
        }
        let scopes =
            ScopeSet::from_tokens(b.scopes.iter().map(String::as_str)).unwrap_or_else(|e| {
                c.push(&at("scopes"), e.to_string());
                ScopeSet::empty()
            });
        if scopes.is_empty() {
            c.push(&at("scopes"), "must list at least one scope");
        }
        let unattested_scopes = ScopeSet::from_tokens(
            b.unattested_scopes.iter().map(String::as_str),
        )
        .unwrap_or_else(|e| {
            c.push(&at("unattested_scopes"), e.to_string());
            ScopeSet::empty()
        });
        if !unattested_scopes.is_subset(&scopes) {
            c.push(&at("unattested_scopes"), "must be a subset of scopes");
        }
        let max_ttl = b
            .max_ttl
            .as_deref()
            .map(|s| duration(c, &at("max_ttl"), Some(s), default_ttl));
        let attestation = match b.attestation.as_deref().unwrap_or("required") {
            "required" => AttestationMode::Required,
            "optional" => AttestationMode::Optional,
            "none" => AttestationMode::None,
            other => {
                c.push(
                    &at("attestation"),
                    format!("{other:?} is not \"required\", \"optional\" or \"none\""),
                );
                AttestationMode::Required
            }
        };
        let req = b.require.as_ref();
        let require = RequiredFacts {
            exe_sha256: req.map(|r| r.exe_sha256.clone()).unwrap_or_default(),
            uid: req.map(|r| r.uid.clone()).unwrap_or_default(),
            gid: req.map(|r| r.gid.clone()).unwrap_or_default(),
            exe: req.map(|r| r.exe.clone()).unwrap_or_default(),
            container_id: req.map(|r| r.container_id.clone()).unwrap_or_default(),
        };
        for (j, h) in require.exe_sha256.iter().enumerate() {
            if h.len() != 64
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            {
                c.push(
                    &[K("boundary"), I(i), K("require"), K("exe_sha256"), I(j)],
                    "must be 64 lowercase hex digits",
                );
            }
        }
        if attestation == AttestationMode::None && require != RequiredFacts::default() {
            c.push(&at("require"), "has no effect with attestation = \"none\"");
        }
        let mut claims = BTreeMap::new();
        for (k, v) in &b.claims {
            match Glob::new(v) {
                Ok(g) => {
                    claims.insert(k.clone(), g);
                }
                Err(e) => c.push(&at("claims"), format!("{k}: {e}")),
            }
        }
        let workload = b
            .workload
            .as_deref()
            .and_then(|w| match w.parse::<SpiffeId>() {
                Ok(id) => Some(id),
                Err(e) => {
                    c.push(&at("workload"), format!("{w:?}: {e}"));
                    None
                }
            });
        if from_kind == Some(DomainKind::Oidc)
            && attestation != AttestationMode::None
            && b.workload.is_none()
        {
            c.push(
                &at("workload"),
                "is required for OIDC subjects unless attestation = \"none\"",
            );
        }
        let max_hops = match b.max_hops {
            None => 3,
            Some(h) if (1..=16).contains(&h) => usize::try_from(h).unwrap_or(3),
            Some(_) => {
                c.push(&at("max_hops"), "must be between 1 and 16");
                3
            }
        };
        let token_type = match b.token_type.as_deref().unwrap_or("access_token") {
            "access_token" => OutputType::AccessToken,
            "jwt" => {
                if !algorithms.contains(&SigningAlg::RS256) {
                    c.push(
                        &at("token_type"),
                        "\"jwt\" needs RS256 in [keys].algorithms",
                    );
                }
                OutputType::Jwt
            }
            other => {
                c.push(
                    &at("token_type"),
                    format!("{other:?} is not \"access_token\" or \"jwt\""),
                );
                OutputType::AccessToken
            }
        };
        boundaries.push(Boundary {
            name: b.name.clone(),
            from: b.from.clone(),
            subjects,
            audiences: b.audiences.clone(),
            scopes,
            max_ttl,
            attestation,
            unattested_scopes,
            require,
            claims,
            workload,
            max_hops,
            single_use: b.single_use,
            token_type,
        });
    }

    let mut clients = Vec::new();
    for (i, cl) in raw.client.iter().enumerate() {
        let secret = env.var(&cl.secret_env).filter(|s| !s.is_empty());
        if secret.is_none() {
            c.push(
                &[K("client"), I(i), K("secret_env")],
                format!("environment variable {} is not set", cl.secret_env),
            );
        }
        if raw.client.iter().take(i).any(|o| o.id == cl.id) {
            c.push(
                &[K("client"), I(i), K("id")],
                format!("{:?} is defined twice", cl.id),
            );
        }
        clients.push(ClientConfig {
            id: cl.id.clone(),
            secret_env: cl.secret_env.clone(),
            secret: ClientSecret(secret.unwrap_or_default()),
        });
    }

    Some(Config {
        source: source.map(Path::to_path_buf),
        text: String::new(),
        file_objects: (raw.trust_domain.len(), raw.boundary.len()),
        issuer,
        local_trust_domain: local_trust_domain?,
        listen,
        tls,
        state,
        keys: KeysConfig {
            algorithms,
            rotate_every,
            publish_ahead,
        },
        limits: TokenLimits {
            default_ttl,
            max_ttl,
        },
        clock_skew,
        admin_token_env: raw
            .admin
            .and_then(|a| a.token_env)
            .unwrap_or_else(|| DEFAULT_ADMIN_TOKEN_ENV.to_owned()),
        allow_http_fetch_to_loopback: raw.danger.is_some_and(|d| d.allow_http_fetch_to_loopback),
        domains,
        static_keys,
        boundaries,
        clients,
        enforcer_cas,
        endpoints,
    })
}

fn read_small(path: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if meta.len() > MAX_KEY_FILE_BYTES {
        return Err(format!("larger than {MAX_KEY_FILE_BYTES} bytes"));
    }
    std::fs::read(path).map_err(|e| format!("cannot read: {e}"))
}

/// A JWKS document (RFC 7517 §5): every key must parse and carry a `kid`.
fn parse_jwks(bytes: &[u8]) -> Result<Vec<Jwk>, String> {
    let doc = trust_bundles::json::parse_strict(bytes).map_err(|e| e.to_string())?;
    let keys = doc
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .ok_or("no `keys` array")?;
    if keys.len() > trust_bundles::bundle::MAX_BUNDLE_KEYS {
        return Err("too many keys".into());
    }
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            let jwk = Jwk::from_json(k).map_err(|e| format!("keys[{i}]: {e}"))?;
            if jwk.kid.is_none() {
                return Err(format!("keys[{i}]: no `kid`"));
            }
            Ok(jwk)
        })
        .collect()
}
