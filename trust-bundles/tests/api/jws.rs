//! Compact JWS: the hostile shapes a token verifier meets in the wild.

use serde_json::{Value, json};
use trust_bundles::jwk::{AlgError, VerifyError};
use trust_bundles::jws::{self, JwsError, UnverifiedJws};
use trust_bundles::{Jwk, JwsAlgorithm};

use crate::support::*;

const BUDGET: usize = 16 * 1024;

fn token(key: &TestKey, alg: JwsAlgorithm, header: Value, claims: Value) -> String {
    let input = jws::signing_input(&header, &claims);
    jws::compact(&input, &key.sign(alg, input.as_bytes()))
}

fn raw(header: &str, payload: &str, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64u(header.as_bytes()),
        b64u(payload.as_bytes()),
        b64u(sig)
    )
}

#[test]
fn a_good_token_verifies_and_a_tampered_one_does_not() {
    let key = TestKey::p256();
    let jwk = Jwk::from_json(&key.jwk()).unwrap();
    let t = token(
        &key,
        JwsAlgorithm::ES256,
        json!({"alg":"ES256","kid":"k"}),
        json!({"sub":"x"}),
    );
    let parsed = UnverifiedJws::parse(&t, BUDGET).unwrap();
    assert_eq!(parsed.alg(), JwsAlgorithm::ES256);
    assert_eq!(parsed.header_str("kid"), Some("k"));
    assert_eq!(parsed.verify(&jwk).unwrap()["sub"], "x");

    // Same header and signature, other payload.
    let mut parts: Vec<&str> = t.split('.').collect();
    let other = b64u(br#"{"sub":"y"}"#);
    parts[1] = &other;
    let forged = parts.join(".");
    assert_eq!(
        UnverifiedJws::parse(&forged, BUDGET).unwrap().verify(&jwk),
        Err(JwsError::Signature(VerifyError::BadSignature))
    );
}

#[test]
fn alg_none_in_any_spelling_is_refused() {
    for alg in ["none", "None", "NONE", "nOnE"] {
        let t = raw(&format!(r#"{{"alg":"{alg}"}}"#), r#"{"sub":"x"}"#, b"");
        assert_eq!(
            UnverifiedJws::parse(&t, BUDGET).err(),
            Some(JwsError::Alg(AlgError::None))
        );
    }
    let t = raw(r#"{"typ":"JWT"}"#, r#"{}"#, b"");
    assert_eq!(
        UnverifiedJws::parse(&t, BUDGET).err(),
        Some(JwsError::MissingAlg)
    );
    let t = raw(r#"{"alg":["ES256"]}"#, r#"{}"#, b"");
    assert_eq!(
        UnverifiedJws::parse(&t, BUDGET).err(),
        Some(JwsError::MissingAlg)
    );
}

#[test]
fn rs256_to_hs256_confusion_is_refused_before_any_key_is_touched() {
    // The classic attack: HMAC over the token with the RSA public key as the secret.
    let rsa = TestKey::rsa();
    let secret = serde_json::to_vec(&rsa.jwk()).unwrap();
    let input = jws::signing_input(&json!({"alg":"HS256"}), &json!({"sub":"x"}));
    let tag = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret),
        input.as_bytes(),
    );
    let t = jws::compact(&input, tag.as_ref());
    assert!(matches!(
        UnverifiedJws::parse(&t, BUDGET).err(),
        Some(JwsError::Alg(AlgError::Symmetric(_)))
    ));
}

#[test]
fn header_alg_must_fit_the_key() {
    let rsa = TestKey::rsa();
    let jwk = Jwk::from_json(&rsa.jwk()).unwrap();
    // An RS256 signature presented as ES256 against an RSA key.
    let input = jws::signing_input(&json!({"alg":"ES256"}), &json!({}));
    let t = jws::compact(&input, &rsa.sign(JwsAlgorithm::RS256, input.as_bytes()));
    assert_eq!(
        UnverifiedJws::parse(&t, BUDGET).unwrap().verify(&jwk),
        Err(JwsError::Signature(VerifyError::AlgMismatch {
            alg: JwsAlgorithm::ES256
        }))
    );
}

#[test]
fn crit_is_refused() {
    let key = TestKey::p256();
    let t = token(
        &key,
        JwsAlgorithm::ES256,
        json!({"alg":"ES256","crit":["exp"],"exp":1}),
        json!({}),
    );
    assert_eq!(UnverifiedJws::parse(&t, BUDGET).err(), Some(JwsError::Crit));
    let t = token(
        &key,
        JwsAlgorithm::ES256,
        json!({"alg":"ES256","crit":[]}),
        json!({}),
    );
    assert_eq!(UnverifiedJws::parse(&t, BUDGET).err(), Some(JwsError::Crit));
}

#[test]
fn degenerate_ecdsa_signatures_fail() {
    let key = TestKey::p256();
    let jwk = Jwk::from_json(&key.jwk()).unwrap();
    let n = hex("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551");
    let mut r_s_n = n.clone();
    r_s_n.extend(&n);
    for sig in [vec![0u8; 64], r_s_n, vec![0u8; 63], vec![], vec![0xff; 64]] {
        let t = raw(r#"{"alg":"ES256"}"#, r#"{"sub":"x"}"#, &sig);
        assert_eq!(
            UnverifiedJws::parse(&t, BUDGET).unwrap().verify(&jwk),
            Err(JwsError::Signature(VerifyError::BadSignature)),
            "{sig:02x?}"
        );
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn duplicate_members_in_header_or_payload_are_refused() {
    let t = raw(r#"{"alg":"ES256","alg":"none"}"#, r#"{}"#, b"sig");
    assert!(matches!(
        UnverifiedJws::parse(&t, BUDGET).err(),
        Some(JwsError::BadJson { part: "header", .. })
    ));
    let t = raw(r#"{"alg":"ES256"}"#, r#"{"sub":"a","sub":"b"}"#, b"sig");
    assert!(matches!(
        UnverifiedJws::parse(&t, BUDGET).err(),
        Some(JwsError::BadJson {
            part: "payload",
            ..
        })
    ));
}

#[test]
fn only_compact_canonical_serializations_parse() {
    let key = TestKey::p256();
    let good = token(
        &key,
        JwsAlgorithm::ES256,
        json!({"alg":"ES256"}),
        json!({"a":1}),
    );
    for bad in [
        "a.b".to_owned(),
        format!("{good}."),
        format!("{good}.x"),
        format!(".{good}"),
        String::new(),
        format!("{good}=="),
    ] {
        assert!(UnverifiedJws::parse(&bad, BUDGET).is_err(), "{bad}");
    }
    // JSON serialization of a JWS is not accepted.
    assert_eq!(
        UnverifiedJws::parse(r#"{"payload":"e30","signatures":[]}"#, BUDGET).err(),
        Some(JwsError::NotCompact)
    );
    let t = raw(r#"{"alg":"ES256"}"#, r#"[1,2]"#, b"s");
    assert_eq!(
        UnverifiedJws::parse(&t, BUDGET).err(),
        Some(JwsError::NotAnObject("payload"))
    );
    let t = format!("{}.e30.AA", b64u(br#"{"alg":"ES256"}"#).replace('e', "+"));
    assert!(matches!(
        UnverifiedJws::parse(&t, BUDGET).err(),
        Some(JwsError::BadBase64(_))
    ));
}

#[test]
fn size_budget_is_exact() {
    let key = TestKey::p256();
    let t = token(
        &key,
        JwsAlgorithm::ES256,
        json!({"alg":"ES256"}),
        json!({"pad": "x".repeat(200)}),
    );
    assert!(UnverifiedJws::parse(&t, t.len()).is_ok());
    assert_eq!(
        UnverifiedJws::parse(&t, t.len() - 1).err(),
        Some(JwsError::TooLarge {
            len: t.len(),
            max: t.len() - 1
        })
    );
    let huge = "a".repeat(1024 * 1024);
    assert!(matches!(
        UnverifiedJws::parse(&huge, BUDGET),
        Err(JwsError::TooLarge { .. })
    ));
}
