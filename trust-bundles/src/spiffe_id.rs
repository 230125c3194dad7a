//! SPIFFE IDs and trust domain names, parsed exactly as the SPIFFE-ID standard (§2) says.
//!
//! The grammar is narrower than RFC 3986: `spiffe://` (lowercase), a trust domain of
//! `[a-z0-9._-]`, then zero or more `/segment` with segments of `[a-zA-Z0-9._-]`. Anything
//! else — uppercase in the trust domain, userinfo, a port, a query, a fragment,
//! percent-encoding, empty or dot segments, a trailing slash — is refused, never normalised.

use std::fmt;
use std::str::FromStr;

/// The scheme and authority separator every SPIFFE ID starts with.
const SCHEME_PREFIX: &str = "spiffe://";

/// SPIFFE-ID §2.3: "SPIFFE implementations MUST support SPIFFE URIs up to 2048 bytes".
/// We take it as the upper bound as well: longer input is refused before any parsing.
pub const MAX_SPIFFE_ID_LEN: usize = 2048;

/// SPIFFE-ID §2.1: the trust domain name is at most 255 bytes.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Why a string is not a SPIFFE ID or a trust domain name.
///
/// Variants name the first rule broken, scanning left to right, so one input always
/// yields the same error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("empty string")]
    Empty,
    #[error("{len} bytes is longer than the {max}-byte limit")]
    TooLong { len: usize, max: usize },
    #[error("scheme is missing or is not `spiffe` (lowercase)")]
    WrongScheme,
    #[error("trust domain is missing")]
    MissingTrustDomain,
    #[error("trust domain is longer than {MAX_TRUST_DOMAIN_LEN} bytes")]
    TrustDomainTooLong,
    #[error(
        "trust domain character {ch:?} at byte {at} is not one of [a-z0-9._-] \
         (uppercase, userinfo, ports, queries, fragments and percent-encoding are refused)"
    )]
    BadTrustDomainChar { ch: char, at: usize },
    #[error(
        "path character {ch:?} at byte {at} is not one of [a-zA-Z0-9._-] \
         (queries, fragments and percent-encoding are refused)"
    )]
    BadPathChar { ch: char, at: usize },
    #[error("path has an empty segment")]
    EmptySegment,
    #[error("path has a `.` or `..` segment")]
    DotSegment,
    #[error("path ends with `/`")]
    TrailingSlash,
}

/// A SPIFFE trust domain name, such as `example.org` (no scheme).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// The bare name, e.g. `example.org`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `spiffe://<name>`, the trust domain's own SPIFFE ID.
    pub fn id(&self) -> SpiffeId {
        SpiffeId {
            path_start: SCHEME_PREFIX.len() + self.0.len(),
            uri: format!("{SCHEME_PREFIX}{}", self.0),
        }
    }
}

/// Checks a trust domain name; `offset` is where it starts in the string being parsed, so
/// error positions point into the caller's input.
fn check_trust_domain(name: &str, offset: usize) -> Result<(), SpiffeIdError> {
    if name.is_empty() {
        return Err(SpiffeIdError::MissingTrustDomain);
    }
    for (i, ch) in name.char_indices() {
        if !matches!(ch, 'a'..='z' | '0'..='9' | '.' | '-' | '_') {
            return Err(SpiffeIdError::BadTrustDomainChar { ch, at: offset + i });
        }
    }
    if name.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong);
    }
    Ok(())
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;

    /// Parses a bare trust domain name. A full SPIFFE ID is refused here: take
    /// [`SpiffeId::trust_domain`] of a parsed ID instead.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        check_trust_domain(s, 0)?;
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A SPIFFE ID: `spiffe://<trust domain><path>`, the path possibly empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    uri: String,
    // INVARIANT: `uri[..path_start]` is `spiffe://<valid trust domain>` and
    // `uri[path_start..]` is empty or a valid path; `path_start` is a char boundary.
    path_start: usize,
}

impl SpiffeId {
    /// Builds `spiffe://<td><path>` from parts; `path` is empty or starts with `/`.
    pub fn from_parts(trust_domain: &TrustDomain, path: &str) -> Result<Self, SpiffeIdError> {
        format!("{SCHEME_PREFIX}{trust_domain}{path}").parse()
    }

    /// The whole ID as a URI string.
    pub fn as_str(&self) -> &str {
        &self.uri
    }

    /// The trust domain this ID belongs to.
    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.trust_domain_str().to_owned())
    }

    /// The trust domain name as a borrowed string.
    pub fn trust_domain_str(&self) -> &str {
        self.uri
            .get(SCHEME_PREFIX.len()..self.path_start)
            .unwrap_or_default()
    }

    /// Whether this ID belongs to `td`.
    pub fn is_member_of(&self, td: &TrustDomain) -> bool {
        self.trust_domain_str() == td.as_str()
    }

    /// The path, empty or starting with `/`.
    pub fn path(&self) -> &str {
        self.uri.get(self.path_start..).unwrap_or_default()
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if s.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong {
                len: s.len(),
                max: MAX_SPIFFE_ID_LEN,
            });
        }
        // SPIFFE-ID §2: the scheme is `spiffe`. §2.4 calls scheme and trust domain
        // case-insensitive while §2.1 requires a lowercase trust domain; like go-spiffe we
        // refuse any uppercase instead of folding it, so one identity has one spelling and
        // string comparison of IDs stays sound.
        let rest = s
            .strip_prefix(SCHEME_PREFIX)
            .ok_or(SpiffeIdError::WrongScheme)?;
        let td_len = rest.find('/').unwrap_or(rest.len());
        let (td, path) = rest.split_at(td_len);
        check_trust_domain(td, SCHEME_PREFIX.len())?;
        let path_start = SCHEME_PREFIX.len() + td_len;
        check_path(path, path_start)?;
        Ok(Self {
            uri: s.to_owned(),
            path_start,
        })
    }
}

/// SPIFFE-ID §2.2: segments of `[a-zA-Z0-9._-]`, none empty, `.` or `..`, no trailing `/`.
fn check_path(path: &str, offset: usize) -> Result<(), SpiffeIdError> {
    if path.is_empty() {
        return Ok(());
    }
    // INVARIANT: a non-empty path starts with '/', because the trust domain ends at the
    // first '/'.
    let mut seg_start = 1;
    for (i, ch) in path.char_indices().skip(1) {
        match ch {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => {}
            '/' => {
                check_segment(path.get(seg_start..i).unwrap_or_default())?;
                seg_start = i + 1;
            }
            _ => return Err(SpiffeIdError::BadPathChar { ch, at: offset + i }),
        }
    }
    if seg_start == path.len() {
        // The path ends with '/': a lone "/" and "/a/" alike.
        return Err(SpiffeIdError::TrailingSlash);
    }
    check_segment(path.get(seg_start..).unwrap_or_default())
}

fn check_segment(segment: &str) -> Result<(), SpiffeIdError> {
    match segment {
        "" => Err(SpiffeIdError::EmptySegment),
        "." | ".." => Err(SpiffeIdError::DotSegment),
        _ => Ok(()),
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

macro_rules! serde_as_string {
    ($ty:ty, $what:literal) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$ty, E> {
                        v.parse().map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

serde_as_string!(TrustDomain, "a SPIFFE trust domain name");
serde_as_string!(SpiffeId, "a SPIFFE ID");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip() {
        let id: SpiffeId = "spiffe://example.org/ns/prod/sa/api".parse().unwrap();
        assert_eq!(id.trust_domain_str(), "example.org");
        assert_eq!(id.path(), "/ns/prod/sa/api");
        assert_eq!(id.to_string(), "spiffe://example.org/ns/prod/sa/api");
        let td: TrustDomain = "example.org".parse().unwrap();
        assert!(id.is_member_of(&td));
        assert_eq!(SpiffeId::from_parts(&td, "/ns/prod/sa/api").unwrap(), id);
        assert_eq!(td.id().to_string(), "spiffe://example.org");
        assert_eq!(td.id().path(), "");
    }

    #[test]
    fn serde_as_plain_strings() {
        let id: SpiffeId = serde_json::from_str("\"spiffe://a.b/c\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"spiffe://a.b/c\"");
        assert!(serde_json::from_str::<SpiffeId>("\"spiffe://A.b/c\"").is_err());
        let td: TrustDomain = serde_json::from_str("\"a.b\"").unwrap();
        assert_eq!(serde_json::to_string(&td).unwrap(), "\"a.b\"");
        assert!(serde_json::from_str::<TrustDomain>("\"spiffe://a.b\"").is_err());
    }

    #[test]
    fn length_limits_are_exact() {
        let td = "a".repeat(MAX_TRUST_DOMAIN_LEN);
        assert!(td.parse::<TrustDomain>().is_ok());
        let too_long = "a".repeat(MAX_TRUST_DOMAIN_LEN + 1);
        assert_eq!(
            too_long.parse::<TrustDomain>(),
            Err(SpiffeIdError::TrustDomainTooLong)
        );
        let head = format!("spiffe://{td}/");
        let fill = MAX_SPIFFE_ID_LEN - head.len();
        let at_limit = format!("{head}{}", "p".repeat(fill));
        assert_eq!(at_limit.len(), MAX_SPIFFE_ID_LEN);
        assert!(at_limit.parse::<SpiffeId>().is_ok());
        let over = format!("{at_limit}p");
        assert_eq!(
            over.parse::<SpiffeId>(),
            Err(SpiffeIdError::TooLong {
                len: MAX_SPIFFE_ID_LEN + 1,
                max: MAX_SPIFFE_ID_LEN
            })
        );
    }
}
