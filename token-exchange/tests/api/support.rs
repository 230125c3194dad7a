//! A small world for exchange tests: a foreign SPIFFE domain, an OIDC issuer, a broker
//! with its key ring, and a workload's DPoP key. Every key is made at test time.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use token_exchange::attestation::RefuseAllEvidence;
use token_exchange::exchange::{ExchangeSettings, Stores};
use token_exchange::glob::Glob;
use token_exchange::keys::{BrokerKeySource, KeyRing, RotationPolicy, SigningAlg};
use token_exchange::policy::{
    AttestationMode, Boundary, OutputType, Policy, RequiredFacts, TokenLimits,
};
use token_exchange::state::{MemoryStore, StaticKeys};
use token_exchange::subject::{DomainKind, DomainPolicy, Validator};
use token_exchange::{Exchanger, Inbound, Outcome};
use trust_bundles::jws;
use trust_bundles::{Jwk, JwsAlgorithm, ManualClock, UnixTime};

pub const T0: u64 = 1_782_864_000; // 2026-07-01T00:00:00Z
pub const ISSUER: &str = "http://127.0.0.1:8080";
pub const LOCAL_TD: &str = "trustbroker.local";
pub const CLUSTER: &str = "cluster-a.example";
pub const GITHUB: &str = "github-actions";
pub const GITHUB_ISS: &str = "https://token.actions.githubusercontent.com";
pub const PAYMENTS: &str = "https://payments.example/api";
pub const TE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const AT_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const ID_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";

/// Runs a future whose every await is ready (all test stores are in memory).
pub fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1000 {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("future did not complete");
}

pub fn b64u(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// An issuer's signing key.
pub enum Signer {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

impl Signer {
    pub fn es256() -> Self {
        Self::Ec(EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap())
    }
    pub fn rs256() -> Self {
        Self::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).unwrap())
    }
    pub fn jwk_value(&self) -> Value {
        match self {
            Self::Ec(k) => {
                let p = k.public_key().as_ref();
                json!({"kty":"EC","crv":"P-256","x":b64u(&p[1..33]),"y":b64u(&p[33..])})
            }
            Self::Rsa(k) => {
                let der = k.public_key().as_ref();
                // SEQUENCE { INTEGER n, INTEGER e } with 2-byte lengths for a 2048-bit key.
                let n_len = ((der[6] as usize) << 8) | der[7] as usize;
                let n = &der[8..8 + n_len];
                let n = &n[n.iter().position(|&b| b != 0).unwrap()..];
                let e_hdr = 8 + n_len;
                let e_len = der[e_hdr + 1] as usize;
                let e = &der[e_hdr + 2..e_hdr + 2 + e_len];
                json!({"kty":"RSA","n":b64u(n),"e":b64u(e)})
            }
        }
    }
    pub fn jwk(&self, kid: &str) -> Jwk {
        let mut v = self.jwk_value();
        v["kid"] = kid.into();
        Jwk::from_json(&v).unwrap()
    }
    pub fn sign(&self, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Self::Ec(k) => k.sign(&rng, input).unwrap().as_ref().to_vec(),
            Self::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, input, &mut sig)
                    .unwrap();
                sig
            }
        }
    }
    /// A compact JWS over exactly these header and claims.
    pub fn token(&self, header: Value, claims: Value) -> String {
        let input = jws::signing_input(&header, &claims);
        jws::compact(&input, &self.sign(input.as_bytes()))
    }
}

/// A workload's DPoP key and proof maker.
pub struct Dpop {
    pub key: EcdsaKeyPair,
    pub jkt: String,
    counter: std::cell::Cell<u32>,
}

impl Dpop {
    pub fn new() -> Self {
        let key = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let s = Signer::Ec(
            EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                key.to_pkcs8v1().unwrap().as_ref(),
            )
            .unwrap(),
        );
        let jkt = Jwk::from_json(&s.jwk_value()).unwrap().thumbprint_sha256();
        Self {
            key,
            jkt,
            counter: 0.into(),
        }
    }
    pub fn jwk_value(&self) -> Value {
        let p = self.key.public_key().as_ref();
        json!({"kty":"EC","crv":"P-256","x":b64u(&p[1..33]),"y":b64u(&p[33..])})
    }
    /// A proof for the broker's token endpoint at `iat` with `nonce`.
    pub fn proof(&self, iat: u64, nonce: Option<&str>) -> String {
        self.proof_with(json!({"typ":"dpop+jwt"}), iat, nonce, json!({}))
    }
    pub fn proof_with(
        &self,
        header_extra: Value,
        iat: u64,
        nonce: Option<&str>,
        claims_extra: Value,
    ) -> String {
        self.counter.set(self.counter.get() + 1);
        let mut header = json!({"alg":"ES256","jwk": self.jwk_value()});
        for (k, v) in header_extra.as_object().unwrap() {
            header[k] = v.clone();
        }
        let mut claims = json!({
            "jti": format!("proof-{}-{}", self.jkt, self.counter.get()),
            "htm": "POST",
            "htu": format!("{ISSUER}/token"),
            "iat": iat,
        });
        if let Some(n) = nonce {
            claims["nonce"] = n.into();
        }
        for (k, v) in claims_extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        let input = jws::signing_input(&header, &claims);
        let sig = self
            .key
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        jws::compact(&input, sig.as_ref())
    }
}

pub struct World {
    pub clock: Arc<ManualClock>,
    pub cluster: Signer,
    pub github: Signer,
    pub ring: Arc<RwLock<KeyRing>>,
    /// The key the exchanger mints its nonces under.
    pub nonce_key: Arc<token_exchange::nonce::NonceKey>,
    pub exchanger: Exchanger,
}

pub fn boundary(name: &str, from: &str, subjects: &[&str], scopes: &str) -> Boundary {
    Boundary {
        name: name.into(),
        from: from.into(),
        subjects: subjects.iter().map(|s| Glob::new(s).unwrap()).collect(),
        audiences: vec![PAYMENTS.into()],
        scopes: scopes.parse().unwrap(),
        max_ttl: Some(Duration::from_secs(600)),
        attestation: AttestationMode::None,
        unattested_scopes: Default::default(),
        require: RequiredFacts::default(),
        claims: BTreeMap::new(),
        workload: None,
        max_hops: 3,
        single_use: false,
        token_type: OutputType::AccessToken,
    }
}

pub fn default_boundaries() -> Vec<Boundary> {
    let mut gh = boundary(
        "gh-deploy",
        GITHUB,
        &["github-actions#repo:acme/**"],
        "deploy.read deploy.write",
    );
    gh.claims
        .insert("repository".into(), Glob::new("acme/*").unwrap());
    let mut chained = boundary(
        "chained",
        LOCAL_TD,
        &["spiffe://cluster-a.example/**"],
        "payments.read",
    );
    chained.audiences = vec!["https://ledger.example".into()];
    let mut attested = boundary(
        "attested",
        CLUSTER,
        &["spiffe://cluster-a.example/ns/secure/**"],
        "payments.read",
    );
    attested.attestation = AttestationMode::Required;
    let mut optional = boundary(
        "optional",
        CLUSTER,
        &["spiffe://cluster-a.example/ns/opt/**"],
        "a b",
    );
    optional.attestation = AttestationMode::Optional;
    optional.unattested_scopes = "a".parse().unwrap();
    let mut once = boundary(
        "once",
        CLUSTER,
        &["spiffe://cluster-a.example/ns/once/**"],
        "payments.read",
    );
    once.single_use = true;
    let mut iam = boundary(
        "iam",
        CLUSTER,
        &["spiffe://cluster-a.example/ns/iam/**"],
        "sts",
    );
    iam.audiences = vec!["sts.amazonaws.com".into()];
    iam.token_type = OutputType::Jwt;
    vec![
        attested,
        optional,
        once,
        iam,
        boundary(
            "cluster-a-to-payments",
            CLUSTER,
            &["spiffe://cluster-a.example/ns/payments/sa/*"],
            "payments.read payments.write",
        ),
        gh,
        chained,
    ]
}

impl World {
    pub fn new() -> Self {
        Self::with_boundaries(default_boundaries())
    }

    pub fn with_boundaries(boundaries: Vec<Boundary>) -> Self {
        Self::build(boundaries, |_| Arc::new(RefuseAllEvidence))
    }

    /// A world whose evidence verifier is made by `verifier` (given the world's clock).
    pub fn build(
        boundaries: Vec<Boundary>,
        verifier: impl FnOnce(
            Arc<ManualClock>,
        ) -> Arc<dyn token_exchange::attestation::EvidenceVerifier>,
    ) -> Self {
        let clock = Arc::new(ManualClock::new(UnixTime::from_secs(T0)));
        let cluster = Signer::es256();
        let github = Signer::rs256();
        let mut keys = StaticKeys::new();
        keys.insert_domain(CLUSTER, [cluster.jwk("c1")]);
        keys.insert_domain(GITHUB, [github.jwk("g1")]);

        let mut ring = KeyRing::default();
        ring.maintain(
            &[SigningAlg::ES256, SigningAlg::RS256],
            &rotation(),
            clock.now_t(),
        )
        .unwrap();
        let ring = Arc::new(RwLock::new(ring));
        let key_source = Arc::new(BrokerKeySource::new(
            LOCAL_TD.into(),
            ring.clone(),
            clock.clone(),
            Arc::new(keys),
        ));
        let es = vec![JwsAlgorithm::ES256, JwsAlgorithm::RS256];
        let domains = vec![
            DomainPolicy {
                name: CLUSTER.into(),
                kind: DomainKind::Spiffe,
                issuer: None,
                audiences: vec![ISSUER.into()],
                algorithms: es.clone(),
                max_token_age: Some(Duration::from_secs(24 * 3600)),
            },
            DomainPolicy {
                name: GITHUB.into(),
                kind: DomainKind::Oidc,
                issuer: Some(GITHUB_ISS.into()),
                audiences: vec![ISSUER.into()],
                algorithms: vec![JwsAlgorithm::RS256],
                max_token_age: None,
            },
            DomainPolicy {
                name: LOCAL_TD.into(),
                kind: DomainKind::Local,
                issuer: Some(ISSUER.into()),
                audiences: vec![ISSUER.into()],
                algorithms: vec![JwsAlgorithm::ES256],
                max_token_age: None,
            },
        ];
        let validator = Validator::new(domains, key_source, Duration::from_secs(30));
        let store = Arc::new(MemoryStore::new());
        let nonce_key = Arc::new(token_exchange::nonce::NonceKey::generate().unwrap());
        let exchanger = Exchanger::new(
            ExchangeSettings {
                issuer: ISSUER.into(),
                limits: TokenLimits {
                    default_ttl: Duration::from_secs(300),
                    max_ttl: Duration::from_secs(3600),
                },
                skew: Duration::from_secs(30),
            },
            validator,
            Policy::new(boundaries),
            ring.clone(),
            Stores {
                nonce_key: nonce_key.clone(),
                nonces: store.clone(),
                replay: store.clone(),
                single_use: store.clone(),
                revocations: Arc::new(token_exchange::state::MemoryRevocations::new()),
            },
            verifier(clock.clone()),
            clock.clone(),
        );
        Self {
            clock,
            cluster,
            github,
            ring,
            nonce_key,
            exchanger,
        }
    }

    pub fn now(&self) -> u64 {
        self.clock.now_t().as_secs()
    }

    /// A JWT-SVID of cluster-a for `path`, valid for `life` seconds from now.
    pub fn svid(&self, path: &str, life: u64) -> String {
        self.svid_with(path, json!({"exp": self.now() + life}))
    }

    pub fn svid_with(&self, path: &str, extra: Value) -> String {
        let mut claims = json!({
            "sub": format!("spiffe://{CLUSTER}{path}"),
            "aud": [ISSUER],
            "iat": self.now(),
            "exp": self.now() + 600,
        });
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        self.cluster
            .token(json!({"alg":"ES256","kid":"c1","typ":"JWT"}), claims)
    }

    pub fn github_token(&self, extra: Value) -> String {
        let mut claims = json!({
            "iss": GITHUB_ISS,
            "sub": "repo:acme/app:ref:refs/heads/main",
            "aud": ISSUER,
            "repository": "acme/app",
            "ref": "refs/heads/main",
            "workflow": "deploy",
            "iat": self.now(),
            "exp": self.now() + 300,
        });
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        self.github
            .token(json!({"alg":"RS256","kid":"g1","typ":"JWT"}), claims)
    }

    pub fn nonce(&self) -> String {
        self.exchanger.challenge().unwrap().as_str().to_owned()
    }

    pub fn exchange(&self, form: &[(&str, &str)], dpop: &[&str], evidence: &[&str]) -> Outcome {
        let form: Vec<_> = form
            .iter()
            .map(|(k, v)| (Cow::Borrowed(*k), Cow::Borrowed(*v)))
            .collect();
        block_on(self.exchanger.exchange(Inbound {
            form: &form,
            dpop,
            evidence,
        }))
    }

    /// A plain exchange of `subject` for `audience`.
    pub fn simple(&self, subject: &str, audience: &str, scope: Option<&str>) -> Outcome {
        let mut form = vec![
            ("grant_type", TE),
            ("subject_token", subject),
            ("subject_token_type", JWT_TYPE),
            ("audience", audience),
        ];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        self.exchange(&form, &[], &[])
    }

    pub fn code(outcome: &Outcome) -> &'static str {
        match &outcome.result {
            Ok(_) => "ok",
            Err(r) => r.code().as_str(),
        }
    }
}

pub fn rotation() -> RotationPolicy {
    RotationPolicy {
        rotate_every: Duration::from_secs(24 * 3600),
        publish_ahead: Duration::from_secs(3600),
        max_token_ttl: Duration::from_secs(3600),
    }
}

pub trait NowT {
    fn now_t(&self) -> UnixTime;
}

impl NowT for ManualClock {
    fn now_t(&self) -> UnixTime {
        trust_bundles::Clock::now(self)
    }
}

/// Decodes a JWS payload without verifying (the test verifies separately).
pub fn claims_of(token: &str) -> Value {
    let p = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
}

pub fn header_of(token: &str) -> Value {
    let p = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
}
