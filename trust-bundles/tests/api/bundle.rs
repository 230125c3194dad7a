//! SPIFFE bundle vectors: one valid bundle exercising every key kind, then each refusal
//! of SPEC §11 and the skips the standard asks for.

use std::time::Duration;

use serde_json::{Value, json};
use trust_bundles::bundle::{
    BundleError, MAX_BUNDLE_BYTES, MAX_BUNDLE_KEYS, SkipReason, TrustBundles,
};
use trust_bundles::jwk::JwkError;
use trust_bundles::{SpiffeBundle, TrustDomain};

use crate::support::*;

fn parse(keys: Vec<Value>) -> Result<SpiffeBundle, BundleError> {
    SpiffeBundle::parse(&bundle_json(keys))
}

fn jwt_entry(key: &TestKey, kid: &str) -> Value {
    key.jwk_with(json!({"use": "jwt-svid", "kid": kid}))
}

#[test]
fn valid_bundle_with_every_key_kind() {
    let ca = root_ca("ca");
    let (rsa, p256, p384, ed) = (
        TestKey::rsa(),
        TestKey::p256(),
        TestKey::p384(),
        TestKey::ed25519(),
    );
    let b = parse(vec![
        x509_entry(&ca),
        jwt_entry(&rsa, "rsa"),
        jwt_entry(&p256, "p256"),
        p384.jwk_with(json!({"use": "jwt-svid", "kid": "p384", "alg": "ES384"})),
        jwt_entry(&ed, "ed"),
    ])
    .unwrap();
    assert_eq!(b.sequence(), Some(7));
    assert_eq!(b.refresh_hint(), Duration::from_secs(600));
    assert_eq!(b.x509_authorities().len(), 1);
    assert_eq!(
        b.x509_authorities()[0].certificate.as_ref(),
        ca.der().as_ref()
    );
    assert_eq!(b.jwt_authorities().len(), 4);
    assert!(b.skipped().is_empty());
    assert_eq!(b.jwt_authority("rsa").unwrap().key.rsa_bits(), Some(2048));
    assert!(b.jwt_authority("nope").is_none());
    assert!(!b.is_empty());
}

#[test]
fn missing_or_malformed_keys_member() {
    for doc in [
        &br#"{}"#[..],
        br#"{"keys": {}}"#,
        br#"{"keys": null}"#,
        br#"{"spiffe_sequence": 1}"#,
    ] {
        assert_eq!(
            SpiffeBundle::parse(doc),
            Err(BundleError::MissingKeys),
            "{doc:?}"
        );
    }
    assert_eq!(SpiffeBundle::parse(b"[]"), Err(BundleError::NotAnObject));
    assert!(matches!(
        SpiffeBundle::parse(b"{\"keys\": ["),
        Err(BundleError::Json(_))
    ));
}

#[test]
fn empty_keys_is_a_valid_bundle_that_trusts_nothing() {
    let b = SpiffeBundle::parse(br#"{"keys": []}"#).unwrap();
    assert!(b.is_empty());
    assert_eq!(b.sequence(), None);
}

#[test]
fn refresh_hint_defaults_and_clamps() {
    let hint = |doc: &str| SpiffeBundle::parse(doc.as_bytes()).map(|b| b.refresh_hint().as_secs());
    assert_eq!(hint(r#"{"keys":[]}"#), Ok(300));
    assert_eq!(hint(r#"{"keys":[],"spiffe_refresh_hint":0}"#), Ok(30));
    assert_eq!(hint(r#"{"keys":[],"spiffe_refresh_hint":-5}"#), Ok(30));
    assert_eq!(hint(r#"{"keys":[],"spiffe_refresh_hint":29}"#), Ok(30));
    assert_eq!(hint(r#"{"keys":[],"spiffe_refresh_hint":30}"#), Ok(30));
    assert_eq!(
        hint(r#"{"keys":[],"spiffe_refresh_hint":86400}"#),
        Ok(86400)
    );
    assert_eq!(
        hint(r#"{"keys":[],"spiffe_refresh_hint":86401}"#),
        Ok(86400)
    );
    assert_eq!(
        hint(r#"{"keys":[],"spiffe_refresh_hint":1e300}"#),
        Ok(86400)
    );
    assert_eq!(
        hint(r#"{"keys":[],"spiffe_refresh_hint":"60"}"#),
        Err(BundleError::BadRefreshHint)
    );
}

#[test]
fn sequence_must_be_an_unsigned_integer() {
    for bad in ["-1", "1.5", "\"3\"", "null", "18446744073709551616"] {
        let doc = format!(r#"{{"keys":[],"spiffe_sequence":{bad}}}"#);
        assert_eq!(
            SpiffeBundle::parse(doc.as_bytes()),
            Err(BundleError::BadSequence),
            "{bad}"
        );
    }
    let max = format!(r#"{{"keys":[],"spiffe_sequence":{}}}"#, u64::MAX);
    assert_eq!(
        SpiffeBundle::parse(max.as_bytes()).unwrap().sequence(),
        Some(u64::MAX)
    );
}

#[test]
fn size_budget_is_exact() {
    let base = br#"{"keys":[]}"#;
    let mut at_limit = base.to_vec();
    at_limit.resize(MAX_BUNDLE_BYTES, b' ');
    assert!(SpiffeBundle::parse(&at_limit).is_ok());
    at_limit.push(b' ');
    assert_eq!(
        SpiffeBundle::parse(&at_limit),
        Err(BundleError::TooLarge {
            len: MAX_BUNDLE_BYTES + 1,
            max: MAX_BUNDLE_BYTES
        })
    );
}

#[test]
fn key_count_budget_is_exact() {
    // Skipped keys count too: the budget is on work, not on what survives.
    let filler = json!({"use": "other", "kty": "EC"});
    let at_limit = vec![filler.clone(); MAX_BUNDLE_KEYS];
    let b = parse(at_limit.clone()).unwrap();
    assert_eq!(b.skipped().len(), MAX_BUNDLE_KEYS);
    let mut over = at_limit;
    over.push(filler);
    assert_eq!(
        parse(over),
        Err(BundleError::TooManyKeys {
            count: MAX_BUNDLE_KEYS + 1,
            max: MAX_BUNDLE_KEYS
        })
    );
}

#[test]
fn duplicate_json_members_are_refused() {
    let key = TestKey::p256();
    let mut entry = serde_json::to_string(&jwt_entry(&key, "a")).unwrap();
    // Same member twice inside a key: which `kid` would count?
    entry.insert_str(1, r#""kid":"b","#);
    let doc = format!(r#"{{"keys":[{entry}]}}"#);
    assert!(matches!(
        SpiffeBundle::parse(doc.as_bytes()),
        Err(BundleError::Json(trust_bundles::json::StrictJsonError::DuplicateMember(m))) if m == "kid"
    ));
    assert!(matches!(
        SpiffeBundle::parse(br#"{"keys":[],"keys":[]}"#),
        Err(BundleError::Json(_))
    ));
}

#[test]
fn unknown_use_or_kty_is_skipped_and_reported() {
    let ok = TestKey::p256();
    let b = parse(vec![
        ok.jwk_with(json!({"use": "enc", "kid": "e"})),
        ok.jwk(), // no `use`
        json!({"use": "jwt-svid", "kty": "oct-ish", "kid": "x"}),
        json!({"use": "jwt-svid", "kty": "EC", "crv": "P-521", "kid": "y", "x": "AA", "y": "AA"}),
        ok.jwk_with(json!({"use": "jwt-svid", "kid": "z", "alg": "RS256"})),
        jwt_entry(&ok, "kept"),
    ])
    .unwrap();
    let reasons: Vec<_> = b
        .skipped()
        .iter()
        .map(|s| (s.index, s.reason.clone()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            (0, SkipReason::UnknownUse("enc".into())),
            (1, SkipReason::MissingUse),
            (
                2,
                SkipReason::Unsupported(JwkError::UnsupportedKty("oct-ish".into()))
            ),
            (
                3,
                SkipReason::Unsupported(JwkError::UnsupportedCurve("P-521".into()))
            ),
            (
                4,
                SkipReason::Unsupported(JwkError::UnsupportedAlg("RS256".into()))
            ),
        ]
    );
    assert_eq!(b.jwt_authorities().len(), 1);
    assert!(b.jwt_authority("kept").is_some());
    assert!(b.jwt_authority("e").is_none());
}

#[test]
fn duplicate_kid_refuses_the_bundle() {
    let (a, b) = (TestKey::p256(), TestKey::ed25519());
    assert_eq!(
        parse(vec![jwt_entry(&a, "k1"), jwt_entry(&b, "k1")]),
        Err(BundleError::DuplicateKid { kid: "k1".into() })
    );
    // The same key under two kids is fine.
    assert!(parse(vec![jwt_entry(&a, "k1"), jwt_entry(&a, "k2")]).is_ok());
}

#[test]
fn small_rsa_refuses_the_bundle() {
    // A 1024-bit modulus (any odd value with the top bit set will do for the size check).
    let mut n = vec![0xc5u8; 128];
    n[127] |= 1;
    let entry = json!({"use":"jwt-svid","kid":"r","kty":"RSA","n": b64u(&n),"e":"AQAB"});
    assert_eq!(
        parse(vec![entry]),
        Err(BundleError::Key {
            index: 0,
            error: JwkError::RsaKeySize { bits: 1024 }
        })
    );
    // 2047 bits: top byte 0x7f.
    let mut n = vec![0xc5u8; 256];
    n[0] = 0x7f;
    let entry = json!({"use":"jwt-svid","kid":"r","kty":"RSA","n": b64u(&n),"e":"AQAB"});
    assert_eq!(
        parse(vec![entry]),
        Err(BundleError::Key {
            index: 0,
            error: JwkError::RsaKeySize { bits: 2047 }
        })
    );
}

#[test]
fn ec_point_off_the_curve_refuses_the_bundle() {
    for key in [TestKey::p256(), TestKey::p384()] {
        let mut entry = jwt_entry(&key, "k");
        let mut y = base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            entry["y"].as_str().unwrap(),
        )
        .unwrap();
        let last = y.len() - 1;
        y[last] ^= 1;
        entry["y"] = b64u(&y).into();
        assert!(matches!(
            parse(vec![entry]),
            Err(BundleError::Key {
                index: 0,
                error: JwkError::PointNotOnCurve(_)
            })
        ));
    }
    // Short coordinates are malformed, not "off the curve".
    let mut entry = jwt_entry(&TestKey::p256(), "k");
    entry["x"] = b64u(&[1u8; 31]).into();
    assert!(matches!(
        parse(vec![entry]),
        Err(BundleError::Key {
            error: JwkError::BadLength {
                member: "x",
                expected: 32,
                got: 31
            },
            ..
        })
    ));
}

#[test]
fn private_key_material_refuses_the_bundle_even_in_skipped_keys() {
    let key = TestKey::p256();
    for (member, use_) in [
        ("d", "jwt-svid"),
        ("d", "enc"),
        ("p", "jwt-svid"),
        ("k", "x"),
    ] {
        let mut entry = jwt_entry(&key, "k");
        entry["use"] = use_.into();
        entry[member] = "AAAA".into();
        assert!(
            matches!(
                parse(vec![entry]),
                Err(BundleError::Key { index: 0, error: JwkError::PrivateMaterial(m) }) if m == member
            ),
            "{member} with use {use_}"
        );
    }
}

#[test]
fn x509_svid_key_needs_exactly_one_certificate_and_no_kid() {
    let ca = root_ca("ca");
    let other = root_ca("other");
    let good = x509_entry(&ca);

    let mut none = good.clone();
    none.as_object_mut().unwrap().remove("x5c");
    assert_eq!(
        parse(vec![none]),
        Err(BundleError::X509CertificateCount { index: 0, count: 0 })
    );
    let mut two = good.clone();
    two["x5c"] = json!([good["x5c"][0], x509_entry(&other)["x5c"][0]]);
    assert_eq!(
        parse(vec![two]),
        Err(BundleError::X509CertificateCount { index: 0, count: 2 })
    );
    let mut with_kid = good.clone();
    with_kid["kid"] = "k".into();
    assert_eq!(
        parse(vec![with_kid]),
        Err(BundleError::X509WithKid { index: 0 })
    );

    let mut bad_b64 = good.clone();
    bad_b64["x5c"] = json!(["not*base64"]);
    assert!(matches!(
        parse(vec![bad_b64]),
        Err(BundleError::BadCertificate { index: 0, .. })
    ));
    let mut not_der = good.clone();
    not_der["x5c"] = json!(["AAAA"]);
    assert!(matches!(
        parse(vec![not_der]),
        Err(BundleError::BadCertificate { index: 0, .. })
    ));

    // The JWK must be the certificate's own key.
    let mut mismatch = x509_entry(&other);
    mismatch["x5c"] = good["x5c"].clone();
    assert_eq!(
        parse(vec![mismatch]),
        Err(BundleError::X509KeyMismatch { index: 0 })
    );

    assert!(parse(vec![good]).is_ok());
}

#[test]
fn jwt_svid_key_needs_a_kid() {
    let key = TestKey::p256();
    let entry = key.jwk_with(json!({"use": "jwt-svid"}));
    assert_eq!(
        parse(vec![entry]),
        Err(BundleError::JwtWithoutKid { index: 0 })
    );
}

#[test]
fn non_minimal_integers_and_bad_base64_are_refused() {
    let key = TestKey::rsa();
    let mut entry = jwt_entry(&key, "r");
    entry["e"] = "AAEAAQ".into(); // 0x00 0x01 0x00 0x01
    assert_eq!(
        parse(vec![entry.clone()]),
        Err(BundleError::Key {
            index: 0,
            error: JwkError::NonMinimalInteger("e")
        })
    );
    entry["e"] = "AQAB=".into();
    assert_eq!(
        parse(vec![entry]),
        Err(BundleError::Key {
            index: 0,
            error: JwkError::BadBase64("e")
        })
    );
}

#[test]
fn kid_lookup_never_crosses_trust_domains() {
    let a_key = TestKey::p256();
    let a = parse(vec![jwt_entry(&a_key, "shared-kid")]).unwrap();
    let b = SpiffeBundle::parse(br#"{"keys":[]}"#).unwrap();
    let td_a: TrustDomain = "a.example".parse().unwrap();
    let td_b: TrustDomain = "b.example".parse().unwrap();
    let mut set = TrustBundles::new();
    set.insert(td_a.clone(), a);
    set.insert(td_b.clone(), b);
    assert!(set.jwt_key(&td_a, "shared-kid").is_ok());
    assert!(matches!(
        set.jwt_key(&td_b, "shared-kid"),
        Err(trust_bundles::bundle::LookupError::UnknownKid { .. })
    ));
    let td_c: TrustDomain = "c.example".parse().unwrap();
    assert!(matches!(
        set.jwt_key(&td_c, "shared-kid"),
        Err(trust_bundles::bundle::LookupError::UnknownTrustDomain(_))
    ));
}

#[test]
fn serialized_form_matches_the_standard_layout() {
    let ca = root_ca("ca");
    let key = TestKey::p256();
    let b = parse(vec![x509_entry(&ca), jwt_entry(&key, "k")]).unwrap();
    let v: Value = serde_json::from_slice(&b.to_json()).unwrap();
    assert_eq!(v["spiffe_sequence"], 7);
    assert_eq!(v["spiffe_refresh_hint"], 600);
    assert_eq!(v["keys"][0]["use"], "x509-svid");
    assert_eq!(v["keys"][0]["x5c"].as_array().unwrap().len(), 1);
    assert!(v["keys"][0].get("kid").is_none());
    assert_eq!(v["keys"][1]["use"], "jwt-svid");
    assert_eq!(v["keys"][1]["kid"], "k");
    assert_eq!(v["keys"][1]["kty"], "EC");
    assert_eq!(SpiffeBundle::parse(&b.to_json()).unwrap(), b);
}
