//! One micro-benchmark per stage of the exchange pipeline, so that a regression points at
//! its stage: request parsing, JWS parsing, subject verification, DPoP, policy, a node
//! chain seen for the first time (evidence), and a whole bearer exchange (mint included).
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

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use rustls_pki_types::CertificateDer;
use support::*;
use token_exchange::dpop::{ProofTarget, verify_proof};
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

    c.bench_function("bearer exchange (all stages, mint included)", |b| {
        b.iter(|| {
            let out = w.exchange(black_box(&form), &[], &[]);
            assert!(out.result.is_ok());
        });
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
