//! The enforcer's local API over a real Unix socket: the caller is identified by the
//! kernel (SO_PEERCRED) and its real `/proc` facts.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests fail loudly by design"
)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, RwLock};

use aws_lc_rs::signature::{self, EcdsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use enforcer::config::{Registration, Registrations, Selectors};
use enforcer::identity::{Identity, NodeState};
use enforcer::procfs::{ProcSource, RealProc};
use enforcer::server::Enforcer;
use serde_json::{Value, json};
use trust_bundles::SystemClock;

fn identity() -> Identity {
    let key = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let rc = rcgen::KeyPair::try_from(key.to_pkcs8v1().unwrap().as_ref()).unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://t.example/enforcer/n1".try_into().unwrap(),
    )];
    let cert = p.self_signed(&rc).unwrap();
    Identity {
        key,
        state: NodeState {
            broker: "http://127.0.0.1:9".into(),
            node: "n1".into(),
            spiffe_id: "spiffe://t.example/enforcer/n1".into(),
            certificate: STANDARD.encode(cert.der().as_ref()),
            ca: String::new(),
            issued_at: 0,
            expires_at: u64::MAX,
        },
    }
}

fn start(dir: &Path, selectors: Selectors) -> std::path::PathBuf {
    let socket = dir.join("e.sock");
    let enforcer = Arc::new(Enforcer {
        identity: Arc::new(RwLock::new(identity())),
        registrations: Registrations(vec![Registration {
            spiffe_id: "spiffe://t.example/ns/a/sa/me".parse().unwrap(),
            selectors,
        }]),
        procs: Arc::new(RealProc::default()),
        clock: Arc::new(SystemClock),
        watch: Arc::default(),
    });
    let s = socket.clone();
    std::thread::spawn(move || enforcer::server::run(enforcer, &s));
    for _ in 0..200 {
        if UnixStream::connect(&socket).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    socket
}

fn ask(socket: &Path, body: &str) -> (u16, Value) {
    let mut s = UnixStream::connect(socket).unwrap();
    write!(
        s,
        "POST /v1/evidence HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (
        head.split_whitespace().nth(1).unwrap().parse().unwrap(),
        serde_json::from_str(body).unwrap(),
    )
}

const JKT: &str = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";

#[test]
fn a_registered_caller_gets_evidence_about_itself_from_the_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let me = RealProc::default().facts(std::process::id()).unwrap();
    let socket = start(
        dir.path(),
        Selectors {
            exe: Some(me.exe.clone()),
            uid: Some(me.uid),
            ..Selectors::default()
        },
    );
    // The body claims nothing about who is calling; the kernel does.
    let (status, body) = ask(&socket, &json!({"nonce": "n-1", "jkt": JKT}).to_string());
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expires_in"], 60);
    let ev = body["evidence"].as_str().unwrap();
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(ev.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(ev.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["typ"], "runtime-attestation+jwt");
    assert_eq!(header["x5c"].as_array().unwrap().len(), 1);
    assert_eq!(claims["iss"], "spiffe://t.example/enforcer/n1");
    assert_eq!(claims["sub"], "spiffe://t.example/ns/a/sa/me");
    assert_eq!(claims["nonce"], "n-1");
    assert_eq!(claims["cnf"]["jkt"], JKT);
    assert_eq!(claims["proc"]["pid"], std::process::id());
    assert_eq!(claims["proc"]["exe"], me.exe);
    assert_eq!(claims["proc"]["exe_sha256"], me.exe_sha256);
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        60
    );
}

#[test]
fn an_unregistered_caller_gets_403_and_no_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let me = RealProc::default().facts(std::process::id()).unwrap();
    let socket = start(
        dir.path(),
        Selectors {
            uid: Some(me.uid.wrapping_add(4242)),
            ..Selectors::default()
        },
    );
    let (status, body) = ask(&socket, &json!({"nonce": "n", "jkt": JKT}).to_string());
    assert_eq!((status, body), (403, json!({"error": "no_registration"})));
}

#[test]
fn malformed_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let me = RealProc::default().facts(std::process::id()).unwrap();
    let socket = start(
        dir.path(),
        Selectors {
            uid: Some(me.uid),
            ..Selectors::default()
        },
    );
    for body in [
        "{}",
        "not json",
        r#"{"nonce":"n","jkt":"short"}"#,
        r#"{"nonce":"n","jkt":"NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs","pid":1}"#,
    ] {
        assert_eq!(ask(&socket, body).0, 400, "{body}");
    }
}
