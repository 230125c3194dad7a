//! X.509-SVID verification (SPIFFE X509-SVID standard §4, §5) against a trust domain's
//! bundle, with rustls-webpki doing the path building and signature checks.

use rustls_pki_types::{CertificateDer, TrustAnchor};
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::bundle::SpiffeBundle;
use crate::clock::UnixTime;
use crate::spiffe_id::{SpiffeId, SpiffeIdError, TrustDomain};

/// Most intermediates a presented chain may carry (leaf and root not counted). SPIRE
/// deployments use zero to two; the budget caps path-building work on untrusted input.
pub const MAX_INTERMEDIATES: usize = 4;

/// Which extended key usage the leaf must allow, when it lists any (RFC 5280 §4.2.1.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SvidUsage {
    /// The SVID authenticates a client: a node enforcer, a workload.
    Client,
    /// The SVID authenticates a server: a bundle endpoint under `https_spiffe`.
    Server,
}

/// Why an X.509-SVID chain is refused. The most specific reason found first, in a fixed
/// order: budget, leaf shape, trust domain, then the chain itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SvidError {
    #[error("no certificate was presented")]
    EmptyChain,
    #[error("{intermediates} intermediates exceed the budget of {max}")]
    DepthExceeded { intermediates: usize, max: usize },
    #[error("leaf certificate is malformed: {0}")]
    Malformed(String),
    #[error("leaf must carry exactly one URI SAN, found {count}")]
    UriSanCount { count: usize },
    #[error("leaf URI SAN is not a SPIFFE ID: {0}")]
    NotSpiffeId(SpiffeIdError),
    #[error("leaf is a CA certificate")]
    LeafIsCa,
    #[error("leaf key usage lacks digitalSignature")]
    MissingDigitalSignature,
    #[error("leaf key usage allows certificate or CRL signing")]
    LeafCanSign,
    #[error("leaf SPIFFE ID {id} is not in trust domain {expected}")]
    WrongTrustDomain { id: SpiffeId, expected: TrustDomain },
    #[error("the bundle holds no X.509 authorities")]
    NoAuthorities,
    #[error("a certificate in the chain expired at {not_after} (now {now})")]
    Expired { now: u64, not_after: u64 },
    #[error("a certificate in the chain is not valid before {not_before} (now {now})")]
    NotYetValid { now: u64, not_before: u64 },
    #[error("the chain does not lead to an authority of the bundle")]
    UnknownIssuer,
    #[error("the chain does not verify: {0}")]
    Invalid(String),
}

/// Verifies `chain` (leaf first, then intermediates) as an X.509-SVID of `trust_domain`
/// at time `now`, against the X.509 authorities of `bundle`, and returns the leaf's
/// SPIFFE ID.
pub fn verify_x509_svid(
    chain: &[CertificateDer<'_>],
    bundle: &SpiffeBundle,
    trust_domain: &TrustDomain,
    now: UnixTime,
    usage: SvidUsage,
) -> Result<SpiffeId, SvidError> {
    let (leaf, intermediates) = chain.split_first().ok_or(SvidError::EmptyChain)?;
    if intermediates.len() > MAX_INTERMEDIATES {
        return Err(SvidError::DepthExceeded {
            intermediates: intermediates.len(),
            max: MAX_INTERMEDIATES,
        });
    }

    let id = check_leaf(leaf)?;
    if !id.is_member_of(trust_domain) {
        return Err(SvidError::WrongTrustDomain {
            id,
            expected: trust_domain.clone(),
        });
    }

    let anchors = bundle
        .x509_authorities()
        .iter()
        .map(|a| webpki::anchor_from_trusted_cert(&a.certificate))
        .collect::<Result<Vec<TrustAnchor<'_>>, _>>()
        .map_err(|e| SvidError::Invalid(format!("bundle authority: {e}")))?;
    if anchors.is_empty() {
        return Err(SvidError::NoAuthorities);
    }
    let ee = EndEntityCert::try_from(leaf).map_err(|e| SvidError::Malformed(e.to_string()))?;
    let eku = match usage {
        SvidUsage::Client => KeyUsage::client_auth(),
        SvidUsage::Server => KeyUsage::server_auth(),
    };
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        intermediates,
        now.into(),
        eku,
        None,
        None,
    )
    .map_err(map_webpki)?;
    Ok(id)
}

/// X509-SVID §4.1, §4.3: exactly one URI SAN holding a SPIFFE ID, not a CA, may sign
/// data (`digitalSignature`) but not certificates or CRLs.
fn check_leaf(leaf: &CertificateDer<'_>) -> Result<SpiffeId, SvidError> {
    let malformed = |e: &dyn std::fmt::Display| SvidError::Malformed(e.to_string());
    let (rest, cert) = X509Certificate::from_der(leaf.as_ref()).map_err(|e| malformed(&e))?;
    if !rest.is_empty() {
        return Err(SvidError::Malformed("trailing bytes".into()));
    }

    let san = cert.subject_alternative_name().map_err(|e| malformed(&e))?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    let [uri] = uris.as_slice() else {
        return Err(SvidError::UriSanCount { count: uris.len() });
    };
    let id: SpiffeId = uri.parse().map_err(SvidError::NotSpiffeId)?;

    let basic = cert.basic_constraints().map_err(|e| malformed(&e))?;
    if basic.is_some_and(|bc| bc.value.ca) {
        return Err(SvidError::LeafIsCa);
    }
    let key_usage = cert.key_usage().map_err(|e| malformed(&e))?;
    let Some(ku) = key_usage.map(|ext| ext.value) else {
        return Err(SvidError::MissingDigitalSignature);
    };
    if !ku.digital_signature() {
        return Err(SvidError::MissingDigitalSignature);
    }
    if ku.key_cert_sign() || ku.crl_sign() {
        return Err(SvidError::LeafCanSign);
    }
    Ok(id)
}

/// The span in which every certificate of `chain` is valid: the latest `notBefore` and
/// the earliest `notAfter`, in Unix seconds (what a cached verification may rely on).
pub fn chain_validity(chain: &[CertificateDer<'_>]) -> Result<(u64, u64), SvidError> {
    let mut span = (0u64, u64::MAX);
    for c in chain {
        let (_, cert) = X509Certificate::from_der(c.as_ref())
            .map_err(|e| SvidError::Malformed(e.to_string()))?;
        let v = cert.validity();
        let secs = |t: i64| u64::try_from(t).unwrap_or(0);
        span.0 = span.0.max(secs(v.not_before.timestamp()));
        span.1 = span.1.min(secs(v.not_after.timestamp()));
    }
    Ok(span)
}

/// The leaf's public key as a JWK, for verifying what the SVID's holder signed. EC keys on
/// P-256 and P-384 only (the curves of ES256/ES384).
pub fn leaf_public_key(leaf: &CertificateDer<'_>) -> Result<crate::Jwk, SvidError> {
    let (_, cert) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| SvidError::Malformed(e.to_string()))?;
    let spki = cert.public_key();
    if spki.algorithm.algorithm != x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY {
        return Err(SvidError::Malformed("leaf key is not an EC key".into()));
    }
    crate::Jwk::from_ec_point(spki.subject_public_key.data.as_ref())
        .map_err(|e| SvidError::Malformed(format!("leaf key: {e}")))
}

fn map_webpki(e: webpki::Error) -> SvidError {
    use webpki::Error as E;
    match e {
        E::CertExpired { time, not_after } => SvidError::Expired {
            now: time.as_secs(),
            not_after: not_after.as_secs(),
        },
        E::CertNotValidYet { time, not_before } => SvidError::NotYetValid {
            now: time.as_secs(),
            not_before: not_before.as_secs(),
        },
        E::UnknownIssuer => SvidError::UnknownIssuer,
        E::MaximumPathDepthExceeded
        | E::MaximumPathBuildCallsExceeded
        | E::MaximumSignatureChecksExceeded => SvidError::DepthExceeded {
            intermediates: MAX_INTERMEDIATES + 1,
            max: MAX_INTERMEDIATES,
        },
        E::CaUsedAsEndEntity => SvidError::LeafIsCa,
        other => SvidError::Invalid(format!("{other:?}")),
    }
}
