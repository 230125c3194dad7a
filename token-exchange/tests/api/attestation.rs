//! Runtime attestation evidence (SPEC §6) verified inside whole exchanges: node chains made
//! with rcgen, evidence signed with the node key, and every refusal of the list.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use aws_lc_rs::signature::{self, EcdsaKeyPair};
use serde_json::json;
use token_exchange::attestation::{
    NodeAuthorities, ProcFacts, X509EvidenceVerifier, evidence_digest,
};
use token_exchange::error::EvidenceError;
use token_exchange::{ExchangeError, Outcome};
use trust_bundles::{TrustDomain, UnixTime};

use crate::support::*;

use crate::attest_support::*;

#[test]
fn an_attested_exchange_carries_att_and_cnf() {
    let f = fixture(true);
    let d = Dpop::new();
    let n = f.w.nonce();
    let ev = evidence(&f.node, WORKLOAD, &n, &d.jkt, f.w.now(), facts());
    let out = attested(&f, &d, &n, &ev);
    assert_eq!(
        out.audit.node.as_deref(),
        Some("spiffe://trustbroker.local/enforcer/n1")
    );
    let resp = out.result.unwrap();
    assert_eq!(resp.token_type, "DPoP");
    let c = claims_of(resp.access_token());
    assert_eq!(
        c["att"],
        json!({"node": "spiffe://trustbroker.local/enforcer/n1", "evd": evidence_digest(&ev)})
    );
    assert_eq!(c["cnf"]["jkt"], d.jkt.as_str());
}

fn refusal(out: Outcome) -> ExchangeError {
    out.result.unwrap_err().error
}

#[test]
fn a_consumed_nonce_is_use_fresh_attestation() {
    let f = fixture(false);
    let d = Dpop::new();
    let n = f.w.nonce();
    let ev = evidence(&f.node, WORKLOAD, &n, &d.jkt, f.w.now(), facts());
    assert!(attested(&f, &d, &n, &ev).result.is_ok());
    let again = attested(&f, &d, &n, &ev);
    assert_eq!(World::code(&again), "use_fresh_attestation");
    assert!(again.result.unwrap_err().fresh_nonce.is_some());
}

/// Evidence over a nonce this broker did not mint, or one that has expired, is refused
/// before anything is spent, with a fresh nonce to try again with.
#[test]
fn evidence_over_a_foreign_or_expired_nonce_is_use_fresh_attestation() {
    let f = fixture(false);
    let d = Dpop::new();
    let foreign = token_exchange::nonce::NonceKey::generate()
        .unwrap()
        .mint(trust_bundles::UnixTime::from_secs(f.w.now() + 60))
        .unwrap();
    let ev = evidence(
        &f.node,
        WORKLOAD,
        foreign.as_str(),
        &d.jkt,
        f.w.now(),
        facts(),
    );
    let out = attested(&f, &d, foreign.as_str(), &ev);
    assert_eq!(
        World::code(&out),
        "use_fresh_attestation",
        "a foreign nonce"
    );
    assert!(out.result.unwrap_err().fresh_nonce.is_some());

    let n = f.w.nonce();
    f.w.clock.advance(std::time::Duration::from_secs(60));
    let ev = evidence(&f.node, WORKLOAD, &n, &d.jkt, f.w.now(), facts());
    let out = attested(&f, &d, &n, &ev);
    assert_eq!(
        World::code(&out),
        "use_fresh_attestation",
        "an expired nonce"
    );
    let fresh = out.result.unwrap_err().fresh_nonce.unwrap();
    // The fresh one works, with the same key and new evidence.
    let ev = evidence(
        &f.node,
        WORKLOAD,
        fresh.as_str(),
        &d.jkt,
        f.w.now(),
        facts(),
    );
    assert!(attested(&f, &d, fresh.as_str(), &ev).result.is_ok());
}

#[test]
fn stale_evidence_is_use_fresh_attestation() {
    let f = fixture(false);
    let d = Dpop::new();
    let n = f.w.nonce();
    let ev = evidence(&f.node, WORKLOAD, &n, &d.jkt, f.w.now() - 61, facts());
    let out = attested(&f, &d, &n, &ev);
    assert_eq!(World::code(&out), "use_fresh_attestation");
    assert_eq!(refusal(out), ExchangeError::Evidence(EvidenceError::Stale));
    // Evidence exactly at its limit is still fresh... until the clock moves past exp.
    let n = f.w.nonce();
    let ev = evidence(&f.node, WORKLOAD, &n, &d.jkt, f.w.now() - 59, facts());
    assert!(attested(&f, &d, &n, &ev).result.is_ok());
}

#[test]
fn evidence_bound_to_another_key_is_refused() {
    let f = fixture(false);
    let d = Dpop::new();
    let other = Dpop::new();
    let n = f.w.nonce();
    let ev = evidence(&f.node, WORKLOAD, &n, &other.jkt, f.w.now(), facts());
    let out = attested(&f, &d, &n, &ev);
    assert_eq!(World::code(&out), "invalid_request");
    assert_eq!(
        refusal(out),
        ExchangeError::Evidence(EvidenceError::KeyMismatch)
    );
}

#[test]
fn evidence_for_another_nonce_or_workload_is_refused() {
    let f = fixture(false);
    let d = Dpop::new();
    let n = f.w.nonce();
    let other_nonce = f.w.nonce();
    let ev = evidence(&f.node, WORKLOAD, &other_nonce, &d.jkt, f.w.now(), facts());
    assert_eq!(
        refusal(attested(&f, &d, &n, &ev)),
        ExchangeError::Evidence(EvidenceError::NonceMismatch)
    );
    let ev = evidence(
        &f.node,
        "spiffe://cluster-a.example/ns/secure/sa/other",
        &n,
        &d.jkt,
        f.w.now(),
        facts(),
    );
    assert!(matches!(
        refusal(attested(&f, &d, &n, &ev)),
        ExchangeError::Evidence(EvidenceError::Invalid(_))
    ));
}

#[test]
fn a_revoked_node_is_refused_at_once() {
    let f = fixture(false);
    let d = Dpop::new();
    f.revoked.0.lock().unwrap().insert(f.node.id.clone());
    let n = f.w.nonce();
    let ev = evidence(&f.node, WORKLOAD, &n, &d.jkt, f.w.now(), facts());
    let out = attested(&f, &d, &n, &ev);
    assert_eq!(World::code(&out), "invalid_request");
    assert!(
        matches!(refusal(out), ExchangeError::Evidence(EvidenceError::Invalid(m)) if m.contains("revoked"))
    );
}

#[test]
fn a_node_refused_at_its_enrollment_check_spends_the_nonce_and_the_proof() {
    // The evidence passes every local check; only the shared-state question (is n1 still
    // enrolled?) fails. That question is asked with the nonce and the proof's `jti` in one
    // round trip, so the refused request has spent both, and minted nothing.
    let f = fixture(false);
    let d = Dpop::new();
    f.revoked.0.lock().unwrap().insert(f.node.id.clone());
    let n = f.w.nonce();
    let svid = f.w.svid(SECURE, 600);
    let proof = d.proof_with(
        json!({"typ": "dpop+jwt"}),
        f.w.now(),
        Some(&n),
        json!({"jti": "one-proof"}),
    );
    let ev = evidence(&f.node, WORKLOAD, &n, &d.jkt, f.w.now(), facts());
    let form = [
        ("grant_type", TE),
        ("subject_token", svid.as_str()),
        ("subject_token_type", JWT_TYPE),
        ("audience", PAYMENTS),
    ];
    let out = f.w.exchange(&form, &[&proof], &[&ev]);
    assert!(out.audit.jti_out.is_none());
    assert!(
        matches!(refusal(out), ExchangeError::Evidence(EvidenceError::Invalid(m)) if m.contains("revoked"))
    );

    // n1 enrolled again: the same request now fails on its spent nonce...
    f.revoked.0.lock().unwrap().clear();
    let again = f.w.exchange(&form, &[&proof], &[&ev]);
    assert_eq!(World::code(&again), "use_fresh_attestation");
    // ...and a proof reusing the `jti` with a fresh nonce is a replay.
    let n2 = f.w.nonce();
    let replay = d.proof_with(
        json!({"typ": "dpop+jwt"}),
        f.w.now(),
        Some(&n2),
        json!({"jti": "one-proof"}),
    );
    let ev2 = evidence(&f.node, WORKLOAD, &n2, &d.jkt, f.w.now(), facts());
    assert_eq!(
        refusal(f.w.exchange(&form, &[&replay], &[&ev2])),
        ExchangeError::DpopReplayed
    );
    // A new proof and a fresh nonce go through: the node itself is fine again.
    let n3 = f.w.nonce();
    let ev3 = evidence(&f.node, WORKLOAD, &n3, &d.jkt, f.w.now(), facts());
    assert!(attested(&f, &d, &n3, &ev3).result.is_ok());
}

#[test]
fn a_remembered_node_chain_is_still_asked_about_revocation() {
    // 1. An exchange with n1's evidence: its chain is now remembered as verified.
    let f = fixture(false);
    let d = Dpop::new();
    let n = f.w.nonce();
    let ev = evidence(&f.node, WORKLOAD, &n, &d.jkt, f.w.now(), facts());
    assert!(attested(&f, &d, &n, &ev).result.is_ok());
    // 2. n1 is revoked: the same chain, in new evidence, is refused at once.
    f.revoked.0.lock().unwrap().insert(f.node.id.clone());
    let n = f.w.nonce();
    let ev = evidence(&f.node, WORKLOAD, &n, &d.jkt, f.w.now(), facts());
    assert!(
        matches!(refusal(attested(&f, &d, &n, &ev)), ExchangeError::Evidence(EvidenceError::Invalid(m)) if m.contains("revoked"))
    );
}

#[test]
fn a_remembered_node_chain_expires_with_its_certificate() {
    // 1. Verified (and remembered) while the node certificate is valid.
    let f = fixture(false);
    let d = Dpop::new();
    let n = f.w.nonce();
    let ev = evidence(&f.node, WORKLOAD, &n, &d.jkt, f.w.now(), facts());
    assert!(attested(&f, &d, &n, &ev).result.is_ok());
    // 2. Past the certificate's notAfter (2026-08-01), fresh evidence with the same chain
    // is refused: the memory holds only inside the validity.
    f.w.clock.set(UnixTime::from_secs(1_785_542_400 + 60)); // 2026-08-01T00:01:00Z
    let n = f.w.nonce();
    let ev = evidence(&f.node, WORKLOAD, &n, &d.jkt, f.w.now(), facts());
    let e = refusal(attested(&f, &d, &n, &ev));
    assert!(
        matches!(&e, ExchangeError::Evidence(EvidenceError::Invalid(m)) if m.contains("expired")),
        "{e:?}"
    );
}

#[test]
fn a_remembered_node_chain_vouches_for_its_own_node_only() {
    // n1's chain is remembered; n2's (another node of the same CA) is not n1's: its
    // evidence verifies with its own key and names its own node.
    let f = fixture(false);
    let d = Dpop::new();
    assert!(attest_fresh(&f, &d, &f.node).result.is_ok());
    let n2 = enroll(&f.ca, "spiffe://trustbroker.local/enforcer/n2");
    for _ in 0..2 {
        let out = attest_fresh(&f, &d, &n2);
        assert!(out.result.is_ok(), "{:?}", out.result.err());
        assert_eq!(
            out.audit.node.as_deref(),
            Some("spiffe://trustbroker.local/enforcer/n2")
        );
    }
    // And n1 still names n1.
    let out = attest_fresh(&f, &d, &f.node);
    assert_eq!(out.audit.node.as_deref(), Some(f.node.id.as_str()));
}

/// Evidence from `node` whose header carries `x5c` as given (or none).
fn evidence_with_x5c(f: &Fixture, d: &Dpop, nonce: &str, x5c: Option<serde_json::Value>) -> String {
    use aws_lc_rs::rand::SystemRandom;
    let mut header = json!({"alg": "ES256", "typ": "runtime-attestation+jwt"});
    if let Some(x5c) = x5c {
        header["x5c"] = x5c;
    }
    let claims = json!({
        "iss": f.node.id, "sub": WORKLOAD, "nonce": nonce, "cnf": {"jkt": d.jkt},
        "iat": f.w.now(), "exp": f.w.now() + 60, "proc": facts(),
    });
    let input = trust_bundles::jws::signing_input(&header, &claims);
    let sig = f
        .node
        .key
        .sign(&SystemRandom::new(), input.as_bytes())
        .unwrap();
    trust_bundles::jws::compact(&input, sig.as_ref())
}

#[test]
fn a_remembered_node_chain_is_forgotten_with_its_node_ca() {
    // n1's chain is remembered under the node CA it verified against; the node CA is
    // replaced: the same chain no longer verifies.
    let f = fixture(false);
    let d = Dpop::new();
    assert!(attest_fresh(&f, &d, &f.node).result.is_ok());
    f.authorities.write().unwrap().local = bundle_for(&node_ca());
    let e = refusal(attest_fresh(&f, &d, &f.node));
    assert!(
        matches!(&e, ExchangeError::Evidence(EvidenceError::Invalid(m)) if m.contains("chain")),
        "{e:?}"
    );
}

#[test]
fn a_malformed_x5c_is_refused_whether_the_chain_is_remembered_or_not() {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    let f = fixture(false);
    let d = Dpop::new();
    let cert = f.node.chain[0].as_ref();
    let text = STANDARD.encode(cert);
    // The well-formed header, built here, passes: the helper is sound.
    let n = f.w.nonce();
    let ev = evidence_with_x5c(&f, &d, &n, Some(json!([text])));
    assert!(attested(&f, &d, &n, &ev).result.is_ok());
    // The chain is now remembered; none of these may ride on it.
    let mut malformed = vec![
        None,
        Some(json!(text)),
        Some(json!([])),
        Some(json!([123])),
        Some(json!(["!!!!"])),
        Some(json!([format!("{text} ")])),
        Some(json!([format!("{text}====")])),
        Some(json!(vec![text.clone(); 6])),
    ];
    // Non-canonical texts of the very same DER: without its padding, and with the bits
    // past the DER's end (in the last character before the padding) set.
    if text.ends_with('=') {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut bytes = text.clone().into_bytes();
        let at = bytes.iter().rposition(|&b| b != b'=').unwrap();
        let index = ALPHABET.iter().position(|&c| c == bytes[at]).unwrap();
        bytes[at] = ALPHABET[index ^ 1];
        malformed.push(Some(json!([String::from_utf8(bytes).unwrap()])));
        malformed.push(Some(json!([STANDARD_NO_PAD.encode(cert)])));
    }
    for x5c in malformed {
        let n = f.w.nonce();
        let ev = evidence_with_x5c(&f, &d, &n, x5c.clone());
        let e = refusal(attested(&f, &d, &n, &ev));
        assert!(
            matches!(&e, ExchangeError::Evidence(EvidenceError::Invalid(m)) if m.contains("x5c")),
            "{x5c:?}: {e:?}"
        );
    }
    // The remembered chain still serves well-formed evidence.
    let n = f.w.nonce();
    let ev = evidence_with_x5c(&f, &d, &n, Some(json!([text])));
    assert!(attested(&f, &d, &n, &ev).result.is_ok());
}

#[test]
fn a_node_of_an_untrusted_ca_is_refused() {
    let f = fixture(false);
    let d = Dpop::new();
    let rogue = enroll(&node_ca(), "spiffe://trustbroker.local/enforcer/n1");
    let n = f.w.nonce();
    let ev = evidence(&rogue, WORKLOAD, &n, &d.jkt, f.w.now(), facts());
    assert!(
        matches!(refusal(attested(&f, &d, &n, &ev)), ExchangeError::Evidence(EvidenceError::Invalid(m)) if m.contains("chain"))
    );
    // A trusted chain whose leaf is not an enforcer identity.
    let impostor = enroll(&f.ca, "spiffe://trustbroker.local/workload/x");
    let n = f.w.nonce();
    let ev = evidence(&impostor, WORKLOAD, &n, &d.jkt, f.w.now(), facts());
    assert!(matches!(
        refusal(attested(&f, &d, &n, &ev)),
        ExchangeError::Evidence(EvidenceError::Invalid(_))
    ));
}

#[test]
fn iss_must_be_the_node_and_the_signature_its_key() {
    let f = fixture(false);
    let d = Dpop::new();
    let n = f.w.nonce();
    let liar = Node {
        id: "spiffe://trustbroker.local/enforcer/n2".into(),
        key: f.node.key_clone(),
        chain: f.node.chain.clone(),
    };
    let ev = evidence(&liar, WORKLOAD, &n, &d.jkt, f.w.now(), facts());
    assert!(
        matches!(refusal(attested(&f, &d, &n, &ev)), ExchangeError::Evidence(EvidenceError::Invalid(m)) if m.contains("iss"))
    );
    // Signed by another key than the certificate's.
    let other = enroll(&f.ca, "spiffe://trustbroker.local/enforcer/n1");
    let forged = Node {
        id: f.node.id.clone(),
        key: other.key,
        chain: f.node.chain.clone(),
    };
    let ev = evidence(&forged, WORKLOAD, &n, &d.jkt, f.w.now(), facts());
    assert!(
        matches!(refusal(attested(&f, &d, &n, &ev)), ExchangeError::Evidence(EvidenceError::Invalid(m)) if m.contains("signature"))
    );
}

#[test]
fn required_facts_must_hold() {
    let f = fixture(true);
    let d = Dpop::new();
    for changed in [
        ProcFacts {
            exe_sha256: "0".repeat(64),
            ..facts()
        },
        ProcFacts { uid: 0, ..facts() },
    ] {
        let n = f.w.nonce();
        let ev = evidence(&f.node, WORKLOAD, &n, &d.jkt, f.w.now(), changed);
        let out = attested(&f, &d, &n, &ev);
        assert_eq!(World::code(&out), "invalid_request");
        assert!(
            matches!(refusal(out), ExchangeError::Evidence(EvidenceError::Invalid(m)) if m.contains("required"))
        );
    }
}

#[test]
fn fifty_concurrent_uses_of_one_nonce_succeed_exactly_once() {
    let f = fixture(false);
    let d = Dpop::new();
    let n = f.w.nonce();
    let ev = evidence(&f.node, WORKLOAD, &n, &d.jkt, f.w.now(), facts());
    let svid = f.w.svid(SECURE, 600);
    let proofs: Vec<String> = (0..50).map(|_| d.proof(f.w.now(), Some(&n))).collect();
    let results: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = proofs
            .iter()
            .map(|p| {
                let (w, svid, ev) = (&f.w, &svid, &ev);
                s.spawn(move || {
                    w.exchange(
                        &[
                            ("grant_type", TE),
                            ("subject_token", svid),
                            ("subject_token_type", JWT_TYPE),
                            ("audience", PAYMENTS),
                        ],
                        &[p],
                        &[ev],
                    )
                    .result
                    .is_ok()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|ok| **ok).count(), 1);
}

trait KeyClone {
    fn key_clone(&self) -> EcdsaKeyPair;
}

impl KeyClone for Node {
    fn key_clone(&self) -> EcdsaKeyPair {
        EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            self.key.to_pkcs8v1().unwrap().as_ref(),
        )
        .unwrap()
    }
}

/// A world whose verifier trusts cluster-a.example's `enforcer_ca` for its subjects, and
/// an enforcer of that domain.
fn foreign_fixture() -> Fixture {
    let local_ca = node_ca();
    let foreign_ca = node_ca();
    let auth = NodeAuthorities {
        local_domain: "trustbroker.local".parse::<TrustDomain>().unwrap(),
        local: bundle_for(&local_ca),
        foreign: HashMap::from([(
            "cluster-a.example".to_owned(),
            (
                "cluster-a.example".parse::<TrustDomain>().unwrap(),
                bundle_for(&foreign_ca),
            ),
        )]),
    };
    let revoked = Arc::new(Revoked::default());
    let authorities = Arc::new(RwLock::new(auth));
    let a = authorities.clone();
    let w = World::build(default_boundaries(), move |_| {
        Arc::new(X509EvidenceVerifier::new(
            a,
            revoked,
            Duration::from_secs(30),
        ))
    });
    Fixture {
        w,
        node: enroll(
            &foreign_ca,
            "spiffe://cluster-a.example/enforcer/k8s-node-1",
        ),
        revoked: Arc::default(),
        ca: foreign_ca,
        authorities,
    }
}

#[test]
fn a_foreign_node_chain_is_never_remembered() {
    // The subject's domain chooses its `enforcer_ca`, and it can be withdrawn: a chain
    // verified through it is not remembered, so once it is gone the node is refused.
    let f = foreign_fixture();
    let d = Dpop::new();
    for _ in 0..2 {
        assert!(attest_fresh(&f, &d, &f.node).result.is_ok());
    }
    f.authorities.write().unwrap().foreign.clear();
    let e = refusal(attest_fresh(&f, &d, &f.node));
    assert!(
        matches!(&e, ExchangeError::Evidence(EvidenceError::Invalid(m)) if m.contains("chain")),
        "{e:?}"
    );
}

#[test]
fn a_foreign_enforcer_ca_vouches_only_through_enforcer_identities() {
    // The domain's enforcer_ca may be its whole SPIRE CA: a workload SVID from it must
    // not be able to sign evidence.
    let f = foreign_fixture();
    let d = Dpop::new();
    let n = f.w.nonce();
    let ev = evidence(&f.node, WORKLOAD, &n, &d.jkt, f.w.now(), facts());
    assert!(attested(&f, &d, &n, &ev).result.is_ok());
    let workload_svid = enroll(&f.ca, WORKLOAD);
    let n = f.w.nonce();
    let ev = evidence(&workload_svid, WORKLOAD, &n, &d.jkt, f.w.now(), facts());
    assert!(matches!(
        refusal(attested(&f, &d, &n, &ev)),
        ExchangeError::Evidence(EvidenceError::Invalid(m)) if m.contains("enforcer identity")
    ));
}
