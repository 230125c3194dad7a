//! The hostile inputs of the exchange issue, each against the running broker: the exact
//! error code, never a 500, never a token.
//!
//! Every refusal goes through [`refused`], which also checks that it left exactly one
//! `deny` audit line with the same reason; every scenario ends with [`finish`]: the broker
//! is still healthy and no presented token appears anywhere in its output.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::time::Duration;

use aws_lc_rs::hmac;
use aws_lc_rs::signature::KeyPair as _;
use reqwest::blocking::Response;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use trustbroker_tests::issuers::*;

use crate::world::*;

const PAYMENTS_SVID: &str = "/ns/payments/sa/api";
/// The order n of P-256 (FIPS 186-4 §D.1.2.3).
const P256_N: &str = "FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551";

/// Sends one request and asserts its refusal: exactly `status` and `code`, no token,
/// `no-store`, and exactly one new audit line, `deny` with reason `code`. Returns the
/// response headers.
#[track_caller]
fn refused(w: &World, status: u16, code: &str, send: impl FnOnce() -> Response) -> HeaderMap {
    let before = w.broker.audit_lines().len();
    let resp = send();
    let headers = resp.headers().clone();
    assert_refused(resp, status, code);
    let audit = w.broker.audit_lines();
    let new = audit.get(before..).unwrap_or_default();
    assert_eq!(new.len(), 1, "one audit line per request: {new:?}");
    assert_eq!(
        (new[0]["decision"].as_str(), new[0]["reason"].as_str()),
        (Some("deny"), Some(code)),
        "{}",
        new[0]
    );
    headers
}

/// A subject token refused as `invalid_request` when exchanged for PAYMENTS.
#[track_caller]
fn refuse_token(w: &World, token: &str) {
    refused(w, 400, "invalid_request", || {
        w.exchange(token, JWT_TYPE, PAYMENTS, None)
    });
}

/// Asserts a 200 with a token and returns the body.
#[track_caller]
fn granted(resp: Response) -> Value {
    let status = resp.status().as_u16();
    let body: Value = resp.json().unwrap();
    assert_eq!(status, 200, "body: {body}");
    assert!(body["access_token"].is_string(), "body: {body}");
    body
}

/// The broker still answers, never panicked, and printed none of `secrets` (the audit
/// lines are part of its output).
#[track_caller]
fn finish<S: AsRef<str>>(w: &World, secrets: &[S]) {
    let health = w.http.get(w.broker.url("/healthz")).send().unwrap();
    assert_eq!(health.status(), 200);
    let log = w.broker.log();
    assert!(!log.contains("panicked"), "{log}");
    for s in secrets {
        let s = s.as_ref().trim();
        assert!(!s.is_empty());
        assert!(
            w.broker
                .audit_lines()
                .iter()
                .all(|a| !a.to_string().contains(s)),
            "a token is in an audit line"
        );
        assert!(!log.contains(s), "a token is in the log");
    }
}

fn payments_claims(w: &World) -> Value {
    json!({
        "sub": format!("spiffe://{CLUSTER}{PAYMENTS_SVID}"),
        "aud": [w.issuer()],
        "iat": now(),
        "exp": now() + 600,
    })
}

/// Control: the plain payments SVID, signed by cluster-a under `c1`, crosses; so each
/// refusal below is down to the one thing the hostile token changes.
#[track_caller]
fn control(w: &World) {
    let t = w.cluster.token(
        &json!({"alg":"ES256","kid":"c1","typ":"JWT"}),
        &payments_claims(w),
    );
    granted(w.exchange(&t, JWT_TYPE, PAYMENTS, None));
}

/// A compact JWS over `header` and `payload` exactly as written, signed by `key`.
fn signed_text(key: &IssuerKey, header: &str, payload: &str) -> String {
    let input = format!("{}.{}", b64u(header.as_bytes()), b64u(payload.as_bytes()));
    format!("{input}.{}", b64u(&key.sign(input.as_bytes())))
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A payments SVID re-headed with `alg` none in three spellings, signature empty.
fn alg_none_tokens(w: &World) -> Vec<String> {
    let good = w.svid(PAYMENTS_SVID, json!({}));
    let payload = good.split('.').nth(1).unwrap();
    ["none", "None", "NONE"]
        .iter()
        .map(|alg| {
            let header = format!(r#"{{"alg":"{alg}","kid":"c1","typ":"JWT"}}"#);
            format!("{}.{payload}.", b64u(header.as_bytes()))
        })
        .collect()
}

/// GitHub-shaped tokens MACed with HS256 under the issuer's public key, as a JWK (bare
/// and as published) and as DER.
fn hs256_tokens(w: &World) -> Vec<String> {
    let mut published = w.github.public_jwk();
    published["kid"] = "g1".into();
    published["alg"] = "RS256".into();
    let IssuerKey::Rsa(rsa) = &w.github else {
        panic!("github is RS256")
    };
    let secrets = [
        serde_json::to_vec(&w.github.public_jwk()).unwrap(),
        serde_json::to_vec(&published).unwrap(),
        rsa.public_key().as_ref().to_vec(),
    ];
    let claims = json!({
        "iss": GITHUB_ISS,
        "sub": "repo:acme/app:ref:refs/heads/main",
        "aud": w.issuer(),
        "repository": "acme/app",
        "iat": now(),
        "exp": now() + 300,
    });
    let input =
        trust_bundles::jws::signing_input(&json!({"alg":"HS256","kid":"g1","typ":"JWT"}), &claims);
    secrets
        .iter()
        .map(|secret| {
            let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), input.as_bytes());
            trust_bundles::jws::compact(&input, tag.as_ref())
        })
        .collect()
}

/// Correctly signed payments SVIDs whose `kid` names no key of cluster-a.
fn bad_kid_tokens(w: &World) -> Vec<String> {
    ["c2", "g1", "../../etc/passwd", "c1/../c1", "/dev/null"]
        .iter()
        .map(|kid| {
            w.cluster.token(
                &json!({"alg":"ES256","kid":kid,"typ":"JWT"}),
                &payments_claims(w),
            )
        })
        .collect()
}

/// Correctly signed payments SVIDs that also carry `crit`.
fn crit_tokens(w: &World) -> Vec<String> {
    [
        json!({"alg":"ES256","kid":"c1","crit":["b64"],"b64":false}),
        json!({"alg":"ES256","kid":"c1","crit":["exp"],"exp":1}),
        json!({"alg":"ES256","kid":"c1","crit":[]}),
    ]
    .iter()
    .map(|h| w.cluster.token(h, &payments_claims(w)))
    .collect()
}

/// A payments SVID with its signature replaced by 64 zero bytes, then by r = s = n.
fn degenerate_signature_tokens(w: &World) -> Vec<String> {
    let good = w.svid(PAYMENTS_SVID, json!({}));
    let (input, _) = good.rsplit_once('.').unwrap();
    let n = hex(P256_N);
    [vec![0u8; 64], [n.clone(), n].concat()]
        .iter()
        .map(|sig| format!("{input}.{}", b64u(sig)))
        .collect()
}

/// Header and payload texts with a repeated member, signed with cluster-a's real key.
fn duplicate_member_tokens(w: &World) -> Vec<String> {
    let sub = format!("spiffe://{CLUSTER}{PAYMENTS_SVID}");
    let claims = payments_claims(w).to_string();
    let (iss, t) = (w.issuer(), now());
    let headers = [
        r#"{"alg":"ES256","kid":"c1","kid":"c2"}"#,
        r#"{"alg":"ES256","kid":"c2","kid":"c1"}"#,
        r#"{"alg":"ES256","alg":"none","kid":"c1"}"#,
        r#"{"alg":"none","alg":"ES256","kid":"c1"}"#,
    ];
    let payloads = [
        format!(
            r#"{{"sub":"{sub}","aud":"{iss}","iat":{t},"exp":{},"exp":{}}}"#,
            t + 60,
            t + 99_999_999
        ),
        format!(
            r#"{{"sub":"{sub}","aud":"{iss}","iat":{t},"exp":{},"exp":{}}}"#,
            t - 60,
            t + 60
        ),
        format!(
            r#"{{"sub":"spiffe://{CLUSTER}/ns/admin/sa/root","aud":"{iss}","iat":{t},"exp":{},"sub":"{sub}"}}"#,
            t + 60
        ),
        format!(
            r#"{{"sub":"{sub}","aud":"{iss}","iat":{t},"exp":{},"sub":"spiffe://{CLUSTER}/ns/admin/sa/root"}}"#,
            t + 60
        ),
    ];
    let mut out: Vec<String> = headers
        .iter()
        .map(|h| signed_text(&w.cluster, h, &claims))
        .collect();
    out.extend(
        payloads
            .iter()
            .map(|p| signed_text(&w.cluster, r#"{"alg":"ES256","kid":"c1"}"#, p)),
    );
    out
}

/// Payments SVIDs whose `exp` is a string, negative, fractional-negative, or missing.
fn bad_exp_tokens(w: &World) -> Vec<String> {
    [
        json!("9999999999"),
        json!(-5),
        json!(-0.5),
        json!(true),
        Value::Null,
    ]
    .into_iter()
    .map(|exp| w.svid(PAYMENTS_SVID, json!({ "exp": exp })))
    .collect()
}

/// Payments SVIDs whose `aud` is empty, not a string, or only looks like the issuer.
fn bad_aud_tokens(w: &World) -> Vec<String> {
    let iss = w.issuer();
    let port = w.broker.port;
    [
        json!([]),
        json!(123),
        json!([123]),
        json!(format!("{iss}/")),
        json!(format!("http://localhost:{port}")),
        json!(iss.to_uppercase()),
        json!(format!("{iss}.evil")),
        json!(format!("{iss}0")),
        json!([format!("{iss}/token")]),
    ]
    .into_iter()
    .map(|aud| w.svid(PAYMENTS_SVID, json!({ "aud": aud })))
    .collect()
}

/// GitHub tokens whose `iss` only looks like GitHub's.
fn bad_iss_tokens(w: &World) -> Vec<String> {
    [
        format!("{GITHUB_ISS}/"),
        GITHUB_ISS.to_uppercase(),
        "https://Token.Actions.GitHubUserContent.com".to_owned(),
        format!("{GITHUB_ISS}.evil"),
        format!(" {GITHUB_ISS}"),
    ]
    .into_iter()
    .map(|iss| w.github_token(json!({ "iss": iss })))
    .collect()
}

/// Correctly signed payments SVIDs carrying key-locating headers: `jku` and `x5u` at
/// `url`, `jwk` with cluster-a's real key, and `jwk` with an attacker's key that signed.
fn key_header_tokens(w: &World, url: &str) -> Vec<String> {
    let claims = payments_claims(w);
    let mut real = w.cluster.public_jwk();
    real["kid"] = "c1".into();
    let attacker = IssuerKey::es256();
    let mut out: Vec<String> = [
        json!({"alg":"ES256","kid":"c1","jku": url}),
        json!({"alg":"ES256","kid":"c1","x5u": url}),
        json!({"alg":"ES256","kid":"c1","jwk": real}),
        json!({"alg":"ES256","kid":"c1","x5c": ["MIIB"]}),
        json!({"alg":"ES256","kid":"c1","jku": url, "x5u": url, "jwk": real}),
    ]
    .iter()
    .map(|h| w.cluster.token(h, &claims))
    .collect();
    out.push(attacker.token(
        &json!({"alg":"ES256","kid":"c1","jwk": attacker.public_jwk()}),
        &claims,
    ));
    out.push(attacker.token(
        &json!({"alg":"ES256","jku": url, "jwk": attacker.public_jwk()}),
        &claims,
    ));
    out
}

/// A non-blocking listener on a free loopback port, and its `/jwks` URL.
fn trap() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let url = format!("http://{}/jwks", l.local_addr().unwrap());
    (l, url)
}

/// How many connections `l` has accepted, draining its queue.
fn accepted(l: &TcpListener) -> usize {
    let mut n = 0;
    loop {
        match l.accept() {
            Ok(_) => n += 1,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return n,
            Err(e) => panic!("accept: {e}"),
        }
    }
}

fn form<'a>(subject: &'a str, token_type: &'a str, audience: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", TE),
        ("subject_token", subject),
        ("subject_token_type", token_type),
        ("audience", audience),
    ]
}

#[test]
fn alg_none_in_any_spelling_is_refused() {
    let w = World::start();
    control(&w);
    let tokens = alg_none_tokens(&w);
    for t in &tokens {
        refuse_token(&w, t);
    }
    finish(&w, &tokens);
}

#[test]
fn rs256_to_hs256_with_the_public_key_as_secret_is_refused() {
    let w = World::start();
    // Control: the genuine RS256 token crosses.
    granted(w.exchange(&w.github_token(json!({})), JWT_TYPE, PAYMENTS, None));
    let tokens = hs256_tokens(&w);
    for t in &tokens {
        refuse_token(&w, t);
    }
    finish(&w, &tokens);
}

#[test]
fn unknown_and_path_traversal_kids_are_refused() {
    let w = World::start();
    control(&w);
    let tokens = bad_kid_tokens(&w);
    for t in &tokens {
        refuse_token(&w, t);
    }
    finish(&w, &tokens);
}

#[test]
fn key_locating_headers_are_refused_and_never_fetched() {
    let w = World::start();
    control(&w);
    let (listener, url) = trap();
    let tokens = key_header_tokens(&w, &url);
    for t in &tokens {
        refuse_token(&w, t);
    }
    // Give a background fetch, if there were one, time to connect.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(accepted(&listener), 0, "the broker connected to {url}");
    finish(&w, &tokens);
}

#[test]
fn crit_is_refused() {
    let w = World::start();
    control(&w);
    let tokens = crit_tokens(&w);
    for t in &tokens {
        refuse_token(&w, t);
    }
    finish(&w, &tokens);
}

#[test]
fn degenerate_ecdsa_signatures_are_refused() {
    let w = World::start();
    control(&w);
    let tokens = degenerate_signature_tokens(&w);
    for t in &tokens {
        refuse_token(&w, t);
    }
    finish(&w, &tokens);
}

#[test]
fn duplicate_json_members_are_refused() {
    let w = World::start();
    // Control: the same hand-built text without a repeat is accepted.
    let plain = signed_text(
        &w.cluster,
        r#"{"alg":"ES256","kid":"c1"}"#,
        &payments_claims(&w).to_string(),
    );
    granted(w.exchange(&plain, JWT_TYPE, PAYMENTS, None));
    let tokens = duplicate_member_tokens(&w);
    for t in &tokens {
        refuse_token(&w, t);
    }
    finish(&w, &tokens);
}

#[test]
fn oversized_bodies_and_tokens_are_refused() {
    let w = World::start();
    // 1 MiB: the body is over 64 KiB, refused before it is read.
    let huge = w.svid(PAYMENTS_SVID, json!({"pad": "x".repeat(1 << 20)}));
    assert!(huge.len() > 1 << 20);
    refused(&w, 413, "invalid_request", || {
        w.exchange(&huge, JWT_TYPE, PAYMENTS, None)
    });
    // ~20 KiB: the body fits, the token is over its 16 KiB budget.
    let big = w.svid(PAYMENTS_SVID, json!({"pad": "x".repeat(15 * 1024)}));
    assert!((16 * 1024..64 * 1024).contains(&big.len()), "{}", big.len());
    refuse_token(&w, &big);
    finish(&w, &[huge, big]);
}

#[test]
fn exp_must_be_a_present_non_negative_number() {
    let w = World::start();
    control(&w);
    let tokens = bad_exp_tokens(&w);
    for t in &tokens {
        refuse_token(&w, t);
    }
    finish(&w, &tokens);
}

#[test]
fn aud_shapes_and_look_alikes_are_refused() {
    let w = World::start();
    control(&w);
    let tokens = bad_aud_tokens(&w);
    for t in &tokens {
        refuse_token(&w, t);
    }
    finish(&w, &tokens);
}

#[test]
fn iss_is_compared_byte_for_byte() {
    let w = World::start();
    granted(w.exchange(&w.github_token(json!({})), JWT_TYPE, PAYMENTS, None));
    let tokens = bad_iss_tokens(&w);
    for t in &tokens {
        refuse_token(&w, t);
    }
    finish(&w, &tokens);
}

#[test]
fn a_broker_access_token_is_not_an_id_token() {
    let w = World::start();
    let svid = w.svid(PAYMENTS_SVID, json!({}));
    let at = granted(w.exchange(&svid, JWT_TYPE, &w.issuer(), Some("payments.read")));
    let at = at["access_token"].as_str().unwrap();
    assert_eq!(decode_part(at, 0)["typ"], "at+jwt");
    refused(&w, 400, "invalid_request", || {
        w.exchange(at, ID_TYPE, LEDGER, None)
    });
    // Control: declared as what it is, it crosses.
    granted(w.exchange(at, AT_TYPE, LEDGER, None));
    finish(&w, &[svid.as_str(), at]);
}

#[test]
fn audience_escalation_is_invalid_target() {
    let w = World::start();
    let svid = w.svid(PAYMENTS_SVID, json!({}));
    refused(&w, 400, "invalid_target", || {
        w.exchange(&svid, JWT_TYPE, "https://admin.example", None)
    });
    let mut both = form(&svid, JWT_TYPE, PAYMENTS);
    both.push(("resource", PAYMENTS));
    refused(&w, 400, "invalid_target", || w.post_token(&both, &[]));
    let mut two = form(&svid, JWT_TYPE, PAYMENTS);
    two.push(("audience", "https://admin.example"));
    refused(&w, 400, "invalid_target", || w.post_token(&two, &[]));
    finish(&w, &[svid]);
}

#[test]
fn scope_escalation_never_widens() {
    let w = World::start();
    let svid = w.svid(PAYMENTS_SVID, json!({}));
    refused(&w, 400, "invalid_scope", || {
        w.exchange(&svid, JWT_TYPE, PAYMENTS, Some("payments.admin"))
    });
    let body = granted(w.exchange(
        &svid,
        JWT_TYPE,
        PAYMENTS,
        Some("payments.read payments.admin"),
    ));
    assert_eq!(body["scope"], "payments.read");
    let claims = decode_part(body["access_token"].as_str().unwrap(), 1);
    assert_eq!(claims["scope"], "payments.read");
    finish(&w, &[svid]);
}

#[test]
fn a_chained_exchange_never_gains_scope_or_life_and_stops_at_max_hops() {
    let w = World::start();
    // 1. A broker token for the broker itself: payments.read, capped at 10 minutes
    //    although the SVID lives an hour.
    let svid = w.svid(PAYMENTS_SVID, json!({"exp": now() + 3600}));
    let first = granted(w.exchange(&svid, JWT_TYPE, &w.issuer(), Some("payments.read")));
    assert_eq!(first["expires_in"], 600);
    let first = first["access_token"].as_str().unwrap().to_owned();
    let exp1 = decode_part(&first, 1)["exp"].as_u64().unwrap();

    // 2. Only a scope it does not carry: refused. More than it carries: narrowed.
    refused(&w, 400, "invalid_scope", || {
        w.exchange(&first, AT_TYPE, LEDGER, Some("payments.write"))
    });
    let wider = granted(w.exchange(
        &first,
        AT_TYPE,
        LEDGER,
        Some("payments.read payments.write"),
    ));
    assert_eq!(wider["scope"], "payments.read");

    // 3. Plainly, a second later: ledger allows 20 minutes, the token gets what is left.
    std::thread::sleep(Duration::from_millis(1100));
    let left = exp1 - now();
    let second = granted(w.exchange(&first, AT_TYPE, LEDGER, None));
    assert!(second["expires_in"].as_u64().unwrap() <= left, "{second}");
    let ledger = second["access_token"].as_str().unwrap().to_owned();
    let c2 = decode_part(&ledger, 1);
    assert!(c2["exp"].as_u64().unwrap() <= exp1, "{c2}");
    assert_eq!(c2["scope"], "payments.read");
    assert_eq!(c2["crossings"].as_array().unwrap().len(), 2);

    // 4. A third crossing exceeds max_hops = 2.
    let via = granted(w.exchange(&first, AT_TYPE, &w.issuer(), None));
    let via = via["access_token"].as_str().unwrap().to_owned();
    refused(&w, 400, "invalid_request", || {
        w.exchange(&via, AT_TYPE, LEDGER, None)
    });
    // 5. The ledger token is not for the broker: it goes no further.
    refused(&w, 400, "invalid_request", || {
        w.exchange(&ledger, AT_TYPE, LEDGER, None)
    });
    finish(&w, &[svid, first, ledger, via]);
}

#[test]
fn malformed_forms_are_refused() {
    let w = World::start();
    let svid = w.svid(PAYMENTS_SVID, json!({}));
    let mut dup_type = form(&svid, JWT_TYPE, PAYMENTS);
    dup_type.push(("subject_token_type", JWT_TYPE));
    refused(&w, 400, "invalid_request", || w.post_token(&dup_type, &[]));
    let mut dup_scope = form(&svid, JWT_TYPE, PAYMENTS);
    dup_scope.extend([("scope", "payments.read"), ("scope", "payments.write")]);
    refused(&w, 400, "invalid_request", || w.post_token(&dup_scope, &[]));
    for grant in [
        "password",
        "client_credentials",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
    ] {
        let mut f = form(&svid, JWT_TYPE, PAYMENTS);
        f[0] = ("grant_type", grant);
        refused(&w, 400, "unsupported_grant_type", || w.post_token(&f, &[]));
    }
    finish(&w, &[svid]);
}

#[test]
fn a_dpop_proof_is_single_use() {
    let w = World::start();
    let d = DpopKey::new();
    let svid = w.svid(PAYMENTS_SVID, json!({}));
    let f = form(&svid, JWT_TYPE, PAYMENTS);

    let n1 = w.nonce();
    let p1 = d.proof(&w.token_url(), Some(&n1), "jti-1");
    let body = granted(w.post_token(&f, &[("DPoP", &p1)]));
    assert_eq!(body["token_type"], "DPoP");
    let claims = decode_part(body["access_token"].as_str().unwrap(), 1);
    assert_eq!(claims["cnf"]["jkt"], d.jkt.as_str());

    // The very same proof again: its nonce is spent, and a fresh one comes back.
    let h = refused(&w, 400, "use_dpop_nonce", || {
        w.post_token(&f, &[("DPoP", &p1)])
    });
    let fresh = h.get("dpop-nonce").unwrap().to_str().unwrap();
    assert!(!fresh.is_empty() && fresh != n1);

    // A new proof, with a fresh nonce, reusing the jti.
    let n2 = w.nonce();
    let p2 = d.proof(&w.token_url(), Some(&n2), "jti-1");
    refused(&w, 400, "invalid_dpop_proof", || {
        w.post_token(&f, &[("DPoP", &p2)])
    });
    finish(&w, &[svid]);
}

#[test]
fn header_bytes_outside_visible_ascii_are_refused() {
    let w = World::start();
    let d = DpopKey::new();
    let svid = w.svid(PAYMENTS_SVID, json!({}));
    let f = form(&svid, JWT_TYPE, PAYMENTS);
    let n = w.nonce();
    let proof = d.proof(&w.token_url(), Some(&n), "ascii-1");
    // obs-text (RFC 9110 §5.5) at the end (valid UTF-8, "é"), in the middle, and
    // alone; HTTP carries it, the broker does not take it.
    let mid = proof.len() / 2;
    let tainted: [Vec<u8>; 3] = [
        [proof.as_bytes(), "é".as_bytes()].concat(),
        [&proof.as_bytes()[..mid], b"\x80", &proof.as_bytes()[mid..]].concat(),
        b"\xff".to_vec(),
    ];
    for name in ["DPoP", "Runtime-Attestation"] {
        for value in &tainted {
            let value = reqwest::header::HeaderValue::from_bytes(value).unwrap();
            refused(&w, 400, "invalid_request", || {
                w.http
                    .post(w.token_url())
                    .form(&f)
                    .header(name, value)
                    .send()
                    .unwrap()
            });
        }
    }
    // A tab is a field value's own byte (inside it; at its ends HTTP trims it): it
    // passes this check and fails the proof's.
    let tabbed = format!("{}\t{}", &proof[..mid], &proof[mid..]);
    refused(&w, 400, "invalid_dpop_proof", || {
        w.post_token(&f, &[("DPoP", &tabbed)])
    });
    // The proof itself, untouched, is still good: nothing above spent its nonce.
    granted(w.post_token(&f, &[("DPoP", &proof)]));
    finish(&w, &[svid]);
}

#[test]
fn a_dpop_proof_for_another_htu_is_refused() {
    let w = World::start();
    let d = DpopKey::new();
    let svid = w.svid(PAYMENTS_SVID, json!({}));
    let f = form(&svid, JWT_TYPE, PAYMENTS);
    let n = w.nonce();
    let port = w.broker.port;
    for (i, htu) in [
        w.broker.url("/other"),
        w.broker.url("/token2"),
        format!("http://127.0.0.1:{}/token", port.wrapping_add(1)),
        format!("https://127.0.0.1:{port}/token"),
        format!("http://localhost:{port}/token"),
        "/token".to_owned(),
    ]
    .iter()
    .enumerate()
    {
        let p = d.proof(htu, Some(&n), &format!("htu-{i}"));
        refused(&w, 400, "invalid_dpop_proof", || {
            w.post_token(&f, &[("DPoP", &p)])
        });
    }
    // The refusals burnt nothing: the nonce still works for the real endpoint.
    let p = d.proof(&w.token_url(), Some(&n), "htu-ok");
    assert_eq!(
        granted(w.post_token(&f, &[("DPoP", &p)]))["token_type"],
        "DPoP"
    );
    finish(&w, &[svid]);
}

#[test]
fn required_attestation_without_evidence_is_challenged() {
    let w = World::start();
    let svid = w.svid("/ns/secure/sa/api", json!({}));
    let h = refused(&w, 400, "use_attestation_challenge", || {
        w.exchange(&svid, JWT_TYPE, PAYMENTS, None)
    });
    let nonce = h.get("dpop-nonce").unwrap().to_str().unwrap();
    assert_eq!(nonce.len(), 43, "{nonce}");
    // A DPoP proof alone is no evidence either.
    let d = DpopKey::new();
    let p = d.proof(&w.token_url(), Some(nonce), "att-1");
    let f = form(&svid, JWT_TYPE, PAYMENTS);
    let h = refused(&w, 400, "use_attestation_challenge", || {
        w.post_token(&f, &[("DPoP", &p)])
    });
    assert!(h.contains_key("dpop-nonce"));
    finish(&w, &[svid]);
}

/// Sends `send` from 16 threads at once; returns each (status, error code).
fn race(send: impl Fn() -> Response + Sync) -> Vec<(u16, String)> {
    std::thread::scope(|s| {
        let racers: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| {
                    let resp = send();
                    let status = resp.status().as_u16();
                    let body: Value = resp.json().unwrap();
                    (
                        status,
                        body["error"].as_str().unwrap_or_default().to_owned(),
                    )
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    })
}

#[test]
fn a_proof_or_a_single_use_token_racing_itself_wins_once() {
    let w = World::start();
    let tally = |got: &[(u16, String)], loser: &str| {
        let wins = got.iter().filter(|(s, _)| *s == 200).count();
        let losses = got.iter().filter(|(s, e)| *s == 400 && e == loser).count();
        assert_eq!((wins, losses), (1, got.len() - 1), "{got:?}");
    };
    // One DPoP proof (one nonce) sent 16 times at once.
    let d = DpopKey::new();
    let svid = w.svid(PAYMENTS_SVID, json!({}));
    let f = form(&svid, JWT_TYPE, PAYMENTS);
    let n = w.nonce();
    let p = d.proof(&w.token_url(), Some(&n), "race-1");
    tally(
        &race(|| w.post_token(&f, &[("DPoP", &p)])),
        "use_dpop_nonce",
    );
    // One subject token at a single_use boundary, 16 times at once.
    let once = w.svid("/ns/once/sa/api", json!({"jti": "once-race"}));
    tally(
        &race(|| w.exchange(&once, JWT_TYPE, PAYMENTS, None)),
        "invalid_request",
    );
    let audit = w.broker.audit_lines();
    assert_eq!(audit.len(), 32);
    assert_eq!(audit.iter().filter(|a| a["decision"] == "allow").count(), 2);
    finish(&w, &[svid, once]);
}

/// One broker, every kind of refusal in turn: each leaves exactly one `deny` line with
/// its reason, in order, and no token text reaches the audit lines or the log.
#[test]
fn every_refusal_is_audited_once_without_the_token() {
    let w = World::start();
    let (listener, url) = trap();
    let mut expected: Vec<&str> = Vec::new();
    let mut secrets: Vec<String> = Vec::new();

    // Hostile subject tokens: all invalid_request.
    let mut tokens = Vec::new();
    tokens.extend(alg_none_tokens(&w));
    tokens.extend(hs256_tokens(&w));
    tokens.extend(bad_kid_tokens(&w));
    tokens.extend(key_header_tokens(&w, &url));
    tokens.extend(crit_tokens(&w));
    tokens.extend(degenerate_signature_tokens(&w));
    tokens.extend(duplicate_member_tokens(&w));
    tokens.extend(bad_exp_tokens(&w));
    tokens.extend(bad_aud_tokens(&w));
    tokens.extend(bad_iss_tokens(&w));
    tokens.push(w.svid(PAYMENTS_SVID, json!({"pad": "x".repeat(15 * 1024)})));
    for t in &tokens {
        refuse_token(&w, t);
        expected.push("invalid_request");
    }
    secrets.extend(tokens);

    // Refusals of the request around a good token.
    let svid = w.svid(PAYMENTS_SVID, json!({}));
    let huge = w.svid(PAYMENTS_SVID, json!({"pad": "x".repeat(1 << 20)}));
    refused(&w, 413, "invalid_request", || {
        w.exchange(&huge, JWT_TYPE, PAYMENTS, None)
    });
    expected.push("invalid_request");
    refused(&w, 400, "invalid_target", || {
        w.exchange(&svid, JWT_TYPE, "https://admin.example", None)
    });
    expected.push("invalid_target");
    refused(&w, 400, "invalid_scope", || {
        w.exchange(&svid, JWT_TYPE, PAYMENTS, Some("payments.admin"))
    });
    expected.push("invalid_scope");
    let mut dup = form(&svid, JWT_TYPE, PAYMENTS);
    dup.push(("subject_token_type", JWT_TYPE));
    refused(&w, 400, "invalid_request", || w.post_token(&dup, &[]));
    expected.push("invalid_request");
    let mut grant = form(&svid, JWT_TYPE, PAYMENTS);
    grant[0] = ("grant_type", "password");
    refused(&w, 400, "unsupported_grant_type", || {
        w.post_token(&grant, &[])
    });
    expected.push("unsupported_grant_type");
    let d = DpopKey::new();
    let n = w.nonce();
    let p = d.proof(&w.broker.url("/other"), Some(&n), "a-1");
    let f = form(&svid, JWT_TYPE, PAYMENTS);
    refused(&w, 400, "invalid_dpop_proof", || {
        w.post_token(&f, &[("DPoP", &p)])
    });
    expected.push("invalid_dpop_proof");
    let p = d.proof(&w.token_url(), Some("made-up"), "a-2");
    refused(&w, 400, "use_dpop_nonce", || {
        w.post_token(&f, &[("DPoP", &p)])
    });
    expected.push("use_dpop_nonce");
    let secure = w.svid("/ns/secure/sa/api", json!({}));
    refused(&w, 400, "use_attestation_challenge", || {
        w.exchange(&secure, JWT_TYPE, PAYMENTS, None)
    });
    expected.push("use_attestation_challenge");
    secrets.extend([svid, huge, secure]);

    // The whole audit trail: one deny per refusal, in order, and nothing else.
    let audit = w.broker.audit_lines();
    let got: Vec<(&str, &str)> = audit
        .iter()
        .map(|a| {
            (
                a["decision"].as_str().unwrap(),
                a["reason"].as_str().unwrap(),
            )
        })
        .collect();
    let want: Vec<(&str, &str)> = expected.iter().map(|r| ("deny", *r)).collect();
    assert_eq!(got, want);
    assert!(audit.iter().all(|a| a["event"] == "token_exchange"));
    assert_eq!(accepted(&listener), 0, "the broker connected to {url}");
    finish(&w, &secrets);
}
