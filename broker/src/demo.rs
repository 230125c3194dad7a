//! `trustbroker demo`: the whole attested flow in one process, every piece real — HTTP on
//! loopback, an enforcer on a Unix socket asking the kernel who calls it — narrated step by
//! step, ending with three refusals.
#![expect(
    clippy::indexing_slicing,
    reason = "reads of serde_json::Value by key return Null when absent; they never panic"
)]

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use enforcer::config::{Registration, Registrations, Selectors};
use enforcer::identity::Identity;
use enforcer::procfs::{ProcSource, RealProc};
use enforcer::server::Enforcer;
use serde_json::{Value, json};
use trust_bundles::{Clock, SystemClock, jws};

use crate::client::{self, DpopKey};
use crate::config::Config;
use crate::server::AdminToken;

const DOMAIN: &str = "cluster-a.example";
const WORKLOAD: &str = "spiffe://cluster-a.example/ns/payments/sa/api";
const AUDIENCE: &str = "https://payments.example/api";
const TE: &str = token_exchange::request::GRANT_TYPE_TOKEN_EXCHANGE;
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

type DemoResult<T> = Result<T, String>;

fn say(s: &str) {
    println!("{s}");
}

/// Bold (or green) on a terminal, plain when piped.
fn styled(code: &str, s: &str) -> String {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_owned()
    }
}

fn step(n: u32, title: &str) {
    println!("\n{}", styled("1", &format!("{n}. {title}")));
}

fn detail(s: &str) {
    println!("   {s}");
}

fn e(x: impl std::fmt::Display) -> String {
    x.to_string()
}

fn b64json(part: &str) -> Value {
    URL_SAFE_NO_PAD
        .decode(part)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

fn indent(v: &Value) -> String {
    serde_json::to_string_pretty(v)
        .unwrap_or_default()
        .lines()
        .map(|l| format!("      {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A tracing writer into a file the demo reads back for the decision trail.
#[derive(Clone)]
struct AuditFile(Arc<Mutex<std::fs::File>>);

impl std::io::Write for AuditFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs the demo; exit 0 when every step went as it should.
pub fn run() -> ExitCode {
    match demo() {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("\ndemo failed: {why}");
            ExitCode::FAILURE
        }
    }
}

fn demo() -> DemoResult<()> {
    let clock = SystemClock;
    let dir = std::env::temp_dir().join(format!("trustbroker-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(e)?;
    let result = demo_in(&dir, &clock);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn demo_in(dir: &Path, clock: &dyn Clock) -> DemoResult<()> {
    say(&format!(
        "{} — a foreign trust domain, a broker, an enforcer and a workload,",
        styled("1", "trustbroker demo")
    ));
    say("all real and all on loopback. Nothing leaves this machine.");

    // 1. The foreign trust domain.
    step(1, &format!("A foreign SPIFFE trust domain: {DOMAIN}"));
    let td_key = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).map_err(e)?;
    let mut jwk = trust_bundles::Jwk::from_ec_point(td_key.public_key().as_ref())
        .map_err(e)?
        .to_json();
    jwk.insert("use".into(), "jwt-svid".into());
    jwk.insert("kid".into(), "cluster-a-1".into());
    let bundle = json!({"keys": [jwk], "spiffe_sequence": 1});
    std::fs::write(dir.join("cluster-a.bundle.json"), bundle.to_string()).map_err(e)?;
    detail("its JWT-SVID signing key is made; its SPIFFE bundle (1 jwt-svid key, kid cluster-a-1)");
    detail("is handed to the broker as a file, as an air-gapped federation would.");

    // The workload's runtime facts, as the kernel reports them for this very process.
    let me = RealProc::default().facts(std::process::id()).map_err(e)?;

    // 2. The broker.
    step(2, "The broker, federated with it");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(e)?
        .port();
    let broker = format!("http://127.0.0.1:{port}");
    let config = format!(
        r#"issuer = "{broker}"
listen = "127.0.0.1:{port}"
[state]
path = "state"
[[trust_domain]]
name = "{DOMAIN}"
kind = "spiffe"
bundle_file = "cluster-a.bundle.json"
[[boundary]]
name = "cluster-a-to-payments"
from = "{DOMAIN}"
subjects = ["spiffe://{DOMAIN}/ns/payments/sa/*"]
audiences = ["{AUDIENCE}"]
scopes = ["payments.read", "payments.write"]
max_ttl = "10m"
attestation = "required"
require = {{ exe_sha256 = ["{hash}"], uid = [{uid}] }}
"#,
        hash = me.exe_sha256,
        uid = me.uid,
    );
    let cfg_path = dir.join("broker.toml");
    std::fs::write(&cfg_path, &config).map_err(e)?;
    let cfg = Config::load(
        &cfg_path,
        &std::collections::BTreeMap::<String, String>::new(),
    )
    .map_err(e)?;
    let audit_path = dir.join("audit.jsonl");
    let audit = AuditFile(Arc::new(Mutex::new(
        std::fs::File::create(&audit_path).map_err(e)?,
    )));
    let _ = tracing_subscriber::fmt()
        .event_format(crate::logging::FlatJson)
        .with_writer(move || audit.clone())
        .try_init();
    let admin = URL_SAFE_NO_PAD.encode(random::<24>()?);
    let admin_token = AdminToken::new(admin.clone());
    std::thread::spawn(move || {
        let _ = actix_web::rt::System::new().block_on(crate::serve::run_with(cfg, admin_token));
    });
    let http = reqwest::blocking::Client::new();
    wait_until(|| {
        http.get(format!("{broker}/readyz"))
            .send()
            .is_ok_and(|r| r.status().is_success())
    })?;
    detail(&format!(
        "listening on {broker}, issuer {broker}, trust domain trustbroker.local"
    ));
    detail(&format!(
        "boundary cluster-a-to-payments: {DOMAIN} ns/payments/sa/* → {AUDIENCE}"
    ));
    detail("  scopes payments.read payments.write, at most 10m, attestation required,");
    detail(&format!(
        "  and the evidence must show exe_sha256 {}… and uid {}",
        me.exe_sha256.get(..16).unwrap_or_default(),
        me.uid
    ));

    // 3. The enforcer.
    step(
        3,
        "An enforcer node enrolls and starts serving its Unix socket",
    );
    let jt: Value = http
        .post(format!("{broker}/admin/v1/join-tokens"))
        .bearer_auth(&admin)
        .json(&json!({"node": "demo-node", "ttl": "5m"}))
        .send()
        .and_then(|r| r.json())
        .map_err(e)?;
    let join_token = jt["token"].as_str().ok_or("no join token")?;
    detail(
        "admin API: POST /admin/v1/join-tokens {\"node\":\"demo-node\"} → a single-use join token",
    );
    let node_dir = dir.join("node");
    let identity = Identity::enroll(&broker, join_token, &node_dir, clock).map_err(e)?;
    detail(&format!(
        "enrolled: the broker's node CA issued {} (certificate valid {} s)",
        identity.state.spiffe_id,
        identity
            .state
            .expires_at
            .saturating_sub(clock.now().as_secs())
    ));
    let again = Identity::enroll(&broker, join_token, &dir.join("node2"), clock);
    detail(&format!(
        "the same join token again: {}",
        match again {
            Ok(_) => return Err("a join token enrolled twice".into()),
            Err(err) => format!("refused ({err})"),
        }
    ));
    let socket = dir.join("enforcer.sock");
    let registration = Registration {
        spiffe_id: WORKLOAD.parse().map_err(e)?,
        selectors: Selectors {
            exe: Some(me.exe.clone()),
            uid: Some(me.uid),
            ..Selectors::default()
        },
    };
    let enforcer = Arc::new(Enforcer {
        identity: Arc::new(RwLock::new(identity)),
        registrations: Registrations(vec![registration]),
        procs: Arc::new(RealProc::default()),
        clock: Arc::new(SystemClock),
        watch: Arc::default(),
    });
    let sock = socket.clone();
    std::thread::spawn(move || enforcer::server::run(enforcer, &sock));
    wait_until(|| socket.exists())?;
    detail(&format!("serving evidence on {}", socket.display()));
    detail(&format!(
        "registration: {WORKLOAD} ← exe {}, uid {}",
        me.exe, me.uid
    ));

    // 4. The workload.
    step(4, "The workload holds a credential from home");
    let now = clock.now().as_secs();
    let svid_claims = json!({"sub": WORKLOAD, "aud": [broker], "iat": now, "exp": now + 3600, "jti": "demo-svid-1"});
    let input = jws::signing_input(
        &json!({"alg": "ES256", "kid": "cluster-a-1", "typ": "JWT"}),
        &svid_claims,
    );
    let sig = td_key
        .sign(&SystemRandom::new(), input.as_bytes())
        .map_err(e)?;
    let svid = jws::compact(&input, sig.as_ref());
    let svid_file = dir.join("svid.jwt");
    std::fs::write(&svid_file, &svid).map_err(e)?;
    detail(&format!(
        "this process (pid {}, {}) is the workload;",
        me.pid, me.exe
    ));
    detail(&format!("its JWT-SVID from {DOMAIN} names it {WORKLOAD}"));

    // 5. The attested exchange.
    step(5, "Attested exchange");
    let key = DpopKey::generate().map_err(e)?;
    let nonce = client::challenge(&broker).map_err(e)?;
    detail(&format!(
        "POST /attest/challenge → nonce {}…",
        nonce.get(..12).unwrap_or_default()
    ));
    detail(&format!(
        "DPoP key generated; its thumbprint (jkt) is {}",
        key.jkt
    ));
    let evidence = client::evidence(&socket, &nonce, &key.jkt).map_err(e)?;
    let ev_claims = b64json(evidence.split('.').nth(1).unwrap_or_default());
    detail(&format!(
        "enforcer → evidence: the kernel says pid {}, uid {}, exe {} (sha256 {}…)",
        ev_claims["proc"]["pid"],
        ev_claims["proc"]["uid"],
        ev_claims["proc"]["exe"].as_str().unwrap_or_default(),
        &ev_claims["proc"]["exe_sha256"]
            .as_str()
            .unwrap_or_default()
            .get(..16)
            .unwrap_or_default()
    ));
    detail("  signed by the node key, x5c = the node certificate, bound to the nonce and the jkt");
    let form = [
        ("grant_type", TE),
        ("subject_token", svid.as_str()),
        ("subject_token_type", JWT),
        ("audience", AUDIENCE),
        ("scope", "payments.read"),
    ];
    let proof = key
        .proof(&format!("{broker}/token"), Some(&nonce))
        .map_err(e)?;
    let answer = client::token(&broker, &form, Some(&proof), Some(&evidence)).map_err(e)?;
    if answer.status != 200 {
        return Err(format!(
            "the attested exchange was refused: {}",
            answer.body
        ));
    }
    detail(&format!(
        "POST /token (DPoP + Runtime-Attestation) → 200: token_type {}, scope {}, expires in {} s",
        answer.body["token_type"].as_str().unwrap_or_default(),
        answer.body["scope"].as_str().unwrap_or_default(),
        answer.body["expires_in"]
    ));

    // 6. The token, decoded, and the decision trail.
    step(6, "The issued token, decoded");
    let token = answer.body["access_token"].as_str().unwrap_or_default();
    let mut parts = token.split('.');
    detail("header:");
    say(&indent(&b64json(parts.next().unwrap_or_default())));
    detail("claims:");
    say(&indent(&b64json(parts.next().unwrap_or_default())));
    detail("decision trail (the broker's audit line):");
    if let Some(line) = audit_lines(&audit_path)
        .into_iter()
        .find(|l| l["decision"] == "allow")
    {
        for k in [
            "subject",
            "from",
            "boundary",
            "node",
            "scope_requested",
            "scope_granted",
            "jti_in",
            "jti_out",
            "latency_us",
        ] {
            detail(&format!("  {k:<16} {}", line[k]));
        }
    }

    // 7. Refusals.
    step(7, "Three refusals");
    // 7a. An unattested process replays the same subject token.
    let intruder_dir = dir.join("elsewhere");
    std::fs::create_dir_all(&intruder_dir).map_err(e)?;
    let intruder = intruder_dir.join("trustbroker");
    std::fs::copy(&me.exe, &intruder).map_err(e)?;
    let attempt = |with_socket: bool| -> DemoResult<(i32, String)> {
        let mut c = Command::new(&intruder);
        c.args(["exchange", "--broker", &broker, "--audience", AUDIENCE])
            .arg("--subject-token-file")
            .arg(&svid_file);
        if with_socket {
            c.arg("--enforcer-socket").arg(&socket);
        }
        let out = c.output().map_err(e)?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ))
    };
    let (code1, err1) = attempt(true)?;
    let (code2, err2) = attempt(false)?;
    if code1 == 0
        || !err1.contains("no_registration")
        || code2 == 0
        || !err2.contains("use_attestation_challenge")
    {
        return Err(format!(
            "the replay from another process was not refused as expected: {err1} / {err2}"
        ));
    }
    say("   ✗ the same JWT-SVID, replayed by another process (a copy of this binary at");
    detail(&format!("  {}):", intruder.display()));
    detail(
        "  the enforcer asks the kernel who is calling → no registration → 403 no_registration;",
    );
    detail(
        "  without evidence the broker answers use_attestation_challenge. The token alone is worthless.",
    );

    // 7b. A widened scope.
    let n2 = client::challenge(&broker).map_err(e)?;
    let ev2 = client::evidence(&socket, &n2, &key.jkt).map_err(e)?;
    let wide = [
        ("grant_type", TE),
        ("subject_token", svid.as_str()),
        ("subject_token_type", JWT),
        ("audience", AUDIENCE),
        ("scope", "payments.admin"),
    ];
    let p2 = key
        .proof(&format!("{broker}/token"), Some(&n2))
        .map_err(e)?;
    let a2 = client::token(&broker, &wide, Some(&p2), Some(&ev2)).map_err(e)?;
    expect(&a2, 400, "invalid_scope")?;
    say("   ✗ scope payments.admin, which the boundary never allows → invalid_scope");

    // 7c. The nonce of step 5, reused.
    let p3 = key
        .proof(&format!("{broker}/token"), Some(&nonce))
        .map_err(e)?;
    let a3 = client::token(&broker, &form, Some(&p3), Some(&evidence)).map_err(e)?;
    expect(&a3, 400, "use_fresh_attestation")?;
    say("   ✗ the evidence and nonce of step 5, presented again → use_fresh_attestation");
    detail(&format!(
        "  (with a fresh nonce in DPoP-Nonce: {}…)",
        a3.dpop_nonce
            .as_deref()
            .unwrap_or("")
            .get(..12)
            .unwrap_or_default()
    ));

    let denials = audit_lines(&audit_path)
        .iter()
        .filter(|l| l["decision"] == "deny")
        .count();
    say(&format!(
        "\n{}: 1 token issued, {denials} exchanges refused, each with one audit line.",
        styled("32", "All as expected")
    ));
    let _ = std::io::stdout().flush();
    Ok(())
}

fn expect(a: &client::Answer, status: u16, code: &str) -> DemoResult<()> {
    if a.status == status && a.body["error"] == code {
        Ok(())
    } else {
        Err(format!(
            "expected {status} {code}, got {} {}",
            a.status, a.body
        ))
    }
}

fn audit_lines(path: &PathBuf) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("decision").is_some() && v["event"] == "token_exchange")
        .collect()
}

fn random<const N: usize>() -> DemoResult<[u8; N]> {
    let mut b = [0u8; N];
    aws_lc_rs::rand::fill(&mut b).map_err(e)?;
    Ok(b)
}

fn wait_until(mut ready: impl FnMut() -> bool) -> DemoResult<()> {
    for _ in 0..200 {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Err("a component did not start".into())
}
