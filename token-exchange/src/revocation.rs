//! Revocation (SPEC §8): by token, by subject, by node and by DPoP key.
//!
//! Revoking a token revokes every token minted from it. Each issued token carries the ids
//! of the tokens it was minted from (`lineage`, oldest first), so a check is one lookup of
//! a handful of keys and minting writes nothing.
//!
//! A token revocation covers that token for ever (until it has expired). A subject, node or
//! key revocation covers the tokens *issued* (`iat`) at or before it: the workload whose
//! process exited, or the node that was compromised, can be re-attested later and get new
//! tokens; what was issued before is dead. A token without `iat` is treated as issued
//! before any such revocation (fail closed).

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use trust_bundles::UnixTime;

use crate::state::{RevocationStore, StateError};

/// Most ancestors a token may name. Each exchange adds one, so this bounds chains the way
/// `max_hops` bounds crossings, and it bounds the lookups a check makes.
pub const MAX_LINEAGE: usize = 16;

/// The stable id of a token: SHA-256 over its issuer and `jti`, or over the whole token
/// when it has no `jti`; base64url. Never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct TokenId(String);

impl TokenId {
    /// `namespace` is the token's `iss`, or for JWT-SVIDs without one the `spiffe://`
    /// trust domain of its `sub`.
    pub fn new(namespace: &str, jti: Option<&str>, compact: &str) -> Self {
        let input = match jti {
            Some(jti) => format!("jti\0{namespace}\0{jti}"),
            None => format!("jws\0{compact}"),
        };
        Self(URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, input.as_bytes())))
    }

    /// An id as carried in a `lineage` claim. Only the shape is checked.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 43 && URL_SAFE_NO_PAD.decode(s).is_ok_and(|b| b.len() == 32))
            .then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TokenId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a revocation names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One token, and every token minted from it.
    Token(TokenId),
    /// Tokens whose `sub` is this federated subject.
    Subject(String),
    /// Tokens whose `att.node` is this enforcer.
    Node(String),
    /// Tokens bound (`cnf.jkt`) to this key.
    Jkt(String),
}

impl Target {
    /// The key this target is stored under: a digest, so that keys have one length and
    /// no subject name ever appears in the backend.
    pub fn storage_key(&self) -> String {
        let (kind, value) = match self {
            Self::Token(id) => ("tok", id.as_str()),
            Self::Subject(s) => ("sub", s.as_str()),
            Self::Node(n) => ("node", n.as_str()),
            Self::Jkt(j) => ("jkt", j.as_str()),
        };
        let d = digest::digest(&digest::SHA256, format!("{kind}\0{value}").as_bytes());
        format!("{kind}:{}", URL_SAFE_NO_PAD.encode(d))
    }

    /// `true` when a revocation of this target at `revoked_at` covers a token issued at
    /// `iat`.
    fn covers(&self, revoked_at: UnixTime, iat: Option<UnixTime>) -> bool {
        match self {
            Self::Token(_) => true,
            Self::Subject(_) | Self::Node(_) | Self::Jkt(_) => iat.is_none_or(|i| i <= revoked_at),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Token(_) => "token",
            Self::Subject(_) => "subject",
            Self::Node(_) => "node",
            Self::Jkt(_) => "jkt",
        }
    }
}

/// What a token says about itself that a revocation can name.
#[derive(Debug, Clone)]
pub struct TokenFacts<'a> {
    pub id: &'a TokenId,
    pub lineage: &'a [TokenId],
    pub subject: &'a str,
    pub node: Option<&'a str>,
    pub jkt: Option<&'a str>,
    pub iat: Option<UnixTime>,
}

/// Which revocation covers the token, if any: one round trip to the store.
pub async fn check(
    store: &dyn RevocationStore,
    facts: &TokenFacts<'_>,
    now: UnixTime,
) -> Result<Option<Target>, StateError> {
    let mut targets: Vec<Target> = std::iter::once(facts.id)
        .chain(facts.lineage)
        .map(|id| Target::Token(id.clone()))
        .collect();
    targets.push(Target::Subject(facts.subject.to_owned()));
    targets.extend(facts.node.map(|n| Target::Node(n.to_owned())));
    targets.extend(facts.jkt.map(|j| Target::Jkt(j.to_owned())));
    let keys: Vec<String> = targets.iter().map(Target::storage_key).collect();
    let found = store.revoked_at(&keys, now).await?;
    if found.len() != keys.len() {
        return Err(StateError(
            "revocation lookup answered the wrong count".into(),
        ));
    }
    Ok(targets
        .into_iter()
        .zip(found)
        .find(|(t, at)| at.is_some_and(|at| t.covers(at, facts.iat)))
        .map(|(t, _)| t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryRevocations;

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => unreachable!("memory revocations are always ready"),
        }
    }

    fn t(s: u64) -> UnixTime {
        UnixTime::from_secs(s)
    }

    fn revoke(store: &MemoryRevocations, target: &Target, at: u64) {
        let key = target.storage_key();
        #[allow(clippy::unwrap_used, reason = "test")]
        run(store.revoke(&key, t(at), t(10_000))).unwrap();
    }

    #[test]
    fn subject_node_and_key_revocations_cover_tokens_issued_up_to_then() {
        let store = MemoryRevocations::new();
        let id = TokenId::new("https://b", Some("j1"), "");
        let facts = |iat: Option<u64>| TokenFacts {
            id: &id,
            lineage: &[],
            subject: "spiffe://a/x",
            node: Some("spiffe://b/enforcer/n1"),
            jkt: Some("k"),
            iat: iat.map(t),
        };
        for target in [
            Target::Subject("spiffe://a/x".into()),
            Target::Node("spiffe://b/enforcer/n1".into()),
            Target::Jkt("k".into()),
        ] {
            let store = MemoryRevocations::new();
            revoke(&store, &target, 100);
            let found = |iat| run(check(&store, &facts(iat), t(150))).ok().flatten();
            assert_eq!(found(Some(99)), Some(target.clone()));
            assert_eq!(found(Some(100)), Some(target.clone()));
            assert_eq!(found(Some(101)), None, "issued after the revocation");
            assert_eq!(found(None), Some(target.clone()), "no iat: fail closed");
        }
        // Nothing revoked: nothing covers.
        assert_eq!(run(check(&store, &facts(Some(1)), t(150))), Ok(None));
    }

    #[test]
    fn a_token_revocation_covers_it_and_its_descendants_whenever_issued() {
        let store = MemoryRevocations::new();
        let parent = TokenId::new("https://b", Some("p"), "");
        let child = TokenId::new("https://b", Some("c"), "");
        let other = TokenId::new("https://b", Some("o"), "");
        revoke(&store, &Target::Token(parent.clone()), 100);
        let facts = |id, lineage| TokenFacts {
            id,
            lineage,
            subject: "s",
            node: None,
            jkt: None,
            iat: Some(t(500)),
        };
        let lineage = [parent.clone()];
        assert!(matches!(
            run(check(&store, &facts(&child, &lineage), t(600))),
            Ok(Some(Target::Token(_)))
        ));
        assert!(matches!(
            run(check(&store, &facts(&parent, &[]), t(600))),
            Ok(Some(Target::Token(_)))
        ));
        assert_eq!(run(check(&store, &facts(&other, &[]), t(600))), Ok(None));
        // Kept until 10,000; forgotten after.
        assert_eq!(
            run(check(&store, &facts(&parent, &[]), t(10_000))),
            Ok(None)
        );
    }

    #[test]
    fn ids_are_namespaced_and_parsed_strictly() {
        let a = TokenId::new("https://a", Some("1"), "x");
        assert_ne!(a, TokenId::new("https://b", Some("1"), "x"));
        assert_ne!(a, TokenId::new("https://a", None, "x"));
        assert_eq!(TokenId::parse(a.as_str()), Some(a.clone()));
        assert_eq!(TokenId::parse("short"), None);
        assert_eq!(TokenId::parse(&"!".repeat(43)), None);
        // Storage keys never contain the subject.
        let key = Target::Subject("spiffe://secret.example/x".into()).storage_key();
        assert!(!key.contains("secret"), "{key}");
    }
}
