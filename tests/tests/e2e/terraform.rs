//! The real Terraform CLI driving `terraform-provider-trustbroker` against a running
//! broker through the whole lifecycle: `init` from a filesystem mirror, `apply` of
//! `terraform/examples`, a clean second plan, drift made through the admin API, `import`,
//! a broker validation error on its attribute, `destroy`.
//!
//! Every Terraform in `TRUSTBROKER_TEST_TERRAFORM` (paths separated by `:`; `.ci/run`
//! sets the one on PATH and 1.0.3) is driven in turn; without it, `terraform` from PATH.
//! `CHECKPOINT_DISABLE` keeps Terraform from calling home: all traffic stays on loopback.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use trustbroker_tests::broker::{Broker, free_port, workspace_binary};
use trustbroker_tests::issuers::*;

const ADMIN: &str = "terraform-test-admin-token";
const PAYMENTS: &str = "https://payments.example/api";
const PROVIDER_DIR: &str = "registry.terraform.io/trustbroker/trustbroker/0.1.0/linux_amd64";

/// The broker's own objects: a trust domain and a boundary that Terraform must leave be.
const CONFIG: &str = r#"
issuer = "http://127.0.0.1:{PORT}"
listen = "127.0.0.1:{PORT}"
local_trust_domain = "broker.test"

[state]
path = "state"

[danger]
allow_http_fetch_to_loopback = true

[[trust_domain]]
name = "static.example"
kind = "spiffe"
bundle = '{"keys":[]}'

[[boundary]]
name = "from-the-file"
from = "static.example"
subjects = ["spiffe://static.example/**"]
audiences = ["https://payments.example/api"]
scopes = ["payments.read"]
attestation = "none"
"#;

fn terraforms() -> Vec<PathBuf> {
    if let Ok(list) = std::env::var("TRUSTBROKER_TEST_TERRAFORM") {
        return list
            .split(':')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("terraform"))
        .find(|p| p.is_file())
        .into_iter()
        .collect()
}

struct Run {
    code: i32,
    out: String,
}

/// One Terraform working directory against one broker.
struct Tf<'a> {
    bin: &'a Path,
    work: PathBuf,
    home: PathBuf,
    cli_config: PathBuf,
    broker: &'a Broker,
    vars: Vec<String>,
}

impl Tf<'_> {
    fn run(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new(self.bin);
        cmd.current_dir(&self.work)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("TF_CLI_CONFIG_FILE", &self.cli_config)
            .env("CHECKPOINT_DISABLE", "1")
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("TRUSTBROKER_ENDPOINT", &self.broker.base)
            .env("TRUSTBROKER_ADMIN_TOKEN", ADMIN);
        // Options first: `import` takes its two arguments last.
        let (sub, rest) = args.split_first().unwrap();
        cmd.arg(sub);
        if *sub != "version" {
            cmd.arg("-no-color");
        }
        if ["apply", "plan", "destroy", "import"].contains(sub) {
            cmd.args(&self.vars);
        }
        cmd.args(rest);
        let out = cmd.output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            out: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(
            r.code,
            0,
            "terraform {} ({}) failed:\n{}\n--- broker log ---\n{}",
            args.join(" "),
            self.bin.display(),
            r.out,
            self.broker.log()
        );
        r.out
    }

    /// `plan -detailed-exitcode`: 0 no changes, 2 changes, 1 error.
    fn plan(&self) -> Run {
        self.run(&["plan", "-detailed-exitcode"])
    }
}

fn admin(
    b: &Broker,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    if_match: Option<&str>,
) -> reqwest::blocking::Response {
    let mut r = reqwest::blocking::Client::new()
        .request(method, b.url(path))
        .bearer_auth(ADMIN);
    if let Some(body) = body {
        r = r.json(&body);
    }
    if let Some(v) = if_match {
        r = r.header("If-Match", v);
    }
    r.send().unwrap()
}

/// A token exchange by a payments workload of cluster-a, without evidence.
fn exchange(b: &Broker, key: &IssuerKey) -> reqwest::blocking::Response {
    let claims = json!({"sub": "spiffe://cluster-a.example/ns/payments/sa/api",
        "aud": [b.base], "iat": now(), "exp": now() + 300});
    let svid = key.token(&json!({"alg": "ES256", "kid": "c1"}), &claims);
    reqwest::blocking::Client::new()
        .post(b.url("/token"))
        .form(&[
            ("grant_type", TE),
            ("subject_token", &svid),
            ("subject_token_type", JWT_TYPE),
            ("audience", PAYMENTS),
            ("scope", "payments.read"),
        ])
        .send()
        .unwrap()
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../terraform/examples")
}

fn sources(b: &Broker, collection: &str) -> Vec<(String, String)> {
    let v: Value = admin(
        b,
        reqwest::Method::GET,
        &format!("/admin/v1/{collection}"),
        None,
        None,
    )
    .json()
    .unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["name"].as_str().unwrap().to_owned(),
                o["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn terraform_drives_the_whole_lifecycle_of_the_examples() {
    let bins = terraforms();
    if bins.is_empty() {
        assert!(
            std::env::var_os("CI").is_none(),
            "no terraform on PATH and TRUSTBROKER_TEST_TERRAFORM unset: .ci/run installs one"
        );
        eprintln!("SKIPPED: no terraform on PATH (set TRUSTBROKER_TEST_TERRAFORM)");
        return;
    }
    let provider = workspace_binary(
        "terraform-provider-trustbroker",
        "terraform-provider-trustbroker",
    );
    for bin in &bins {
        lifecycle(bin, &provider);
    }
}

fn lifecycle(bin: &Path, provider: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_admin(dir.path(), CONFIG, free_port(), ADMIN);
    let key = IssuerKey::es256();

    // A filesystem mirror holding this build of the provider: `init` needs no network.
    let mirror = dir.path().join("mirror");
    std::fs::create_dir_all(mirror.join(PROVIDER_DIR)).unwrap();
    std::fs::copy(
        provider,
        mirror
            .join(PROVIDER_DIR)
            .join("terraform-provider-trustbroker_v0.1.0"),
    )
    .unwrap();
    let cli_config = dir.path().join("cli.tfrc");
    std::fs::write(
        &cli_config,
        format!(
            "provider_installation {{\n  filesystem_mirror {{\n    path = \"{}\"\n    include = [\"registry.terraform.io/trustbroker/*\"]\n  }}\n  direct {{\n    exclude = [\"registry.terraform.io/*/*\"]\n  }}\n}}\n",
            mirror.display()
        ),
    )
    .unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::copy(examples_dir().join("main.tf"), work.join("main.tf")).unwrap();
    let bundle_file = dir.path().join("cluster-a.bundle.json");
    std::fs::write(&bundle_file, key.bundle_json("c1")).unwrap();
    // GitHub's issuer, on a loopback port nobody answers: the domain is created, its
    // discovery fails quietly, no packet leaves the machine.
    let closed = free_port();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let tf = Tf {
        bin,
        work: work.clone(),
        home,
        cli_config,
        broker: &broker,
        vars: vec![
            "-var".into(),
            format!("cluster_bundle_file={}", bundle_file.display()),
            "-var".into(),
            format!("github_issuer=http://127.0.0.1:{closed}"),
        ],
    };
    let version = tf.ok(&["version"]);
    eprintln!("== {}", version.lines().next().unwrap_or_default());

    // 1. Before: the exchange has no boundary to cross.
    assert_eq!(exchange(&broker, &key).status(), 400);

    // 2. init from the mirror; apply the examples.
    tf.ok(&["init"]);
    let out = tf.ok(&["apply", "-auto-approve"]);
    assert!(out.contains("6 added, 0 changed, 0 destroyed"), "{out}");

    // 3. The applied boundary lets the workload cross (read only: no evidence).
    let r = exchange(&broker, &key);
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let t: Value = r.json().unwrap();
    assert_eq!(t["scope"], "payments.read");

    // 4. A second plan has nothing to do.
    let p = tf.plan();
    assert_eq!(p.code, 0, "{}", p.out);

    // 5. Drift: someone narrows the boundary through the admin API. The next plan shows
    //    exactly that, and apply puts it back.
    let path = "/admin/v1/boundaries/cluster-to-payments";
    let current = admin(&broker, reqwest::Method::GET, path, None, None);
    let etag = current.headers()["etag"].to_str().unwrap().to_owned();
    let mut object: Value = current.json().unwrap();
    object["scopes"] = json!(["payments.read"]);
    object["unattested_scopes"] = json!(["payments.read"]);
    let r = admin(
        &broker,
        reqwest::Method::PUT,
        path,
        Some(object),
        Some(&etag),
    );
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let p = tf.plan();
    assert_eq!(p.code, 2, "{}", p.out);
    assert!(
        p.out
            .contains("trustbroker_boundary.cluster_to_payments will be updated in-place"),
        "{}",
        p.out
    );
    assert!(p.out.contains("+ \"payments.write\""), "{}", p.out);
    assert!(
        p.out.contains("0 to add, 1 to change, 0 to destroy"),
        "{}",
        p.out
    );
    tf.ok(&["apply", "-auto-approve"]);
    assert_eq!(tf.plan().code, 0);

    // 5b. Drift in a trust domain and in its keys: someone loosens GitHub's token age and
    //     swaps cluster-a's bundle for a stranger's key. The exchange now fails; the plan
    //     shows both as in-place updates; apply restores them and the exchange works.
    let gh = "/admin/v1/trust-domains/github-actions";
    let current = admin(&broker, reqwest::Method::GET, gh, None, None);
    let etag = current.headers()["etag"].to_str().unwrap().to_owned();
    let mut object: Value = current.json().unwrap();
    object["max_token_age"] = json!("24h");
    let r = admin(&broker, reqwest::Method::PUT, gh, Some(object), Some(&etag));
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let domain = "/admin/v1/trust-domains/cluster-a.example";
    let current = admin(&broker, reqwest::Method::GET, domain, None, None);
    let etag = current.headers()["etag"].to_str().unwrap().to_owned();
    let stranger: Value = serde_json::from_str(&IssuerKey::es256().bundle_json("c1")).unwrap();
    let r = admin(
        &broker,
        reqwest::Method::PUT,
        &format!("{domain}/bundle"),
        Some(stranger),
        Some(&etag),
    );
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    assert_eq!(exchange(&broker, &key).status(), 400);
    let p = tf.plan();
    assert_eq!(p.code, 2, "{}", p.out);
    for (what, line) in [
        (
            "trustbroker_trust_domain.github will be updated in-place",
            r#"~ max_token_age = "24h" -> "1h""#,
        ),
        (
            "trustbroker_trust_bundle.cluster will be updated in-place",
            "~ bundle",
        ),
    ] {
        assert!(
            p.out.contains(what) && p.out.contains(line),
            "{what}: {}",
            p.out
        );
    }
    assert!(
        p.out.contains("0 to add, 2 to change, 0 to destroy"),
        "{}",
        p.out
    );
    tf.ok(&["apply", "-auto-approve"]);
    assert_eq!(tf.plan().code, 0);
    assert_eq!(exchange(&broker, &key).status(), 200);

    // 6. import: a boundary made through the API comes under Terraform, and the
    //    configuration written for it matches (no changes after the import).
    let imported = json!({"name": "imported", "from": "cluster-a.example",
        "subjects": ["spiffe://cluster-a.example/ns/batch/**"], "audiences": [PAYMENTS],
        "scopes": ["payments.read"], "attestation": "none", "max_ttl": "2m"});
    let r = admin(
        &broker,
        reqwest::Method::POST,
        "/admin/v1/boundaries",
        Some(imported),
        None,
    );
    assert_eq!(r.status(), 201);
    std::fs::write(
        work.join("imported.tf"),
        r#"resource "trustbroker_boundary" "imported" {
  name        = "imported"
  from        = trustbroker_trust_domain.cluster.name
  subjects    = ["spiffe://cluster-a.example/ns/batch/**"]
  audiences   = ["https://payments.example/api"]
  scopes      = ["payments.read"]
  attestation = "none"
  max_ttl     = "2m"
}
"#,
    )
    .unwrap();
    let p = tf.plan();
    assert_eq!(
        p.code, 1,
        "creating what exists is refused at plan time: {}",
        p.out
    );
    assert!(p.out.contains("already exists on the broker"), "{}", p.out);
    tf.ok(&["import", "trustbroker_boundary.imported", "imported"]);
    let p = tf.plan();
    assert_eq!(p.code, 0, "{}", p.out);

    // 7. A max_ttl the broker refuses: the plan fails, on that attribute, and nothing is
    //    written.
    std::fs::write(
        work.join("bad.tf"),
        r#"resource "trustbroker_boundary" "bad" {
  name      = "bad"
  from      = trustbroker_trust_domain.cluster.name
  subjects  = ["spiffe://cluster-a.example/ns/bad/**"]
  audiences = ["https://payments.example/api"]
  scopes    = ["payments.read"]
  max_ttl   = "whenever"
}
"#,
    )
    .unwrap();
    let p = tf.plan();
    assert_eq!(p.code, 1, "{}", p.out);
    assert!(p.out.contains("with trustbroker_boundary.bad"), "{}", p.out);
    assert!(
        p.out.contains(r#"max_ttl   = "whenever""#),
        "the attribute's line: {}",
        p.out
    );
    assert!(p.out.contains("boundary.max_ttl"), "{}", p.out);
    let r = admin(
        &broker,
        reqwest::Method::GET,
        "/admin/v1/boundaries/bad",
        None,
        None,
    );
    assert_eq!(r.status(), 404);
    std::fs::remove_file(work.join("bad.tf")).unwrap();

    // 8. The join token is in state only (sensitive), usable until destroyed.
    let token = tf.ok(&["output", "-raw", "join_token"]);
    assert_eq!(token.trim().len(), 43, "{token}");
    let token_id = tf
        .ok(&["output", "-raw", "join_token_id"])
        .trim()
        .to_owned();
    let show = tf.ok(&["show"]);
    assert!(
        !show.contains(token.trim()),
        "the token is shown as sensitive"
    );

    // 9. destroy: only the config file's objects remain, the exchange is refused again,
    //    and the unused join token is withdrawn.
    let out = tf.ok(&["destroy", "-auto-approve"]);
    assert!(out.contains("7 destroyed"), "{out}");
    assert_eq!(
        sources(&broker, "trust-domains"),
        [("static.example".to_owned(), "config".to_owned())]
    );
    assert_eq!(
        sources(&broker, "boundaries"),
        [("from-the-file".to_owned(), "config".to_owned())]
    );
    assert_eq!(exchange(&broker, &key).status(), 400);
    let r = admin(
        &broker,
        reqwest::Method::DELETE,
        &format!("/admin/v1/join-tokens/{token_id}"),
        None,
        None,
    );
    assert_eq!(r.status(), 404, "destroy withdrew the join token");
}
