//! OIDC issuers (SPEC §7): the discovery document's `issuer` must be the configured one,
//! byte for byte, and its `jwks_uri` names the keys. A JWKS becomes a bundle of JWT
//! authorities so one held-bundle policy serves both kinds of domain.

use std::time::Duration;

use serde_json::Value;
use trust_bundles::bundle::{JwtAuthority, MAX_BUNDLE_KEYS};
use trust_bundles::json::parse_strict;
use trust_bundles::{Jwk, SpiffeBundle};

/// Why a discovery document or JWKS is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    #[error("not a JSON object: {0}")]
    Json(String),
    #[error("discovery `issuer` {got:?} is not the configured {expected:?}")]
    IssuerMismatch { expected: String, got: String },
    #[error("discovery has no `jwks_uri`")]
    NoJwksUri,
    #[error("JWKS has no `keys` array")]
    NoKeys,
    #[error("JWKS lists {0} keys, over the limit")]
    TooManyKeys(usize),
    #[error("JWKS keys[{index}]: {why}")]
    Key { index: usize, why: String },
}

/// The `jwks_uri` of a discovery document whose `issuer` is exactly `expected`
/// (OpenID Connect Discovery §4.3).
pub fn jwks_uri(doc: &[u8], expected: &str) -> Result<String, OidcError> {
    let v = parse_strict(doc).map_err(|e| OidcError::Json(e.to_string()))?;
    let got = v.get("issuer").and_then(Value::as_str).unwrap_or_default();
    if got != expected {
        return Err(OidcError::IssuerMismatch {
            expected: expected.to_owned(),
            got: got.to_owned(),
        });
    }
    v.get("jwks_uri")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or(OidcError::NoJwksUri)
}

/// A JWKS as a bundle of JWT authorities. Keys for encryption (`use: enc`) or of a type we
/// do not verify are left out; a key without `kid`, with private members, a small RSA
/// modulus or a point off its curve refuses the whole set, as for SPIFFE bundles.
pub fn jwks_bundle(jwks: &[u8], refresh: Duration) -> Result<SpiffeBundle, OidcError> {
    let v = parse_strict(jwks).map_err(|e| OidcError::Json(e.to_string()))?;
    let keys = v
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(OidcError::NoKeys)?;
    if keys.len() > MAX_BUNDLE_KEYS {
        return Err(OidcError::TooManyKeys(keys.len()));
    }
    let mut authorities = Vec::new();
    for (index, k) in keys.iter().enumerate() {
        if k.get("use")
            .and_then(Value::as_str)
            .is_some_and(|u| u != "sig")
        {
            continue;
        }
        let jwk = match Jwk::from_json(k) {
            Ok(j) => j,
            Err(e) if e.is_skippable() => continue,
            Err(e) => {
                return Err(OidcError::Key {
                    index,
                    why: e.to_string(),
                });
            }
        };
        let kid = jwk.kid.clone().ok_or(OidcError::Key {
            index,
            why: "no `kid`".into(),
        })?;
        authorities.push(JwtAuthority { kid, jwk });
    }
    SpiffeBundle::new(None, refresh, Vec::new(), authorities).map_err(|e| OidcError::Key {
        index: 0,
        why: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EC: &str = r#""kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0""#;

    #[test]
    fn issuer_must_match_byte_for_byte() {
        let doc = br#"{"issuer":"https://token.actions.githubusercontent.com","jwks_uri":"https://token.actions.githubusercontent.com/.well-known/jwks"}"#;
        assert_eq!(
            jwks_uri(doc, "https://token.actions.githubusercontent.com").unwrap(),
            "https://token.actions.githubusercontent.com/.well-known/jwks"
        );
        for expected in [
            "https://token.actions.githubusercontent.com/",
            "https://TOKEN.actions.githubusercontent.com",
        ] {
            assert!(
                matches!(
                    jwks_uri(doc, expected),
                    Err(OidcError::IssuerMismatch { .. })
                ),
                "{expected}"
            );
        }
        assert_eq!(
            jwks_uri(br#"{"issuer":"x"}"#, "x"),
            Err(OidcError::NoJwksUri)
        );
        assert!(matches!(
            jwks_uri(br#"{"issuer":"x","issuer":"y"}"#, "y"),
            Err(OidcError::Json(_))
        ));
    }

    #[test]
    fn jwks_keep_signing_keys_and_refuse_bad_ones() {
        let doc = format!(
            r#"{{"keys":[{{"kid":"a",{EC}}},{{"kid":"e","use":"enc",{EC}}},{{"kid":"o","kty":"oct-x"}}]}}"#
        );
        let b = jwks_bundle(doc.as_bytes(), Duration::from_secs(300)).unwrap();
        assert_eq!(b.jwt_authorities().len(), 1);
        assert!(b.jwt_authority("a").is_some());
        let no_kid = format!(r#"{{"keys":[{{{EC}}}]}}"#);
        assert!(matches!(
            jwks_bundle(no_kid.as_bytes(), Duration::from_secs(300)),
            Err(OidcError::Key { .. })
        ));
        let private = format!(r#"{{"keys":[{{"kid":"a","d":"AAAA",{EC}}}]}}"#);
        assert!(matches!(
            jwks_bundle(private.as_bytes(), Duration::from_secs(300)),
            Err(OidcError::Key { .. })
        ));
        let dup = format!(r#"{{"keys":[{{"kid":"a",{EC}}},{{"kid":"a",{EC}}}]}}"#);
        assert!(jwks_bundle(dup.as_bytes(), Duration::from_secs(300)).is_err());
        let many = format!(
            r#"{{"keys":[{}]}}"#,
            vec![r#"{"kty":"x"}"#; 10_000].join(",")
        );
        assert_eq!(
            jwks_bundle(many.as_bytes(), Duration::from_secs(300)),
            Err(OidcError::TooManyKeys(10_000))
        );
    }
}
