//! Revocation and introspection (RFC 7009, RFC 7662) against a running broker: by token
//! and through its lineage, by subject, by foreign `jti`, by DPoP key; and who may ask.

use reqwest::blocking::RequestBuilder;
use serde_json::{Value, json};
use trustbroker_tests::issuers::*;

use crate::world::*;

const ADMIN: &str = "admin-secret-for-revocation-tests";
const CLIENT: &str = "\n[[client]]\nid = \"payments-api\"\nsecret_env = \"PAYMENTS_API_SECRET\"\n";
const SECRET: &str = "s3cret:with%special";

fn world() -> World {
    World::start_with(
        CLIENT,
        &[
            ("PAYMENTS_API_SECRET", SECRET),
            ("TRUSTBROKER_ADMIN_TOKEN", ADMIN),
        ],
    )
}

/// RFC 6749 §2.3.1: id and secret form-encoded, then Basic.
fn as_client(req: RequestBuilder) -> RequestBuilder {
    let enc = |s: &str| form_urlencoded_byte_serialize(s);
    req.basic_auth(enc("payments-api"), Some(enc(SECRET)))
}

fn form_urlencoded_byte_serialize(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn introspect(w: &World, token: &str) -> Value {
    let r = as_client(w.http.post(w.broker.url("/introspect")))
        .form(&[("token", token)])
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    r.json().unwrap()
}

fn revoke(w: &World, token: &str) -> u16 {
    as_client(w.http.post(w.broker.url("/revoke")))
        .form(&[("token", token)])
        .send()
        .unwrap()
        .status()
        .as_u16()
}

fn admin_revoke(w: &World, body: Value) -> reqwest::blocking::Response {
    w.http
        .post(w.broker.url("/admin/v1/revocations"))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .unwrap()
}

fn issued(resp: reqwest::blocking::Response) -> String {
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().unwrap();
    v["access_token"].as_str().unwrap().to_owned()
}

#[test]
fn a_revoked_token_and_every_token_minted_from_it_turn_inactive() {
    let w = world();
    // 1. A workload's SVID becomes a broker token T1 (for the broker itself), and T1 is
    // exchanged again for T2 (for the ledger).
    let svid = w.svid("/ns/payments/sa/api", json!({"jti": "svid-1"}));
    let t1 = issued(w.exchange(&svid, JWT_TYPE, &w.issuer(), Some("payments.read")));
    let t2 = issued(w.exchange(&t1, AT_TYPE, LEDGER, None));

    // 2. Introspection of T2: active, with what a resource server needs.
    let v = introspect(&w, &t2);
    assert_eq!(v["active"], true, "{v}");
    assert_eq!(v["sub"], "spiffe://cluster-a.example/ns/payments/sa/api");
    assert_eq!(v["aud"], LEDGER);
    assert_eq!(v["scope"], "payments.read");
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["crossings"].as_array().unwrap().len(), 2);
    assert!(v.get("lineage").is_none(), "lineage is internal: {v}");

    // 3. T1 is revoked: T1 and T2 (minted from it) are inactive, and T1 no longer
    // exchanges.
    assert_eq!(revoke(&w, &t1), 200);
    assert_eq!(introspect(&w, &t1), json!({"active": false}));
    assert_eq!(introspect(&w, &t2), json!({"active": false}));
    assert_refused(
        w.exchange(&t1, AT_TYPE, LEDGER, None),
        400,
        "invalid_request",
    );
    // The SVID itself was not revoked: it still exchanges.
    assert_eq!(w.exchange(&svid, JWT_TYPE, PAYMENTS, None).status(), 200);

    // 4. Revoking what is not ours, or garbage, is answered 200 and changes nothing.
    assert_eq!(revoke(&w, &svid), 200);
    assert_eq!(revoke(&w, "not-a-token"), 200);
    assert_eq!(w.exchange(&svid, JWT_TYPE, PAYMENTS, None).status(), 200);

    // 5. The audit log names revocations by digest, never by token.
    let lines: Vec<Value> = w
        .broker
        .audit_lines()
        .into_iter()
        .filter(|l| l["event"] == "revoke")
        .collect();
    assert!(
        lines.iter().any(|l| l["decision"] == "allow"
            && l["revoked"] == "token"
            && l["caller"] == "payments-api"),
        "{lines:?}"
    );
    assert!(!w.broker.log().contains(&t1));
}

#[test]
fn only_registered_clients_and_the_admin_may_introspect_or_revoke() {
    let w = world();
    let t = issued(w.exchange(
        &w.svid("/ns/payments/sa/api", json!({})),
        JWT_TYPE,
        PAYMENTS,
        None,
    ));
    let post = |path: &str| {
        w.http
            .post(w.broker.url(path))
            .form(&[("token", t.as_str())])
    };
    for path in ["/introspect", "/revoke"] {
        // No credentials, a wrong secret, an unknown client, a wrong bearer: 401.
        for req in [
            post(path),
            post(path).basic_auth("payments-api", Some("wrong")),
            post(path).basic_auth("someone-else", Some(SECRET)),
            post(path).bearer_auth("not-the-admin"),
        ] {
            let r = req.send().unwrap();
            assert_eq!(r.status(), 401, "{path}");
            assert!(r.headers().contains_key("www-authenticate"));
            let body: Value = r.json().unwrap();
            assert_eq!(body["error"], "invalid_client");
        }
    }
    // Nothing was revoked by those attempts.
    assert_eq!(introspect(&w, &t)["active"], true);
    // The admin bearer works too.
    let v: Value = post("/introspect")
        .bearer_auth(ADMIN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["active"], true);
    // A missing or repeated `token` is invalid_request.
    let r = as_client(w.http.post(w.broker.url("/introspect")))
        .form(&[("token", t.as_str()), ("token", t.as_str())])
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = as_client(w.http.post(w.broker.url("/introspect")))
        .form(&[("nothing", "")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    // Tokens of other issuers, expired or forged ones are simply inactive.
    let svid = w.svid("/ns/payments/sa/api", json!({}));
    assert_eq!(introspect(&w, &svid), json!({"active": false}));
    let mut forged = t.clone();
    forged.pop();
    forged.push(if t.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(introspect(&w, &forged), json!({"active": false}));
}

#[test]
fn admin_revocations_by_subject_foreign_jti_and_dpop_key() {
    let w = world();
    let sub_a = "/ns/payments/sa/a";
    let ta = issued(w.exchange(&w.svid(sub_a, json!({})), JWT_TYPE, PAYMENTS, None));
    let tb = issued(w.exchange(
        &w.svid("/ns/payments/sa/b", json!({})),
        JWT_TYPE,
        PAYMENTS,
        None,
    ));

    // 1. By subject: a's tokens are inactive, b's are not.
    let r = admin_revoke(&w, json!({"subject": format!("spiffe://{CLUSTER}{sub_a}")}));
    assert_eq!(r.status(), 201);
    assert_eq!(introspect(&w, &ta)["active"], false);
    assert_eq!(introspect(&w, &tb)["active"], true);

    // 2. By a foreign token's jti (a JWT-SVID's namespace is its trust domain): that SVID
    // no longer exchanges; another one does.
    let r = admin_revoke(
        &w,
        json!({"jti": "svid-42", "issuer": format!("spiffe://{CLUSTER}")}),
    );
    assert_eq!(r.status(), 201);
    let revoked = w.svid("/ns/payments/sa/b", json!({"jti": "svid-42"}));
    assert_refused(
        w.exchange(&revoked, JWT_TYPE, PAYMENTS, None),
        400,
        "invalid_request",
    );
    let other = w.svid("/ns/payments/sa/b", json!({"jti": "svid-43"}));
    assert_eq!(w.exchange(&other, JWT_TYPE, PAYMENTS, None).status(), 200);

    // 3. By DPoP key: a token bound to the key turns inactive.
    let key = DpopKey::new();
    let nonce = w.nonce();
    let proof = key.proof(&w.token_url(), Some(&nonce), "p1");
    let svid = w.svid("/ns/payments/sa/b", json!({}));
    let bound = issued(w.post_token(
        &[
            ("grant_type", TE),
            ("subject_token", &svid),
            ("subject_token_type", JWT_TYPE),
            ("audience", PAYMENTS),
        ],
        &[("DPoP", &proof)],
    ));
    let v = introspect(&w, &bound);
    assert_eq!(
        (v["active"].clone(), v["token_type"].clone()),
        (json!(true), json!("DPoP"))
    );
    assert_eq!(v["cnf"]["jkt"], key.jkt);
    assert_eq!(admin_revoke(&w, json!({"jkt": key.jkt})).status(), 201);
    assert_eq!(introspect(&w, &bound)["active"], false);
    assert_eq!(introspect(&w, &tb)["active"], true);

    // 4. Bad requests change nothing: two targets, none, unknown fields, wrong types,
    // oversized values, no admin token.
    for body in [
        json!({"subject": "x", "jkt": "y"}),
        json!({}),
        json!({"issuer": "https://x"}),
        json!({"subject": "x", "extra": 1}),
        json!({"subject": 7}),
        json!({"subject": "x".repeat(4096)}),
    ] {
        let r = admin_revoke(&w, body.clone());
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().unwrap();
        assert_eq!(v["error"], "invalid_object", "{body}");
    }
    let r = w
        .http
        .post(w.broker.url("/admin/v1/revocations"))
        .json(&json!({"subject": format!("spiffe://{CLUSTER}/ns/payments/sa/b")}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(introspect(&w, &tb)["active"], true);
}
