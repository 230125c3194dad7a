//! Runtime attestation across real processes: the broker, the `trustbroker-enforcer`
//! binary on a Unix socket, and workloads that are `trustbroker exchange` processes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use serde_json::{Value, json};
use trustbroker_tests::broker::{Broker, binary, free_port, workspace_binary};
use trustbroker_tests::issuers::*;

const ADMIN: &str = "e2e-admin-token-0123456789";

pub(crate) struct Enforcer(Child);

impl Drop for Enforcer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config(exe_sha256: &str) -> String {
    format!(
        r#"issuer = "http://127.0.0.1:{{PORT}}"
listen = "127.0.0.1:{{PORT}}"
[state]
path = "state"
[[trust_domain]]
name = "cluster-a.example"
bundle_file = "cluster-a.bundle.json"
[[boundary]]
name = "attested"
from = "cluster-a.example"
subjects = ["spiffe://cluster-a.example/ns/payments/sa/*"]
audiences = ["https://payments.example/api"]
scopes = ["payments.read"]
attestation = "required"
require = {{ exe_sha256 = ["{exe_sha256}"] }}
"#
    )
}

fn sha256_hex(path: &Path) -> String {
    sha256_hex_of(&std::fs::read(path).unwrap())
}

fn join_token(b: &Broker, node: &str) -> String {
    let v: Value = reqwest::blocking::Client::new()
        .post(b.url("/admin/v1/join-tokens"))
        .bearer_auth(ADMIN)
        .json(&json!({"node": node, "ttl": "5m"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["token"].as_str().unwrap().to_owned()
}

pub(crate) fn enroll(b: &Broker, token: &str, data: &Path) -> std::process::Output {
    Command::new(workspace_binary("enforcer", "trustbroker-enforcer"))
        .args([
            "enroll",
            "--broker",
            &b.base,
            "--join-token",
            token,
            "--data-dir",
        ])
        .arg(data)
        .output()
        .unwrap()
}

pub(crate) fn run_enforcer(data: &Path, socket: &Path, registrations: &str) -> Enforcer {
    let cfg = data.join("enforcer.toml");
    std::fs::write(&cfg, registrations).unwrap();
    let child = Command::new(workspace_binary("enforcer", "trustbroker-enforcer"))
        .args(["run", "--data-dir"])
        .arg(data)
        .arg("--socket")
        .arg(socket)
        .arg("--config")
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Enforcer(child)
}

/// `trustbroker exchange` run from `exe` (a workload process).
fn exchange(
    exe: &Path,
    b: &Broker,
    svid_file: &Path,
    socket: Option<&Path>,
) -> (bool, String, String) {
    let mut c = Command::new(exe);
    c.args([
        "exchange",
        "--broker",
        &b.base,
        "--audience",
        "https://payments.example/api",
        "--subject-token-file",
    ])
    .arg(svid_file);
    if let Some(s) = socket {
        c.arg("--enforcer-socket").arg(s);
    }
    let out = c.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

struct Setup {
    b: Broker,
    socket: PathBuf,
    svid_file: PathBuf,
    _enforcer: Enforcer,
    dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let cluster = IssuerKey::es256();
    std::fs::write(
        dir.path().join("cluster-a.bundle.json"),
        cluster.bundle_json("c1"),
    )
    .unwrap();
    let workload = binary();
    let port = free_port();
    let b = Broker::start_admin(dir.path(), &config(&sha256_hex(&workload)), port, ADMIN);
    let token = join_token(&b, "n1");
    let data = dir.path().join("node");
    let out = enroll(&b, &token, &data);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let socket = dir.path().join("enforcer.sock");
    let registrations = format!(
        "[[workload]]\nspiffe_id = \"spiffe://cluster-a.example/ns/payments/sa/api\"\nselectors = {{ exe = \"{}\" }}\n",
        workload.canonicalize().unwrap().display()
    );
    let enforcer = run_enforcer(&data, &socket, &registrations);
    let claims = json!({"sub": "spiffe://cluster-a.example/ns/payments/sa/api", "aud": [b.base], "iat": now(), "exp": now() + 600});
    let svid = cluster.token(&json!({"alg": "ES256", "kid": "c1"}), &claims);
    let svid_file = dir.path().join("svid.jwt");
    std::fs::write(&svid_file, svid).unwrap();
    Setup {
        b,
        socket,
        svid_file,
        _enforcer: enforcer,
        dir,
    }
}

#[test]
fn attested_exchange_across_processes_and_the_refusals() {
    // 1. Broker, an enrolled enforcer, and a registered workload binary.
    let s = setup();

    // 2. The registered workload completes an attested exchange.
    let (ok, out, err) = exchange(&binary(), &s.b, &s.svid_file, Some(&s.socket));
    assert!(ok, "{err}\n{}", s.b.log());
    let resp: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(resp["token_type"], "DPoP");
    let claims = decode_part(resp["access_token"].as_str().unwrap(), 1);
    assert_eq!(
        claims["att"]["node"],
        format!("spiffe://trustbroker.local/enforcer/n1")
    );

    // 3. The same subject token from an unregistered process (another binary path):
    // the enforcer refuses it, and without evidence the broker does too.
    let copy = s.dir.path().join("intruder");
    std::fs::copy(binary(), &copy).unwrap();
    let (ok, _, err) = exchange(&copy, &s.b, &s.svid_file, Some(&s.socket));
    assert!(!ok && err.contains("no_registration"), "{err}");
    let (ok, _, err) = exchange(&copy, &s.b, &s.svid_file, None);
    assert!(!ok && err.contains("use_attestation_challenge"), "{err}");

    // 3b. Another node: an enforcer enrolled as n2 vouches for this binary only as
    // ns/other/sa/batch, so its evidence cannot stand behind the copied payments token.
    let n2 = s.dir.path().join("node-n2");
    let out = enroll(&s.b, &join_token(&s.b, "n2"), &n2);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n2_socket = s.dir.path().join("n2.sock");
    let _n2 = run_enforcer(
        &n2,
        &n2_socket,
        &format!(
            "[[workload]]\nspiffe_id = \"spiffe://cluster-a.example/ns/other/sa/batch\"\nselectors = {{ exe = \"{}\" }}\n",
            binary().canonicalize().unwrap().display()
        ),
    );
    let (ok, _, err) = exchange(&binary(), &s.b, &s.svid_file, Some(&n2_socket));
    assert!(!ok && err.contains("invalid_request"), "{err}");

    // 4. An executable replaced on disk after registration: the registered path now
    // holds other bytes, so the evidence's exe_sha256 no longer meets `require`.
    let data = s.dir.path().join("node");
    let socket2 = s.dir.path().join("enforcer2.sock");
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&copy)
            .unwrap();
        f.write_all(b"tampered").unwrap();
    }
    let regs = format!(
        "[[workload]]\nspiffe_id = \"spiffe://cluster-a.example/ns/payments/sa/api\"\nselectors = {{ exe = \"{}\" }}\n",
        copy.canonicalize().unwrap().display()
    );
    let _second = run_enforcer(&data, &socket2, &regs);
    let (ok, _, err) = exchange(&copy, &s.b, &s.svid_file, Some(&socket2));
    assert!(!ok && err.contains("invalid_request"), "{err}");

    // 5. Revoking the node refuses its evidence at once.
    let http = reqwest::blocking::Client::new();
    let node = http
        .get(s.b.url("/admin/v1/nodes/n1"))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    let etag = node.headers()["etag"].to_str().unwrap().to_owned();
    let missing = http
        .delete(s.b.url("/admin/v1/nodes/n1"))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    assert_eq!(missing.status(), 428);
    let stale = http
        .delete(s.b.url("/admin/v1/nodes/n1"))
        .bearer_auth(ADMIN)
        .header("If-Match", "\"999\"")
        .send()
        .unwrap();
    assert_eq!(stale.status(), 412);
    let del = http
        .delete(s.b.url("/admin/v1/nodes/n1"))
        .bearer_auth(ADMIN)
        .header("If-Match", etag)
        .send()
        .unwrap();
    assert_eq!(del.status(), 204);
    let (ok, _, err) = exchange(&binary(), &s.b, &s.svid_file, Some(&s.socket));
    assert!(!ok && err.contains("invalid_request"), "{err}");

    // 6. The admin API wants its token.
    let anon = http.get(s.b.url("/admin/v1/nodes")).send().unwrap();
    assert_eq!(anon.status(), 401);
}

#[test]
fn a_join_token_used_twice_concurrently_enrolls_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cluster-a.bundle.json"),
        IssuerKey::es256().bundle_json("c1"),
    )
    .unwrap();
    let b = Broker::start_admin(dir.path(), &config(&"0".repeat(64)), free_port(), ADMIN);
    let token = join_token(&b, "n2");
    let results: Vec<(bool, String)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8)
            .map(|i| {
                let (b, token, d) = (&b, &token, dir.path().join(format!("d{i}")));
                sc.spawn(move || {
                    let out = enroll(b, token, &d);
                    (
                        out.status.success(),
                        String::from_utf8_lossy(&out.stderr).into_owned(),
                    )
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        results.iter().filter(|(ok, _)| *ok).count(),
        1,
        "{results:#?}\n{}",
        b.log()
    );
}

#[test]
fn the_demo_runs_and_exits_zero() {
    let out = Command::new(binary()).arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "use_attestation_challenge",
        "invalid_scope",
        "use_fresh_attestation",
        "All as expected",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected} in:\n{stdout}"
        );
    }
}

#[test]
fn an_enforcer_renews_with_its_current_certificate_until_revoked() {
    use enforcer::identity::Identity;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cluster-a.bundle.json"),
        IssuerKey::es256().bundle_json("c1"),
    )
    .unwrap();
    let b = Broker::start_admin(dir.path(), &config(&"0".repeat(64)), free_port(), ADMIN);
    let clock = trust_bundles::SystemClock;
    // 1. Enroll, then renew: a new key and certificate for the same node.
    let data = dir.path().join("node");
    let first = Identity::enroll(&b.base, &join_token(&b, "n3"), &data, &clock).unwrap();
    let second = first.renew(&data, &clock).unwrap();
    assert_ne!(second.state.certificate, first.state.certificate);
    assert_eq!(
        second.state.spiffe_id,
        "spiffe://trustbroker.local/enforcer/n3"
    );
    assert_eq!(
        Identity::load(&data).unwrap().state.certificate,
        second.state.certificate
    );
    // A superseded certificate cannot renew (it would push the current key out).
    assert!(matches!(
        first.renew(&dir.path().join("old"), &clock),
        Err(enforcer::identity::IdentityError::Refused { status: 400, .. })
    ));
    // 2. A certificate that was never issued by the node CA cannot renew.
    let mut forged = Identity::load(&data).unwrap();
    forged.state.certificate = first.state.ca.clone();
    assert!(forged.renew(&dir.path().join("x"), &clock).is_err());
    // 3. After revocation, renewal is refused.
    let http = reqwest::blocking::Client::new();
    let etag = http
        .get(b.url("/admin/v1/nodes/n3"))
        .bearer_auth(ADMIN)
        .send()
        .unwrap()
        .headers()["etag"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        http.delete(b.url("/admin/v1/nodes/n3"))
            .bearer_auth(ADMIN)
            .header("If-Match", etag)
            .send()
            .unwrap()
            .status(),
        204
    );
    assert!(matches!(
        second.renew(&data, &clock),
        Err(enforcer::identity::IdentityError::Refused { status: 400, .. })
    ));
}

#[test]
fn revoking_a_node_cancels_its_pending_join_tokens_and_never_reuses_a_version() {
    use enforcer::identity::Identity;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cluster-a.bundle.json"),
        IssuerKey::es256().bundle_json("c1"),
    )
    .unwrap();
    let b = Broker::start_admin(dir.path(), &config(&"0".repeat(64)), free_port(), ADMIN);
    let clock = trust_bundles::SystemClock;
    let http = reqwest::blocking::Client::new();
    let etag = |b: &Broker| {
        http.get(b.url("/admin/v1/nodes/n4"))
            .bearer_auth(ADMIN)
            .send()
            .unwrap()
            .headers()["etag"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    Identity::enroll(
        &b.base,
        &join_token(&b, "n4"),
        &dir.path().join("a"),
        &clock,
    )
    .unwrap();
    let spare = join_token(&b, "n4");
    let v1 = etag(&b);
    assert_eq!(
        http.delete(b.url("/admin/v1/nodes/n4"))
            .bearer_auth(ADMIN)
            .header("If-Match", v1.clone())
            .send()
            .unwrap()
            .status(),
        204
    );
    // The spare token died with the node.
    assert!(Identity::enroll(&b.base, &spare, &dir.path().join("b"), &clock).is_err());
    // A fresh token re-enrolls it under a new version; the old ETag is stale for good.
    Identity::enroll(
        &b.base,
        &join_token(&b, "n4"),
        &dir.path().join("c"),
        &clock,
    )
    .unwrap();
    assert_ne!(etag(&b), v1);
    assert_eq!(
        http.delete(b.url("/admin/v1/nodes/n4"))
            .bearer_auth(ADMIN)
            .header("If-Match", v1)
            .send()
            .unwrap()
            .status(),
        412
    );
}

#[test]
fn enrollment_and_admin_refusals() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cluster-a.bundle.json"),
        IssuerKey::es256().bundle_json("c1"),
    )
    .unwrap();
    let http = reqwest::blocking::Client::new();

    // Without an admin token configured, the admin API is off.
    let off = Broker::start(dir.path(), &config(&"0".repeat(64)), free_port());
    let r = http
        .post(off.url("/admin/v1/join-tokens"))
        .bearer_auth("anything")
        .json(&json!({"node": "n"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    drop(off);

    let b = Broker::start_admin(dir.path(), &config(&"0".repeat(64)), free_port(), ADMIN);
    // Wrong token: 401 with a Bearer challenge.
    let r = http
        .post(b.url("/admin/v1/join-tokens"))
        .bearer_auth("wrong")
        .json(&json!({"node": "n"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    // Node names and TTLs are checked.
    for body in [
        json!({"node": "Bad/Name"}),
        json!({"node": ".."}),
        json!({"node": "n", "ttl": "48h"}),
        json!({"node": "n", "ttl": "soon"}),
        json!({"nod": "n"}),
    ] {
        let r = http
            .post(b.url("/admin/v1/join-tokens"))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
    }
    // Enrollment: a garbage CSR → 400 without spending the token, which still enrolls;
    // an unknown or spent token → 401.
    let enroll_with = |token: &str, csr: &str| {
        http.post(b.url("/v1/enroll"))
            .json(&json!({"join_token": token, "csr": csr}))
            .send()
            .unwrap()
            .status()
    };
    let t = join_token(&b, "n5");
    assert_eq!(enroll_with(&t, "AAAA"), 400);
    enforcer::identity::Identity::enroll(
        &b.base,
        &t,
        &dir.path().join("n5"),
        &trust_bundles::SystemClock,
    )
    .unwrap();
    for token in [t.as_str(), "nope"] {
        assert_eq!(enroll_with(token, "AAAA"), 400, "the CSR is judged first");
    }
    let kp = rcgen::KeyPair::generate().unwrap();
    let csr = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        rcgen::CertificateParams::default()
            .serialize_request(&kp)
            .unwrap()
            .der(),
    );
    for token in [t.as_str(), "nope"] {
        assert_eq!(enroll_with(token, &csr), 401);
    }
    // Oversized bodies and malformed renewals are refused.
    let r = http
        .post(b.url("/v1/enroll"))
        .body(vec![b'{'; 20_000])
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .post(b.url("/v1/renew"))
        .json(&json!({"renewal": "a.b.c"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);

    // A join token withdrawn before use (DELETE by its id, the SHA-256 creation gave)
    // enrolls nothing; withdrawing needs the admin token, and happens once.
    let created: Value = http
        .post(b.url("/admin/v1/join-tokens"))
        .bearer_auth(ADMIN)
        .json(&json!({"node": "n6"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let (t, id) = (
        created["token"].as_str().unwrap(),
        created["id"].as_str().unwrap(),
    );
    assert_eq!(id, sha256_hex_of(t.as_bytes()));
    let withdraw = |id: &str, admin: &str| {
        http.delete(b.url(&format!("/admin/v1/join-tokens/{id}")))
            .bearer_auth(admin)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(withdraw(id, "wrong"), 401);
    assert_eq!(
        withdraw(&id.to_uppercase(), ADMIN),
        404,
        "ids are lower-case hex"
    );
    assert_eq!(withdraw(t, ADMIN), 404, "the token itself is not its id");
    assert_eq!(withdraw(id, ADMIN), 204);
    assert_eq!(withdraw(id, ADMIN), 404);
    assert_eq!(enroll_with(t, &csr), 401);
}

fn sha256_hex_of(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn a_workload_that_exits_takes_its_tokens_with_it() {
    // 1. A registered workload (a `trustbroker exchange` process) gets an attested token,
    // then exits, as that process does once it has printed the token.
    let s = setup();
    let (ok, out, err) = exchange(&binary(), &s.b, &s.svid_file, Some(&s.socket));
    assert!(ok, "{err}\n{}", s.b.log());
    let resp: Value = serde_json::from_str(&out).unwrap();
    let token = resp["access_token"].as_str().unwrap().to_owned();

    // 2. The enforcer sees the exit and reports it; within 2 s the token is inactive.
    let introspect = || -> Value {
        reqwest::blocking::Client::new()
            .post(s.b.url("/introspect"))
            .bearer_auth(ADMIN)
            .form(&[("token", token.as_str())])
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let mut inactive = false;
    for _ in 0..40 {
        if introspect()["active"] == false {
            inactive = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(inactive, "still active after 2 s:\n{}", s.b.log());

    // 3. The broker's audit log says why, naming the node.
    let lines = s.b.audit_lines();
    assert!(
        lines.iter().any(|l| l["event"] == "revoke"
            && l["reason"] == "workload_exited"
            && l["node"] == "n1"),
        "{lines:?}"
    );
}

#[test]
fn exit_reports_must_be_fresh_signed_by_a_live_node_and_used_once() {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    use trust_bundles::jws;

    let s = setup();
    let node = enforcer::identity::Identity::load(&s.dir.path().join("node")).unwrap();
    let jkt = DpopKey::new().jkt;
    let http = reqwest::blocking::Client::new();
    // A report with `typ`, `claims`, signed by `key` (the node's own unless given).
    let report = |typ: &str, claims: Value, key: Option<&EcdsaKeyPair>| -> String {
        let header = json!({"alg": "ES256", "typ": typ, "x5c": [node.state.certificate]});
        let input = jws::signing_input(&header, &claims);
        let sig = match key {
            None => node.sign(input.as_bytes()).unwrap(),
            Some(k) => k
                .sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
        };
        jws::compact(&input, &sig)
    };
    let send = |events: &str| {
        http.post(s.b.url("/v1/nodes/events"))
            .json(&json!({"events": events}))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    let exited = |jkt: &str| json!([{"jkt": jkt, "pid": 4242, "start_time": 1}]);
    let n = now();
    let good = report(
        "node-events+jwt",
        json!({"exited": exited(&jkt), "iat": n, "exp": n + 60}),
        None,
    );

    // 1. Refused: another typ, another signer, stale, a bad key id, too many exits,
    // unknown members.
    let other = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let many: Vec<Value> = (0..257)
        .map(|i| json!({"jkt": jkt, "pid": i, "start_time": 1}))
        .collect();
    for (why, events) in [
        (
            "typ",
            report(
                "node-renewal+jwt",
                json!({"exited": exited(&jkt), "iat": n, "exp": n + 60}),
                None,
            ),
        ),
        (
            "signer",
            report(
                "node-events+jwt",
                json!({"exited": exited(&jkt), "iat": n, "exp": n + 60}),
                Some(&other),
            ),
        ),
        (
            "stale",
            report(
                "node-events+jwt",
                json!({"exited": exited(&jkt), "iat": n - 600, "exp": n - 540}),
                None,
            ),
        ),
        (
            "jkt",
            report(
                "node-events+jwt",
                json!({"exited": exited("not-a-thumbprint"), "iat": n, "exp": n + 60}),
                None,
            ),
        ),
        (
            "count",
            report(
                "node-events+jwt",
                json!({"exited": many, "iat": n, "exp": n + 60}),
                None,
            ),
        ),
        (
            "members",
            report(
                "node-events+jwt",
                json!({"exited": exited(&jkt), "iat": n, "exp": n + 60, "x": 1}),
                None,
            ),
        ),
    ] {
        assert_eq!(send(&events), 400, "{why}");
    }
    assert!(
        !s.b.audit_lines()
            .iter()
            .any(|l| l["reason"] == "workload_exited"),
        "a refused report revoked something"
    );

    // 2. A good report is accepted once; its replay is refused.
    assert_eq!(send(&good), 200, "{}", s.b.log());
    assert_eq!(send(&good), 400);

    // 3. Once the node is deleted, its reports are refused.
    let etag = http
        .get(s.b.url("/admin/v1/nodes/n1"))
        .bearer_auth(ADMIN)
        .send()
        .unwrap()
        .headers()["etag"]
        .to_str()
        .unwrap()
        .to_owned();
    let deleted = http
        .delete(s.b.url("/admin/v1/nodes/n1"))
        .bearer_auth(ADMIN)
        .header("If-Match", etag)
        .send()
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let fresh = report(
        "node-events+jwt",
        json!({"exited": exited(&jkt), "iat": n, "exp": n + 59}),
        None,
    );
    assert_eq!(send(&fresh), 400);
}
