//! The RFC 8693 §2.1 token exchange request, parsed from form pairs into a typed value.

use crate::types::{Audience, ScopeSet, TokenTypeUri, ValueError};

/// `grant_type` of a token exchange (RFC 8693 §2.1).
pub const GRANT_TYPE_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// Longest subject or actor token accepted, in bytes (SPEC §4).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Most form parameters one request may carry, known or not.
pub const MAX_PARAMETERS: usize = 32;

/// Why a request is malformed. Which code each maps to is decided in [`crate::error`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("more than {MAX_PARAMETERS} parameters")]
    TooManyParameters,
    #[error("parameter `{0}` is repeated")]
    DuplicateParameter(&'static str),
    #[error("parameter `{0}` is missing")]
    MissingParameter(&'static str),
    #[error("grant_type {0:?} is not token exchange")]
    UnsupportedGrantType(String),
    #[error("`{param}` {value:?} is not a supported token type")]
    UnsupportedTokenType { param: &'static str, value: String },
    #[error("`actor_token` and `actor_token_type` must come together")]
    ActorTypeMismatch,
    #[error("`{param}` is {len} bytes, over the {max}-byte budget")]
    TokenTooLarge {
        param: &'static str,
        len: usize,
        max: usize,
    },
    #[error("`audience` or `resource` is repeated, or both are given")]
    MultipleTargets,
    #[error("neither `audience` nor `resource` is given")]
    NoTarget,
    #[error("`{param}` is not acceptable: {error}")]
    BadTarget {
        param: &'static str,
        error: ValueError,
    },
    #[error("`scope` is malformed: {0}")]
    BadScope(ValueError),
}

/// A subject or actor token as presented, with its declared type.
#[derive(Clone, PartialEq, Eq)]
pub struct PresentedToken {
    /// The compact JWS, surrounding whitespace trimmed. Never logged.
    token: String,
    pub token_type: TokenTypeUri,
}

impl PresentedToken {
    pub fn secret(&self) -> &str {
        &self.token
    }
}

impl std::fmt::Debug for PresentedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresentedToken")
            .field("token", &"[redacted]")
            .field("token_type", &self.token_type)
            .finish()
    }
}

/// What the caller may ask for as output (SPEC §4 `requested_token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestedTokenType {
    /// An RFC 9068 access token (the default).
    AccessToken,
    /// A plain JWT for cloud IAM federation.
    Jwt,
}

/// A well-formed token exchange request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeRequest {
    pub subject: PresentedToken,
    pub actor: Option<PresentedToken>,
    pub audience: Audience,
    pub scope: Option<ScopeSet>,
    pub requested_token_type: RequestedTokenType,
}

/// The parameters we read; anything else is ignored (RFC 6749 §3.2).
const KNOWN: [&str; 9] = [
    "grant_type",
    "subject_token",
    "subject_token_type",
    "audience",
    "resource",
    "scope",
    "requested_token_type",
    "actor_token",
    "actor_token_type",
];

impl ExchangeRequest {
    /// Parses decoded `application/x-www-form-urlencoded` pairs.
    pub fn from_form<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> Result<Self, RequestError> {
        if pairs.len() > MAX_PARAMETERS {
            return Err(RequestError::TooManyParameters);
        }
        let mut values: [Option<&str>; KNOWN.len()] = [None; KNOWN.len()];
        for (k, v) in pairs {
            let Some(i) = KNOWN.iter().position(|known| *known == k.as_ref()) else {
                continue;
            };
            let name = KNOWN.get(i).copied().unwrap_or_default();
            let slot = values.get_mut(i).ok_or(RequestError::TooManyParameters)?;
            if slot.is_some() {
                // RFC 8693 §2.1: a repeated target asks for several audiences, which we
                // never issue (SPEC §11); any other repeat is malformed.
                return Err(match name {
                    "audience" | "resource" => RequestError::MultipleTargets,
                    _ => RequestError::DuplicateParameter(name),
                });
            }
            // Kept even when empty so that `scope=&scope=x` is still a repeat; `get`
            // treats empty as omitted (RFC 6749 §3.1).
            *slot = Some(v.as_ref());
        }
        let get = |name: &str| -> Option<&str> {
            KNOWN
                .iter()
                .position(|k| *k == name)
                .and_then(|i| values.get(i).copied().flatten())
                .filter(|v| !v.is_empty())
        };

        // RFC 6749 §5.2 unsupported_grant_type.
        match get("grant_type") {
            None => return Err(RequestError::MissingParameter("grant_type")),
            Some(GRANT_TYPE_TOKEN_EXCHANGE) => {}
            Some(other) => return Err(RequestError::UnsupportedGrantType(other.to_owned())),
        }

        let subject = presented(
            get("subject_token"),
            get("subject_token_type"),
            "subject_token",
            "subject_token_type",
        )?
        .ok_or(RequestError::MissingParameter("subject_token"))?;

        let actor = presented(
            get("actor_token"),
            get("actor_token_type"),
            "actor_token",
            "actor_token_type",
        )?;

        let audience = match (get("audience"), get("resource")) {
            (Some(_), Some(_)) => return Err(RequestError::MultipleTargets),
            (None, None) => return Err(RequestError::NoTarget),
            (Some(a), None) => a.parse().map_err(|error| RequestError::BadTarget {
                param: "audience",
                error,
            })?,
            (None, Some(r)) => {
                Audience::from_resource(r).map_err(|error| RequestError::BadTarget {
                    param: "resource",
                    error,
                })?
            }
        };

        let scope = get("scope")
            .map(str::parse)
            .transpose()
            .map_err(RequestError::BadScope)?;

        let requested_token_type = match get("requested_token_type").map(TokenTypeUri::parse) {
            None | Some(TokenTypeUri::AccessToken) => RequestedTokenType::AccessToken,
            Some(TokenTypeUri::Jwt) => RequestedTokenType::Jwt,
            Some(other) => {
                return Err(RequestError::UnsupportedTokenType {
                    param: "requested_token_type",
                    value: other.as_str().to_owned(),
                });
            }
        };

        Ok(Self {
            subject,
            actor,
            audience,
            scope,
            requested_token_type,
        })
    }
}

fn presented(
    token: Option<&str>,
    token_type: Option<&str>,
    token_param: &'static str,
    type_param: &'static str,
) -> Result<Option<PresentedToken>, RequestError> {
    let (token, token_type) = match (token, token_type) {
        (None, None) => return Ok(None),
        (Some(t), Some(tt)) => (t, tt),
        (None, Some(_)) if token_param == "subject_token" => {
            return Err(RequestError::MissingParameter(token_param));
        }
        (Some(_), None) if token_param == "subject_token" => {
            return Err(RequestError::MissingParameter(type_param));
        }
        _ => return Err(RequestError::ActorTypeMismatch),
    };
    // SPEC §4: clients that read the token from a file send its newline; trim.
    let token = token.trim();
    if token.len() > MAX_TOKEN_BYTES {
        return Err(RequestError::TokenTooLarge {
            param: token_param,
            len: token.len(),
            max: MAX_TOKEN_BYTES,
        });
    }
    if token.is_empty() {
        return Err(RequestError::MissingParameter(token_param));
    }
    let token_type = match TokenTypeUri::parse(token_type) {
        // We only exchange JWTs: all three types name one here (SPEC §4).
        t @ (TokenTypeUri::Jwt | TokenTypeUri::IdToken | TokenTypeUri::AccessToken) => t,
        TokenTypeUri::Other(value) => {
            return Err(RequestError::UnsupportedTokenType {
                param: type_param,
                value,
            });
        }
    };
    Ok(Some(PresentedToken {
        token: token.to_owned(),
        token_type,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

    fn base() -> Vec<(&'static str, String)> {
        vec![
            ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE.into()),
            ("subject_token", "a.b.c\n".into()),
            ("subject_token_type", JWT.into()),
            ("audience", "https://payments.example/api".into()),
        ]
    }

    fn with(
        mut pairs: Vec<(&'static str, String)>,
        k: &'static str,
        v: &str,
    ) -> Vec<(&'static str, String)> {
        pairs.push((k, v.into()));
        pairs
    }

    fn without(pairs: Vec<(&'static str, String)>, k: &str) -> Vec<(&'static str, String)> {
        pairs.into_iter().filter(|(n, _)| *n != k).collect()
    }

    #[test]
    fn minimal_request() {
        let r = ExchangeRequest::from_form(&base()).unwrap();
        assert_eq!(r.subject.secret(), "a.b.c");
        assert_eq!(r.subject.token_type, TokenTypeUri::Jwt);
        assert_eq!(r.audience.as_str(), "https://payments.example/api");
        assert_eq!(r.scope, None);
        assert_eq!(r.actor, None);
        assert_eq!(r.requested_token_type, RequestedTokenType::AccessToken);
        assert!(!format!("{r:?}").contains("a.b.c"));
    }

    #[test]
    fn unknown_parameters_are_ignored_and_empty_ones_omitted() {
        let r =
            ExchangeRequest::from_form(&with(with(base(), "client_id", "x"), "scope", "")).unwrap();
        assert_eq!(r.scope, None);
    }

    #[test]
    fn duplicates() {
        for p in ["grant_type", "subject_token", "subject_token_type"] {
            let pairs = base();
            let dup = pairs.iter().find(|(k, _)| *k == p).unwrap().clone();
            let pairs = with(pairs, dup.0, &dup.1);
            assert_eq!(
                ExchangeRequest::from_form(&pairs),
                Err(RequestError::DuplicateParameter(p))
            );
        }
        let r = with(with(base(), "scope", "a"), "scope", "a");
        assert_eq!(
            ExchangeRequest::from_form(&r),
            Err(RequestError::DuplicateParameter("scope"))
        );
        let r = with(with(base(), "scope", ""), "scope", "a");
        assert_eq!(
            ExchangeRequest::from_form(&r),
            Err(RequestError::DuplicateParameter("scope"))
        );
        let r = with(base(), "audience", "https://other.example");
        assert_eq!(
            ExchangeRequest::from_form(&r),
            Err(RequestError::MultipleTargets)
        );
        let r = with(base(), "resource", "https://other.example");
        assert_eq!(
            ExchangeRequest::from_form(&r),
            Err(RequestError::MultipleTargets)
        );
        let r = with(
            with(without(base(), "audience"), "resource", "https://a.example"),
            "resource",
            "https://b.example",
        );
        assert_eq!(
            ExchangeRequest::from_form(&r),
            Err(RequestError::MultipleTargets)
        );
    }

    #[test]
    fn grant_type_and_missing_parameters() {
        assert_eq!(
            ExchangeRequest::from_form(&without(base(), "grant_type")),
            Err(RequestError::MissingParameter("grant_type"))
        );
        let mut r = without(base(), "grant_type");
        r.push(("grant_type", "client_credentials".into()));
        assert_eq!(
            ExchangeRequest::from_form(&r),
            Err(RequestError::UnsupportedGrantType(
                "client_credentials".into()
            ))
        );
        assert_eq!(
            ExchangeRequest::from_form(&without(base(), "subject_token")),
            Err(RequestError::MissingParameter("subject_token"))
        );
        assert_eq!(
            ExchangeRequest::from_form(&without(base(), "subject_token_type")),
            Err(RequestError::MissingParameter("subject_token_type"))
        );
        assert_eq!(
            ExchangeRequest::from_form(&without(base(), "audience")),
            Err(RequestError::NoTarget)
        );
        let mut r = without(base(), "subject_token");
        r.push(("subject_token", "  \n".into()));
        assert_eq!(
            ExchangeRequest::from_form(&r),
            Err(RequestError::MissingParameter("subject_token"))
        );
    }

    #[test]
    fn token_types() {
        let mut r = without(base(), "subject_token_type");
        r.push((
            "subject_token_type",
            "urn:ietf:params:oauth:token-type:saml2".into(),
        ));
        assert!(matches!(
            ExchangeRequest::from_form(&r),
            Err(RequestError::UnsupportedTokenType {
                param: "subject_token_type",
                ..
            })
        ));
        let r = with(
            base(),
            "requested_token_type",
            "urn:ietf:params:oauth:token-type:refresh_token",
        );
        assert!(matches!(
            ExchangeRequest::from_form(&r),
            Err(RequestError::UnsupportedTokenType {
                param: "requested_token_type",
                ..
            })
        ));
        let r = with(base(), "requested_token_type", JWT);
        assert_eq!(
            ExchangeRequest::from_form(&r).unwrap().requested_token_type,
            RequestedTokenType::Jwt
        );
    }

    #[test]
    fn actor_token_needs_its_type_and_vice_versa() {
        assert_eq!(
            ExchangeRequest::from_form(&with(base(), "actor_token", "x.y.z")),
            Err(RequestError::ActorTypeMismatch)
        );
        assert_eq!(
            ExchangeRequest::from_form(&with(base(), "actor_token_type", JWT)),
            Err(RequestError::ActorTypeMismatch)
        );
        let r = with(
            with(base(), "actor_token", "x.y.z"),
            "actor_token_type",
            JWT,
        );
        assert_eq!(
            ExchangeRequest::from_form(&r)
                .unwrap()
                .actor
                .unwrap()
                .secret(),
            "x.y.z"
        );
    }

    #[test]
    fn resource_must_be_absolute_without_fragment() {
        let r = with(
            without(base(), "audience"),
            "resource",
            "https://a.example/x#y",
        );
        assert!(matches!(
            ExchangeRequest::from_form(&r),
            Err(RequestError::BadTarget {
                param: "resource",
                error: ValueError::NotAbsoluteUri
            })
        ));
        let r = with(
            without(base(), "audience"),
            "resource",
            "https://a.example/x",
        );
        assert_eq!(
            ExchangeRequest::from_form(&r).unwrap().audience.as_str(),
            "https://a.example/x"
        );
    }

    #[test]
    fn budgets_are_exact() {
        let mut r = without(base(), "subject_token");
        r.push(("subject_token", "a".repeat(MAX_TOKEN_BYTES)));
        assert!(ExchangeRequest::from_form(&r).is_ok());
        let mut r = without(base(), "subject_token");
        r.push(("subject_token", "a".repeat(MAX_TOKEN_BYTES + 1)));
        assert!(matches!(
            ExchangeRequest::from_form(&r),
            Err(RequestError::TokenTooLarge { .. })
        ));
        let mut r = base();
        while r.len() < MAX_PARAMETERS {
            r.push(("x", String::new()));
        }
        assert!(ExchangeRequest::from_form(&r).is_ok());
        r.push(("x", String::new()));
        assert_eq!(
            ExchangeRequest::from_form(&r),
            Err(RequestError::TooManyParameters)
        );
    }

    #[test]
    fn malformed_scope() {
        let r = with(base(), "scope", "a  b");
        assert!(matches!(
            ExchangeRequest::from_form(&r),
            Err(RequestError::BadScope(_))
        ));
    }
}
