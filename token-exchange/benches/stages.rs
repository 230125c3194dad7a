//! One micro-benchmark per stage of the exchange pipeline, so that a regression points at
//! its stage: request parsing, JWS parsing, subject verification, policy, DPoP, evidence
//! (a node chain seen for the first time, and evidence from a remembered one), minting,
//! and whole bearer and attested exchanges.
//!
//! `cargo bench -p token-exchange --bench stages`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_debug_implementations,
    dead_code,
    reason = "benchmark fixtures"
)]

#[path = "../tests/api/support.rs"]
mod support;

#[path = "../tests/api/attest_support.rs"]
mod attest_support;

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use rustls_pki_types::CertificateDer;
use support::*;
use token_exchange::attestation::{EvidenceContext, EvidenceVerifier as _};
use token_exchange::dpop::{ProofTarget, verify_proof};
use token_exchange::keys::SigningAlg;
use token_exchange::mint::{self, Claims, TokenShape};
use token_exchange::policy::{CrossingContext, TokenLimits, downscope};
use token_exchange::request::ExchangeRequest;
use trust_bundles::jws::UnverifiedJws;
use trust_bundles::{SpiffeBundle, TrustDomain, UnixTime};

fn stages(c: &mut Criterion) {
    let w = World::new();
    let svid = w.svid("/ns/payments/sa/api", 600);
    let form = [
        ("grant_type", TE),
        ("subject_token", svid.as_str()),
        ("subject_token_type", JWT_TYPE),
        ("audience", PAYMENTS),
        ("scope", "payments.read"),
    ];
    let now = UnixTime::from_secs(w.now());

    bare_crypto(c);

    c.bench_function("parse request", |b| {
        b.iter(|| ExchangeRequest::from_form(black_box(&form)).unwrap());
    });
    c.bench_function("parse jws", |b| {
        b.iter(|| UnverifiedJws::parse(black_box(&svid), 16 * 1024).unwrap());
    });

    let rules = w.exchanger.rules();
    let request = ExchangeRequest::from_form(&form).unwrap();
    c.bench_function("subject verify", |b| {
        b.iter(|| block_on(rules.validator.validate(black_box(&request.subject), now)).unwrap());
    });

    let validated = block_on(rules.validator.validate(&request.subject, now)).unwrap();
    c.bench_function("policy select", |b| {
        b.iter(|| {
            rules
                .policy
                .select(black_box(&validated), &request.audience)
                .unwrap()
        });
    });

    let dpop = Dpop::new();
    let proof = dpop.proof(w.now(), Some("nonce-0123456789"));
    let uri = format!("{ISSUER}/token");
    let target = ProofTarget {
        method: "POST",
        uri: &uri,
        now,
        skew: Duration::from_secs(30),
    };
    c.bench_function("dpop verify", |b| {
        b.iter(|| verify_proof(black_box(&proof), &target).unwrap());
    });

    // The evidence stage's expensive part, paid once per node certificate (then
    // remembered): building and checking the node's chain.
    let (chain, bundle, td) = node_chain();
    c.bench_function("evidence node chain (first sight)", |b| {
        b.iter(|| {
            trust_bundles::x509::verify_x509_svid(
                black_box(&chain),
                &bundle,
                &td,
                now,
                trust_bundles::x509::SvidUsage::Client,
            )
            .unwrap()
        });
    });

    let boundary = rules.policy.select(&validated, &request.audience).unwrap();
    let down = downscope(
        &validated,
        boundary,
        &CrossingContext {
            asked: request.scope.as_ref(),
            attested: false,
            limits: TokenLimits {
                default_ttl: Duration::from_secs(300),
                max_ttl: Duration::from_secs(3600),
            },
            issuer: ISSUER,
            now,
        },
    )
    .unwrap();
    let claims = Claims {
        issuer: ISSUER,
        subject: &validated.subject,
        audience: &request.audience,
        scope: &down.scope,
        now,
        ttl: down.ttl,
        cnf: None,
        act: None,
        crossings: &down.crossings,
        att: None,
        lineage: &[],
    };
    c.bench_function("mint (ES256 access token)", |b| {
        let ring = w.ring.read().unwrap();
        let key = ring.signer(SigningAlg::ES256, now).unwrap();
        b.iter(|| mint::mint(TokenShape::AccessToken, black_box(&claims), key).unwrap());
    });

    c.bench_function("bearer exchange (all stages, mint included)", |b| {
        b.iter(|| {
            let out = w.exchange(black_box(&form), &[], &[]);
            assert!(out.result.is_ok());
        });
    });

    attested_stages(c);
}

/// The primitives alone, as the load benchmark's crypto ceiling uses them: what each
/// stage costs beyond these is the stage's own overhead.
fn bare_crypto(c: &mut Criterion) {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, ParsedPublicKey};
    let rng = SystemRandom::new();
    let kp = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let message = vec![b'm'; 500];
    let sig = kp.sign(&rng, &message).unwrap();
    let key = ParsedPublicKey::new(
        &signature::ECDSA_P256_SHA256_FIXED,
        kp.public_key().as_ref(),
    )
    .unwrap();
    c.bench_function("bare ES256 verify (500 bytes, key parsed)", |b| {
        b.iter(|| key.verify_sig(black_box(&message), sig.as_ref()).unwrap());
    });
    c.bench_function("bare ES256 sign (500 bytes)", |b| {
        b.iter(|| kp.sign(&rng, black_box(&message)).unwrap());
    });
}

/// Evidence from a node whose chain the verifier already remembers (the steady state),
/// and a whole attested exchange: subject, DPoP, evidence, node, nonce, mint.
fn attested_stages(c: &mut Criterion) {
    const WORKLOAD: &str = "spiffe://cluster-a.example/ns/secure/sa/api";
    let f = attest_support::fixture(false);
    let now = UnixTime::from_secs(f.w.now());
    let d = Dpop::new();

    let verifier = token_exchange::attestation::X509EvidenceVerifier::new(
        std::sync::Arc::new(std::sync::RwLock::new(
            token_exchange::attestation::NodeAuthorities {
                local_domain: "trustbroker.local".parse().unwrap(),
                local: attest_support::bundle_for(&f.ca),
                foreign: std::collections::HashMap::new(),
            },
        )),
        std::sync::Arc::new(attest_support::Revoked::default()),
        Duration::from_secs(30),
    );
    let svid = f.w.svid(attest_support::SECURE, 600);
    let rules = f.w.exchanger.rules();
    let subject = ExchangeRequest::from_form(&[
        ("grant_type", TE),
        ("subject_token", svid.as_str()),
        ("subject_token_type", JWT_TYPE),
        ("audience", PAYMENTS),
    ])
    .unwrap();
    let validated = block_on(rules.validator.validate(&subject.subject, now)).unwrap();
    let boundary = rules.policy.select(&validated, &subject.audience).unwrap();
    let ev = attest_support::evidence(
        &f.node,
        WORKLOAD,
        "nonce-0123456789",
        &d.jkt,
        f.w.now(),
        attest_support::facts(),
    );
    let ctx = EvidenceContext {
        evidence: &ev,
        subject: &validated,
        boundary,
        now,
    };
    verifier.check(&ctx).unwrap();
    c.bench_function("evidence verify (chain remembered)", |b| {
        b.iter(|| verifier.check(black_box(&ctx)).unwrap());
    });

    c.bench_function("attested exchange (all stages, mint included)", |b| {
        b.iter_batched(
            || {
                let n = f.w.nonce();
                let ev = attest_support::evidence(
                    &f.node,
                    WORKLOAD,
                    &n,
                    &d.jkt,
                    f.w.now(),
                    attest_support::facts(),
                );
                let proof = d.proof(f.w.now(), Some(&n));
                (f.w.svid(attest_support::SECURE, 600), proof, ev)
            },
            |(svid, proof, ev)| {
                let out = f.w.exchange(
                    &[
                        ("grant_type", TE),
                        ("subject_token", &svid),
                        ("subject_token_type", JWT_TYPE),
                        ("audience", PAYMENTS),
                    ],
                    &[&proof],
                    &[&ev],
                );
                assert!(out.result.is_ok());
            },
            BatchSize::SmallInput,
        );
    });
}

fn node_chain() -> (Vec<CertificateDer<'static>>, SpiffeBundle, TrustDomain) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyUsagePurpose, SanType,
    };
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(p, rcgen::KeyPair::generate().unwrap()).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = vec![SanType::URI(
        "spiffe://trustbroker.local/enforcer/n1".try_into().unwrap(),
    )];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.not_before = rcgen::date_time_ymd(2026, 6, 1);
    p.not_after = rcgen::date_time_ymd(2026, 8, 1);
    let leaf = p
        .signed_by(&rcgen::KeyPair::generate().unwrap(), &ca)
        .unwrap();
    let bundle = SpiffeBundle::new(
        None,
        Duration::from_secs(300),
        vec![trust_bundles::bundle::X509Authority {
            certificate: ca.der().clone(),
            jwk: trust_bundles::x509::leaf_public_key(ca.der()).unwrap(),
        }],
        vec![],
    )
    .unwrap();
    (
        vec![leaf.der().clone()],
        bundle,
        "trustbroker.local".parse().unwrap(),
    )
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = stages
}
criterion_main!(benches);
