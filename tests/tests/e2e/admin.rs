//! Trust domains and boundaries through `/admin/v1`: created, changed and deleted on a
//! running broker, validated like the config file, with versions and `If-Match`.

use reqwest::blocking::Response;
use serde_json::{Value, json};
use trustbroker_tests::issuers::*;

use crate::world::*;

pub const ADMIN: &str = "admin-objects-test-token";

fn world() -> World {
    World::start_with("", &[("TRUSTBROKER_ADMIN_TOKEN", ADMIN)])
}

fn call(
    w: &World,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    if_match: Option<&str>,
) -> Response {
    let mut r = w
        .http
        .request(method, w.broker.url(path))
        .bearer_auth(ADMIN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    if let Some(v) = if_match {
        r = r.header("If-Match", v);
    }
    r.send().unwrap()
}

fn etag(r: &Response) -> String {
    r.headers()["etag"].to_str().unwrap().to_owned()
}

fn details(r: Response) -> Vec<(String, String)> {
    let v: Value = r.json().unwrap();
    assert_eq!(v["error"], "invalid_object", "{v}");
    v["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["path"].as_str().unwrap().to_owned(),
                d["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A JWT-SVID of `cluster-b.example` by `key`.
fn svid_b(w: &World, key: &IssuerKey) -> String {
    let claims = json!({"sub": "spiffe://cluster-b.example/ns/app/sa/x", "aud": [w.issuer()], "iat": now(), "exp": now() + 300});
    key.token(&json!({"alg": "ES256", "kid": "b1"}), &claims)
}

#[test]
fn a_domain_and_a_boundary_managed_through_the_api_take_effect_at_once() {
    use reqwest::Method;
    let w = world();
    let key = IssuerKey::es256();
    let boundary = json!({
        "name": "b-to-payments",
        "from": "cluster-b.example",
        "subjects": ["spiffe://cluster-b.example/ns/app/**"],
        "audiences": [PAYMENTS],
        "scopes": ["payments.read", "payments.write"],
        "max_ttl": "5m",
        "attestation": "none",
    });

    // 1. Before: cluster-b is unknown.
    assert_refused(
        w.exchange(&svid_b(&w, &key), JWT_TYPE, PAYMENTS, None),
        400,
        "invalid_request",
    );

    // 2. A boundary from a domain that does not exist is refused, naming the field.
    let r = call(
        &w,
        Method::POST,
        "/admin/v1/boundaries",
        Some(boundary.clone()),
        None,
    );
    assert_eq!(r.status(), 400);
    assert!(details(r).iter().any(|(p, _)| p == "boundary.from"));

    // 3. The domain, then its bundle, then the boundary: the exchange now succeeds.
    let r = call(
        &w,
        Method::POST,
        "/admin/v1/trust-domains",
        Some(json!({"name": "cluster-b.example", "kind": "spiffe"})),
        None,
    );
    assert_eq!(r.status(), 201);
    let v1 = etag(&r);
    let r = call(
        &w,
        Method::PUT,
        "/admin/v1/trust-domains/cluster-b.example/bundle",
        Some(serde_json::from_str(&key.bundle_json("b1")).unwrap()),
        Some(&v1),
    );
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let r = call(
        &w,
        Method::POST,
        "/admin/v1/boundaries",
        Some(boundary.clone()),
        None,
    );
    assert_eq!(r.status(), 201);
    let b1 = etag(&r);
    let t = w.exchange(
        &svid_b(&w, &key),
        JWT_TYPE,
        PAYMENTS,
        Some("payments.write"),
    );
    assert_eq!(t.status(), 200);

    // 4. Reading back: the object with its version and source; the file's objects too.
    let r = call(
        &w,
        Method::GET,
        "/admin/v1/boundaries/b-to-payments",
        None,
        None,
    );
    assert_eq!(etag(&r), b1);
    let v: Value = r.json().unwrap();
    assert_eq!(
        (v["source"].as_str(), v["max_ttl"].as_str()),
        (Some("api"), Some("5m"))
    );
    let list: Value = call(&w, Method::GET, "/admin/v1/boundaries", None, None)
        .json()
        .unwrap();
    let sources: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["source"].as_str().unwrap())
        .collect();
    assert!(
        sources.contains(&"config") && sources.contains(&"api"),
        "{list}"
    );

    // 5. Updates need the current version: none → 428, stale → 412, current → 200. The
    // narrowed boundary holds at once.
    let mut narrowed = boundary.clone();
    narrowed["scopes"] = json!(["payments.read"]);
    assert_eq!(
        call(
            &w,
            Method::PUT,
            "/admin/v1/boundaries/b-to-payments",
            Some(narrowed.clone()),
            None
        )
        .status(),
        428
    );
    assert_eq!(
        call(
            &w,
            Method::PUT,
            "/admin/v1/boundaries/b-to-payments",
            Some(narrowed.clone()),
            Some("\"999\"")
        )
        .status(),
        412
    );
    let r = call(
        &w,
        Method::PUT,
        "/admin/v1/boundaries/b-to-payments",
        Some(narrowed.clone()),
        Some(&b1),
    );
    assert_eq!(r.status(), 200);
    let b2 = etag(&r);
    assert_ne!(b1, b2);
    assert_refused(
        w.exchange(
            &svid_b(&w, &key),
            JWT_TYPE,
            PAYMENTS,
            Some("payments.write"),
        ),
        400,
        "invalid_scope",
    );

    // 6. Invalid values are refused with the attribute's path and change nothing.
    let mut bad = narrowed.clone();
    bad["max_ttl"] = json!("forever");
    let r = call(
        &w,
        Method::PUT,
        "/admin/v1/boundaries/b-to-payments",
        Some(bad),
        Some(&b2),
    );
    assert_eq!(r.status(), 400);
    assert!(details(r).iter().any(|(p, _)| p == "boundary.max_ttl"));
    let mut unknown = narrowed.clone();
    unknown["colour"] = json!("blue");
    assert_eq!(
        call(
            &w,
            Method::PUT,
            "/admin/v1/boundaries/b-to-payments",
            Some(unknown),
            Some(&b2)
        )
        .status(),
        400
    );
    let mut file_key = json!({"name": "cluster-c.example", "bundle_file": "/etc/passwd"});
    let r = call(
        &w,
        Method::POST,
        "/admin/v1/trust-domains",
        Some(file_key.take()),
        None,
    );
    assert!(
        details(r)
            .iter()
            .any(|(p, _)| p == "trust_domain.bundle_file")
    );
    assert_eq!(
        w.exchange(&svid_b(&w, &key), JWT_TYPE, PAYMENTS, None)
            .status(),
        200
    );

    // 7. The config file's objects are read-only; creating one of their names conflicts.
    let r = call(
        &w,
        Method::GET,
        "/admin/v1/boundaries/cluster-a-to-payments",
        None,
        None,
    );
    assert_eq!(r.status(), 200);
    assert_eq!(
        call(
            &w,
            Method::DELETE,
            "/admin/v1/boundaries/cluster-a-to-payments",
            None,
            Some("\"0\"")
        )
        .status(),
        409
    );
    assert_eq!(
        call(
            &w,
            Method::PUT,
            "/admin/v1/boundaries/cluster-a-to-payments",
            Some(narrowed.clone()),
            Some("\"0\"")
        )
        .status(),
        409
    );
    assert_eq!(
        call(
            &w,
            Method::POST,
            "/admin/v1/trust-domains",
            Some(json!({"name": "cluster-a.example"})),
            None
        )
        .status(),
        409
    );
    assert_eq!(
        call(
            &w,
            Method::POST,
            "/admin/v1/boundaries",
            Some(narrowed.clone()),
            None
        )
        .status(),
        409,
        "exists"
    );

    // 8. A domain a boundary still names cannot be deleted; the boundary first, then it.
    let td: Value = call(
        &w,
        Method::GET,
        "/admin/v1/trust-domains/cluster-b.example",
        None,
        None,
    )
    .json()
    .unwrap();
    let tdv = format!("\"{}\"", td["version"]);
    assert_eq!(
        call(
            &w,
            Method::DELETE,
            "/admin/v1/trust-domains/cluster-b.example",
            None,
            Some(&tdv)
        )
        .status(),
        409
    );
    assert_eq!(
        call(
            &w,
            Method::DELETE,
            "/admin/v1/boundaries/b-to-payments",
            None,
            Some(&b2)
        )
        .status(),
        204
    );
    assert_refused(
        w.exchange(&svid_b(&w, &key), JWT_TYPE, PAYMENTS, None),
        400,
        "invalid_request",
    );
    assert_eq!(
        call(
            &w,
            Method::DELETE,
            "/admin/v1/trust-domains/cluster-b.example",
            None,
            Some(&tdv)
        )
        .status(),
        204
    );
    assert_eq!(
        call(
            &w,
            Method::GET,
            "/admin/v1/trust-domains/cluster-b.example",
            None,
            None
        )
        .status(),
        404
    );

    // 9. Without the admin token: 401, and nothing changes.
    let r = w
        .http
        .post(w.broker.url("/admin/v1/boundaries"))
        .json(&boundary)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[test]
fn dry_runs_validate_as_writes_do_and_write_nothing() {
    use reqwest::Method;
    let w = world();
    let boundary = json!({
        "name": "planned",
        "from": "cluster-a.example",
        "subjects": ["spiffe://cluster-a.example/ns/batch/**"],
        "audiences": [PAYMENTS],
        "scopes": ["payments.read"],
        "max_ttl": "5m",
        "attestation": "none",
    });
    let get = |w: &World| call(w, Method::GET, "/admin/v1/boundaries/planned", None, None);

    // 1. A valid object: the answer a create would give (version 0), and nothing stored.
    let r = call(
        &w,
        Method::POST,
        "/admin/v1/boundaries?dry_run=true",
        Some(boundary.clone()),
        None,
    );
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!(
        (v["name"].as_str(), v["version"].as_u64()),
        (Some("planned"), Some(0))
    );
    assert_eq!(get(&w).status(), 404);

    // 2. An invalid one: the same problems, on the same paths, as a write.
    let mut bad = boundary.clone();
    bad["max_ttl"] = json!("whenever");
    let r = call(
        &w,
        Method::POST,
        "/admin/v1/boundaries?dry_run=true",
        Some(bad.clone()),
        None,
    );
    assert_eq!(r.status(), 400);
    let dry = details(r);
    let r = call(&w, Method::POST, "/admin/v1/boundaries", Some(bad), None);
    assert_eq!(details(r), dry);
    assert!(dry.iter().any(|(p, _)| p == "boundary.max_ttl"), "{dry:?}");

    // 3. Once it exists, a dry-run create says so (Terraform then suggests an import).
    let r = call(
        &w,
        Method::POST,
        "/admin/v1/boundaries",
        Some(boundary.clone()),
        None,
    );
    assert_eq!(r.status(), 201);
    let version = etag(&r);
    let r = call(
        &w,
        Method::POST,
        "/admin/v1/boundaries?dry_run=true",
        Some(boundary.clone()),
        None,
    );
    assert_eq!(r.status(), 409);

    // 4. A dry-run replace needs no If-Match and changes nothing.
    let mut changed = boundary.clone();
    changed["max_ttl"] = json!("1m");
    let r = call(
        &w,
        Method::PUT,
        "/admin/v1/boundaries/planned?dry_run=true",
        Some(changed),
        None,
    );
    assert_eq!(r.status(), 200);
    let r = get(&w);
    assert_eq!(etag(&r), version);
    assert_eq!(r.json::<Value>().unwrap()["max_ttl"], "5m");

    // 5. The config file's objects stay read-only, and the admin token is required.
    let r = call(
        &w,
        Method::PUT,
        "/admin/v1/boundaries/cluster-a-to-payments?dry_run=true",
        Some(boundary.clone()),
        None,
    );
    assert_eq!(r.status(), 409);
    let r = w
        .http
        .post(w.broker.url("/admin/v1/boundaries?dry_run=true"))
        .bearer_auth("wrong")
        .json(&boundary)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
}
