//! Boundary selection and downscoping, with property tests that nothing ever widens.

use std::time::Duration;

use proptest::prelude::*;
use serde_json::Map;
use token_exchange::policy::{
    AttestationMode, CrossingContext, Policy, PolicyError, TokenLimits, downscope,
};
use token_exchange::subject::{DomainKind, ValidatedToken};
use token_exchange::types::{Audience, ScopeSet};
use trust_bundles::UnixTime;

use crate::support::*;

const UNIVERSE: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

fn subject(domain: &str, sub: &str, scope: Option<ScopeSet>, exp: u64) -> ValidatedToken {
    ValidatedToken {
        domain: domain.into(),
        kind: DomainKind::Spiffe,
        subject: sub.into(),
        jti: None,
        iat: Some(UnixTime::from_secs(T0)),
        exp: UnixTime::from_secs(exp),
        scope,
        crossings: Vec::new(),
        cnf_jkt: None,
        may_act: None,
        act: None,
        claims: Map::new(),
        token_id: token_exchange::revocation::TokenId::new(domain, Some(sub), ""),
        lineage: Vec::new(),
        node: None,
    }
}

fn limits() -> TokenLimits {
    TokenLimits {
        default_ttl: Duration::from_secs(300),
        max_ttl: Duration::from_secs(3600),
    }
}

#[test]
fn first_admitting_rule_with_the_audience_wins() {
    let mut narrow = boundary(
        "narrow",
        CLUSTER,
        &["spiffe://cluster-a.example/ns/x/*"],
        "a",
    );
    narrow.audiences = vec!["https://other.example".into()];
    let wide = boundary("wide", CLUSTER, &["spiffe://cluster-a.example/**"], "a b");
    let policy = Policy::new(vec![narrow, wide]);
    let s = subject(CLUSTER, "spiffe://cluster-a.example/ns/x/y", None, T0 + 600);
    let payments: Audience = PAYMENTS.parse().unwrap();
    assert_eq!(policy.select(&s, &payments).unwrap().name, "wide");
    let other: Audience = "https://other.example".parse().unwrap();
    assert_eq!(policy.select(&s, &other).unwrap().name, "narrow");
    let nowhere: Audience = "https://nowhere.example".parse().unwrap();
    assert_eq!(
        policy.select(&s, &nowhere).unwrap_err(),
        PolicyError::AudienceNotAllowed {
            boundary: "narrow".into()
        }
    );
    let stranger = subject("other.example", "spiffe://other.example/x", None, T0 + 600);
    assert_eq!(
        policy.select(&stranger, &payments).unwrap_err(),
        PolicyError::NoBoundary
    );
}

#[test]
fn claims_globs_must_all_match() {
    let w = World::new();
    assert!(
        w.simple(&w.github_token(serde_json::json!({})), PAYMENTS, None)
            .result
            .is_ok()
    );
    for (k, v) in [("repository", "evil/app"), ("repository", "acme/app/extra")] {
        let t = w.github_token(serde_json::json!({k: v}));
        assert_eq!(
            World::code(&w.simple(&t, PAYMENTS, None)),
            "invalid_request",
            "{k}={v}"
        );
    }
    let t = w.github_token(serde_json::json!({"repository": 7}));
    assert_eq!(
        World::code(&w.simple(&t, PAYMENTS, None)),
        "invalid_request"
    );
}

#[test]
fn ttl_is_the_smallest_cap() {
    let b = boundary("b", CLUSTER, &["**"], "a");
    let ctx = |now| CrossingContext {
        asked: None,
        attested: true,
        limits: limits(),
        issuer: ISSUER,
        now: UnixTime::from_secs(now),
    };
    // Boundary cap (600) below the subject's remaining life.
    let d = downscope(&subject(CLUSTER, "x", None, T0 + 10_000), &b, &ctx(T0)).unwrap();
    assert_eq!(d.ttl.as_secs(), 600);
    // Subject's remaining life below the cap.
    let d = downscope(&subject(CLUSTER, "x", None, T0 + 90), &b, &ctx(T0)).unwrap();
    assert_eq!(d.ttl.as_secs(), 90);
    // No life left.
    assert_eq!(
        downscope(&subject(CLUSTER, "x", None, T0), &b, &ctx(T0)).unwrap_err(),
        PolicyError::NoLifetime
    );
    // Without a boundary cap, default_ttl applies.
    let mut open = b.clone();
    open.max_ttl = None;
    assert_eq!(
        downscope(&subject(CLUSTER, "x", None, T0 + 10_000), &open, &ctx(T0))
            .unwrap()
            .ttl
            .as_secs(),
        300
    );
}

#[test]
fn max_hops_counts_crossings() {
    let mut b = boundary("b", CLUSTER, &["**"], "a");
    b.max_hops = 1;
    let ctx = CrossingContext {
        asked: None,
        attested: true,
        limits: limits(),
        issuer: ISSUER,
        now: UnixTime::from_secs(T0),
    };
    let s = subject(CLUSTER, "x", None, T0 + 600);
    let d = downscope(&s, &b, &ctx).unwrap();
    assert_eq!(d.crossings.len(), 1);
    let mut again = s;
    again.crossings = d.crossings;
    assert_eq!(
        downscope(&again, &b, &ctx).unwrap_err(),
        PolicyError::MaxHops {
            boundary: "b".into(),
            hops: 2,
            max: 1
        }
    );
}

fn arb_scope() -> impl Strategy<Value = ScopeSet> {
    prop::sample::subsequence(UNIVERSE.to_vec(), 0..=UNIVERSE.len())
        .prop_map(|v| ScopeSet::from_tokens(v).unwrap())
}

fn arb_mode() -> impl Strategy<Value = AttestationMode> {
    prop_oneof![
        Just(AttestationMode::Required),
        Just(AttestationMode::Optional),
        Just(AttestationMode::None)
    ]
}

prop_compose! {
    fn arb_boundary()(scopes in arb_scope(), unattested in arb_scope(), max_ttl in proptest::option::of(1u64..7200),
                      mode in arb_mode(), hops in 1usize..6) -> token_exchange::policy::Boundary {
        let mut b = boundary("b", CLUSTER, &["**"], "a");
        b.scopes = scopes;
        b.unattested_scopes = unattested;
        b.max_ttl = max_ttl.map(Duration::from_secs);
        b.attestation = mode;
        b.max_hops = hops;
        b
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// One crossing: the grant is inside every bound and the lifetime under every cap.
    #[test]
    fn one_crossing_never_widens(
        b in arb_boundary(),
        own in proptest::option::of(arb_scope()),
        asked in proptest::option::of(arb_scope()),
        remaining in 0u64..20_000,
        attested in any::<bool>(),
        default_ttl in 1u64..4000,
        max_ttl in 1u64..4000,
    ) {
        let limits = TokenLimits { default_ttl: Duration::from_secs(default_ttl), max_ttl: Duration::from_secs(max_ttl) };
        let s = subject(CLUSTER, "x", own.clone(), T0 + remaining);
        let ctx = CrossingContext { asked: asked.as_ref(), attested, limits, issuer: ISSUER, now: UnixTime::from_secs(T0) };
        match downscope(&s, &b, &ctx) {
            Ok(d) => {
                prop_assert!(!d.scope.is_empty());
                prop_assert!(d.scope.is_subset(&b.scopes));
                if let Some(own) = &own { prop_assert!(d.scope.is_subset(own)); }
                if let Some(asked) = &asked { prop_assert!(d.scope.is_subset(asked)); }
                if !attested && b.attestation != AttestationMode::None {
                    prop_assert!(d.scope.is_subset(&b.unattested_scopes));
                }
                let ttl = d.ttl.as_secs();
                prop_assert!(ttl >= 1);
                prop_assert!(ttl <= remaining);
                prop_assert!(ttl <= max_ttl);
                prop_assert!(ttl <= b.max_ttl.map_or(default_ttl, |d| d.as_secs()));
                prop_assert_eq!(d.crossings.len(), 1);
            }
            Err(PolicyError::NoScope { .. }) => {
                let mut possible = b.scopes.clone();
                if let Some(own) = &own { possible = possible.intersect(own); }
                if let Some(asked) = &asked { possible = possible.intersect(asked); }
                if !attested && b.attestation != AttestationMode::None {
                    possible = possible.intersect(&b.unattested_scopes);
                }
                prop_assert!(possible.is_empty());
            }
            Err(PolicyError::NoLifetime) => prop_assert_eq!(remaining, 0),
            Err(e) => prop_assert!(false, "unexpected {e:?}"),
        }
    }

    /// A chain of crossings through random boundaries: scope and expiry only shrink,
    /// crossings grow by one each time, and max_hops stops the chain.
    #[test]
    fn chains_never_widen(
        steps in prop::collection::vec((arb_boundary(), proptest::option::of(arb_scope()), 0u64..300), 1..8),
        start_scope in proptest::option::of(arb_scope()),
        start_life in 1u64..10_000,
    ) {
        let mut s = subject(CLUSTER, "x", start_scope, T0 + start_life);
        let mut now = T0;
        for (i, (b, asked, wait)) in steps.into_iter().enumerate() {
            now += wait;
            let ctx = CrossingContext { asked: asked.as_ref(), attested: true, limits: limits(), issuer: ISSUER, now: UnixTime::from_secs(now) };
            let before_scope = s.scope.clone();
            let before_exp = s.exp;
            match downscope(&s, &b, &ctx) {
                Ok(d) => {
                    if let Some(prev) = &before_scope { prop_assert!(d.scope.is_subset(prev)); }
                    let exp = UnixTime::from_secs(now + d.ttl.as_secs());
                    prop_assert!(exp <= before_exp);
                    prop_assert_eq!(d.crossings.len(), i + 1);
                    prop_assert!(d.crossings.len() <= b.max_hops);
                    s.scope = Some(d.scope);
                    s.exp = exp;
                    s.crossings = d.crossings;
                }
                Err(PolicyError::MaxHops { hops, max, .. }) => { prop_assert!(hops > max); break; }
                Err(PolicyError::NoScope { .. } | PolicyError::NoLifetime) => break,
                Err(e) => prop_assert!(false, "unexpected {e:?}"),
            }
        }
    }
}
