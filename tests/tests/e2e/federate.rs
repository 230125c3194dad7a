//! A broker following a foreign domain's SPIFFE bundle endpoint (plain http on loopback
//! under the danger switch, for tests).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

use serde_json::{Value, json};
use trustbroker_tests::broker::{Broker, free_port};
use trustbroker_tests::issuers::*;

/// Serves `body` as the bundle at any path.
fn bundle_server(body: String) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

fn config(endpoint: &str) -> String {
    format!(
        r#"issuer = "http://127.0.0.1:{{PORT}}"
listen = "127.0.0.1:{{PORT}}"
[state]
path = "state"
[danger]
allow_http_fetch_to_loopback = true
[[trust_domain]]
name = "cluster-a.example"
bundle_endpoint = {{ url = "{endpoint}", profile = "https_web" }}
[[boundary]]
name = "payments"
from = "cluster-a.example"
subjects = ["spiffe://cluster-a.example/ns/payments/sa/*"]
audiences = ["https://payments.example/api"]
scopes = ["payments.read"]
attestation = "none"
"#
    )
}

fn exchange(b: &Broker, key: &IssuerKey) -> u16 {
    let claims = json!({"sub": "spiffe://cluster-a.example/ns/payments/sa/api", "aud": [b.base], "iat": now(), "exp": now() + 300});
    let svid = key.token(&json!({"alg": "ES256", "kid": "c1"}), &claims);
    reqwest::blocking::Client::new()
        .post(b.url("/token"))
        .form(&[
            ("grant_type", TE),
            ("subject_token", &svid),
            ("subject_token_type", JWT_TYPE),
            ("audience", "https://payments.example/api"),
        ])
        .send()
        .unwrap()
        .status()
        .as_u16()
}

fn refresh_lines(b: &Broker) -> Vec<Value> {
    b.audit_lines()
        .into_iter()
        .filter(|l| l["event"] == "bundle_refresh")
        .collect()
}

fn wait_for(mut f: impl FnMut() -> bool) {
    for _ in 0..100 {
        if f() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn keys_come_from_the_bundle_endpoint_and_each_change_is_audited() {
    // 1. A foreign domain serves its bundle, with one key of an unknown use.
    let key = IssuerKey::es256();
    let mut bundle: Value = serde_json::from_str(&key.bundle_json("c1")).unwrap();
    bundle["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"use": "x-future", "kty": "EC"}));
    let port = bundle_server(bundle.to_string());

    // 2. The broker fetches it at start and accepts tokens signed by its key.
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(
        dir.path(),
        &config(&format!("http://127.0.0.1:{port}/bundle")),
        free_port(),
    );
    wait_for(|| !refresh_lines(&b).is_empty());
    assert_eq!(exchange(&b, &key), 200, "{}", b.log());

    // 3. The audit log shows the change and the skipped key, with reasons.
    let lines = refresh_lines(&b);
    assert!(
        lines.iter().any(|l| l["decision"] == "allow"
            && l["reason"] == "ok"
            && l["domain"] == "cluster-a.example"),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l["reason"] == "key_skipped"),
        "{lines:?}"
    );

    // 4. Another key never validates.
    assert_eq!(exchange(&b, &IssuerKey::es256()), 400);

    // 5. The domain's keys are usable and young, as /metrics says.
    let metrics = reqwest::blocking::get(b.url("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains(r#"trustbroker_bundle_usable{domain="cluster-a.example"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"trustbroker_bundle_age_seconds{domain="cluster-a.example"}"#));
}

#[test]
fn a_dead_endpoint_means_no_keys_and_a_logged_failure() {
    let dead = free_port();
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(
        dir.path(),
        &config(&format!("http://127.0.0.1:{dead}/bundle")),
        free_port(),
    );
    wait_for(|| !refresh_lines(&b).is_empty());
    assert_eq!(exchange(&b, &IssuerKey::es256()), 400);
    let metrics = reqwest::blocking::get(b.url("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains(r#"trustbroker_bundle_usable{domain="cluster-a.example"} 0"#),
        "{metrics}"
    );
    let lines = refresh_lines(&b);
    assert!(
        lines
            .iter()
            .any(|l| l["decision"] == "deny" && l["reason"] == "fetch_failed"),
        "{lines:?}"
    );
}

#[test]
fn a_bundle_endpoint_must_be_https_without_the_danger_switch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.toml");
    std::fs::write(
        &path,
        config("http://127.0.0.1:9/bundle").replace(
            "allow_http_fetch_to_loopback = true",
            "allow_http_fetch_to_loopback = false",
        ),
    )
    .unwrap();
    let out = std::process::Command::new(trustbroker_tests::broker::binary())
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("trust_domain[0].bundle_endpoint"));
}

/// Serves an OIDC discovery document and a JWKS on loopback; returns the issuer URL.
fn oidc_server(jwks: String, issuer_override: Option<&str>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer = format!("http://127.0.0.1:{}", l.local_addr().unwrap().port());
    let doc = json!({
        "issuer": issuer_override.unwrap_or(&issuer),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["id_token"],
    })
    .to_string();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let body = if req.starts_with("GET /.well-known/openid-configuration ") {
                &doc
            } else if req.starts_with("GET /jwks ") {
                &jwks
            } else {
                ""
            };
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    issuer
}

fn oidc_config(issuer: &str) -> String {
    format!(
        r#"issuer = "http://127.0.0.1:{{PORT}}"
listen = "127.0.0.1:{{PORT}}"
[state]
path = "state"
[danger]
allow_http_fetch_to_loopback = true
[[trust_domain]]
name = "github-actions"
kind = "oidc"
issuer = "{issuer}"
[[boundary]]
name = "deploy"
from = "github-actions"
subjects = ["github-actions#repo:acme/**"]
audiences = ["https://payments.example/api"]
scopes = ["deploy"]
claims = {{ repository = "acme/*", ref = "refs/heads/main" }}
attestation = "none"
"#
    )
}

fn github_exchange(b: &Broker, key: &IssuerKey, issuer: &str) -> u16 {
    // The layout of a GitHub Actions OIDC token.
    let claims = json!({
        "iss": issuer, "aud": b.base, "sub": "repo:acme/app:ref:refs/heads/main",
        "repository": "acme/app", "repository_owner": "acme", "ref": "refs/heads/main",
        "workflow": "deploy", "event_name": "push", "runner_environment": "github-hosted",
        "iat": now(), "nbf": now(), "exp": now() + 300, "jti": "gh-1",
    });
    let token = key.token(&json!({"alg": "RS256", "kid": "g1", "typ": "JWT"}), &claims);
    reqwest::blocking::Client::new()
        .post(b.url("/token"))
        .form(&[
            ("grant_type", TE),
            ("subject_token", &token),
            ("subject_token_type", ID_TYPE),
            ("audience", "https://payments.example/api"),
        ])
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn an_oidc_issuer_is_followed_through_discovery() {
    let key = IssuerKey::rs256();
    let issuer = oidc_server(key.jwks_json("g1"), None);
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path(), &oidc_config(&issuer), free_port());
    wait_for(|| !refresh_lines(&b).is_empty());
    assert_eq!(github_exchange(&b, &key, &issuer), 200, "{}", b.log());
    // A look-alike issuer in the token is an unknown issuer.
    assert_eq!(github_exchange(&b, &key, &format!("{issuer}/")), 400);
}

#[test]
fn a_discovery_document_naming_another_issuer_is_refused() {
    let key = IssuerKey::rs256();
    let issuer = oidc_server(key.jwks_json("g1"), Some("https://evil.example"));
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path(), &oidc_config(&issuer), free_port());
    wait_for(|| !refresh_lines(&b).is_empty());
    assert_eq!(github_exchange(&b, &key, &issuer), 400);
    let lines = refresh_lines(&b);
    assert!(
        lines.iter().any(|l| l["reason"] == "fetch_failed"
            && l["detail"].as_str().unwrap_or("").contains("issuer")),
        "{lines:?}"
    );
}

#[test]
fn an_unknown_kid_refetches_once_and_a_flood_of_bogus_kids_fetches_nothing_more() {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // 1. A bundle server whose content can change, counting fetches.
    let old = IssuerKey::es256();
    let new = IssuerKey::es256();
    let body = Arc::new(Mutex::new(old.bundle_json("c1")));
    let hits = Arc::new(AtomicUsize::new(0));
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (b2, h2) = (body.clone(), hits.clone());
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            h2.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = b2.lock().unwrap().clone();
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(
        dir.path(),
        &config(&format!("http://127.0.0.1:{port}/bundle")),
        free_port(),
    );
    wait_for(|| !refresh_lines(&b).is_empty());
    assert_eq!(exchange(&b, &old), 200);
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // 2. The domain rotates to a new key (kid c2); the first token signed by it makes the
    // broker refetch at once, and it validates.
    let mut rotated: Value = serde_json::from_str(&old.bundle_json("c1")).unwrap();
    let mut k2: Value = serde_json::from_str(&new.bundle_json("c2")).unwrap();
    rotated["keys"]
        .as_array_mut()
        .unwrap()
        .push(k2["keys"][0].take());
    rotated["spiffe_sequence"] = 2.into();
    *body.lock().unwrap() = rotated.to_string();
    let claims = json!({"sub": "spiffe://cluster-a.example/ns/payments/sa/api", "aud": [b.base], "iat": now(), "exp": now() + 300});
    let send = |kid: &str, key: &IssuerKey| {
        let svid = key.token(&json!({"alg": "ES256", "kid": kid}), &claims);
        reqwest::blocking::Client::new()
            .post(b.url("/token"))
            .form(&[
                ("grant_type", TE),
                ("subject_token", svid.as_str()),
                ("subject_token_type", JWT_TYPE),
                ("audience", "https://payments.example/api"),
            ])
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(send("c2", &new), 200, "{}", b.log());
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    // 3. Many tokens with bogus kids, at once: no further fetch within 30 s.
    let statuses: Vec<u16> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..40)
            .map(|i| {
                let send = &send;
                let new = &new;
                sc.spawn(move || send(&format!("bogus-{i}"), new))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(statuses.iter().all(|s| *s == 400), "{statuses:?}");
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[test]
fn a_token_crosses_two_brokers_narrowing_at_each_and_max_hops_stops_a_third() {
    // 1. Domain cluster-a → broker A → broker B (which federates with A as kind "broker").
    let cluster = IssuerKey::es256();
    let (pa, pb) = (free_port(), free_port());
    let (a_iss, b_iss) = (
        format!("http://127.0.0.1:{pa}"),
        format!("http://127.0.0.1:{pb}"),
    );
    let da = tempfile::tempdir().unwrap();
    std::fs::write(
        da.path().join("cluster-a.bundle.json"),
        cluster.bundle_json("c1"),
    )
    .unwrap();
    let a_cfg = format!(
        r#"issuer = "{a_iss}"
listen = "127.0.0.1:{pa}"
local_trust_domain = "broker-a.test"
[state]
path = "state"
[[trust_domain]]
name = "cluster-a.example"
bundle_file = "cluster-a.bundle.json"
[[boundary]]
name = "a-to-b"
from = "cluster-a.example"
subjects = ["spiffe://cluster-a.example/**"]
audiences = ["{b_iss}"]
scopes = ["payments.read", "payments.write", "payments.admin"]
max_ttl = "10m"
attestation = "none"
"#
    );
    let a = Broker::start(da.path(), &a_cfg, pa);
    let db = tempfile::tempdir().unwrap();
    let b_cfg = format!(
        r#"issuer = "{b_iss}"
listen = "127.0.0.1:{pb}"
local_trust_domain = "broker-b.test"
[state]
path = "state"
[danger]
allow_http_fetch_to_loopback = true
[[trust_domain]]
name = "broker-a"
kind = "broker"
issuer = "{a_iss}"
[[boundary]]
name = "b-to-ledger"
from = "broker-a"
subjects = ["spiffe://cluster-a.example/**"]
audiences = ["https://ledger.example", "{b_iss}"]
scopes = ["payments.read", "payments.write"]
max_ttl = "20m"
attestation = "none"
max_hops = 2
[[boundary]]
name = "b-again"
from = "broker-b.test"
subjects = ["spiffe://cluster-a.example/**"]
audiences = ["https://ledger.example"]
scopes = ["payments.read"]
attestation = "none"
max_hops = 2
"#
    );
    let b = Broker::start(db.path(), &b_cfg, pb);
    wait_for(|| !refresh_lines(&b).is_empty());

    let http = reqwest::blocking::Client::new();
    let post = |broker: &Broker, token: &str, tt: &str, aud: &str, scope: &str| -> Value {
        http.post(broker.url("/token"))
            .form(&[
                ("grant_type", TE),
                ("subject_token", token),
                ("subject_token_type", tt),
                ("audience", aud),
                ("scope", scope),
            ])
            .send()
            .unwrap()
            .json()
            .unwrap()
    };

    // 2. Crossing 1, at A: three scopes allowed, two asked.
    let claims = json!({"sub": "spiffe://cluster-a.example/ns/payments/sa/api", "aud": [a_iss], "iat": now(), "exp": now() + 3600});
    let svid = cluster.token(&json!({"alg": "ES256", "kid": "c1"}), &claims);
    let at_a = post(&a, &svid, JWT_TYPE, &b_iss, "payments.read payments.write");
    let ta = at_a["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{at_a}"))
        .to_owned();
    let ca = decode_part(&ta, 1);

    // 3. Crossing 2, at B: B learned A's keys through discovery; the scope narrows again
    // and the life never grows (B allows 20 min, A's token has at most 10 left).
    let at_b = post(
        &b,
        &ta,
        AT_TYPE,
        "https://ledger.example",
        "payments.read payments.admin",
    );
    assert_eq!(at_b["scope"], "payments.read", "{at_b}");
    let cb = decode_part(at_b["access_token"].as_str().unwrap(), 1);
    assert!(cb["exp"].as_u64() <= ca["exp"].as_u64());
    let crossings: Vec<&str> = cb["crossings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["boundary"].as_str().unwrap())
        .collect();
    assert_eq!(crossings, ["a-to-b", "b-to-ledger"]);
    assert_eq!(cb["crossings"][0]["iss"], a_iss.as_str());
    assert_eq!(cb["crossings"][1]["iss"], b_iss.as_str());

    // 4. A third crossing (back through B for B itself, then on) exceeds max_hops = 2.
    let to_b = post(&b, &ta, AT_TYPE, &b_iss, "payments.read");
    let tb = to_b["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{to_b}"))
        .to_owned();
    let third = post(&b, &tb, AT_TYPE, "https://ledger.example", "payments.read");
    assert_eq!(third["error"], "invalid_request", "{third}");
    assert!(
        b.audit_lines()
            .iter()
            .any(|l| l["detail"].as_str().unwrap_or("").contains("max_hops"))
    );
}

/// An HTTPS server (rcgen certificate for 127.0.0.1 from a private CA) serving `body`;
/// returns the port and the CA certificate PEM.
fn https_bundle_server(body: String) -> (u16, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let port = serve_tls(&cert, &key, body);
    (port, ca.pem())
}

#[test]
fn an_https_bundle_endpoint_with_a_private_ca_is_trusted_only_through_tls_ca() {
    let key = IssuerKey::es256();
    let (port, ca_pem) = https_bundle_server(key.bundle_json("c1"));
    let endpoint = format!("https://127.0.0.1:{port}/bundle");

    // 1. With the domain's tls_ca, the broker fetches over TLS and accepts its tokens.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca_pem).unwrap();
    let cfg = config(&endpoint)
        .replace(
            "allow_http_fetch_to_loopback = true",
            "allow_http_fetch_to_loopback = false",
        )
        .replace(
            "profile = \"https_web\" }",
            "profile = \"https_web\" }\ntls_ca = \"ca.pem\"",
        );
    let b = Broker::start(dir.path(), &cfg, free_port());
    wait_for(|| !refresh_lines(&b).is_empty());
    assert_eq!(exchange(&b, &key), 200, "{}", b.log());

    // 2. Without it the certificate does not verify: no keys, a logged failure.
    let dir2 = tempfile::tempdir().unwrap();
    let cfg2 = config(&endpoint).replace(
        "allow_http_fetch_to_loopback = true",
        "allow_http_fetch_to_loopback = false",
    );
    let b2 = Broker::start(dir2.path(), &cfg2, free_port());
    wait_for(|| !refresh_lines(&b2).is_empty());
    assert_eq!(exchange(&b2, &key), 400);
    assert!(
        refresh_lines(&b2)
            .iter()
            .any(|l| l["reason"] == "fetch_failed")
    );
}

/// An https_spiffe bundle endpoint: its certificate is an X.509-SVID `id` issued by `ca`.
fn spiffe_endpoint(
    ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    id: &str,
    body: String,
) -> u16 {
    use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose, SanType};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    serve_tls(&cert, &key, body)
}

fn spiffe_ca() -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    rcgen::CertifiedIssuer::self_signed(p, rcgen::KeyPair::generate().unwrap()).unwrap()
}

/// A bundle with `ca` as X.509 authority and `keys` as JWT authorities.
fn spiffe_bundle(
    ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    keys: &[(&IssuerKey, &str)],
    seq: u64,
) -> String {
    let mut x509 = ec_jwk(ca.key().public_key_raw());
    x509["use"] = "x509-svid".into();
    x509["x5c"] = json!([base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        ca.der()
    )]);
    let mut all = vec![x509];
    for (k, kid) in keys {
        let b: Value = serde_json::from_str(&k.bundle_json(kid)).unwrap();
        all.push(b["keys"][0].clone());
    }
    json!({"keys": all, "spiffe_sequence": seq}).to_string()
}

#[test]
fn https_spiffe_endpoints_authenticate_by_svid_against_the_held_bundle() {
    let ca = spiffe_ca();
    let (old, new) = (IssuerKey::es256(), IssuerKey::es256());
    let server_id = "spiffe://cluster-a.example/spire/server";
    let served = spiffe_bundle(&ca, &[(&old, "c1"), (&new, "c2")], 2);
    let honest = spiffe_endpoint(&ca, server_id, served.clone());
    let impostor = spiffe_endpoint(&spiffe_ca(), server_id, served);

    let start = |port: u16, id: &str| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("bootstrap.json"),
            spiffe_bundle(&ca, &[(&old, "c1")], 1),
        )
        .unwrap();
        let cfg = config(&format!("https://127.0.0.1:{port}/bundle"))
            .replace("allow_http_fetch_to_loopback = true", "allow_http_fetch_to_loopback = false")
            .replace("profile = \"https_web\" }", &format!("profile = \"https_spiffe\", spiffe_id = \"{id}\" }}\nbundle_file = \"bootstrap.json\""));
        let b = Broker::start(dir.path(), &cfg, free_port());
        wait_for(|| !refresh_lines(&b).is_empty());
        (b, dir)
    };

    // 1. The endpoint's SVID verifies against the bootstrap bundle and names the
    // configured ID: the fetched bundle (with the new key c2) is taken.
    let (b, _d) = start(honest, server_id);
    let send = |b: &Broker, key: &IssuerKey, kid: &str| {
        let claims = json!({"sub": "spiffe://cluster-a.example/ns/payments/sa/api", "aud": [b.base], "iat": now(), "exp": now() + 300});
        let svid = key.token(&json!({"alg": "ES256", "kid": kid}), &claims);
        reqwest::blocking::Client::new()
            .post(b.url("/token"))
            .form(&[
                ("grant_type", TE),
                ("subject_token", svid.as_str()),
                ("subject_token_type", JWT_TYPE),
                ("audience", "https://payments.example/api"),
            ])
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(send(&b, &new, "c2"), 200, "{}", b.log());

    // 2. Another configured ID: refused, the bootstrap keys stay (c1 works, c2 does not).
    let (b, _d) = start(honest, "spiffe://cluster-a.example/spire/other");
    assert_eq!(send(&b, &new, "c2"), 400);
    assert_eq!(send(&b, &old, "c1"), 200);
    assert!(
        refresh_lines(&b)
            .iter()
            .any(|l| l["reason"] == "fetch_failed")
    );

    // 3. A server whose SVID comes from another CA: refused the same way.
    let (b, _d) = start(impostor, server_id);
    assert_eq!(send(&b, &new, "c2"), 400);
    assert!(
        refresh_lines(&b)
            .iter()
            .any(|l| l["reason"] == "fetch_failed")
    );
}

#[test]
fn a_kubernetes_projected_service_account_token_is_exchanged() {
    // A Kubernetes API server's discovery document has no authorization_endpoint; the
    // broker needs only issuer and jwks_uri.
    let key = IssuerKey::rs256();
    let issuer = oidc_server(key.jwks_json("k8s-1"), None);
    let dir = tempfile::tempdir().unwrap();
    let cfg = oidc_config(&issuer)
        .replace("name = \"github-actions\"", "name = \"cluster-b\"")
        .replace("from = \"github-actions\"", "from = \"cluster-b\"")
        .replace(
            "github-actions#repo:acme/**",
            "cluster-b#system:serviceaccount:payments:*",
        )
        .replace(
            "claims = { repository = \"acme/*\", ref = \"refs/heads/main\" }\n",
            "",
        );
    let b = Broker::start(dir.path(), &cfg, free_port());
    wait_for(|| !refresh_lines(&b).is_empty());
    let send = |sub: &str| {
        // The layout of a projected service-account token (TokenRequest API).
        let claims = json!({
            "iss": issuer, "aud": [b.base], "sub": sub,
            "iat": now(), "nbf": now(), "exp": now() + 600,
            "kubernetes.io": {
                "namespace": "payments",
                "serviceaccount": {"name": "api", "uid": "4f1b0c1e-2a1f-4bfa-9d6b-0c3c8a7f1d11"},
                "pod": {"name": "api-7d9f", "uid": "9a0e1f8b-1b1c-4e1e-8f8a-2a2b3c4d5e6f"},
            },
        });
        let token = key.token(&json!({"alg": "RS256", "kid": "k8s-1"}), &claims);
        let r: Value = reqwest::blocking::Client::new()
            .post(b.url("/token"))
            .form(&[
                ("grant_type", TE),
                ("subject_token", token.as_str()),
                ("subject_token_type", JWT_TYPE),
                ("audience", "https://payments.example/api"),
            ])
            .send()
            .unwrap()
            .json()
            .unwrap();
        r
    };
    let ok = send("system:serviceaccount:payments:api");
    let claims = decode_part(
        ok["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("{ok}")),
        1,
    );
    assert_eq!(
        claims["sub"],
        "cluster-b#system:serviceaccount:payments:api"
    );
    // Another namespace is not admitted by the boundary.
    assert_eq!(
        send("system:serviceaccount:kube-system:admin")["error"],
        "invalid_request"
    );
}

/// Serves `body` over TLS with `cert` (an rcgen certificate and its key) on loopback;
/// returns the port.
fn serve_tls(cert: &rcgen::Certificate, key: &rcgen::KeyPair, body: String) -> u16 {
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap(),
    );
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(tcp) = s else { continue };
            let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                continue;
            };
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut buf = [0u8; 4096];
            if tls.read(&mut buf).is_err() {
                continue;
            }
            let _ = write!(
                tls,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    port
}

#[test]
fn sigterm_lets_an_in_flight_exchange_finish() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // 1. A domain whose second answer (a rotation to kid c2) takes 1.5 s to come.
    let old = IssuerKey::es256();
    let new = IssuerKey::es256();
    let first = old.bundle_json("c1");
    let mut rotated: Value = serde_json::from_str(&old.bundle_json("c1")).unwrap();
    let mut k2: Value = serde_json::from_str(&new.bundle_json("c2")).unwrap();
    rotated["keys"]
        .as_array_mut()
        .unwrap()
        .push(k2["keys"][0].take());
    rotated["spiffe_sequence"] = 2.into();
    let rotated = rotated.to_string();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let n = h.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = if n == 0 {
                first.clone()
            } else {
                std::thread::sleep(std::time::Duration::from_millis(1500));
                rotated.clone()
            };
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(
        dir.path(),
        &config(&format!("http://127.0.0.1:{port}/bundle")),
        free_port(),
    );
    wait_for(|| !refresh_lines(&b).is_empty());

    // 2. A token by the new key starts a refetch and waits for it; SIGTERM arrives
    // meanwhile.
    let claims = json!({"sub": "spiffe://cluster-a.example/ns/payments/sa/api", "aud": [b.base], "iat": now(), "exp": now() + 300});
    let svid = new.token(&json!({"alg": "ES256", "kid": "c2"}), &claims);
    let url = b.url("/token");
    let in_flight = std::thread::spawn(move || {
        reqwest::blocking::Client::new()
            .post(url)
            .form(&[
                ("grant_type", TE),
                ("subject_token", svid.as_str()),
                ("subject_token_type", JWT_TYPE),
                ("audience", "https://payments.example/api"),
            ])
            .send()
            .map(|r| r.status().as_u16())
    });
    wait_for(|| hits.load(Ordering::SeqCst) >= 2);
    let base = b.base.clone();
    let status = b.terminate();

    // 3. The request in flight was answered (with a token: the rotation arrived), the
    // broker exited 0, and it takes no new connections.
    assert_eq!(in_flight.join().unwrap().ok(), Some(200));
    assert!(status.success(), "{status}");
    assert!(reqwest::blocking::get(format!("{base}/healthz")).is_err());
}
