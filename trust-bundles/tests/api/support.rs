//! Keys and certificates made in-test: nothing here is a fixed secret.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, EcdsaSigningAlgorithm, Ed25519KeyPair, KeyPair, RsaEncoding, RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SanType,
};
use serde_json::{Value, json};
use trust_bundles::JwsAlgorithm;

pub fn b64u(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// A signing key of any supported family, with its public JWK.
pub enum TestKey {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair, &'static str),
    Ed(Ed25519KeyPair),
}

impl TestKey {
    pub fn rsa() -> Self {
        Self::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).unwrap())
    }
    pub fn p256() -> Self {
        Self::ec(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256")
    }
    pub fn p384() -> Self {
        Self::ec(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384")
    }
    fn ec(alg: &'static EcdsaSigningAlgorithm, crv: &'static str) -> Self {
        Self::Ec(EcdsaKeyPair::generate(alg).unwrap(), crv)
    }
    pub fn ed25519() -> Self {
        Self::Ed(Ed25519KeyPair::generate().unwrap())
    }

    pub fn jwk(&self) -> Value {
        match self {
            Self::Rsa(k) => {
                let (n, e) = rsa_parts(k.public_key().as_ref());
                json!({"kty": "RSA", "n": b64u(&n), "e": b64u(&e)})
            }
            Self::Ec(k, crv) => ec_jwk(k.public_key().as_ref(), crv),
            Self::Ed(k) => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64u(k.public_key().as_ref())})
            }
        }
    }

    pub fn jwk_with(&self, extra: Value) -> Value {
        let mut v = self.jwk();
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    pub fn sign(&self, alg: JwsAlgorithm, msg: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Self::Rsa(k) => {
                let enc: &'static dyn RsaEncoding = match alg {
                    JwsAlgorithm::RS256 => &signature::RSA_PKCS1_SHA256,
                    JwsAlgorithm::RS384 => &signature::RSA_PKCS1_SHA384,
                    JwsAlgorithm::RS512 => &signature::RSA_PKCS1_SHA512,
                    JwsAlgorithm::PS256 => &signature::RSA_PSS_SHA256,
                    JwsAlgorithm::PS384 => &signature::RSA_PSS_SHA384,
                    JwsAlgorithm::PS512 => &signature::RSA_PSS_SHA512,
                    other => panic!("{other} is not an RSA algorithm"),
                };
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(enc, &rng, msg, &mut sig).unwrap();
                sig
            }
            Self::Ec(k, _) => k.sign(&rng, msg).unwrap().as_ref().to_vec(),
            Self::Ed(k) => k.sign(msg).as_ref().to_vec(),
        }
    }
}

pub fn ec_jwk(point: &[u8], crv: &str) -> Value {
    assert_eq!(point[0], 4, "uncompressed point");
    let w = (point.len() - 1) / 2;
    json!({"kty": "EC", "crv": crv, "x": b64u(&point[1..=w]), "y": b64u(&point[w + 1..])})
}

/// Splits a DER RSAPublicKey into minimal big-endian (n, e).
fn rsa_parts(der: &[u8]) -> (Vec<u8>, Vec<u8>) {
    fn read(input: &[u8]) -> (&[u8], &[u8]) {
        assert_eq!(input[0], 0x02);
        let (len, hdr) = match input[1] {
            l if l < 0x80 => (l as usize, 2),
            0x81 => (input[2] as usize, 3),
            0x82 => (((input[2] as usize) << 8) | input[3] as usize, 4),
            _ => panic!("unexpected length"),
        };
        let value = &input[hdr..hdr + len];
        let start = value.iter().position(|&b| b != 0).unwrap();
        (&value[start..], &input[hdr + len..])
    }
    assert_eq!(der[0], 0x30);
    let body = match der[1] {
        0x82 => &der[4..],
        0x81 => &der[3..],
        _ => &der[2..],
    };
    let (n, rest) = read(body);
    let (e, _) = read(rest);
    (n.to_vec(), e.to_vec())
}

pub fn bundle_json(keys: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({"keys": keys, "spiffe_sequence": 7, "spiffe_refresh_hint": 600}))
        .unwrap()
}

// ---- certificates -------------------------------------------------------------------

pub type Issuer = CertifiedIssuer<'static, rcgen::KeyPair>;

/// Validity window used by every test certificate; tests pick `now` relative to it.
pub const NOT_BEFORE: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z
pub const NOT_AFTER: u64 = 1_798_761_600; // 2027-01-01T00:00:00Z
pub const MID: u64 = 1_782_864_000; // 2026-07-01T00:00:00Z

fn base_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.not_before = rcgen::date_time_ymd(2026, 1, 1);
    p.not_after = rcgen::date_time_ymd(2027, 1, 1);
    p
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = base_params(cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

pub fn root_ca(cn: &str) -> Issuer {
    CertifiedIssuer::self_signed(ca_params(cn), rcgen::KeyPair::generate().unwrap()).unwrap()
}

pub fn intermediate_ca(cn: &str, parent: &Issuer) -> Issuer {
    CertifiedIssuer::signed_by(ca_params(cn), rcgen::KeyPair::generate().unwrap(), parent).unwrap()
}

/// How a test leaf deviates from a well-formed X.509-SVID.
#[derive(Clone)]
pub struct LeafSpec {
    pub uris: Vec<&'static str>,
    pub ca: bool,
    pub key_usages: Vec<KeyUsagePurpose>,
    pub ekus: Vec<ExtendedKeyUsagePurpose>,
    pub not_before: (i32, u8, u8),
    pub not_after: (i32, u8, u8),
}

impl Default for LeafSpec {
    fn default() -> Self {
        Self {
            uris: vec!["spiffe://example.org/ns/prod/sa/api"],
            ca: false,
            key_usages: vec![KeyUsagePurpose::DigitalSignature],
            ekus: vec![
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::ServerAuth,
            ],
            not_before: (2026, 1, 1),
            not_after: (2027, 1, 1),
        }
    }
}

pub fn leaf(spec: LeafSpec, issuer: &Issuer) -> rustls_pki_types::CertificateDer<'static> {
    let mut p = base_params("leaf");
    p.subject_alt_names = spec
        .uris
        .iter()
        .map(|u| SanType::URI((*u).try_into().unwrap()))
        .collect();
    if spec.ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    } else {
        p.is_ca = IsCa::ExplicitNoCa;
    }
    p.key_usages = spec.key_usages;
    p.extended_key_usages = spec.ekus;
    let (y, m, d) = spec.not_before;
    p.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = spec.not_after;
    p.not_after = rcgen::date_time_ymd(y, m, d);
    let key = rcgen::KeyPair::generate().unwrap();
    p.signed_by(&key, issuer).unwrap().der().clone()
}

/// The `x509-svid` bundle entry for a CA.
pub fn x509_entry(ca: &Issuer) -> Value {
    let mut k = ec_jwk(ca.key().public_key_raw(), "P-256");
    k["use"] = "x509-svid".into();
    k["x5c"] = json!([STANDARD.encode(ca.der())]);
    k
}
