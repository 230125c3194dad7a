//! Wire strings parsed into types at the edge (STYLE §5): audiences, scopes, token type
//! URIs, DPoP key thumbprints, nonces, and lifetimes.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Longest audience or resource accepted, in bytes.
pub const MAX_AUDIENCE_LEN: usize = 2048;
/// Most scope tokens one request or token may carry.
pub const MAX_SCOPES: usize = 64;
/// Longest single scope token, in bytes.
pub const MAX_SCOPE_LEN: usize = 128;

/// A value that is not acceptable for its type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("empty")]
    Empty,
    #[error("longer than {0} bytes")]
    TooLong(usize),
    #[error("contains whitespace or a control character")]
    BadChar,
    #[error("more than {MAX_SCOPES} scope tokens")]
    TooManyScopes,
    #[error("not an absolute URI without fragment")]
    NotAbsoluteUri,
    #[error("not a base64url SHA-256 thumbprint")]
    BadThumbprint,
    #[error("not a broker nonce")]
    BadNonce,
}

/// The one audience an issued token is for: an opaque string compared byte for byte (a
/// URI, `sts.amazonaws.com`, `api://AzureADTokenExchange`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Audience(String);

impl Audience {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// RFC 8707 §2: a `resource` is an absolute URI without a fragment.
    pub fn from_resource(s: &str) -> Result<Self, ValueError> {
        let aud: Self = s.parse()?;
        match url::Url::parse(s) {
            Ok(u) if u.fragment().is_none() && !u.cannot_be_a_base() => Ok(aud),
            _ => Err(ValueError::NotAbsoluteUri),
        }
    }
}

impl FromStr for Audience {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        if s.is_empty() {
            return Err(ValueError::Empty);
        }
        if s.len() > MAX_AUDIENCE_LEN {
            return Err(ValueError::TooLong(MAX_AUDIENCE_LEN));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ValueError::BadChar);
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for Audience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A set of scope tokens (RFC 6749 §3.3). Order does not matter, duplicates collapse.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ScopeSet(BTreeSet<String>);

impl ScopeSet {
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn contains(&self, scope: &str) -> bool {
        self.0.contains(scope)
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// The scopes in both sets.
    pub fn intersect(&self, other: &Self) -> Self {
        Self(self.0.intersection(&other.0).cloned().collect())
    }

    pub fn is_subset(&self, other: &Self) -> bool {
        self.0.is_subset(&other.0)
    }

    /// Builds a set from tokens, each checked like a parsed one.
    pub fn from_tokens<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Result<Self, ValueError> {
        let mut set = BTreeSet::new();
        for t in tokens {
            check_scope_token(t)?;
            set.insert(t.to_owned());
            if set.len() > MAX_SCOPES {
                return Err(ValueError::TooManyScopes);
            }
        }
        Ok(Self(set))
    }
}

/// RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
fn check_scope_token(t: &str) -> Result<(), ValueError> {
    if t.is_empty() {
        return Err(ValueError::Empty);
    }
    if t.len() > MAX_SCOPE_LEN {
        return Err(ValueError::TooLong(MAX_SCOPE_LEN));
    }
    if !t
        .bytes()
        .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
    {
        return Err(ValueError::BadChar);
    }
    Ok(())
}

impl FromStr for ScopeSet {
    type Err = ValueError;
    /// Space-separated; one space between tokens, none around them.
    fn from_str(s: &str) -> Result<Self, ValueError> {
        Self::from_tokens(s.split(' '))
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(s)?;
        }
        Ok(())
    }
}

/// RFC 8693 §3 token type identifiers. An open registry: what we do not handle parses as
/// `Other` and is refused by whoever needs a specific type (STYLE §6).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TokenTypeUri {
    AccessToken,
    IdToken,
    Jwt,
    Other(String),
}

impl TokenTypeUri {
    pub const ACCESS_TOKEN: &'static str = "urn:ietf:params:oauth:token-type:access_token";
    pub const ID_TOKEN: &'static str = "urn:ietf:params:oauth:token-type:id_token";
    pub const JWT: &'static str = "urn:ietf:params:oauth:token-type:jwt";

    pub fn parse(s: &str) -> Self {
        match s {
            Self::ACCESS_TOKEN => Self::AccessToken,
            Self::ID_TOKEN => Self::IdToken,
            Self::JWT => Self::Jwt,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::AccessToken => Self::ACCESS_TOKEN,
            Self::IdToken => Self::ID_TOKEN,
            Self::Jwt => Self::JWT,
            Self::Other(s) => s,
        }
    }
}

impl fmt::Display for TokenTypeUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An RFC 7638 SHA-256 JWK thumbprint, base64url without padding (RFC 9449 §6.1 `jkt`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Jkt(String);

impl Jkt {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn of(jwk: &trust_bundles::Jwk) -> Self {
        Self(jwk.thumbprint_sha256())
    }
}

impl FromStr for Jkt {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        // 32 bytes encode to exactly 43 base64url characters; the last carries 4 zero bits.
        use base64::Engine as _;
        match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s) {
            Ok(bytes) if bytes.len() == 32 => Ok(Self(s.to_owned())),
            _ => Err(ValueError::BadThumbprint),
        }
    }
}

impl fmt::Display for Jkt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A broker nonce: 32 bytes, base64url without padding (see [`crate::nonce`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Nonce(String);

impl Nonce {
    pub(crate) fn from_bytes(bytes: &[u8; 32]) -> Self {
        use base64::Engine as _;
        Self(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Nonce {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        use base64::Engine as _;
        match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s) {
            Ok(bytes) if bytes.len() == 32 => Ok(Self(s.to_owned())),
            _ => Err(ValueError::BadNonce),
        }
    }
}

/// A token lifetime in whole seconds, never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ttl(u64);

impl Ttl {
    pub fn from_secs(secs: u64) -> Option<Self> {
        (secs > 0).then_some(Self(secs))
    }

    pub fn from_duration(d: Duration) -> Option<Self> {
        Self::from_secs(d.as_secs())
    }

    pub fn as_secs(self) -> u64 {
        self.0
    }

    pub fn as_duration(self) -> Duration {
        Duration::from_secs(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_print() {
        let s: ScopeSet = "b a b".parse().unwrap();
        assert_eq!(s.to_string(), "a b");
        assert_eq!(s.len(), 2);
        assert_eq!("a  b".parse::<ScopeSet>(), Err(ValueError::Empty));
        assert_eq!(" a".parse::<ScopeSet>(), Err(ValueError::Empty));
        assert_eq!("a\"b".parse::<ScopeSet>(), Err(ValueError::BadChar));
        assert_eq!("a\\b".parse::<ScopeSet>(), Err(ValueError::BadChar));
        assert_eq!("é".parse::<ScopeSet>(), Err(ValueError::BadChar));
        let many: Vec<String> = (0..=MAX_SCOPES).map(|i| format!("s{i}")).collect();
        assert_eq!(
            many[..MAX_SCOPES]
                .join(" ")
                .parse::<ScopeSet>()
                .map(|s| s.len()),
            Ok(MAX_SCOPES)
        );
        assert_eq!(
            many.join(" ").parse::<ScopeSet>(),
            Err(ValueError::TooManyScopes)
        );
        assert!("x".repeat(MAX_SCOPE_LEN).parse::<ScopeSet>().is_ok());
        assert_eq!(
            "x".repeat(MAX_SCOPE_LEN + 1).parse::<ScopeSet>(),
            Err(ValueError::TooLong(MAX_SCOPE_LEN))
        );
    }

    #[test]
    fn audiences_and_resources() {
        assert!("sts.amazonaws.com".parse::<Audience>().is_ok());
        assert_eq!("a b".parse::<Audience>(), Err(ValueError::BadChar));
        assert_eq!("".parse::<Audience>(), Err(ValueError::Empty));
        assert!(Audience::from_resource("https://payments.example/api").is_ok());
        assert_eq!(
            Audience::from_resource("https://p.example/#frag"),
            Err(ValueError::NotAbsoluteUri)
        );
        assert_eq!(
            Audience::from_resource("/relative"),
            Err(ValueError::NotAbsoluteUri)
        );
        assert_eq!(
            Audience::from_resource("mailto:x@y"),
            Err(ValueError::NotAbsoluteUri)
        );
        let long = format!("https://a/{}", "p".repeat(MAX_AUDIENCE_LEN));
        assert_eq!(
            long.parse::<Audience>(),
            Err(ValueError::TooLong(MAX_AUDIENCE_LEN))
        );
    }

    #[test]
    fn token_type_uris_round_trip() {
        for s in [
            TokenTypeUri::ACCESS_TOKEN,
            TokenTypeUri::ID_TOKEN,
            TokenTypeUri::JWT,
            "urn:x",
        ] {
            assert_eq!(TokenTypeUri::parse(s).as_str(), s);
        }
        assert_eq!(
            TokenTypeUri::parse("urn:ietf:params:oauth:token-type:saml2"),
            TokenTypeUri::Other("urn:ietf:params:oauth:token-type:saml2".into())
        );
    }

    #[test]
    fn nonces_and_thumbprints() {
        let n = Nonce::from_bytes(&[7; 32]);
        assert_eq!(n.as_str().len(), 43);
        assert_eq!(n.as_str().parse::<Nonce>(), Ok(n.clone()));
        assert_eq!("short".parse::<Nonce>(), Err(ValueError::BadNonce));
        assert!(
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
                .parse::<Jkt>()
                .is_ok()
        );
        assert_eq!(
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9X".parse::<Jkt>(),
            Err(ValueError::BadThumbprint)
        );
        assert_eq!(Ttl::from_secs(0), None);
    }
}
