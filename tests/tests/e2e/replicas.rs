//! Two broker replicas on one real `redis-server`: they behave as one broker, and when
//! Redis is unreachable they issue nothing.

use reqwest::blocking::{Client, Response};
use serde_json::{Value, json};
use trustbroker_tests::broker::{Broker, free_port};
use trustbroker_tests::issuers::*;
use trustbroker_tests::redis::RedisServer;

use crate::world::{CLUSTER, CONFIG, PAYMENTS};

const ADMIN: &str = "replica-admin-token";
/// base64 of 32 bytes.
const STATE_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const SECRET: &str = "rs-secret";

struct Pair {
    a: Broker,
    b: Broker,
    cluster: IssuerKey,
    issuer: String,
    http: Client,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

/// Two replicas sharing `redis`: one issuer (replica A's URL), one backend, one key.
fn pair(redis: &RedisServer) -> Pair {
    let cluster = IssuerKey::es256();
    let a_port = free_port();
    let issuer = format!("http://127.0.0.1:{a_port}");
    let config = CONFIG
        .replace("{PORT}", &a_port.to_string())
        .replace(
            &format!("listen = \"127.0.0.1:{a_port}\""),
            "listen = \"127.0.0.1:{PORT}\"",
        )
        .replace(
            "[state]\npath = \"state\"",
            &format!("[state]\nbackend = \"redis\"\nurl = \"{}\"", redis.url()),
        )
        + "\n[[client]]\nid = \"rs\"\nsecret_env = \"RS_SECRET\"\n";
    let env = [
        ("TRUSTBROKER_STATE_KEY", STATE_KEY),
        ("TRUSTBROKER_ADMIN_TOKEN", ADMIN),
        ("RS_SECRET", SECRET),
    ];
    let dir = || {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("cluster-a.bundle.json"),
            cluster.bundle_json("c1"),
        )
        .unwrap();
        std::fs::write(
            d.path().join("github.jwks.json"),
            IssuerKey::rs256().jwks_json("g1"),
        )
        .unwrap();
        d
    };
    let (da, db) = (dir(), dir());
    let a = Broker::start_env(da.path(), &config, a_port, &env);
    let b = Broker::start_env(db.path(), &config, free_port(), &env);
    Pair {
        a,
        b,
        cluster,
        issuer,
        http: Client::new(),
        _dirs: (da, db),
    }
}

impl Pair {
    fn svid(&self, path: &str, extra: Value) -> String {
        let mut claims = json!({
            "sub": format!("spiffe://{CLUSTER}{path}"),
            "aud": [self.issuer],
            "iat": now(),
            "exp": now() + 600,
        });
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        self.cluster
            .token(&json!({"alg": "ES256", "kid": "c1", "typ": "JWT"}), &claims)
    }

    fn exchange(&self, on: &Broker, svid: &str, dpop: Option<&str>) -> Response {
        let mut req = self.http.post(on.url("/token")).form(&[
            ("grant_type", TE),
            ("subject_token", svid),
            ("subject_token_type", JWT_TYPE),
            ("audience", PAYMENTS),
        ]);
        if let Some(p) = dpop {
            req = req.header("DPoP", p);
        }
        req.send().unwrap()
    }

    fn nonce(&self, on: &Broker) -> String {
        let v: Value = self
            .http
            .post(on.url("/attest/challenge"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["nonce"].as_str().unwrap().to_owned()
    }

    fn introspect(&self, on: &Broker, token: &str) -> Value {
        self.http
            .post(on.url("/introspect"))
            .basic_auth("rs", Some(SECRET))
            .form(&[("token", token)])
            .send()
            .unwrap()
            .json()
            .unwrap()
    }
}

fn token_of(r: Response) -> String {
    let status = r.status();
    let v: Value = r.json().unwrap();
    assert_eq!(status, 200, "{v}");
    v["access_token"].as_str().unwrap().to_owned()
}

fn error_of(r: Response) -> (u16, String) {
    let status = r.status().as_u16();
    let v: Value = r.json().unwrap();
    assert!(v.get("access_token").is_none());
    (status, v["error"].as_str().unwrap_or_default().to_owned())
}

#[test]
fn two_replicas_share_nonces_single_use_markers_revocations_and_keys() {
    let redis = RedisServer::start();
    let p = pair(&redis);
    let key = DpopKey::new();

    // 1. A nonce issued by A is good on B, once: consumed on B, it is refused on A.
    let nonce = p.nonce(&p.a);
    let proof = |jti: &str| key.proof(&format!("{}/token", p.issuer), Some(&nonce), jti);
    let t = token_of(p.exchange(
        &p.b,
        &p.svid("/ns/payments/sa/api", json!({})),
        Some(&proof("p1")),
    ));
    assert_eq!(
        error_of(p.exchange(
            &p.a,
            &p.svid("/ns/payments/sa/api", json!({})),
            Some(&proof("p2"))
        )),
        (400, "use_dpop_nonce".to_owned())
    );

    // 2. A token minted on B verifies on A (one set of signing keys).
    let v = p.introspect(&p.a, &t);
    assert_eq!(v["active"], true, "{v}");

    // 3. A single-use subject token used on A is refused on B.
    let once = p.svid("/ns/once/sa/job", json!({"jti": "once-1"}));
    token_of(p.exchange(&p.a, &once, None));
    assert_eq!(
        error_of(p.exchange(&p.b, &once, None)),
        (400, "invalid_request".to_owned())
    );

    // 4. A revocation on A is seen by B's introspection at once (well within 1 s).
    let r = p
        .http
        .post(p.a.url("/revoke"))
        .basic_auth("rs", Some(SECRET))
        .form(&[("token", t.as_str())])
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(p.introspect(&p.b, &t), json!({"active": false}));

    // 5. Both publish the same keys.
    let jwks = |b: &Broker| -> Value { p.http.get(b.url("/jwks")).send().unwrap().json().unwrap() };
    assert_eq!(jwks(&p.a), jwks(&p.b));
}

#[test]
fn with_redis_unreachable_nothing_is_issued_and_both_recover_without_a_restart() {
    let mut redis = RedisServer::start_durable();
    let p = pair(&redis);
    let svid = || p.svid("/ns/payments/sa/api", json!({}));
    token_of(p.exchange(&p.a, &svid(), None));
    let ready = |b: &Broker| {
        p.http
            .get(b.url("/readyz"))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };

    // 1. Redis goes away: every exchange on either replica is 503 temporarily_unavailable
    // with Retry-After, and neither is ready.
    redis.stop();
    for b in [&p.a, &p.b, &p.a, &p.b] {
        let r = p.exchange(b, &svid(), None);
        assert!(r.headers().contains_key("retry-after"));
        assert_eq!(error_of(r), (503, "temporarily_unavailable".to_owned()));
    }
    assert_eq!(ready(&p.a), 503);
    assert_eq!(ready(&p.b), 503);
    // A nonce needs no state to be handed out (spending one does, and every exchange
    // above was refused): a workload can be ready for the moment Redis returns.
    assert_eq!(
        p.http
            .post(p.a.url("/attest/challenge"))
            .send()
            .unwrap()
            .status(),
        200
    );

    // 2. Redis returns: both replicas serve again, without a restart.
    redis.restart();
    let mut ok = false;
    for _ in 0..100 {
        if p.exchange(&p.a, &svid(), None).status() == 200
            && p.exchange(&p.b, &svid(), None).status() == 200
        {
            ok = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(ok, "replicas did not recover:\n{}", p.a.log());
    assert_eq!(ready(&p.a), 200);
    assert_eq!(ready(&p.b), 200);
}

#[test]
fn a_node_enrolled_through_one_replica_attests_on_both_until_deleted_on_either() {
    use broker::client;
    let redis = RedisServer::start();
    let p = pair(&redis);
    let dir = tempfile::tempdir().unwrap();

    // 1. A join token made on A; the enforcer enrolls through B (one node CA, one set of
    // join tokens) and serves this test process as workload `ns/secure/sa/x`.
    let jt: Value = p
        .http
        .post(p.a.url("/admin/v1/join-tokens"))
        .bearer_auth(ADMIN)
        .json(&json!({"node": "n1", "ttl": "5m"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let data = dir.path().join("node");
    let out = crate::attestation::enroll(&p.b, jt["token"].as_str().unwrap(), &data);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let socket = dir.path().join("e.sock");
    let me = std::env::current_exe().unwrap().canonicalize().unwrap();
    let _enforcer = crate::attestation::run_enforcer(
        &data,
        &socket,
        &format!(
            "[[workload]]\nspiffe_id = \"spiffe://{CLUSTER}/ns/secure/sa/x\"\nselectors = {{ exe = \"{}\" }}\n",
            me.display()
        ),
    );

    // An attested exchange on `on`: nonce, evidence, DPoP proof for the shared issuer.
    let key = client::DpopKey::generate().unwrap();
    let attested = |on: &Broker| -> (u16, Value) {
        let nonce = client::challenge(&on.base).unwrap();
        let evidence = client::evidence(&socket, &nonce, &key.jkt).unwrap();
        let proof = key
            .proof(&format!("{}/token", p.issuer), Some(&nonce))
            .unwrap();
        let svid = p.svid("/ns/secure/sa/x", json!({}));
        let a = client::token(
            &on.base,
            &[
                ("grant_type", TE),
                ("subject_token", &svid),
                ("subject_token_type", JWT_TYPE),
                ("audience", PAYMENTS),
            ],
            Some(&proof),
            Some(&evidence),
        )
        .unwrap();
        (a.status, a.body)
    };

    // 2. Its evidence is accepted on both replicas.
    assert_eq!(attested(&p.a).0, 200);
    assert_eq!(attested(&p.b).0, 200);

    // 3. The node is deleted on B (its version read on A): A refuses its evidence at once.
    let etag = p
        .http
        .get(p.a.url("/admin/v1/nodes/n1"))
        .bearer_auth(ADMIN)
        .send()
        .unwrap()
        .headers()["etag"]
        .to_str()
        .unwrap()
        .to_owned();
    let deleted = p
        .http
        .delete(p.b.url("/admin/v1/nodes/n1"))
        .bearer_auth(ADMIN)
        .header("If-Match", etag)
        .send()
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let (status, body) = attested(&p.a);
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
}

#[test]
fn admin_changes_on_one_replica_hold_on_the_other_within_a_second() {
    use reqwest::Method;
    let redis = RedisServer::start();
    let p = pair(&redis);
    let key = IssuerKey::es256();
    let call = |on: &Broker, m: Method, path: &str, body: Option<Value>, if_match: Option<&str>| {
        let mut r = p.http.request(m, on.url(path)).bearer_auth(ADMIN);
        if let Some(b) = body {
            r = r.json(&b);
        }
        if let Some(v) = if_match {
            r = r.header("If-Match", v);
        }
        r.send().unwrap()
    };
    let svid = || {
        let claims = json!({"sub": "spiffe://cluster-b.example/ns/app/sa/x", "aud": [p.issuer], "iat": now(), "exp": now() + 300});
        key.token(&json!({"alg": "ES256", "kid": "b1"}), &claims)
    };
    let status_on_b = || p.exchange(&p.b, &svid(), None).status().as_u16();
    let within_a_second = |want: u16| {
        let start = trust_bundles::Stopwatch::start();
        while start.elapsed() < std::time::Duration::from_secs(1) {
            if status_on_b() == want {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        false
    };

    // 1. A trust domain with its bundle and a boundary, made on A: B honours them.
    let r = call(
        &p.a,
        Method::POST,
        "/admin/v1/trust-domains",
        Some(json!({"name": "cluster-b.example"})),
        None,
    );
    assert_eq!(r.status(), 201);
    let v = r.headers()["etag"].to_str().unwrap().to_owned();
    let r = call(
        &p.a,
        Method::PUT,
        "/admin/v1/trust-domains/cluster-b.example/bundle",
        Some(serde_json::from_str(&key.bundle_json("b1")).unwrap()),
        Some(&v),
    );
    assert_eq!(r.status(), 200);
    let r = call(
        &p.a,
        Method::POST,
        "/admin/v1/boundaries",
        Some(json!({
            "name": "b", "from": "cluster-b.example", "subjects": ["spiffe://cluster-b.example/**"],
            "audiences": [PAYMENTS], "scopes": ["payments.read"], "attestation": "none"
        })),
        None,
    );
    assert_eq!(r.status(), 201);
    let bv = r.headers()["etag"].to_str().unwrap().to_owned();
    assert!(within_a_second(200), "B never honoured A's new boundary");

    // 2. The boundary and the domain deleted on A (the domain's version read on B): B
    // refuses within a second.
    assert_eq!(
        call(
            &p.a,
            Method::DELETE,
            "/admin/v1/boundaries/b",
            None,
            Some(&bv)
        )
        .status(),
        204
    );
    let td: Value = call(
        &p.b,
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
            &p.a,
            Method::DELETE,
            "/admin/v1/trust-domains/cluster-b.example",
            None,
            Some(&tdv)
        )
        .status(),
        204
    );
    assert!(within_a_second(400), "B still honours a deleted domain");
}
