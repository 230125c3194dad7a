//! The signing-key ring: rotation on schedule, publication ahead, retirement after the
//! last token a key signed has expired, and the 100-key budget.

use std::time::Duration;

use token_exchange::keys::{KeyRing, MAX_PUBLISHED_KEYS, RotationPolicy, SigningAlg};
use trust_bundles::UnixTime;

use crate::support::T0;

const H: u64 = 3600;

fn policy() -> RotationPolicy {
    RotationPolicy {
        rotate_every: Duration::from_secs(24 * H),
        publish_ahead: Duration::from_secs(H),
        max_token_ttl: Duration::from_secs(H),
    }
}

fn at(s: u64) -> UnixTime {
    UnixTime::from_secs(s)
}

#[test]
fn first_start_makes_an_active_key_per_algorithm() {
    let mut ring = KeyRing::default();
    assert!(
        ring.maintain(&[SigningAlg::ES256, SigningAlg::RS256], &policy(), at(T0))
            .unwrap()
    );
    assert_eq!(ring.len(), 2);
    assert!(ring.signer(SigningAlg::ES256, at(T0)).is_ok());
    assert!(ring.signer(SigningAlg::RS256, at(T0)).is_ok());
    // Nothing to do a minute later.
    assert!(
        !ring
            .maintain(
                &[SigningAlg::ES256, SigningAlg::RS256],
                &policy(),
                at(T0 + 60)
            )
            .unwrap()
    );
}

#[test]
fn successor_is_published_ahead_then_signs_and_the_old_key_lingers_then_goes() {
    let algs = [SigningAlg::ES256];
    let mut ring = KeyRing::default();
    ring.maintain(&algs, &policy(), at(T0)).unwrap();
    let first = ring
        .signer(SigningAlg::ES256, at(T0))
        .unwrap()
        .kid()
        .to_owned();

    // Just before the publish-ahead window: no successor yet.
    let t = T0 + 23 * H - 1;
    ring.maintain(&algs, &policy(), at(t)).unwrap();
    assert_eq!(ring.published(at(t)).len(), 1);

    // Inside the window: the successor is published but does not sign yet.
    let t = T0 + 23 * H;
    assert!(ring.maintain(&algs, &policy(), at(t)).unwrap());
    let published: Vec<String> = ring
        .published(at(t))
        .iter()
        .map(|k| k.kid().to_owned())
        .collect();
    assert_eq!(published.len(), 2);
    assert_eq!(ring.signer(SigningAlg::ES256, at(t)).unwrap().kid(), first);
    let second = published.iter().find(|k| **k != first).unwrap().clone();

    // At rotation the successor signs; the old key stays published for max_token_ttl.
    let t = T0 + 24 * H;
    ring.maintain(&algs, &policy(), at(t)).unwrap();
    assert_eq!(ring.signer(SigningAlg::ES256, at(t)).unwrap().kid(), second);
    assert!(ring.verification_key(&first, at(t + H - 1)).is_some());

    // Once every token it signed has expired, it is gone.
    ring.maintain(&algs, &policy(), at(t + H)).unwrap();
    assert!(ring.verification_key(&first, at(t + H)).is_none());
    assert!(ring.verification_key(&second, at(t + H)).is_some());
}

#[test]
fn a_broker_down_through_a_rotation_recovers_with_a_fresh_key() {
    let algs = [SigningAlg::ES256];
    let mut ring = KeyRing::default();
    ring.maintain(&algs, &policy(), at(T0)).unwrap();
    let t = T0 + 10 * 24 * H;
    assert!(ring.signer(SigningAlg::ES256, at(t)).is_err());
    ring.maintain(&algs, &policy(), at(t)).unwrap();
    assert!(ring.signer(SigningAlg::ES256, at(t)).is_ok());
    assert_eq!(ring.len(), 1, "expired keys are dropped");
}

#[test]
fn records_round_trip_and_keep_signing() {
    let mut ring = KeyRing::default();
    ring.maintain(&[SigningAlg::ES256, SigningAlg::RS256], &policy(), at(T0))
        .unwrap();
    let records = ring.records();
    assert!(!format!("{records:?}").contains(&records[0].pkcs8_b64));
    let again = KeyRing::from_records(records.clone()).unwrap();
    for alg in [SigningAlg::ES256, SigningAlg::RS256] {
        let a = ring.signer(alg, at(T0)).unwrap();
        let b = again.signer(alg, at(T0)).unwrap();
        assert_eq!(a.kid(), b.kid());
        assert_eq!(a.jwk(), b.jwk());
        let sig = b.sign(b"msg").unwrap();
        a.jwk()
            .verifying_key(alg.jws())
            .unwrap()
            .verify(b"msg", &sig)
            .unwrap();
    }
    let mut broken = records;
    broken[0].pkcs8_b64 = "AAAA".into();
    assert!(KeyRing::from_records(broken).is_err());
}

#[test]
fn at_most_100_keys_are_published() {
    // Rotating every minute with hour-long tokens keeps ~61 keys per algorithm alive.
    let p = RotationPolicy {
        rotate_every: Duration::from_secs(60),
        publish_ahead: Duration::from_secs(0),
        max_token_ttl: Duration::from_secs(2 * H),
    };
    let mut ring = KeyRing::default();
    let mut t = T0;
    for _ in 0..130 {
        ring.maintain(&[SigningAlg::ES256], &p, at(t)).unwrap();
        t += 60;
    }
    assert!(ring.len() > MAX_PUBLISHED_KEYS);
    let published = ring.published(at(t - 60));
    assert_eq!(published.len(), MAX_PUBLISHED_KEYS);
    // The signing key is always among them.
    let signer = ring
        .signer(SigningAlg::ES256, at(t - 60))
        .unwrap()
        .kid()
        .to_owned();
    assert!(published.iter().any(|k| k.kid() == signer));
}
