//! Fixtures for attested exchanges, shared by the attestation tests and the stage
//! benchmarks: a node CA and enrolled nodes made with rcgen, evidence signed with the
//! node key, and a world whose verifier trusts that CA.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::CertificateDer;
use token_exchange::Outcome;
use token_exchange::attestation::{
    EvidenceClaims, EvidenceCnf, NodeAuthorities, NodeStatus, ProcFacts, X509EvidenceVerifier,
    encode_evidence,
};
use token_exchange::policy::AttestationMode;
use token_exchange::state::{BoxFuture, StateError};
use trust_bundles::bundle::X509Authority;
use trust_bundles::x509::leaf_public_key;
use trust_bundles::{SpiffeBundle, TrustDomain};

use crate::support::*;

pub const SECURE: &str = "/ns/secure/sa/api";
/// The SPIFFE ID of the `SECURE` workload, which evidence names.
pub const WORKLOAD: &str = "spiffe://cluster-a.example/ns/secure/sa/api";
pub const EXE_HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// A node CA and one enrolled node with its key.
pub struct Node {
    pub id: String,
    pub key: EcdsaKeyPair,
    pub chain: Vec<CertificateDer<'static>>,
}

pub type Ca = CertifiedIssuer<'static, rcgen::KeyPair>;

pub fn node_ca() -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(p, rcgen::KeyPair::generate().unwrap()).unwrap()
}

pub fn enroll(ca: &Ca, id: &str) -> Node {
    let key = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let pkcs8 = key.to_pkcs8v1().unwrap();
    let rc_key = rcgen::KeyPair::try_from(pkcs8.as_ref()).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.not_before = rcgen::date_time_ymd(2026, 6, 1);
    p.not_after = rcgen::date_time_ymd(2026, 8, 1);
    let cert = p.signed_by(&rc_key, ca).unwrap();
    Node {
        id: id.into(),
        key,
        chain: vec![cert.der().clone()],
    }
}

pub fn bundle_for(ca: &Ca) -> SpiffeBundle {
    let jwk = leaf_public_key(ca.der()).unwrap();
    SpiffeBundle::new(
        None,
        Duration::from_secs(300),
        vec![X509Authority {
            certificate: ca.der().clone(),
            jwk,
        }],
        vec![],
    )
    .unwrap()
}

#[derive(Default)]
pub struct Revoked(pub Mutex<HashSet<String>>);

impl NodeStatus for Revoked {
    fn is_active<'a>(
        &'a self,
        node: &'a str,
        _cert: &'a str,
    ) -> BoxFuture<'a, Result<bool, StateError>> {
        let r = !self.0.lock().unwrap().contains(node);
        Box::pin(async move { Ok(r) })
    }
}

pub struct Fixture {
    pub w: World,
    pub node: Node,
    pub revoked: Arc<Revoked>,
    pub ca: Ca,
    /// The verifier's node CAs, to change under it.
    pub authorities: Arc<RwLock<NodeAuthorities>>,
}

pub fn fixture(require_hash: bool) -> Fixture {
    let ca = node_ca();
    let node = enroll(&ca, "spiffe://trustbroker.local/enforcer/n1");
    let revoked = Arc::new(Revoked::default());
    let auth = NodeAuthorities {
        local_domain: "trustbroker.local".parse::<TrustDomain>().unwrap(),
        local: bundle_for(&ca),
        foreign: HashMap::new(),
    };
    let authorities = Arc::new(RwLock::new(auth));
    let (r, a) = (revoked.clone(), authorities.clone());
    let mut boundaries = default_boundaries();
    if require_hash {
        boundaries[0].require.exe_sha256 = vec![EXE_HASH.into()];
        boundaries[0].require.uid = vec![1000];
    }
    assert_eq!(boundaries[0].attestation, AttestationMode::Required);
    let w = World::build(boundaries, move |_clock| {
        Arc::new(X509EvidenceVerifier::new(a, r, Duration::from_secs(30)))
    });
    Fixture {
        w,
        node,
        revoked,
        ca,
        authorities,
    }
}

pub fn facts() -> ProcFacts {
    ProcFacts {
        pid: 4242,
        start_time: 123_456,
        uid: 1000,
        gid: 1000,
        exe: "/usr/bin/api".into(),
        exe_sha256: EXE_HASH.into(),
        cgroup: "0::/system.slice/api.service".into(),
        container_id: None,
    }
}

pub fn evidence(
    node: &Node,
    sub: &str,
    nonce: &str,
    jkt: &str,
    iat: u64,
    proc: ProcFacts,
) -> String {
    let claims = EvidenceClaims {
        iss: node.id.clone(),
        sub: sub.into(),
        nonce: nonce.into(),
        cnf: EvidenceCnf { jkt: jkt.into() },
        iat,
        exp: iat + 60,
        proc,
    };
    encode_evidence(&claims, &node.chain, |m| {
        node.key
            .sign(&SystemRandom::new(), m)
            .unwrap()
            .as_ref()
            .to_vec()
    })
    .unwrap()
}

/// An attested exchange with fresh evidence from `node`, on a fresh nonce.
pub fn attest_fresh(f: &Fixture, d: &Dpop, node: &Node) -> Outcome {
    let n = f.w.nonce();
    let ev = evidence(node, WORKLOAD, &n, &d.jkt, f.w.now(), facts());
    attested(f, d, &n, &ev)
}

pub fn attested(f: &Fixture, d: &Dpop, nonce: &str, ev: &str) -> Outcome {
    let svid = f.w.svid(SECURE, 600);
    let proof = d.proof(f.w.now(), Some(nonce));
    f.w.exchange(
        &[
            ("grant_type", TE),
            ("subject_token", &svid),
            ("subject_token_type", JWT_TYPE),
            ("audience", PAYMENTS),
        ],
        &[&proof],
        &[ev],
    )
}
