//! JWK → verifying key, for every algorithm we accept, with real signatures.

use serde_json::json;
use trust_bundles::jwk::{JwkError, VerifyError};
use trust_bundles::{Jwk, JwsAlgorithm};

use crate::support::*;

const MSG: &[u8] = b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0";

#[test]
fn every_algorithm_verifies_its_own_signature_and_nothing_else() {
    let rsa = TestKey::rsa();
    let cases = [
        (&rsa, JwsAlgorithm::RS256),
        (&rsa, JwsAlgorithm::RS384),
        (&rsa, JwsAlgorithm::RS512),
        (&rsa, JwsAlgorithm::PS256),
        (&rsa, JwsAlgorithm::PS384),
        (&rsa, JwsAlgorithm::PS512),
    ];
    let p256 = TestKey::p256();
    let p384 = TestKey::p384();
    let ed = TestKey::ed25519();
    let more = [
        (&p256, JwsAlgorithm::ES256),
        (&p384, JwsAlgorithm::ES384),
        (&ed, JwsAlgorithm::EdDSA),
    ];
    for (key, alg) in cases.into_iter().chain(more) {
        let jwk = Jwk::from_json(&key.jwk()).unwrap();
        let vk = jwk.verifying_key(alg).unwrap();
        assert_eq!(vk.algorithm(), alg);
        let sig = key.sign(alg, MSG);
        assert_eq!(vk.verify(MSG, &sig), Ok(()), "{alg}");
        let mut tampered = MSG.to_vec();
        tampered[0] ^= 1;
        assert_eq!(
            vk.verify(&tampered, &sig),
            Err(VerifyError::BadSignature),
            "{alg}"
        );
        let mut bad_sig = sig.clone();
        bad_sig[3] ^= 0x40;
        assert_eq!(
            vk.verify(MSG, &bad_sig),
            Err(VerifyError::BadSignature),
            "{alg}"
        );
        // Every algorithm of another family is refused before any crypto runs.
        for other in JwsAlgorithm::ALL {
            if !jwk.key.fits(other) {
                assert_eq!(
                    jwk.verifying_key(other).err(),
                    Some(VerifyError::AlgMismatch { alg: other }),
                    "{alg} key with {other}"
                );
            }
        }
    }
}

#[test]
fn a_pinned_alg_is_the_only_one_allowed() {
    let rsa = TestKey::rsa();
    let jwk = Jwk::from_json(&rsa.jwk_with(json!({"alg": "PS256"}))).unwrap();
    assert!(jwk.verifying_key(JwsAlgorithm::PS256).is_ok());
    assert_eq!(
        jwk.verifying_key(JwsAlgorithm::RS256).err(),
        Some(VerifyError::AlgMismatch {
            alg: JwsAlgorithm::RS256
        })
    );
    // A pin that does not fit the key type is not a usable key.
    assert_eq!(
        Jwk::from_json(&rsa.jwk_with(json!({"alg": "ES256"}))),
        Err(JwkError::UnsupportedAlg("ES256".into()))
    );
    assert_eq!(
        Jwk::from_json(&rsa.jwk_with(json!({"alg": "HS256"}))),
        Err(JwkError::ForbiddenAlg("HS256".into()))
    );
}

#[test]
fn thumbprints_ignore_optional_members_and_differ_per_key() {
    let k = TestKey::p256();
    let bare = Jwk::from_json(&k.jwk()).unwrap();
    let dressed =
        Jwk::from_json(&k.jwk_with(json!({"kid": "x", "alg": "ES256", "use": "sig"}))).unwrap();
    assert_eq!(bare.thumbprint_sha256(), dressed.thumbprint_sha256());
    assert_eq!(bare.thumbprint_sha256().len(), 43);
    let other = Jwk::from_json(&TestKey::p256().jwk()).unwrap();
    assert_ne!(bare.thumbprint_sha256(), other.thumbprint_sha256());
}

#[test]
fn rfc8037_ed25519_thumbprint_vector() {
    // RFC 8037 Appendix A.3.
    let jwk = Jwk::from_json(&json!({
        "kty": "OKP", "crv": "Ed25519",
        "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    }))
    .unwrap();
    assert_eq!(
        jwk.thumbprint_sha256(),
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    );
}

#[test]
fn json_round_trip() {
    for key in [
        TestKey::rsa(),
        TestKey::p256(),
        TestKey::p384(),
        TestKey::ed25519(),
    ] {
        let jwk = Jwk::from_json(&key.jwk_with(json!({"kid": "k1"}))).unwrap();
        let again = Jwk::from_json(&serde_json::Value::Object(jwk.to_json())).unwrap();
        assert_eq!(again, jwk);
    }
}

#[test]
fn malformed_keys() {
    assert_eq!(Jwk::from_json(&json!([])), Err(JwkError::NotAnObject));
    assert_eq!(
        Jwk::from_json(&json!({"x": "AA"})),
        Err(JwkError::MissingKty)
    );
    assert_eq!(
        Jwk::from_json(&json!({"kty": "OKP", "crv": "Ed25519", "x": b64u(&[9; 31])})),
        Err(JwkError::BadLength {
            member: "x",
            expected: 32,
            got: 31
        })
    );
    assert_eq!(
        Jwk::from_json(&json!({"kty": "OKP", "crv": "X25519", "x": b64u(&[9; 32])})),
        Err(JwkError::UnsupportedCurve("X25519".into()))
    );
    assert_eq!(
        Jwk::from_json(&json!({"kty": "EC", "crv": "P-256", "x": b64u(&[9; 32])})),
        Err(JwkError::MissingMember("y"))
    );
    // Even exponent: aws-lc refuses it.
    let mut rsa = TestKey::rsa().jwk();
    rsa["e"] = "AQAA".into();
    assert_eq!(Jwk::from_json(&rsa), Err(JwkError::BadRsaKey));
}
