//! `terraform-provider-trustbroker`: Terraform's plugin protocol 6 over go-plugin's gRPC
//! transport, with go-plugin's automatic mutual TLS.
//!
//! Terraform starts this binary with a magic cookie, the protocol versions it speaks and
//! its own client certificate (`PLUGIN_CLIENT_CERT`). The plugin makes a fresh server
//! certificate, listens on loopback, prints one handshake line
//! (`1|6|tcp|127.0.0.1:PORT|grpc|<server certificate, base64>`) and serves gRPC over TLS
//! to exactly the client whose certificate it was handed — that certificate is pinned
//! byte for byte (it is a self-signed CA certificate, which path validation would
//! rightly refuse as an end entity).

mod api;
mod grpc;
mod proto;
mod provider;
mod schema;
mod value;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use futures_util::stream;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// go-plugin's handshake cookie for Terraform providers.
const MAGIC_COOKIE_KEY: &str = "TF_PLUGIN_MAGIC_COOKIE";
const MAGIC_COOKIE_VALUE: &str = "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2";

/// go-plugin's core protocol version, and the Terraform plugin protocol served.
const CORE_PROTOCOL: u32 = 1;
const APP_PROTOCOL: u32 = 6;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("terraform-provider-trustbroker: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    if std::env::var(MAGIC_COOKIE_KEY).as_deref() != Ok(MAGIC_COOKIE_VALUE) {
        return Err("this is a Terraform plugin: Terraform runs it, with \
             `provider \"trustbroker\" {}` in a configuration"
            .into());
    }
    if let Ok(versions) = std::env::var("PLUGIN_PROTOCOL_VERSIONS")
        && !versions.split(',').any(|v| v.trim() == "6")
    {
        return Err(format!(
            "Terraform offers plugin protocol versions {versions}; this provider speaks 6 \
             (Terraform 1.0 or later)"
        ));
    }
    let client_pem = std::env::var("PLUGIN_CLIENT_CERT")
        .map_err(|_| "PLUGIN_CLIENT_CERT is not set: Terraform's automatic mTLS is required")?;
    let client_der = client_certificate(&client_pem)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(serve(client_der))
}

fn client_certificate(pem: &str) -> Result<CertificateDer<'static>, String> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or("PLUGIN_CLIENT_CERT holds no certificate")?
        .map_err(|e| format!("PLUGIN_CLIENT_CERT: {e}"))
}

/// A certificate for `localhost`, made for this run only.
fn server_identity() -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned()]).map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((cert.der().clone(), key_der))
}

/// Accepts exactly the certificate Terraform handed over, and checks the handshake
/// signatures made with its key.
#[derive(Debug)]
struct PinnedClient {
    der: CertificateDer<'static>,
    crypto: Arc<CryptoProvider>,
}

impl ClientCertVerifier for PinnedClient {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.der.as_ref() {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.crypto.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.crypto.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.crypto
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn tls_acceptor(
    client: CertificateDer<'static>,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> Result<TlsAcceptor, String> {
    let crypto = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(PinnedClient {
        der: client,
        crypto: crypto.clone(),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(crypto)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert], key)
        .map_err(|e| e.to_string())?;
    // gRPC clients insist on HTTP/2 by ALPN.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn serve(client: CertificateDer<'static>) -> Result<(), String> {
    let (cert, key) = server_identity()?;
    let acceptor = tls_acceptor(client, cert.clone(), key)?;
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .map_err(|e| format!("listen on loopback: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;

    // Terraform forwards ^C itself and then asks the plugin to stop; dying on SIGINT
    // mid-apply would lose what the broker already did.
    tokio::spawn(async { while tokio::signal::ctrl_c().await.is_ok() {} });

    let (shutdown, mut stopped) = watch::channel(false);
    // Terraform gone without a word (killed, crashed): this process is re-parented, and
    // stops rather than linger.
    let orphaned = shutdown.clone();
    tokio::spawn(async move {
        let parent = std::os::unix::process::parent_id();
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            if std::os::unix::process::parent_id() != parent {
                let _ = orphaned.send(true);
                return;
            }
        }
    });
    let service = grpc::Service {
        provider: provider::Provider::new(),
        shutdown,
    };
    let incoming = stream::unfold((listener, acceptor), |(listener, acceptor)| async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            // A connection that fails the handshake (a stranger, no certificate) is
            // dropped; the listener goes on.
            match acceptor.accept(tcp).await {
                Ok(tls) => return Some((Ok::<_, std::io::Error>(tls), (listener, acceptor))),
                Err(e) => eprintln!("terraform-provider-trustbroker: TLS handshake refused: {e}"),
            }
        }
    });

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{CORE_PROTOCOL}|{APP_PROTOCOL}|tcp|{addr}|grpc|{}",
        STANDARD_NO_PAD.encode(cert.as_ref())
    )
    .and_then(|()| out.flush())
    .map_err(|e| format!("handshake: {e}"))?;
    drop(out);

    tonic::transport::Server::builder()
        .serve_with_incoming_shutdown(service, incoming, async move {
            let _ = stopped.wait_for(|s| *s).await;
        })
        .await
        .map_err(|e| e.to_string())
}
