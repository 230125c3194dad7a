//! Refusals that an earlier mutation run showed no test pinned down: each test here
//! fails if its check is removed.
use crate::support::*;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rcgen::KeyUsagePurpose;
use rustls_pki_types::CertificateDer;
use serde_json::json;
use std::time::Duration;
use trust_bundles::bundle::{BundleError, JwtAuthority};
use trust_bundles::jwk::{JwkError, KidError};
use trust_bundles::x509::SvidError;
use trust_bundles::{Jwk, SpiffeBundle, SvidUsage, TrustDomain, UnixTime, verify_x509_svid};

fn td() -> TrustDomain {
    "example.org".parse().unwrap()
}
fn empty_bundle() -> SpiffeBundle {
    SpiffeBundle::parse(br#"{"keys":[]}"#).unwrap()
}
fn verify(chain: &[CertificateDer<'_>], b: &SpiffeBundle) -> Result<String, SvidError> {
    verify_x509_svid(chain, b, &td(), UnixTime::from_secs(MID), SvidUsage::Client)
        .map(|i| i.to_string())
}

// B12
#[test]
fn new_refuses_duplicate_kids() {
    let jwk = Jwk::from_json(&TestKey::p256().jwk_with(json!({"kid":"k"}))).unwrap();
    let a = JwtAuthority {
        kid: "k".parse().unwrap(),
        jwk,
    };
    assert_eq!(
        SpiffeBundle::new(None, Duration::from_secs(60), vec![], vec![a.clone(), a]),
        Err(BundleError::DuplicateKid { kid: "k".into() })
    );
}
// B10b
#[test]
fn new_clamps_a_small_hint() {
    let b = SpiffeBundle::new(None, Duration::ZERO, vec![], vec![]).unwrap();
    assert_eq!(b.refresh_hint(), Duration::from_secs(30));
}
// B15
#[test]
fn non_object_key_refuses_bundle() {
    assert_eq!(
        SpiffeBundle::parse(br#"{"keys":[1]}"#),
        Err(BundleError::Key {
            index: 0,
            error: JwkError::NotAnObject
        })
    );
}
// B16
#[test]
fn non_string_use_refuses_bundle() {
    let e = TestKey::p256().jwk_with(json!({"use": 5, "kid": "k"}));
    assert_eq!(
        SpiffeBundle::parse(&bundle_json(vec![e])),
        Err(BundleError::BadUse { index: 0 })
    );
}
// B25, B27
#[test]
fn x5c_shape_errors_are_bad_certificate() {
    let ca = root_ca("ca");
    for bad in [json!("AAAA"), json!([5])] {
        let mut e = x509_entry(&ca);
        e["x5c"] = bad.clone();
        assert!(
            matches!(
                SpiffeBundle::parse(&bundle_json(vec![e])),
                Err(BundleError::BadCertificate { index: 0, .. })
            ),
            "{bad}"
        );
    }
}
// B28
#[test]
fn x5c_bad_base64_reports_the_base64_error() {
    let mut e = x509_entry(&root_ca("ca"));
    e["x5c"] = json!(["not*base64"]);
    let want = STANDARD.decode("not*base64").unwrap_err().to_string();
    assert_eq!(
        SpiffeBundle::parse(&bundle_json(vec![e])),
        Err(BundleError::BadCertificate {
            index: 0,
            reason: want
        })
    );
}
// B29
#[test]
fn x5c_trailing_bytes_refuse_bundle() {
    let ca = root_ca("ca");
    let mut der = ca.der().as_ref().to_vec();
    der.push(0);
    let mut e = x509_entry(&ca);
    e["x5c"] = json!([STANDARD.encode(&der)]);
    assert!(matches!(
        SpiffeBundle::parse(&bundle_json(vec![e])),
        Err(BundleError::BadCertificate { index: 0, .. })
    ));
}
// J6b
#[test]
fn every_private_member_is_refused() {
    for m in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
        let mut k = TestKey::rsa().jwk();
        k[m] = "AQAB".into();
        assert_eq!(Jwk::from_json(&k), Err(JwkError::PrivateMaterial(m)), "{m}");
    }
}
// J11, J13
#[test]
fn non_string_alg_and_kid_are_refused() {
    let k = TestKey::p256();
    assert_eq!(
        Jwk::from_json(&k.jwk_with(json!({"alg": 5}))),
        Err(JwkError::MissingMember("alg"))
    );
    assert_eq!(
        Jwk::from_json(&k.jwk_with(json!({"kid": 5}))),
        Err(JwkError::MissingMember("kid"))
    );
}
// J12
#[test]
fn bad_kid_is_refused() {
    let k = TestKey::p256();
    assert_eq!(
        Jwk::from_json(&k.jwk_with(json!({"kid": ""}))),
        Err(JwkError::BadKid(KidError::Empty))
    );
    assert_eq!(
        Jwk::from_json(&k.jwk_with(json!({"kid": "a\u{0}b"}))),
        Err(JwkError::BadKid(KidError::Control))
    );
}
// J19b
#[test]
fn empty_rsa_integers_are_non_minimal() {
    for m in ["n", "e"] {
        let mut k = TestKey::rsa().jwk();
        k[m] = "".into();
        assert_eq!(
            Jwk::from_json(&k),
            Err(JwkError::NonMinimalInteger(m)),
            "{m}"
        );
    }
}
// J20a
#[test]
fn rsa_over_8192_bits_is_refused_by_size() {
    let mut n = vec![0xffu8; 1025];
    n[0] = 0x01; // 8193 bits
    let k = json!({"kty":"RSA","n": b64u(&n),"e":"AQAB"});
    assert_eq!(Jwk::from_json(&k), Err(JwkError::RsaKeySize { bits: 8193 }));
}
// X6
#[test]
fn leaf_with_trailing_bytes_is_malformed_before_bundle_checks() {
    let ca = root_ca("root");
    let mut der = leaf(LeafSpec::default(), &ca).as_ref().to_vec();
    der.push(0);
    assert_eq!(
        verify(&[CertificateDer::from(der)], &empty_bundle()),
        Err(SvidError::Malformed("trailing bytes".into()))
    );
}
// X10
#[test]
fn ca_leaf_is_refused_by_the_leaf_check_itself() {
    let ca = root_ca("root");
    let l = leaf(
        LeafSpec {
            ca: true,
            key_usages: vec![KeyUsagePurpose::DigitalSignature],
            ..LeafSpec::default()
        },
        &ca,
    );
    assert_eq!(verify(&[l], &empty_bundle()), Err(SvidError::LeafIsCa));
}
// X13b
#[test]
fn crl_sign_leaf_is_refused() {
    let ca = root_ca("root");
    let l = leaf(
        LeafSpec {
            key_usages: vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign],
            ..LeafSpec::default()
        },
        &ca,
    );
    let b = SpiffeBundle::parse(&bundle_json(vec![x509_entry(&ca)])).unwrap();
    assert_eq!(verify(&[l], &b), Err(SvidError::LeafCanSign));
}
// J27 probe: does any 32-byte value make BadEd25519Key?
#[test]
fn probe_ed25519_never_rejected() {
    let mut rejected = 0;
    for i in 0..=255u8 {
        for j in [0u8, 0x7f, 0x80, 0xff] {
            let mut x = [i; 32];
            x[31] = j;
            if Jwk::from_json(&json!({"kty":"OKP","crv":"Ed25519","x": b64u(&x)})).is_err() {
                rejected += 1;
            }
        }
    }
    // identity (small-order) point
    let mut id = [0u8; 32];
    id[0] = 1;
    let ident_ok = Jwk::from_json(&json!({"kty":"OKP","crv":"Ed25519","x": b64u(&id)})).is_ok();
    println!("PROBE rejected={rejected}/1024 identity_accepted={ident_ok}");
}

#[test]
fn a_bundle_key_for_none_or_hmac_refuses_the_bundle() {
    for alg in ["none", "HS256"] {
        let entry = TestKey::p256().jwk_with(json!({"use": "jwt-svid", "kid": "k", "alg": alg}));
        assert_eq!(
            SpiffeBundle::parse(&bundle_json(vec![entry])),
            Err(BundleError::Key {
                index: 0,
                error: JwkError::ForbiddenAlg(alg.into())
            })
        );
    }
}
