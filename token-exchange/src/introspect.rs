//! Introspection (RFC 7662) and revocation by token (RFC 7009) of the tokens this broker
//! issued: signature by one of its published keys, its own `iss`, unexpired, and no
//! revocation covering it, its lineage, subject, node or key.

use serde_json::{Map, Value};
use trust_bundles::UnixTime;
use trust_bundles::jws::UnverifiedJws;

use crate::exchange::Exchanger;
use crate::request::MAX_TOKEN_BYTES;
use crate::revocation::{self, MAX_LINEAGE, Target, TokenFacts, TokenId};
use crate::state::StateError;
use crate::subject::DomainKind;

/// A token this broker issued, verified.
#[derive(Debug, Clone)]
pub struct OwnToken {
    pub id: TokenId,
    pub claims: Map<String, Value>,
    pub iat: Option<UnixTime>,
    pub exp: UnixTime,
    pub lineage: Vec<TokenId>,
}

impl OwnToken {
    fn str_claim(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }
}

/// The answer of `/introspect`.
#[derive(Debug, Clone)]
pub enum Introspection {
    /// Revoked, expired, unknown or not ours: RFC 7662 §2.2 says no more.
    Inactive,
    /// The token's claims, with `active: true` and `token_type`.
    Active(Map<String, Value>),
}

impl Introspection {
    pub fn to_json(&self) -> Value {
        match self {
            Self::Inactive => serde_json::json!({"active": false}),
            Self::Active(m) => Value::Object(m.clone()),
        }
    }
}

impl Exchanger {
    /// Verifies `token` as one this broker issued and that has not expired at `now`.
    /// `Ok(None)` for anything else; `Err` only when keys could not be read.
    pub async fn verify_own(
        &self,
        token: &str,
        now: UnixTime,
    ) -> Result<Option<OwnToken>, StateError> {
        let rules = self.rules();
        let Some(local) = rules
            .validator
            .domains()
            .iter()
            .find(|d| d.kind == DomainKind::Local)
        else {
            return Ok(None);
        };
        let Ok(jws) = UnverifiedJws::parse(token.trim(), MAX_TOKEN_BYTES) else {
            return Ok(None);
        };
        if !local.algorithms.contains(&jws.alg()) {
            return Ok(None);
        }
        let Some(kid) = jws.header_str("kid") else {
            return Ok(None);
        };
        let Some(key) = rules.validator.keys().jwt_key(&local.name, kid).await? else {
            return Ok(None);
        };
        let compact = jws.compact().to_owned();
        let Ok(claims) = jws.verify(&key) else {
            return Ok(None);
        };
        let iss = claims.get("iss").and_then(Value::as_str);
        if iss != Some(self.settings().issuer.as_str()) {
            return Ok(None);
        }
        let secs = |name: &str| claims.get(name).and_then(Value::as_u64);
        let Some(exp) = secs("exp") else {
            return Ok(None);
        };
        if now.as_secs() >= exp {
            return Ok(None);
        }
        let skew = self.settings().skew.as_secs();
        if secs("nbf").is_some_and(|nbf| nbf > now.as_secs().saturating_add(skew)) {
            return Ok(None);
        }
        let lineage = match claims.get("lineage") {
            None => Vec::new(),
            Some(Value::Array(items)) if items.len() <= MAX_LINEAGE => {
                let ids: Option<Vec<TokenId>> = items
                    .iter()
                    .map(|i| i.as_str().and_then(TokenId::parse))
                    .collect();
                match ids {
                    Some(ids) => ids,
                    None => return Ok(None),
                }
            }
            Some(_) => return Ok(None),
        };
        let jti = claims.get("jti").and_then(Value::as_str);
        let id = TokenId::new(&self.settings().issuer, jti, &compact);
        Ok(Some(OwnToken {
            id,
            iat: secs("iat").map(UnixTime::from_secs),
            exp: UnixTime::from_secs(exp),
            lineage,
            claims,
        }))
    }

    /// RFC 7662: whether `token` is active, and what it says when it is.
    pub async fn introspect(
        &self,
        token: &str,
        now: UnixTime,
    ) -> Result<Introspection, StateError> {
        let Some(own) = self.verify_own(token, now).await? else {
            return Ok(Introspection::Inactive);
        };
        let Some(subject) = own.str_claim("sub") else {
            return Ok(Introspection::Inactive);
        };
        let facts = TokenFacts {
            id: &own.id,
            lineage: &own.lineage,
            subject,
            node: own
                .claims
                .get("att")
                .and_then(|a| a.get("node"))
                .and_then(Value::as_str),
            jkt: own
                .claims
                .get("cnf")
                .and_then(|c| c.get("jkt"))
                .and_then(Value::as_str),
            iat: own.iat,
        };
        if revocation::check(self.revocations(), &facts, now)
            .await?
            .is_some()
        {
            return Ok(Introspection::Inactive);
        }
        let token_type = if facts.jkt.is_some() {
            "DPoP"
        } else {
            "Bearer"
        };
        let mut out = own.claims.clone();
        out.remove("lineage");
        out.insert("active".into(), true.into());
        out.insert("token_type".into(), token_type.into());
        Ok(Introspection::Active(out))
    }

    /// Records a revocation at `now`, kept until `keep_until`.
    pub async fn revoke(
        &self,
        target: &Target,
        now: UnixTime,
        keep_until: UnixTime,
    ) -> Result<(), StateError> {
        self.revocations()
            .revoke(&target.storage_key(), now, keep_until)
            .await
    }
}
