//! DPoP proofs (RFC 9449 §4.3) checked in isolation, then through the exchange.

use std::time::Duration;

use serde_json::json;
use token_exchange::ExchangeError;
use token_exchange::dpop::{DpopError, ProofTarget, verify_proof, verify_proof_with};
use trust_bundles::UnixTime;

use crate::support::*;

fn target(now: u64) -> ProofTarget<'static> {
    ProofTarget {
        method: "POST",
        uri: "http://127.0.0.1:8080/token",
        now: UnixTime::from_secs(now),
        skew: Duration::from_secs(30),
    }
}

#[test]
fn a_good_proof_yields_the_key_thumbprint() {
    let d = Dpop::new();
    let p = verify_proof(&d.proof(T0, Some("n")), &target(T0)).unwrap();
    assert_eq!(p.jkt.as_str(), d.jkt);
    assert_eq!(p.nonce.as_deref(), Some("n"));
}

#[test]
fn remembered_keys_never_verify_a_proof_for_another_key() {
    let keys = trust_bundles::VerifyingKeys::new();
    let (a, b) = (Dpop::new(), Dpop::new());
    for d in [&a, &b, &a] {
        let p = verify_proof_with(&d.proof(T0, Some("n")), &target(T0), &keys).unwrap();
        assert_eq!(p.jkt.as_str(), d.jkt);
    }
    assert_eq!(keys.len(), 2);
    // B's key in the header, signed with A's: refused though both verifiers are
    // remembered (a cache that handed out A's verifier here would accept it).
    let forged = a.proof_with(
        json!({"typ": "dpop+jwt", "jwk": b.jwk_value()}),
        T0,
        Some("n"),
        json!({}),
    );
    assert!(matches!(
        verify_proof_with(&forged, &target(T0), &keys),
        Err(DpopError::Jws(_))
    ));
}

#[test]
fn htu_is_normalised_then_compared() {
    let d = Dpop::new();
    for ok in [
        "HTTP://127.0.0.1:8080/token",
        "http://127.0.0.1:8080/token?x=1",
        "http://127.0.0.1:8080/a/../token",
        "http://127.0.0.1:8080/token#f",
    ] {
        let proof = d.proof_with(json!({"typ":"dpop+jwt"}), T0, None, json!({"htu": ok}));
        assert!(verify_proof(&proof, &target(T0)).is_ok(), "{ok}");
    }
    for bad in [
        "http://127.0.0.1:8080/token2",
        "https://127.0.0.1:8080/token",
        "http://127.0.0.1:8081/token",
        "http://evil/token",
        "/token",
    ] {
        let proof = d.proof_with(json!({"typ":"dpop+jwt"}), T0, None, json!({"htu": bad}));
        assert_eq!(
            verify_proof(&proof, &target(T0)),
            Err(DpopError::UriMismatch),
            "{bad}"
        );
    }
}

#[test]
fn htu_is_judged_against_the_target_of_each_call() {
    // The normalised target is remembered per thread: a call for another target on the
    // same thread must be judged against that one, not the last one.
    let d = Dpop::new();
    let proof = d.proof_with(json!({"typ":"dpop+jwt"}), T0, None, json!({}));
    let other = ProofTarget {
        uri: "http://127.0.0.1:9090/token",
        ..target(T0)
    };
    assert!(verify_proof(&proof, &target(T0)).is_ok());
    assert_eq!(verify_proof(&proof, &other), Err(DpopError::UriMismatch));
    assert!(verify_proof(&proof, &target(T0)).is_ok());
    // A target that is not an http(s) URL matches nothing, its own spelling included.
    for not_a_url in ["token", "ftp://127.0.0.1/token"] {
        let proof = d.proof_with(
            json!({"typ":"dpop+jwt"}),
            T0,
            None,
            json!({"htu": not_a_url}),
        );
        let broken = ProofTarget {
            uri: not_a_url,
            ..target(T0)
        };
        assert_eq!(
            verify_proof(&proof, &broken),
            Err(DpopError::UriMismatch),
            "{not_a_url}"
        );
    }
}

#[test]
fn method_typ_and_headers() {
    let d = Dpop::new();
    let p = d.proof_with(json!({"typ":"dpop+jwt"}), T0, None, json!({"htm": "GET"}));
    assert_eq!(
        verify_proof(&p, &target(T0)),
        Err(DpopError::MethodMismatch)
    );
    let p = d.proof_with(json!({"typ":"JWT"}), T0, None, json!({}));
    assert_eq!(verify_proof(&p, &target(T0)), Err(DpopError::BadTyp));
    let p = d.proof_with(json!({"typ":"dpop+jwt","x5c":["MII"]}), T0, None, json!({}));
    assert_eq!(
        verify_proof(&p, &target(T0)),
        Err(DpopError::ForbiddenHeader("x5c"))
    );
    let p = d.proof_with(json!({"typ":"dpop+jwt","jwk": null}), T0, None, json!({}));
    assert!(verify_proof(&p, &target(T0)).is_err());
}

#[test]
fn private_jwk_is_refused() {
    let d = Dpop::new();
    let mut jwk = d.jwk_value();
    jwk["d"] = "AAAA".into();
    let p = d.proof_with(json!({"typ":"dpop+jwt","jwk": jwk}), T0, None, json!({}));
    assert!(matches!(
        verify_proof(&p, &target(T0)),
        Err(DpopError::BadJwk(_))
    ));
}

#[test]
fn proof_signed_by_another_key_fails() {
    let d = Dpop::new();
    let other = Dpop::new();
    let p = d.proof_with(
        json!({"typ":"dpop+jwt","jwk": other.jwk_value()}),
        T0,
        None,
        json!({}),
    );
    assert!(matches!(
        verify_proof(&p, &target(T0)),
        Err(DpopError::Jws(_))
    ));
}

#[test]
fn iat_window() {
    let d = Dpop::new();
    assert!(verify_proof(&d.proof(T0 - 60, None), &target(T0)).is_ok());
    assert!(matches!(
        verify_proof(&d.proof(T0 - 61, None), &target(T0)),
        Err(DpopError::IatOutOfWindow { .. })
    ));
    assert!(verify_proof(&d.proof(T0 + 30, None), &target(T0)).is_ok());
    assert!(matches!(
        verify_proof(&d.proof(T0 + 31, None), &target(T0)),
        Err(DpopError::IatOutOfWindow { .. })
    ));
    let p = d.proof_with(json!({"typ":"dpop+jwt"}), T0, None, json!({"iat": "now"}));
    assert_eq!(
        verify_proof(&p, &target(T0)),
        Err(DpopError::BadClaim("iat"))
    );
    let p = d.proof_with(json!({"typ":"dpop+jwt"}), T0, None, json!({"jti": ""}));
    assert_eq!(
        verify_proof(&p, &target(T0)),
        Err(DpopError::BadClaim("jti"))
    );
}

fn dpop_exchange(w: &World, proof: &str) -> token_exchange::Outcome {
    let svid = w.svid("/ns/payments/sa/api", 600);
    w.exchange(
        &[
            ("grant_type", TE),
            ("subject_token", &svid),
            ("subject_token_type", JWT_TYPE),
            ("audience", PAYMENTS),
        ],
        &[proof],
        &[],
    )
}

#[test]
fn dpop_bound_exchange_consumes_the_nonce_and_the_jti() {
    let w = World::new();
    let d = Dpop::new();
    let nonce = w.nonce();
    let proof = d.proof(w.now(), Some(&nonce));
    let out = dpop_exchange(&w, &proof);
    let resp = out.result.unwrap();
    assert_eq!(resp.token_type, "DPoP");
    assert_eq!(claims_of(resp.access_token())["cnf"]["jkt"], d.jkt.as_str());

    // The same proof again: the nonce is gone.
    let again = dpop_exchange(&w, &proof);
    assert_eq!(World::code(&again), "use_dpop_nonce");
    assert!(again.result.unwrap_err().fresh_nonce.is_some());
}

#[test]
fn a_reused_jti_with_a_fresh_nonce_is_refused() {
    let w = World::new();
    let d = Dpop::new();
    let n1 = w.nonce();
    let fixed = json!({"jti": "same-jti"});
    let p1 = d.proof_with(json!({"typ":"dpop+jwt"}), w.now(), Some(&n1), fixed.clone());
    assert!(dpop_exchange(&w, &p1).result.is_ok());
    let n2 = w.nonce();
    let p2 = d.proof_with(json!({"typ":"dpop+jwt"}), w.now(), Some(&n2), fixed);
    let out = dpop_exchange(&w, &p2);
    assert_eq!(World::code(&out), "invalid_dpop_proof");
    assert_eq!(out.result.unwrap_err().error, ExchangeError::DpopReplayed);
}

#[test]
fn missing_unknown_or_expired_nonces() {
    let w = World::new();
    let d = Dpop::new();
    for nonce in [
        None,
        Some("made-up"),
        Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    ] {
        let out = dpop_exchange(&w, &d.proof(w.now(), nonce));
        assert_eq!(World::code(&out), "use_dpop_nonce", "{nonce:?}");
        let fresh = out.result.unwrap_err().fresh_nonce.unwrap();
        assert_eq!(fresh.as_str().len(), 43);
    }
    // Well formed and unexpired, but minted by another broker (another key).
    let foreign = token_exchange::nonce::NonceKey::generate()
        .unwrap()
        .mint(UnixTime::from_secs(w.now() + 60))
        .unwrap();
    let out = dpop_exchange(&w, &d.proof(w.now(), Some(foreign.as_str())));
    assert_eq!(
        World::code(&out),
        "use_dpop_nonce",
        "another broker's nonce"
    );

    // This broker's key, but good for longer than any nonce it hands out (its TTL, 60 s,
    // and the skew, 30 s): minted on a clock far ahead.
    let mint = |secs| {
        w.nonce_key
            .mint(UnixTime::from_secs(w.now() + secs))
            .unwrap()
    };
    let out = dpop_exchange(&w, &d.proof(w.now(), Some(mint(91).as_str())));
    assert_eq!(
        World::code(&out),
        "use_dpop_nonce",
        "a nonce from the future"
    );
    assert!(
        dpop_exchange(&w, &d.proof(w.now(), Some(mint(90).as_str())))
            .result
            .is_ok(),
        "at the limit"
    );

    let nonce = w.nonce();
    w.clock.advance(Duration::from_secs(61));
    let out = dpop_exchange(&w, &d.proof(w.now(), Some(&nonce)));
    assert_eq!(World::code(&out), "use_dpop_nonce");
}

#[test]
fn a_proof_for_another_htu_is_refused() {
    let w = World::new();
    let d = Dpop::new();
    let nonce = w.nonce();
    let p = d.proof_with(
        json!({"typ":"dpop+jwt"}),
        w.now(),
        Some(&nonce),
        json!({"htu": "http://127.0.0.1:8080/other"}),
    );
    let out = dpop_exchange(&w, &p);
    assert_eq!(World::code(&out), "invalid_dpop_proof");
    // A refused request burns nothing: the nonce still works.
    assert!(
        dpop_exchange(&w, &d.proof(w.now(), Some(&nonce)))
            .result
            .is_ok()
    );
}

#[test]
fn two_dpop_headers_are_refused() {
    let w = World::new();
    let d = Dpop::new();
    let nonce = w.nonce();
    let svid = w.svid("/ns/payments/sa/api", 600);
    let p = d.proof(w.now(), Some(&nonce));
    let out = w.exchange(
        &[
            ("grant_type", TE),
            ("subject_token", &svid),
            ("subject_token_type", JWT_TYPE),
            ("audience", PAYMENTS),
        ],
        &[&p, &p],
        &[],
    );
    assert_eq!(
        out.result.unwrap_err().error,
        ExchangeError::Dpop(DpopError::MultipleProofs)
    );
}
