//! Validation of a subject (or actor) token: a compact JWS from a trust domain we federate
//! with, from a peer broker, or from this broker itself.
//!
//! The steps follow SPEC §4's order and RFC 8725's advice; numbers in comments refer to
//! the list in [`Validator::validate`].

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use trust_bundles::jws::{JwsError, UnverifiedJws};
use trust_bundles::{JwsAlgorithm, SpiffeId, TrustDomain, UnixTime, VerifyingKeys};

use crate::request::{MAX_TOKEN_BYTES, PresentedToken};
use crate::revocation::{MAX_LINEAGE, TokenId};
use crate::state::{KeySource, StateError};
use crate::types::{Jkt, ScopeSet, TokenTypeUri};

/// Most `crossings` a broker token may carry; far above any sane `max_hops`.
pub const MAX_CROSSINGS: usize = 16;
/// Deepest `act` chain accepted (RFC 8693 §4.1 nesting).
pub const MAX_ACT_DEPTH: usize = 8;

/// What kind of issuer a trust domain is (SPEC §3 `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DomainKind {
    /// A SPIFFE trust domain issuing JWT-SVIDs; `sub` is a SPIFFE ID of the domain.
    Spiffe,
    /// An OIDC issuer (Kubernetes, GitHub Actions, ...); `iss` names it.
    Oidc,
    /// A peer trustbroker; its tokens carry `crossings` and `scope`.
    Broker,
    /// This broker's own tokens, re-exchanged.
    Local,
}

impl DomainKind {
    fn is_broker(self) -> bool {
        matches!(self, Self::Broker | Self::Local)
    }
}

/// What the validator needs to know of one trust domain.
#[derive(Debug, Clone)]
pub struct DomainPolicy {
    /// The configured name: a SPIFFE trust domain, or a label for an OIDC issuer.
    pub name: String,
    pub kind: DomainKind,
    /// `iss` the tokens must carry, byte for byte (required for `Oidc`, `Broker`, `Local`).
    pub issuer: Option<String>,
    /// The token's `aud` must contain one of these.
    pub audiences: Vec<String>,
    /// Signature algorithms accepted from this domain.
    pub algorithms: Vec<JwsAlgorithm>,
    /// Longest `exp - iat` accepted.
    pub max_token_age: Option<Duration>,
}

/// One boundary crossing recorded in a broker token (SPEC §5).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Crossing {
    pub from: String,
    pub boundary: String,
    pub iss: String,
}

/// A token that passed every check.
#[derive(Debug, Clone)]
pub struct ValidatedToken {
    /// The configured name of the domain that issued it.
    pub domain: String,
    pub kind: DomainKind,
    /// The federated subject as SPEC §5 writes it.
    pub subject: String,
    pub jti: Option<String>,
    pub iat: Option<UnixTime>,
    pub exp: UnixTime,
    /// The token's own `scope`, when it has one.
    pub scope: Option<ScopeSet>,
    /// Crossings so far (broker tokens only; empty otherwise).
    pub crossings: Vec<Crossing>,
    /// The key the token is bound to (`cnf.jkt`).
    pub cnf_jkt: Option<Jkt>,
    /// Who may act for this subject (RFC 8693 §4.4), as given.
    pub may_act: Option<Map<String, Value>>,
    /// The token's own actor chain (RFC 8693 §4.1), as given.
    pub act: Option<Map<String, Value>>,
    /// All claims, for boundary `claims` globs.
    pub claims: Map<String, Value>,
    /// Its id for revocation ([`TokenId`]).
    pub token_id: TokenId,
    /// The tokens it was minted from (broker tokens only; empty otherwise).
    pub lineage: Vec<TokenId>,
    /// The enforcer whose evidence stood behind it (`att.node`; broker tokens only).
    pub node: Option<String>,
}

/// Why a token is refused. All map to `invalid_request` on the wire (RFC 8693 §2.2.2);
/// the variant goes to the audit log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Jws(#[from] JwsError),
    #[error("header `{0}` is never honoured")]
    ForbiddenHeader(&'static str),
    #[error("the issuer is not a trust domain of this broker")]
    UnknownIssuer,
    #[error("`alg` {0} is not allowed for this trust domain")]
    AlgNotAllowed(JwsAlgorithm),
    #[error("`typ` {typ:?} is not acceptable for a {token_type} subject")]
    BadTyp {
        typ: Option<String>,
        token_type: String,
    },
    #[error("header has no `kid`")]
    MissingKid,
    #[error("no key with this `kid` in the issuer's keys")]
    UnknownKid,
    #[error("claim `{0}` is missing")]
    MissingClaim(&'static str),
    #[error("claim `{0}` has the wrong type or form")]
    BadClaim(&'static str),
    #[error("`aud` names none of the domain's audiences")]
    AudienceMismatch,
    #[error("expired at {exp} (now {now})")]
    Expired { now: u64, exp: u64 },
    #[error("not valid before {nbf} (now {now})")]
    NotYetValid { now: u64, nbf: u64 },
    #[error("issued in the future at {iat} (now {now})")]
    IssuedInFuture { now: u64, iat: u64 },
    #[error("lifetime {age_secs}s exceeds max_token_age {max_secs}s")]
    TooOld { age_secs: u64, max_secs: u64 },
    #[error("`sub` is not a SPIFFE ID of the trust domain")]
    BadSubject,
    #[error("key lookup failed: {0}")]
    Keys(StateError),
}

/// Validates subject and actor tokens against the configured domains.
pub struct Validator {
    domains: Vec<DomainPolicy>,
    keys: Arc<dyn KeySource>,
    /// Shared by every validator over the same keys.
    verifiers: Arc<VerifyingKeys>,
    skew: Duration,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("domains", &self.domains)
            .field("skew", &self.skew)
            .finish_non_exhaustive()
    }
}

/// Key-carrying headers that would let the token choose its own verification key
/// (RFC 8725 §3.10; SPEC §11). They are refused, and nothing they name is fetched.
const FORBIDDEN_HEADERS: [&str; 4] = ["jku", "x5u", "jwk", "x5c"];

impl Validator {
    pub fn new(domains: Vec<DomainPolicy>, keys: Arc<dyn KeySource>, skew: Duration) -> Self {
        Self {
            domains,
            keys,
            verifiers: Arc::new(VerifyingKeys::new()),
            skew,
        }
    }

    pub fn domains(&self) -> &[DomainPolicy] {
        &self.domains
    }

    /// The same keys and skew over other domains.
    pub fn with_domains(&self, domains: Vec<DomainPolicy>) -> Self {
        Self {
            domains,
            keys: self.keys.clone(),
            verifiers: self.verifiers.clone(),
            skew: self.skew,
        }
    }

    /// Where verification keys come from.
    pub fn keys(&self) -> &dyn KeySource {
        self.keys.as_ref()
    }

    /// Validates `presented` at time `now`.
    ///
    /// 1. compact JWS within the size budget, no `crit`, `alg` not none/HMAC (parse);
    /// 2. no key-carrying header;
    /// 3. the issuing domain, from `iss` (exact) or, for JWT-SVIDs, `sub`'s trust domain;
    /// 4. `alg` on the domain's allowlist; 5. `typ` fits the declared token type;
    /// 6. `kid` in the domain's own keys; 7. the signature;
    /// 8. the claims: `aud`, `exp`, `nbf`, `iat`, age, `sub`, and the typed extras.
    pub async fn validate(
        &self,
        presented: &PresentedToken,
        now: UnixTime,
    ) -> Result<ValidatedToken, TokenError> {
        // 1.
        let jws = UnverifiedJws::parse(presented.secret(), MAX_TOKEN_BYTES)?;
        // 2.
        if let Some(h) = FORBIDDEN_HEADERS
            .into_iter()
            .find(|h| jws.header().contains_key(*h))
        {
            return Err(TokenError::ForbiddenHeader(h));
        }
        // 3.
        let domain = self.find_domain(jws.unverified_payload())?;
        // 4.
        if !domain.algorithms.contains(&jws.alg()) {
            return Err(TokenError::AlgNotAllowed(jws.alg()));
        }
        // 5.
        check_typ(jws.header().get("typ"), domain.kind, &presented.token_type)?;
        // 6.
        let kid = jws.header_str("kid").ok_or(TokenError::MissingKid)?;
        let key = self
            .keys
            .jwt_key(&domain.name, kid)
            .await
            .map_err(TokenError::Keys)?
            .ok_or(TokenError::UnknownKid)?;
        // 7.
        let compact = jws.compact().to_owned();
        let claims = jws.verify_remembering(&key, &self.verifiers)?;
        // 8.
        self.check_claims(domain, claims, &compact, now)
    }

    fn find_domain(&self, claims: &Map<String, Value>) -> Result<&DomainPolicy, TokenError> {
        let iss = match claims.get("iss") {
            None => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => return Err(TokenError::BadClaim("iss")),
        };
        if let Some(iss) = iss {
            // Byte-exact: no trailing-slash or case folding (OIDC Core §3.1.3.7 step 2).
            if let Some(d) = self
                .domains
                .iter()
                .find(|d| d.kind != DomainKind::Spiffe && d.issuer.as_deref() == Some(iss))
            {
                return Ok(d);
            }
        }
        // JWT-SVIDs (SPIFFE JWT-SVID §3) name their domain through `sub`; `iss` is not
        // defined for them, so it neither selects nor excludes a domain.
        let td = claims
            .get("sub")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<SpiffeId>().ok())
            .map(|id| id.trust_domain());
        td.and_then(|td| {
            self.domains
                .iter()
                .find(|d| d.kind == DomainKind::Spiffe && d.name == td.as_str())
        })
        .ok_or(TokenError::UnknownIssuer)
    }

    fn check_claims(
        &self,
        domain: &DomainPolicy,
        claims: Map<String, Value>,
        compact: &str,
        now: UnixTime,
    ) -> Result<ValidatedToken, TokenError> {
        let skew = self.skew.as_secs();
        check_audience(claims.get("aud"), &domain.audiences)?;

        let exp = numeric_date(&claims, "exp")?.ok_or(TokenError::MissingClaim("exp"))?;
        if now.as_secs() >= exp {
            return Err(TokenError::Expired {
                now: now.as_secs(),
                exp,
            });
        }
        if let Some(nbf) = numeric_date(&claims, "nbf")?
            && nbf > now.as_secs().saturating_add(skew)
        {
            return Err(TokenError::NotYetValid {
                now: now.as_secs(),
                nbf,
            });
        }
        let iat = numeric_date(&claims, "iat")?;
        if let Some(iat) = iat
            && iat > now.as_secs().saturating_add(skew)
        {
            return Err(TokenError::IssuedInFuture {
                now: now.as_secs(),
                iat,
            });
        }
        if let Some(max) = domain.max_token_age {
            let iat = iat.ok_or(TokenError::MissingClaim("iat"))?;
            let age = exp.saturating_sub(iat);
            if age > max.as_secs() {
                return Err(TokenError::TooOld {
                    age_secs: age,
                    max_secs: max.as_secs(),
                });
            }
        }

        let sub = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.as_str(),
            Some(_) => return Err(TokenError::BadClaim("sub")),
            None => return Err(TokenError::MissingClaim("sub")),
        };
        let subject = match domain.kind {
            DomainKind::Spiffe => {
                let id: SpiffeId = sub.parse().map_err(|_| TokenError::BadSubject)?;
                let td: TrustDomain = domain.name.parse().map_err(|_| TokenError::BadSubject)?;
                if !id.is_member_of(&td) {
                    return Err(TokenError::BadSubject);
                }
                id.to_string()
            }
            // SPEC §5: `<trust-domain>#<foreign sub>` so that equal `sub`s of two issuers
            // never name the same subject.
            DomainKind::Oidc => format!("{}#{sub}", domain.name),
            // A broker token's `sub` is already federated.
            DomainKind::Broker | DomainKind::Local => sub.to_owned(),
        };

        let jti = optional_str(&claims, "jti")?.map(str::to_owned);
        let scope = match claims.get("scope") {
            None => None,
            Some(Value::String(s)) => Some(s.parse().map_err(|_| TokenError::BadClaim("scope"))?),
            Some(_) => return Err(TokenError::BadClaim("scope")),
        };
        let crossings = if domain.kind.is_broker() {
            parse_crossings(claims.get("crossings"))?
        } else {
            Vec::new()
        };
        let cnf_jkt = match claims.get("cnf") {
            None => None,
            Some(Value::Object(cnf)) => match cnf.get("jkt") {
                Some(Value::String(j)) => Some(j.parse().map_err(|_| TokenError::BadClaim("cnf"))?),
                None => None,
                Some(_) => return Err(TokenError::BadClaim("cnf")),
            },
            Some(_) => return Err(TokenError::BadClaim("cnf")),
        };
        let may_act = optional_object(&claims, "may_act")?;
        let act = optional_object(&claims, "act")?;
        if let Some(act) = &act {
            check_act_depth(act, 1)?;
        }
        // The id's namespace: `iss`, or for a JWT-SVID without one, its trust domain.
        let namespace = match optional_str(&claims, "iss")? {
            Some(iss) => iss.to_owned(),
            None => format!("spiffe://{}", domain.name),
        };
        let token_id = TokenId::new(&namespace, jti.as_deref(), compact);
        let (lineage, node) = if domain.kind.is_broker() {
            (
                parse_lineage(claims.get("lineage"))?,
                parse_att_node(claims.get("att"))?,
            )
        } else {
            (Vec::new(), None)
        };

        Ok(ValidatedToken {
            domain: domain.name.clone(),
            kind: domain.kind,
            subject,
            jti,
            iat: iat.map(UnixTime::from_secs),
            exp: UnixTime::from_secs(exp),
            scope,
            crossings,
            cnf_jkt,
            may_act,
            act,
            claims,
            token_id,
            lineage,
            node,
        })
    }
}

/// `lineage`: at most [`MAX_LINEAGE`] token ids.
fn parse_lineage(v: Option<&Value>) -> Result<Vec<TokenId>, TokenError> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) if items.len() <= MAX_LINEAGE => items
            .iter()
            .map(|i| {
                i.as_str()
                    .and_then(TokenId::parse)
                    .ok_or(TokenError::BadClaim("lineage"))
            })
            .collect(),
        Some(_) => Err(TokenError::BadClaim("lineage")),
    }
}

/// `att.node`, the enforcer's SPIFFE ID.
fn parse_att_node(v: Option<&Value>) -> Result<Option<String>, TokenError> {
    match v {
        None => Ok(None),
        Some(Value::Object(att)) => match att.get("node") {
            Some(Value::String(n)) => Ok(Some(n.clone())),
            _ => Err(TokenError::BadClaim("att")),
        },
        Some(_) => Err(TokenError::BadClaim("att")),
    }
}

/// RFC 7515 §4.1.9 `typ`, compared case-insensitively with an optional `application/`.
fn check_typ(
    typ: Option<&Value>,
    kind: DomainKind,
    declared: &TokenTypeUri,
) -> Result<(), TokenError> {
    let bad = |typ: Option<String>| TokenError::BadTyp {
        typ,
        token_type: declared.as_str().to_owned(),
    };
    let typ = match typ {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(bad(None)),
    };
    let norm = typ.map(|t| {
        let lower = t.to_ascii_lowercase();
        lower
            .strip_prefix("application/")
            .map_or(lower.clone(), str::to_owned)
    });
    let ok = match (kind.is_broker(), norm.as_deref()) {
        // Broker tokens are RFC 9068 access tokens, and only that (RFC 9068 §2.1): never
        // an ID token, and a cloud-IAM `jwt` output is not exchanged again.
        (true, Some("at+jwt")) => matches!(declared, TokenTypeUri::AccessToken | TokenTypeUri::Jwt),
        (true, _) => false,
        // Foreign tokens: plain JWTs (JWT-SVID §2.1 allows `JOSE` too). An `at+jwt` is an
        // access token, never an ID token (RFC 9068 §4).
        (false, None | Some("jwt") | Some("jose")) => true,
        (false, Some("at+jwt")) => !matches!(declared, TokenTypeUri::IdToken),
        (false, Some(_)) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(bad(typ.map(str::to_owned)))
    }
}

/// RFC 7519 §4.1.3: a string or an array of strings; it must name an accepted audience.
fn check_audience(aud: Option<&Value>, accepted: &[String]) -> Result<(), TokenError> {
    let names: Vec<&str> = match aud {
        None => return Err(TokenError::MissingClaim("aud")),
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|v| v.as_str().ok_or(TokenError::BadClaim("aud")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(TokenError::BadClaim("aud")),
    };
    if names.iter().any(|n| accepted.iter().any(|a| a == n)) {
        Ok(())
    } else {
        Err(TokenError::AudienceMismatch)
    }
}

/// RFC 7519 §2 NumericDate: a JSON number of seconds. Strings, negatives and
/// non-finite values are refused; fractions are truncated.
fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<u64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                Ok(Some(u))
            } else {
                match n.as_f64() {
                    Some(f) if (0.0..1.0e15).contains(&f) => Ok(Some(f as u64)),
                    _ => Err(TokenError::BadClaim(name)),
                }
            }
        }
        Some(_) => Err(TokenError::BadClaim(name)),
    }
}

fn optional_str<'a>(
    claims: &'a Map<String, Value>,
    name: &'static str,
) -> Result<Option<&'a str>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
        Some(_) => Err(TokenError::BadClaim(name)),
    }
}

fn optional_object(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<Map<String, Value>>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o.clone())),
        Some(_) => Err(TokenError::BadClaim(name)),
    }
}

fn check_act_depth(act: &Map<String, Value>, depth: usize) -> Result<(), TokenError> {
    if depth > MAX_ACT_DEPTH {
        return Err(TokenError::BadClaim("act"));
    }
    match act.get("act") {
        None => Ok(()),
        Some(Value::Object(inner)) => check_act_depth(inner, depth + 1),
        Some(_) => Err(TokenError::BadClaim("act")),
    }
}

fn parse_crossings(v: Option<&Value>) -> Result<Vec<Crossing>, TokenError> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    let items = v.as_array().ok_or(TokenError::BadClaim("crossings"))?;
    if items.len() > MAX_CROSSINGS {
        return Err(TokenError::BadClaim("crossings"));
    }
    items
        .iter()
        .map(|c| {
            serde_json::from_value::<Crossing>(c.clone())
                .map_err(|_| TokenError::BadClaim("crossings"))
        })
        .collect()
}
