//! `parse(to_json(b)) == b` for arbitrary bundles built from a pool of real keys.

use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;
use rustls_pki_types::CertificateDer;
use trust_bundles::bundle::{JwtAuthority, X509Authority};
use trust_bundles::{Jwk, JwsAlgorithm, SpiffeBundle};

use crate::support::*;

struct Pool {
    jwks: Vec<Jwk>,
    x509: Vec<(CertificateDer<'static>, Jwk)>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let keys = [
            TestKey::rsa(),
            TestKey::p256(),
            TestKey::p384(),
            TestKey::ed25519(),
        ];
        let jwks = keys
            .iter()
            .map(|k| Jwk::from_json(&k.jwk()).unwrap())
            .collect();
        let x509 = (0..3)
            .map(|i| {
                let ca = root_ca(&format!("ca{i}"));
                let jwk = Jwk::from_json(&ec_jwk(ca.key().public_key_raw(), "P-256")).unwrap();
                (ca.der().clone(), jwk)
            })
            .collect();
        Pool { jwks, x509 }
    })
}

fn arb_bundle() -> impl Strategy<Value = SpiffeBundle> {
    let jwt = prop::collection::vec((0usize..4, any::<bool>()), 0..6);
    let x509 = prop::collection::vec(0usize..3, 0..3);
    (
        proptest::option::of(any::<u64>()),
        any::<u32>(),
        jwt,
        x509,
        "[A-Za-z0-9._-]{1,12}",
    )
        .prop_map(|(seq, hint, jwt, x509, kid_prefix)| {
            let p = pool();
            let jwt = jwt
                .into_iter()
                .enumerate()
                .map(|(i, (k, pin))| {
                    let mut jwk = p.jwks[k].clone();
                    let kid = format!("{kid_prefix}-{i}").parse().unwrap();
                    jwk.kid = Some(kid);
                    if pin {
                        jwk.alg = JwsAlgorithm::ALL.into_iter().find(|a| jwk.key.fits(*a));
                    }
                    JwtAuthority {
                        kid: jwk.kid.clone().unwrap(),
                        jwk,
                    }
                })
                .collect();
            let x509 = x509
                .into_iter()
                .map(|i| X509Authority {
                    certificate: p.x509[i].0.clone(),
                    jwk: p.x509[i].1.clone(),
                })
                .collect();
            SpiffeBundle::new(seq, Duration::from_secs(hint.into()), x509, jwt).unwrap()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn parse_of_to_json_is_identity(b in arb_bundle()) {
        let json = b.to_json();
        let again = SpiffeBundle::parse(&json).unwrap();
        prop_assert_eq!(&again, &b);
        prop_assert_eq!(again.to_json(), json);
        prop_assert!(b.refresh_hint() >= Duration::from_secs(30));
        prop_assert!(b.refresh_hint() <= Duration::from_secs(86_400));
    }
}
