//! google-auth's external-account (identity_pool) credentials as a real RFC 8693 client:
//! a file-sourced subject token, exchanged at the broker on an `attestation = "none"`
//! boundary, exactly as a Google client library would.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use trust_bundles::jws::UnverifiedJws;

use crate::world::*;

const SCRIPT: &str = r#"
import json, sys
import google.auth
from google.auth import identity_pool
import google.auth.transport.requests

info = json.load(open(sys.argv[1]))
creds = identity_pool.Credentials.from_info(info, scopes=[sys.argv[2]])
creds.refresh(google.auth.transport.requests.Request())
print(json.dumps({"token": creds.token, "version": google.auth.__version__,
                  "expiry": creds.expiry.isoformat() if creds.expiry else None}))
"#;

fn ok(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import google.auth, requests"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A Python with google-auth ≥ 2.16.1: `TRUSTBROKER_TEST_PYTHON`, the workspace `.venv`
/// (which `.ci/run` prepares), or a fresh `.venv` made here. `None` only without Python.
fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TRUSTBROKER_TEST_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv");
    let py = venv.join("bin/python");
    if ok(&py) {
        return Some(py);
    }
    let made = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&venv)
        .status()
        .ok()?;
    assert!(made.success(), "python3 -m venv failed");
    let pip = Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "google-auth>=2.16.1", "requests"])
        .status()
        .unwrap();
    assert!(pip.success(), "pip install google-auth failed");
    Some(py)
}

#[test]
fn google_auth_identity_pool_credentials_exchange_at_the_broker() {
    let Some(py) = python() else {
        eprintln!("\n*** SKIPPED google-auth interop: python3 is not installed ***\n");
        return;
    };
    // 1. A broker; a workload's JWT-SVID written to a file, as a CSI driver would.
    let w = World::start();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token.jwt");
    std::fs::write(
        &token_file,
        format!("{}\n", w.svid("/ns/gcp/sa/exporter", json!({}))),
    )
    .unwrap();

    // 2. The external-account credential configuration a platform team hands out.
    let config = json!({
        "type": "external_account",
        "audience": GCP_AUDIENCE,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": w.token_url(),
        "credential_source": {"file": token_file},
    });
    let config_file = dir.path().join("credentials.json");
    std::fs::write(&config_file, config.to_string()).unwrap();
    let script = dir.path().join("refresh.py");
    std::fs::write(&script, SCRIPT).unwrap();

    // 3. google-auth refreshes: it performs the RFC 8693 exchange against the broker.
    let out = Command::new(&py)
        .arg(&script)
        .arg(&config_file)
        .arg(GCP_SCOPE)
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "google-auth failed:\n{}\nbroker log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        w.broker.log()
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    let version: Vec<u32> = result["version"]
        .as_str()
        .unwrap()
        .split('.')
        .map(|p| p.parse().unwrap_or(0))
        .collect();
    assert!(
        version >= vec![2, 16, 1],
        "google-auth {version:?} is older than 2.16.1"
    );
    assert!(result["expiry"].is_string());

    // 4. The token it got is ours: right subject, audience, scope, and signature.
    let token = result["token"].as_str().unwrap();
    let jws = UnverifiedJws::parse(token, 16 * 1024).unwrap();
    assert_eq!(jws.header_str("typ"), Some("at+jwt"));
    let jwks: Value = w
        .http
        .get(w.broker.url("/jwks"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let kid = jws.header_str("kid").unwrap().to_owned();
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap();
    let claims = jws
        .verify(&trust_bundles::Jwk::from_json(key).unwrap())
        .unwrap();
    assert_eq!(
        claims["sub"],
        "spiffe://cluster-a.example/ns/gcp/sa/exporter"
    );
    assert_eq!(claims["aud"], GCP_AUDIENCE);
    assert_eq!(claims["scope"], GCP_SCOPE);
    assert!(
        claims.get("cnf").is_none(),
        "a plain RFC 8693 client gets a Bearer token"
    );

    // 5. The broker logged one allow decision for it.
    let audit = w.broker.audit_lines();
    assert_eq!(
        audit
            .iter()
            .filter(|a| a["decision"] == "allow" && a["boundary"] == "gcp")
            .count(),
        1
    );
}
