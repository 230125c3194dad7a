//! One broker with a SPIFFE domain and a GitHub-style OIDC issuer, both keyed per run.

use reqwest::blocking::{Client, Response};
use serde_json::Value;
use trustbroker_tests::broker::{Broker, free_port};
use trustbroker_tests::issuers::*;

pub const CLUSTER: &str = "cluster-a.example";
pub const LOCAL_TD: &str = "broker.test";
pub const PAYMENTS: &str = "https://payments.example/api";
pub const LEDGER: &str = "https://ledger.example";
pub const GITHUB_ISS: &str = "https://token.actions.githubusercontent.com";
/// What google-auth sends as `audience`. Deliberately not a `workloadIdentityPools` path:
/// google-auth would then look up a regional access boundary at googleapis.com, and
/// tests never send traffic off loopback.
pub const GCP_AUDIENCE: &str = "//iam.example.test/projects/123/pools/trustbroker";
pub const GCP_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

pub const CONFIG: &str = r#"
issuer = "http://127.0.0.1:{PORT}"
listen = "127.0.0.1:{PORT}"
local_trust_domain = "broker.test"

[state]
path = "state"

[[trust_domain]]
name = "cluster-a.example"
kind = "spiffe"
bundle_file = "cluster-a.bundle.json"

[[trust_domain]]
name = "github-actions"
kind = "oidc"
issuer = "https://token.actions.githubusercontent.com"
jwks_file = "github.jwks.json"

[[boundary]]
name = "cluster-a-to-payments"
from = "cluster-a.example"
subjects = ["spiffe://cluster-a.example/ns/payments/sa/*"]
audiences = ["https://payments.example/api", "http://127.0.0.1:{PORT}"]
scopes = ["payments.read", "payments.write"]
max_ttl = "10m"
attestation = "none"

[[boundary]]
name = "secure"
from = "cluster-a.example"
subjects = ["spiffe://cluster-a.example/ns/secure/**"]
audiences = ["https://payments.example/api"]
scopes = ["payments.read"]
attestation = "required"

[[boundary]]
name = "once"
from = "cluster-a.example"
subjects = ["spiffe://cluster-a.example/ns/once/**"]
audiences = ["https://payments.example/api"]
scopes = ["payments.read"]
attestation = "none"
single_use = true

[[boundary]]
name = "gcp"
from = "cluster-a.example"
subjects = ["spiffe://cluster-a.example/ns/gcp/sa/*"]
audiences = ["//iam.example.test/projects/123/pools/trustbroker"]
scopes = ["https://www.googleapis.com/auth/cloud-platform"]
attestation = "none"

[[boundary]]
name = "ledger"
from = "broker.test"
subjects = ["spiffe://cluster-a.example/**"]
audiences = ["https://ledger.example", "http://127.0.0.1:{PORT}"]
scopes = ["payments.read"]
max_ttl = "20m"
attestation = "none"
max_hops = 2

[[boundary]]
name = "github-deploy"
from = "github-actions"
subjects = ["github-actions#repo:acme/**"]
audiences = ["https://payments.example/api"]
scopes = ["deploy"]
claims = { repository = "acme/*" }
attestation = "none"
"#;

pub struct World {
    pub broker: Broker,
    pub cluster: IssuerKey,
    pub github: IssuerKey,
    pub http: Client,
    pub _dir: tempfile::TempDir,
}

impl World {
    pub fn start() -> Self {
        Self::start_with("", &[])
    }

    /// The world with `extra` appended to the config and `env` set for the broker.
    pub fn start_with(extra: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cluster = IssuerKey::es256();
        let github = IssuerKey::rs256();
        std::fs::write(
            dir.path().join("cluster-a.bundle.json"),
            cluster.bundle_json("c1"),
        )
        .unwrap();
        std::fs::write(dir.path().join("github.jwks.json"), github.jwks_json("g1")).unwrap();
        let config = format!("{CONFIG}{extra}");
        let broker = Broker::start_env(dir.path(), &config, free_port(), env);
        Self {
            broker,
            cluster,
            github,
            http: Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            _dir: dir,
        }
    }

    pub fn issuer(&self) -> String {
        self.broker.base.clone()
    }

    pub fn token_url(&self) -> String {
        self.broker.url("/token")
    }

    /// A JWT-SVID of cluster-a for `path`, with `extra` claims merged (null removes).
    pub fn svid(&self, path: &str, extra: Value) -> String {
        let mut claims = serde_json::json!({
            "sub": format!("spiffe://{CLUSTER}{path}"),
            "aud": [self.issuer()],
            "iat": now(),
            "exp": now() + 600,
        });
        merge(&mut claims, extra);
        self.cluster.token(
            &serde_json::json!({"alg": "ES256", "kid": "c1", "typ": "JWT"}),
            &claims,
        )
    }

    pub fn github_token(&self, extra: Value) -> String {
        let mut claims = serde_json::json!({
            "iss": GITHUB_ISS,
            "sub": "repo:acme/app:ref:refs/heads/main",
            "aud": self.issuer(),
            "repository": "acme/app",
            "ref": "refs/heads/main",
            "workflow": "deploy",
            "iat": now(),
            "exp": now() + 300,
        });
        merge(&mut claims, extra);
        self.github.token(
            &serde_json::json!({"alg": "RS256", "kid": "g1", "typ": "JWT"}),
            &claims,
        )
    }

    /// POST /token with form pairs and headers.
    pub fn post_token(&self, form: &[(&str, &str)], headers: &[(&str, &str)]) -> Response {
        let mut req = self.http.post(self.token_url()).form(form);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().unwrap()
    }

    /// A plain exchange.
    pub fn exchange(
        &self,
        subject: &str,
        token_type: &str,
        audience: &str,
        scope: Option<&str>,
    ) -> Response {
        let mut form = vec![
            ("grant_type", TE),
            ("subject_token", subject),
            ("subject_token_type", token_type),
            ("audience", audience),
        ];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        self.post_token(&form, &[])
    }

    pub fn nonce(&self) -> String {
        let r: Value = self
            .http
            .post(self.broker.url("/attest/challenge"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        r["nonce"].as_str().unwrap().to_owned()
    }
}

fn merge(claims: &mut Value, extra: Value) {
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
}

/// Asserts an OAuth error response with exactly `code` and no token.
#[track_caller]
pub fn assert_refused(resp: Response, status: u16, code: &str) {
    let got = resp.status().as_u16();
    let cache = resp
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = resp.json().unwrap();
    assert_eq!(
        (got, body["error"].as_str()),
        (status, Some(code)),
        "body: {body}"
    );
    assert!(body.get("access_token").is_none());
    assert_eq!(cache.as_deref(), Some("no-store"));
}
