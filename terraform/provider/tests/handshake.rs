//! The plugin's side of go-plugin's handshake, driven as Terraform drives it: a magic
//! cookie, a client certificate in the environment, one handshake line on stdout, then
//! TLS that admits only the pinned client certificate. (The whole provider against the
//! real Terraform CLI is in the end-to-end tests: `tests/tests/e2e/terraform.rs`.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests fail loudly by design"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use base64::Engine;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

const COOKIE: (&str, &str) = (
    "TF_PLUGIN_MAGIC_COOKIE",
    "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2",
);

/// A client identity like go-plugin's: a self-signed CA certificate.
struct ClientIdentity {
    pem: String,
    der: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

fn client_identity() -> ClientIdentity {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    ];
    let cert = params.self_signed(&key).unwrap();
    ClientIdentity {
        pem: cert.pem(),
        der: cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

struct Plugin {
    child: Child,
    line: String,
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(env: &[(&str, &str)]) -> Plugin {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_terraform-provider-trustbroker"));
    cmd.env_clear()
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    Plugin { child, line }
}

/// A TLS client presenting `who`, trusting the certificate from the handshake line.
fn connect(line: &str, who: &ClientIdentity) -> Result<(), rustls::Error> {
    let parts: Vec<&str> = line.trim_end().split('|').collect();
    let server_der = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(parts[5])
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(server_der)).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![who.der.clone()], who.key.clone_key())
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let sock = TcpStream::connect(parts[3]).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    // The HTTP/2 preface; a refused client certificate surfaces here (TLS 1.3 reports
    // it after the client's Finished).
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .map_err(io_to_tls)?;
    let mut buf = [0u8; 9];
    tls.read_exact(&mut buf).map_err(io_to_tls)?;
    assert_eq!(
        tls.conn.alpn_protocol(),
        Some(&b"h2"[..]),
        "gRPC needs h2 by ALPN"
    );
    Ok(())
}

fn io_to_tls(e: std::io::Error) -> rustls::Error {
    match e
        .into_inner()
        .and_then(|i| i.downcast::<rustls::Error>().ok())
    {
        Some(e) => *e,
        None => rustls::Error::General("connection closed".into()),
    }
}

#[test]
fn without_the_magic_cookie_it_explains_itself_and_exits() {
    let out = Command::new(env!("CARGO_BIN_EXE_terraform-provider-trustbroker"))
        .env_clear()
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        out.stdout.is_empty(),
        "no handshake line without the cookie"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Terraform plugin"), "{err}");
}

#[test]
fn a_terraform_that_speaks_only_protocol_5_is_told_so() {
    let out = Command::new(env!("CARGO_BIN_EXE_terraform-provider-trustbroker"))
        .env_clear()
        .env(COOKIE.0, COOKIE.1)
        .env("PLUGIN_PROTOCOL_VERSIONS", "4,5")
        .env("PLUGIN_CLIENT_CERT", client_identity().pem)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("speaks 6"));
}

#[test]
fn without_a_client_certificate_it_refuses_to_serve() {
    let out = Command::new(env!("CARGO_BIN_EXE_terraform-provider-trustbroker"))
        .env_clear()
        .env(COOKIE.0, COOKIE.1)
        .env("PLUGIN_PROTOCOL_VERSIONS", "5,6")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PLUGIN_CLIENT_CERT"));
}

#[test]
fn only_the_pinned_client_certificate_gets_a_connection() {
    let terraform = client_identity();
    let stranger = client_identity();
    let plugin = start(&[
        COOKIE,
        ("PLUGIN_PROTOCOL_VERSIONS", "5,6"),
        ("PLUGIN_CLIENT_CERT", &terraform.pem),
    ]);

    // 1. The handshake line: core 1, protocol 6, TCP on loopback, gRPC, a certificate.
    let parts: Vec<&str> = plugin.line.trim_end().split('|').collect();
    assert_eq!(parts.len(), 6, "{:?}", plugin.line);
    assert_eq!(&parts[..3], ["1", "6", "tcp"]);
    assert!(parts[3].starts_with("127.0.0.1:"), "{}", parts[3]);
    assert_eq!(parts[4], "grpc");
    assert!(
        !parts[5].ends_with('='),
        "go-plugin decodes unpadded base64"
    );

    // 2. Terraform's own certificate — a CA certificate, as go-plugin makes it — is let in.
    connect(&plugin.line, &terraform).unwrap();

    // 3. Any other certificate, even one shaped the same way, is refused in the handshake.
    let refused = connect(&plugin.line, &stranger).unwrap_err();
    assert!(
        matches!(
            refused,
            rustls::Error::AlertReceived(_) | rustls::Error::General(_)
        ),
        "{refused:?}"
    );

    // 4. And the plugin is still serving its real client.
    connect(&plugin.line, &terraform).unwrap();
}
