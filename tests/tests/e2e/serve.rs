//! The broker as an operator meets it: metadata, keys, a full exchange, the audit log,
//! and a clean exit on SIGTERM.

use serde_json::Value;
use trust_bundles::SpiffeBundle;
use trust_bundles::jws::UnverifiedJws;
use trustbroker_tests::issuers::*;

use crate::world::*;

#[test]
fn a_full_exchange_from_metadata_to_sigterm() {
    // 1. Start a broker federated (statically) with cluster-a.
    let w = World::start();

    // 2. Discovery documents name this issuer and its endpoints.
    for doc in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        let m: Value = w
            .http
            .get(w.broker.url(doc))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(m["issuer"], w.issuer());
        assert_eq!(m["token_endpoint"], w.token_url());
        assert_eq!(m["jwks_uri"], w.broker.url("/jwks"));
        assert_eq!(m["grant_types_supported"][0], TE);
    }

    // 3. The JWKS and the SPIFFE bundle publish the same signing keys.
    let jwks: Value = w
        .http
        .get(w.broker.url("/jwks"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let bundle = SpiffeBundle::parse(
        &w.http
            .get(w.broker.url("/bundle"))
            .send()
            .unwrap()
            .bytes()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        jwks["keys"].as_array().unwrap().len(),
        bundle.jwt_authorities().len()
    );
    assert!(bundle.sequence().unwrap() >= 1);

    // 4. A workload exchanges its JWT-SVID (newline and all, as read from a file).
    let svid = format!(
        "{}\n",
        w.svid(
            "/ns/payments/sa/api",
            serde_json::json!({"jti": "svid-jti-1"})
        )
    );
    let resp = w.exchange(&svid, JWT_TYPE, PAYMENTS, Some("payments.read"));
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    // RFC 6749 §5.1.
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: Value = resp.json().unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["issued_token_type"], AT_TYPE);
    assert_eq!(body["scope"], "payments.read");
    assert_eq!(body["expires_in"], 600);
    let token = body["access_token"].as_str().unwrap();

    // 5. The token verifies with a key from the published JWKS.
    let jws = UnverifiedJws::parse(token, 16 * 1024).unwrap();
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
    assert_eq!(claims["aud"], PAYMENTS);
    assert_eq!(
        claims["sub"],
        "spiffe://cluster-a.example/ns/payments/sa/api"
    );

    // 6. Exactly one audit line for it, carrying the jtis but no token.
    let audit = w.broker.audit_lines();
    let allow: Vec<&Value> = audit.iter().filter(|a| a["decision"] == "allow").collect();
    assert_eq!(allow.len(), 1);
    assert_eq!(allow[0]["jti_in"], "svid-jti-1");
    assert_eq!(allow[0]["jti_out"], claims["jti"]);
    assert_eq!(allow[0]["boundary"], "cluster-a-to-payments");
    assert!(allow[0]["latency_us"].is_u64());
    assert!(!w.broker.log().contains(token));
    assert!(!w.broker.log().contains(svid.trim()));

    // 7. Readiness holds; SIGTERM drains and exits 0.
    assert_eq!(
        w.http.get(w.broker.url("/readyz")).send().unwrap().status(),
        200
    );
    let status = w.broker.terminate();
    assert!(status.success(), "{status}");
}

#[test]
fn keys_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = "issuer = \"http://127.0.0.1:{PORT}\"\nlisten = \"127.0.0.1:{PORT}\"\n[state]\npath = \"state\"\n";
    let port = trustbroker_tests::broker::free_port();
    let http = reqwest::blocking::Client::new();
    let b = trustbroker_tests::broker::Broker::start(dir.path(), cfg, port);
    let first: Value = http.get(b.url("/jwks")).send().unwrap().json().unwrap();
    assert!(b.terminate().success());
    let b = trustbroker_tests::broker::Broker::start(dir.path(), cfg, port);
    let second: Value = http.get(b.url("/jwks")).send().unwrap().json().unwrap();
    assert_eq!(first, second);
}

#[test]
fn tls_listener_with_an_rcgen_certificate() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};

    // 1. A private CA and a server certificate for 127.0.0.1, made here.
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("tls.key"), key.serialize_pem()).unwrap();

    // 2. The broker serves https with it.
    let cfg = "issuer = \"https://127.0.0.1:{PORT}\"\nlisten = \"127.0.0.1:{PORT}\"\n[tls]\ncert = \"tls.crt\"\nkey = \"tls.key\"\n[state]\npath = \"state\"\n";
    let client = reqwest::blocking::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(ca.der()).unwrap()])
        .build()
        .unwrap();
    let port = trustbroker_tests::broker::free_port();
    let b = trustbroker_tests::broker::Broker::start_with(
        dir.path(),
        cfg,
        port,
        "https",
        client.clone(),
    );
    let m: Value = client
        .get(b.url("/.well-known/openid-configuration"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(m["issuer"], format!("https://127.0.0.1:{port}"));

    // 3. A client that does not trust the CA is refused by the handshake.
    let stranger = reqwest::blocking::Client::builder()
        .tls_certs_only([])
        .build()
        .unwrap();
    assert!(stranger.get(b.url("/healthz")).send().is_err());
    // And plain http on the TLS port gets no successful answer.
    let plain = reqwest::blocking::get(format!("http://127.0.0.1:{port}/healthz"));
    assert!(!matches!(plain, Ok(r) if r.status().is_success()));
}

#[test]
fn a_single_use_token_stays_used_across_a_restart() {
    // 1. A single-use SVID is exchanged once.
    let w = World::start();
    let svid = w.svid("/ns/once/sa/x", serde_json::json!({"jti": "once-restart"}));
    assert_eq!(w.exchange(&svid, JWT_TYPE, PAYMENTS, None).status(), 200);
    let dir = w.broker.dir.clone();
    let port = w.broker.port;
    let World {
        broker,
        cluster,
        github,
        http,
        _dir,
    } = w;
    // 2. The broker restarts on the same state.
    assert!(broker.terminate().success());
    let config = std::fs::read_to_string(dir.join("broker.toml")).unwrap();
    let broker = trustbroker_tests::broker::Broker::start(&dir, &config, port);
    let w = World {
        broker,
        cluster,
        github,
        http,
        _dir,
    };
    // 3. The same token is still refused.
    crate::world::assert_refused(
        w.exchange(&svid, JWT_TYPE, PAYMENTS, None),
        400,
        "invalid_request",
    );
}

#[test]
fn metrics_count_decisions_by_reason_and_time_them() {
    let w = World::start();
    let svid = w.svid("/ns/payments/sa/api", serde_json::json!({}));
    assert_eq!(w.exchange(&svid, JWT_TYPE, PAYMENTS, None).status(), 200);
    assert_eq!(w.exchange(&svid, JWT_TYPE, PAYMENTS, None).status(), 200);
    assert_eq!(
        w.exchange(&svid, JWT_TYPE, "https://elsewhere.example", None)
            .status(),
        400
    );
    assert_eq!(
        w.post_token(&[("grant_type", "password")], &[]).status(),
        400
    );
    // Anyone may ask for nonces, as often as they like: handing one out stores nothing.
    for _ in 0..100 {
        w.nonce();
    }

    let r = w.http.get(w.broker.url("/metrics")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = r.text().unwrap();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} missing:\n{text}"))
    };
    assert_eq!(
        value(r#"trustbroker_exchanges_total{decision="allow",reason="ok"}"#),
        2.0
    );
    assert_eq!(
        value(r#"trustbroker_exchanges_total{decision="deny",reason="invalid_target"}"#),
        1.0
    );
    assert_eq!(
        value(r#"trustbroker_exchanges_total{decision="deny",reason="unsupported_grant_type"}"#),
        1.0
    );
    assert_eq!(value("trustbroker_exchange_duration_seconds_count"), 4.0);
    assert_eq!(value(r#"trustbroker_store_entries{store="nonces"}"#), 0.0);
    assert_eq!(value("trustbroker_state_errors_total"), 0.0);
    assert!(text.trim_end().ends_with("# EOF"));
}
