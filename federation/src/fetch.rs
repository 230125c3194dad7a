//! Fetching keys from foreign endpoints without being turned against our own network
//! (SPEC §7): https only (plain http to loopback only when the danger switch says so),
//! every resolved address checked and the connection pinned to a checked one, no
//! redirects, a size cap, a timeout, TLS 1.2 or later.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rustls_pki_types::CertificateDer;

use trust_bundles::x509::{SvidUsage, verify_x509_svid};
use trust_bundles::{SpiffeBundle, SpiffeId, TrustDomain};

use crate::outbound::{AddressRefused, check_address};

/// Largest response accepted.
pub const MAX_FETCH_BYTES: usize = 1024 * 1024;
/// Whole-request timeout (SPEC §7).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// How a domain may be fetched from.
#[derive(Debug, Clone)]
pub struct FetchPolicy {
    /// `[danger] allow_http_fetch_to_loopback`.
    pub allow_http_loopback: bool,
    /// Whether the domain may live on private addresses.
    pub allow_private: bool,
    /// Extra roots for this domain's https (`tls_ca`).
    pub extra_roots: Vec<CertificateDer<'static>>,
    pub timeout: Duration,
    pub max_bytes: usize,
    /// `https_spiffe`: authenticate the endpoint by its X.509-SVID instead of WebPKI.
    pub spiffe: Option<SpiffeEndpoint>,
}

/// The `https_spiffe` profile (SPIFFE Trust Domain and Bundle §5.2.2): the endpoint's
/// X.509-SVID must verify against the domain's held bundle and name `id`.
#[derive(Debug, Clone)]
pub struct SpiffeEndpoint {
    pub trust_domain: TrustDomain,
    pub id: SpiffeId,
    pub bundle: SpiffeBundle,
}

/// A rustls verifier for `https_spiffe` endpoints: never WebPKI, never the host name.
#[derive(Debug)]
struct SvidVerifier {
    endpoint: SpiffeEndpoint,
    algs: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for SvidVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.clone().into_owned()];
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        let id = verify_x509_svid(
            &chain,
            &self.endpoint.bundle,
            &self.endpoint.trust_domain,
            trust_bundles::UnixTime::from_secs(now.as_secs()),
            SvidUsage::Server,
        )
        .map_err(|e| rustls::Error::General(format!("endpoint SVID: {e}")))?;
        if id != self.endpoint.id {
            return Err(rustls::Error::General(format!(
                "endpoint SVID names {id}, not {}",
                self.endpoint.id
            )));
        }
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}

fn spiffe_tls(endpoint: &SpiffeEndpoint) -> Result<rustls::ClientConfig, FetchError> {
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = SvidVerifier {
        endpoint: endpoint.clone(),
        algs: provider.signature_verification_algorithms,
    };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| FetchError::Transport(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
        .with_no_client_auth())
}

impl Default for FetchPolicy {
    fn default() -> Self {
        Self {
            allow_http_loopback: false,
            allow_private: false,
            extra_roots: Vec::new(),
            timeout: FETCH_TIMEOUT,
            max_bytes: MAX_FETCH_BYTES,
            spiffe: None,
        }
    }
}

/// Why a fetch did not return a body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("not a URL with a host")]
    BadUrl,
    #[error("scheme must be https (http only to loopback with the danger switch)")]
    Scheme,
    #[error("cannot resolve the host: {0}")]
    Resolve(String),
    #[error("address {ip} refused: {why}")]
    Address { ip: IpAddr, why: AddressRefused },
    #[error("redirects are not followed")]
    Redirect,
    #[error("status {0}")]
    Status(u16),
    #[error("response over {0} bytes")]
    TooLarge(usize),
    #[error("timed out")]
    Timeout,
    #[error("transport: {0}")]
    Transport(String),
}

fn is_loopback_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => *d == "localhost",
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
}

/// A fetched body and how long its server says it stays fresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub body: Vec<u8>,
    /// From `Cache-Control`/`Expires` ([`crate::cache::freshness`]); `None` when absent.
    pub fresh_for: Option<Duration>,
}

/// Fetches `url` under `policy`. Nothing is connected to before every address the host
/// resolves to has been checked.
pub async fn fetch(url: &str, policy: &FetchPolicy) -> Result<Vec<u8>, FetchError> {
    fetch_fresh(url, policy).await.map(|f| f.body)
}

/// [`fetch`], keeping what the cache headers say about freshness.
pub async fn fetch_fresh(url: &str, policy: &FetchPolicy) -> Result<Fetched, FetchError> {
    let parsed = url::Url::parse(url).map_err(|_| FetchError::BadUrl)?;
    let host = parsed.host().ok_or(FetchError::BadUrl)?;
    match parsed.scheme() {
        "https" => {}
        "http" if policy.allow_http_loopback && is_loopback_host(&host) => {}
        _ => return Err(FetchError::Scheme),
    }
    let port = parsed.port_or_known_default().ok_or(FetchError::BadUrl)?;
    let host_str = parsed.host_str().ok_or(FetchError::BadUrl)?.to_owned();

    // Resolve, then check every address: a name that resolves to one public and one
    // metadata address is refused, not raced.
    let addrs: Vec<SocketAddr> = match host {
        url::Host::Ipv4(ip) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        url::Host::Ipv6(ip) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        url::Host::Domain(d) => {
            tokio::time::timeout(policy.timeout, tokio::net::lookup_host((d, port)))
                .await
                .map_err(|_| FetchError::Timeout)?
                .map_err(|e| FetchError::Resolve(e.to_string()))?
                .collect()
        }
    };
    let first = *addrs
        .first()
        .ok_or_else(|| FetchError::Resolve("no addresses".into()))?;
    for a in &addrs {
        check_address(a.ip(), policy.allow_private)
            .map_err(|why| FetchError::Address { ip: a.ip(), why })?;
    }

    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(policy.timeout)
        .connect_timeout(policy.timeout)
        .tls_version_min(reqwest::tls::Version::TLS_1_2)
        .https_only(parsed.scheme() == "https")
        .no_proxy()
        // Connect to the address we checked, whatever DNS says next.
        .resolve(&host_str, first);
    match &policy.spiffe {
        Some(endpoint) => {
            if parsed.scheme() != "https" {
                return Err(FetchError::Scheme);
            }
            builder = builder.use_preconfigured_tls(spiffe_tls(endpoint)?);
        }
        None => {
            for root in &policy.extra_roots {
                let cert = reqwest::Certificate::from_der(root.as_ref())
                    .map_err(|e| FetchError::Transport(e.to_string()))?;
                builder = builder.add_root_certificate(cert);
            }
        }
    }
    let client = builder
        .build()
        .map_err(|e| FetchError::Transport(e.to_string()))?;
    let transport = |e: reqwest::Error| {
        if e.is_timeout() {
            return FetchError::Timeout;
        }
        // reqwest's own message hides the cause (a TLS or SVID refusal): keep the chain.
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            msg.push_str(": ");
            msg.push_str(&cause.to_string());
            source = cause.source();
        }
        FetchError::Transport(msg)
    };
    let mut resp = client.get(parsed).send().await.map_err(transport)?;
    let status = resp.status();
    if status.is_redirection() {
        return Err(FetchError::Redirect);
    }
    if status.as_u16() != 200 {
        return Err(FetchError::Status(status.as_u16()));
    }
    if resp
        .content_length()
        .is_some_and(|n| n > policy.max_bytes as u64)
    {
        return Err(FetchError::TooLarge(policy.max_bytes));
    }
    let header = |name: reqwest::header::HeaderName| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (cc, expires, date, age) = (
        header(reqwest::header::CACHE_CONTROL),
        header(reqwest::header::EXPIRES),
        header(reqwest::header::DATE),
        header(reqwest::header::AGE),
    );
    let fresh_for = crate::cache::freshness(crate::cache::CacheHeaders {
        cache_control: cc.as_deref(),
        expires: expires.as_deref(),
        date: date.as_deref(),
        age: age.as_deref(),
    });
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > policy.max_bytes {
            return Err(FetchError::TooLarge(policy.max_bytes));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Fetched { body, fresh_for })
}
