//! Minting issued tokens (SPEC §5): RFC 9068 access tokens and cloud-IAM JWTs.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::{Map, Value};
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

/// The JOSE header of a minted token.
#[derive(Serialize)]
struct Header<'a> {
    alg: &'a str,
    kid: &'a str,
    typ: &'a str,
}

/// The payload of a minted token, serialized straight from the request's values (no
/// intermediate `Value` map). Members in name order, as a `Map` would give them.
#[derive(Serialize)]
struct Body<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    act: Option<&'a Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    att: Option<Att<'a>>,
    aud: &'a str,
    client_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cnf: Option<Cnf<'a>>,
    crossings: &'a [Crossing],
    exp: u64,
    iat: u64,
    iss: &'a str,
    jti: &'a str,
    #[serde(skip_serializing_if = "<[TokenId]>::is_empty")]
    lineage: &'a [TokenId],
    nbf: u64,
    scope: &'a str,
    sub: &'a str,
}

#[derive(Serialize)]
struct Att<'a> {
    evd: &'a str,
    node: &'a str,
}

#[derive(Serialize)]
struct Cnf<'a> {
    jkt: &'a str,
}

/// `BASE64URL(header) || '.' || BASE64URL(payload)`, in one buffer.
fn signing_input(header: &Header<'_>, body: &Body<'_>) -> Result<String, KeyError> {
    let header = serde_json::to_vec(header).map_err(|_| KeyError::Sign)?;
    let body = serde_json::to_vec(body).map_err(|_| KeyError::Sign)?;
    let mut input = String::with_capacity((header.len() + body.len()) * 4 / 3 + 96);
    URL_SAFE_NO_PAD.encode_string(&header, &mut input);
    input.push('.');
    URL_SAFE_NO_PAD.encode_string(&body, &mut input);
    Ok(input)
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
    let header = Header {
        alg: key.alg().jws().as_str(),
        kid: key.kid(),
        typ,
    };
    let scope = claims.scope.to_string();
    let body = Body {
        act: claims.act.as_ref(),
        att: claims.att.map(|a| Att {
            evd: &a.evd,
            node: &a.node,
        }),
        // SPEC §5: one audience, a string, never an array.
        aud: claims.audience.as_str(),
        client_id: claims.subject,
        cnf: claims
            .cnf
            .filter(|_| shape == TokenShape::AccessToken)
            .map(|jkt| Cnf { jkt: jkt.as_str() }),
        crossings: claims.crossings,
        exp,
        iat,
        iss: claims.issuer,
        jti: &jti,
        lineage: claims.lineage,
        nbf: iat,
        scope: &scope,
        sub: claims.subject,
    };
    let input = signing_input(&header, &body)?;
    let signature = key.sign(input.as_bytes())?;
    Ok(Minted {
        token: jws::compact(&input, &signature),
        jti,
        exp: UnixTime::from_secs(exp),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use base64::Engine as _;
    use serde_json::json;

    use super::*;
    use crate::keys::{KeyRing, RotationPolicy, SigningAlg};

    fn ring(now: UnixTime) -> KeyRing {
        let mut ring = KeyRing::default();
        let policy = RotationPolicy {
            rotate_every: Duration::from_secs(3600),
            publish_ahead: Duration::from_secs(600),
            max_token_ttl: Duration::from_secs(3600),
        };
        ring.maintain(&[SigningAlg::ES256], &policy, now).unwrap();
        ring
    }

    fn part(token: &str, i: usize) -> Value {
        let p = token.split('.').nth(i).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
    }

    /// Every member, exactly: what the `Value`-map mint wrote before the typed one.
    #[test]
    fn the_payload_has_every_member_and_no_other() {
        let now = UnixTime::from_secs(1_800_000_000);
        let ring = ring(now);
        let key = ring.signer(SigningAlg::ES256, now).unwrap();
        let audience: Audience = "https://api.example".parse().unwrap();
        let scope: ScopeSet = "b.read a.write".parse().unwrap();
        let jkt: Jkt = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
            .parse()
            .unwrap();
        let crossings = [Crossing {
            from: "cluster-a.example".into(),
            boundary: "a-to-api".into(),
            iss: "https://broker.example".into(),
        }];
        let lineage = [TokenId::new("https://issuer.example", Some("j1"), "")];
        let att = AttestationRef {
            node: "spiffe://broker.example/enforcer/n1".into(),
            evd: "digest".into(),
        };
        let mut act = Map::new();
        act.insert("sub".into(), "spiffe://cluster-a.example/ns/ci".into());
        let claims = Claims {
            issuer: "https://broker.example",
            subject: "spiffe://cluster-a.example/ns/a/sa/api",
            audience: &audience,
            scope: &scope,
            now,
            ttl: Ttl::from_secs(300).unwrap(),
            cnf: Some(&jkt),
            act: Some(act),
            crossings: &crossings,
            att: Some(&att),
            lineage: &lineage,
        };
        let minted = mint(TokenShape::AccessToken, &claims, key).unwrap();
        assert_eq!(
            part(&minted.token, 0),
            json!({"alg": "ES256", "typ": "at+jwt", "kid": key.kid()})
        );
        let iat = 1_800_000_000u64;
        assert_eq!(
            part(&minted.token, 1),
            json!({
                "iss": "https://broker.example",
                "sub": "spiffe://cluster-a.example/ns/a/sa/api",
                "aud": "https://api.example",
                "exp": iat + 300, "iat": iat, "nbf": iat,
                "jti": minted.jti,
                "scope": "a.write b.read",
                "client_id": "spiffe://cluster-a.example/ns/a/sa/api",
                "cnf": {"jkt": jkt.as_str()},
                "act": {"sub": "spiffe://cluster-a.example/ns/ci"},
                "crossings": [{"from": "cluster-a.example", "boundary": "a-to-api",
                               "iss": "https://broker.example"}],
                "att": {"node": "spiffe://broker.example/enforcer/n1", "evd": "digest"},
                "lineage": [lineage[0].as_str()],
            })
        );
        assert_eq!(minted.exp, UnixTime::from_secs(iat + 300));
        // The signature is over exactly the two parts.
        let (input, sig) = minted.token.rsplit_once('.').unwrap();
        key.jwk()
            .verifying_key(trust_bundles::JwsAlgorithm::ES256)
            .unwrap()
            .verify(input.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).unwrap())
            .unwrap();

        // A cloud-IAM JWT is never key-bound; an empty lineage and no actor or evidence
        // leave their members out.
        let plain = Claims {
            act: None,
            att: None,
            lineage: &[],
            ..claims
        };
        let jwt = mint(TokenShape::Jwt, &plain, key).unwrap();
        assert_eq!(part(&jwt.token, 0)["typ"], "JWT");
        let body = part(&jwt.token, 1);
        for absent in ["cnf", "act", "att", "lineage"] {
            assert!(body.get(absent).is_none(), "{absent}: {body}");
        }
        assert_eq!(body.as_object().unwrap().len(), 10, "{body}");
    }
}
