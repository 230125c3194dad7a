//! Minting issued tokens (SPEC §5): RFC 9068 access tokens and cloud-IAM JWTs.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};
use trust_bundles::UnixTime;
use trust_bundles::jws;

use crate::keys::{KeyError, SigningKey};
use crate::revocation::TokenId;
use crate::subject::Crossing;
use crate::types::{Audience, Jkt, ScopeSet, Ttl};

/// `att` claim: which evidence stood behind the token (SPEC §5, §11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationRef {
    pub node: String,
    /// SHA-256 of the evidence's compact serialization, base64url without padding.
    pub evd: String,
}

/// Everything an issued token says.
#[derive(Debug, Clone)]
pub struct Claims<'a> {
    pub issuer: &'a str,
    pub subject: &'a str,
    pub audience: &'a Audience,
    pub scope: &'a ScopeSet,
    pub now: UnixTime,
    pub ttl: Ttl,
    pub cnf: Option<&'a Jkt>,
    pub act: Option<Map<String, Value>>,
    pub crossings: &'a [Crossing],
    pub att: Option<&'a AttestationRef>,
    /// The ids of the tokens this one is minted from, oldest first (revocation lineage).
    pub lineage: &'a [TokenId],
}

/// A minted token and the values the audit log and response need.
#[derive(Debug, Clone)]
pub struct Minted {
    /// The compact JWS. A secret: never logged.
    pub token: String,
    pub jti: String,
    pub exp: UnixTime,
}

/// The kind of token to mint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenShape {
    /// RFC 9068 access token, `typ: at+jwt`.
    AccessToken,
    /// Cloud-IAM assertion, `typ: JWT`, never key-bound.
    Jwt,
}

/// Mints and signs a token with `key`.
pub fn mint(shape: TokenShape, claims: &Claims<'_>, key: &SigningKey) -> Result<Minted, KeyError> {
    let jti_bytes: [u8; 16] = aws_lc_rs::rand::generate(&aws_lc_rs::rand::SystemRandom::new())
        .map_err(|_| KeyError::Sign)?
        .expose();
    let jti = URL_SAFE_NO_PAD.encode(jti_bytes);
    let iat = claims.now.as_secs();
    let exp = iat
        .checked_add(claims.ttl.as_secs())
        .ok_or(KeyError::Sign)?;

    let typ = match shape {
        TokenShape::AccessToken => "at+jwt",
        TokenShape::Jwt => "JWT",
    };
    let header = json!({"alg": key.alg().jws().as_str(), "typ": typ, "kid": key.kid()});
    let mut body = Map::new();
    body.insert("iss".into(), claims.issuer.into());
    body.insert("sub".into(), claims.subject.into());
    // SPEC §5: one audience, a string, never an array.
    body.insert("aud".into(), claims.audience.as_str().into());
    body.insert("exp".into(), exp.into());
    body.insert("iat".into(), iat.into());
    body.insert("nbf".into(), iat.into());
    body.insert("jti".into(), jti.clone().into());
    body.insert("scope".into(), claims.scope.to_string().into());
    body.insert("client_id".into(), claims.subject.into());
    if shape == TokenShape::AccessToken
        && let Some(jkt) = claims.cnf
    {
        body.insert("cnf".into(), json!({"jkt": jkt.as_str()}));
    }
    if let Some(act) = &claims.act {
        body.insert("act".into(), Value::Object(act.clone()));
    }
    body.insert(
        "crossings".into(),
        serde_json::to_value(claims.crossings).unwrap_or(Value::Array(Vec::new())),
    );
    if let Some(att) = claims.att {
        body.insert("att".into(), json!({"node": att.node, "evd": att.evd}));
    }
    if !claims.lineage.is_empty() {
        let ids: Vec<Value> = claims.lineage.iter().map(|i| i.as_str().into()).collect();
        body.insert("lineage".into(), Value::Array(ids));
    }

    let input = jws::signing_input(&header, &Value::Object(body));
    let signature = key.sign(input.as_bytes())?;
    Ok(Minted {
        token: jws::compact(&input, &signature),
        jti,
        exp: UnixTime::from_secs(exp),
    })
}
