//! X.509-SVID chains made with rcgen, verified against bundles parsed from JSON.

use rcgen::{ExtendedKeyUsagePurpose, KeyUsagePurpose};
use rustls_pki_types::CertificateDer;
use trust_bundles::x509::{MAX_INTERMEDIATES, SvidError};
use trust_bundles::{SpiffeBundle, SvidUsage, TrustDomain, UnixTime, verify_x509_svid};

use crate::support::*;

fn td() -> TrustDomain {
    "example.org".parse().unwrap()
}

fn bundle_of(cas: &[&Issuer]) -> SpiffeBundle {
    SpiffeBundle::parse(&bundle_json(cas.iter().map(|ca| x509_entry(ca)).collect())).unwrap()
}

fn verify_at(
    chain: &[CertificateDer<'_>],
    bundle: &SpiffeBundle,
    now: u64,
) -> Result<String, SvidError> {
    verify_x509_svid(
        chain,
        bundle,
        &td(),
        UnixTime::from_secs(now),
        SvidUsage::Client,
    )
    .map(|id| id.to_string())
}

#[test]
fn leaf_signed_by_root_verifies() {
    let ca = root_ca("root");
    let leaf = leaf(LeafSpec::default(), &ca);
    assert_eq!(
        verify_at(&[leaf], &bundle_of(&[&ca]), MID),
        Ok("spiffe://example.org/ns/prod/sa/api".into())
    );
}

#[test]
fn leaf_through_intermediates_up_to_the_budget() {
    let root = root_ca("root");
    let mut issuers = vec![root];
    for i in 0..=MAX_INTERMEDIATES {
        let next = intermediate_ca(&format!("int{i}"), issuers.last().unwrap());
        issuers.push(next);
    }
    let bundle = bundle_of(&[&issuers[0]]);
    // Exactly MAX_INTERMEDIATES intermediates: accepted.
    let at_budget = &issuers[1..=MAX_INTERMEDIATES];
    let leaf1 = leaf(LeafSpec::default(), at_budget.last().unwrap());
    let mut chain = vec![leaf1];
    chain.extend(at_budget.iter().rev().map(|i| i.der().clone()));
    assert!(verify_at(&chain, &bundle, MID).is_ok());

    // One more: refused before any signature is checked.
    let over = &issuers[1..=MAX_INTERMEDIATES + 1];
    let leaf2 = leaf(LeafSpec::default(), over.last().unwrap());
    let mut chain = vec![leaf2];
    chain.extend(over.iter().rev().map(|i| i.der().clone()));
    assert_eq!(
        verify_at(&chain, &bundle, MID),
        Err(SvidError::DepthExceeded {
            intermediates: MAX_INTERMEDIATES + 1,
            max: MAX_INTERMEDIATES
        })
    );
}

#[test]
fn expiry_is_checked_against_the_injected_clock() {
    let ca = root_ca("root");
    let bundle = bundle_of(&[&ca]);
    let leaf = leaf(
        LeafSpec {
            not_before: (2026, 3, 1),
            not_after: (2026, 4, 1),
            ..LeafSpec::default()
        },
        &ca,
    );
    let mar_15 = 1_773_532_800;
    assert!(verify_at(std::slice::from_ref(&leaf), &bundle, mar_15).is_ok());
    assert!(matches!(
        verify_at(std::slice::from_ref(&leaf), &bundle, MID),
        Err(SvidError::Expired { .. })
    ));
    assert!(matches!(
        verify_at(std::slice::from_ref(&leaf), &bundle, NOT_BEFORE),
        Err(SvidError::NotYetValid { .. })
    ));
    // The root's own validity counts too.
    assert!(matches!(
        verify_at(&[leaf], &bundle, NOT_AFTER + 1),
        Err(SvidError::Expired { .. })
    ));
}

#[test]
fn wrong_root_is_unknown_issuer() {
    let ca = root_ca("root");
    let stranger = root_ca("stranger");
    let leaf = leaf(LeafSpec::default(), &ca);
    assert_eq!(
        verify_at(&[leaf], &bundle_of(&[&stranger]), MID),
        Err(SvidError::UnknownIssuer)
    );
}

#[test]
fn bundle_without_x509_authorities_trusts_no_chain() {
    let ca = root_ca("root");
    let leaf = leaf(LeafSpec::default(), &ca);
    let empty = SpiffeBundle::parse(br#"{"keys":[]}"#).unwrap();
    assert_eq!(
        verify_at(&[leaf], &empty, MID),
        Err(SvidError::NoAuthorities)
    );
}

#[test]
fn ca_used_as_leaf_is_refused() {
    let ca = root_ca("root");
    let leaf = leaf(
        LeafSpec {
            ca: true,
            key_usages: vec![KeyUsagePurpose::DigitalSignature],
            ..LeafSpec::default()
        },
        &ca,
    );
    assert_eq!(
        verify_at(&[leaf], &bundle_of(&[&ca]), MID),
        Err(SvidError::LeafIsCa)
    );
}

#[test]
fn uri_san_count_must_be_one() {
    let ca = root_ca("root");
    let bundle = bundle_of(&[&ca]);
    let two = leaf(
        LeafSpec {
            uris: vec!["spiffe://example.org/a", "spiffe://example.org/b"],
            ..LeafSpec::default()
        },
        &ca,
    );
    assert_eq!(
        verify_at(&[two], &bundle, MID),
        Err(SvidError::UriSanCount { count: 2 })
    );
    let none = leaf(
        LeafSpec {
            uris: vec![],
            ..LeafSpec::default()
        },
        &ca,
    );
    assert_eq!(
        verify_at(&[none], &bundle, MID),
        Err(SvidError::UriSanCount { count: 0 })
    );
}

#[test]
fn uri_san_must_be_a_spiffe_id_of_the_trust_domain() {
    let ca = root_ca("root");
    let bundle = bundle_of(&[&ca]);
    let https = leaf(
        LeafSpec {
            uris: vec!["https://example.org/a"],
            ..LeafSpec::default()
        },
        &ca,
    );
    assert!(matches!(
        verify_at(&[https], &bundle, MID),
        Err(SvidError::NotSpiffeId(_))
    ));
    let foreign = leaf(
        LeafSpec {
            uris: vec!["spiffe://other.org/a"],
            ..LeafSpec::default()
        },
        &ca,
    );
    assert!(matches!(
        verify_at(&[foreign], &bundle, MID),
        Err(SvidError::WrongTrustDomain { .. })
    ));
}

#[test]
fn key_usage_rules_of_the_x509_svid_standard() {
    let ca = root_ca("root");
    let bundle = bundle_of(&[&ca]);
    let no_ds = leaf(
        LeafSpec {
            key_usages: vec![KeyUsagePurpose::KeyEncipherment],
            ..LeafSpec::default()
        },
        &ca,
    );
    assert_eq!(
        verify_at(&[no_ds], &bundle, MID),
        Err(SvidError::MissingDigitalSignature)
    );
    let no_ku = leaf(
        LeafSpec {
            key_usages: vec![],
            ..LeafSpec::default()
        },
        &ca,
    );
    assert_eq!(
        verify_at(&[no_ku], &bundle, MID),
        Err(SvidError::MissingDigitalSignature)
    );
    let signer = leaf(
        LeafSpec {
            key_usages: vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyCertSign,
            ],
            ..LeafSpec::default()
        },
        &ca,
    );
    assert_eq!(
        verify_at(&[signer], &bundle, MID),
        Err(SvidError::LeafCanSign)
    );
}

#[test]
fn extended_key_usage_must_allow_the_use() {
    let ca = root_ca("root");
    let bundle = bundle_of(&[&ca]);
    let server_only = leaf(
        LeafSpec {
            ekus: vec![ExtendedKeyUsagePurpose::ServerAuth],
            ..LeafSpec::default()
        },
        &ca,
    );
    assert!(matches!(
        verify_at(std::slice::from_ref(&server_only), &bundle, MID),
        Err(SvidError::Invalid(_))
    ));
    assert!(
        verify_x509_svid(
            &[server_only],
            &bundle,
            &td(),
            UnixTime::from_secs(MID),
            SvidUsage::Server
        )
        .is_ok()
    );
    // No EKU at all: any use is allowed (RFC 5280 §4.2.1.12).
    let any = leaf(
        LeafSpec {
            ekus: vec![],
            ..LeafSpec::default()
        },
        &ca,
    );
    assert!(verify_at(&[any], &bundle, MID).is_ok());
}

#[test]
fn empty_and_garbage_chains() {
    let ca = root_ca("root");
    let bundle = bundle_of(&[&ca]);
    assert_eq!(verify_at(&[], &bundle, MID), Err(SvidError::EmptyChain));
    let junk = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
    assert!(matches!(
        verify_at(&[junk], &bundle, MID),
        Err(SvidError::Malformed(_))
    ));
}

#[test]
fn a_tampered_leaf_does_not_verify() {
    let ca = root_ca("root");
    let good = leaf(LeafSpec::default(), &ca);
    let mut bytes = good.as_ref().to_vec();
    // Flip a bit of the signature (the last bytes of the DER).
    let n = bytes.len();
    bytes[n - 2] ^= 1;
    assert!(matches!(
        verify_at(&[CertificateDer::from(bytes)], &bundle_of(&[&ca]), MID),
        Err(SvidError::Invalid(_))
    ));
}
