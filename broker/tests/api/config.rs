//! Configuration: every problem listed with file:line and a dotted path.

use std::collections::BTreeMap;
use std::path::Path;

use broker::config::{Config, Problems};
use token_exchange::policy::{AttestationMode, OutputType};
use token_exchange::subject::DomainKind;

const BUNDLE: &str = r#"{"keys":[{"use":"jwt-svid","kid":"k1","kty":"EC","crv":"P-256",
 "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;

fn env() -> BTreeMap<String, String> {
    BTreeMap::from([("PAYMENTS_API_SECRET".to_owned(), "s3cret".to_owned())])
}

fn parse_in(dir: &Path, text: &str) -> Result<Config, Problems> {
    let path = dir.join("broker.toml");
    std::fs::write(&path, text).unwrap();
    Config::load(&path, &env())
}

fn problems(dir: &Path, text: &str) -> Vec<String> {
    parse_in(dir, text)
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn with_bundle() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.bundle.json"), BUNDLE).unwrap();
    dir
}

#[test]
fn defaults_match_the_spec() {
    let c = Config::defaults().unwrap();
    assert_eq!(c.issuer, "http://127.0.0.1:8080");
    assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.local_trust_domain.as_str(), "trustbroker.local");
    assert_eq!(c.limits.default_ttl.as_secs(), 300);
    assert_eq!(c.limits.max_ttl.as_secs(), 3600);
    assert_eq!(c.clock_skew.as_secs(), 30);
    assert_eq!(c.admin_token_env, "TRUSTBROKER_ADMIN_TOKEN");
    // Only the broker's own tokens are accepted out of the box.
    assert_eq!(c.domains.len(), 1);
    assert_eq!(c.domains[0].kind, DomainKind::Local);
}

#[test]
fn the_spec_example_shape_validates() {
    let dir = with_bundle();
    std::fs::write(dir.path().join("gh.jwks.json"), r#"{"keys":[{"kid":"g","kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#).unwrap();
    let c = parse_in(
        dir.path(),
        r#"
issuer = "http://127.0.0.1:8080"
local_trust_domain = "broker.example.org"
listen = "127.0.0.1:8443"
[state]
backend = "embedded"
path = "state"
on_unavailable = "fail-closed"
[keys]
algorithms = ["ES256", "RS256"]
rotate_every = "24h"
publish_ahead = "1h"
[tokens]
default_ttl = "5m"
max_ttl = "1h"
clock_skew = "30s"
[admin]
token_env = "TRUSTBROKER_ADMIN_TOKEN"
[danger]
allow_http_fetch_to_loopback = false
[[trust_domain]]
name = "cluster-a.example"
kind = "spiffe"
bundle_file = "a.bundle.json"
audiences = ["https://broker.example.org"]
max_token_age = "24h"
algorithms = ["RS256", "ES256"]
[[trust_domain]]
name = "github-actions"
kind = "oidc"
issuer = "https://token.actions.githubusercontent.com"
jwks_file = "gh.jwks.json"
[[boundary]]
name = "cluster-a-to-payments"
from = "cluster-a.example"
subjects = ["spiffe://cluster-a.example/ns/payments/sa/*"]
audiences = ["https://payments.example/api"]
scopes = ["payments.read", "payments.write"]
max_ttl = "10m"
attestation = "required"
unattested_scopes = []
require = { exe_sha256 = ["0000000000000000000000000000000000000000000000000000000000000000"], uid = [1000] }
max_hops = 3
single_use = false
token_type = "access_token"
[[boundary]]
name = "gh"
from = "github-actions"
subjects = ["github-actions#repo:acme/**"]
audiences = ["sts.amazonaws.com"]
scopes = ["deploy"]
claims = { repository = "acme/*" }
workload = "spiffe://cluster-a.example/ns/ci/sa/deployer"
token_type = "jwt"
[[client]]
id = "payments-api"
secret_env = "PAYMENTS_API_SECRET"
"#,
    )
    .unwrap();
    assert_eq!(c.domains.len(), 3);
    assert_eq!(c.boundaries[0].attestation, AttestationMode::Required);
    assert_eq!(c.boundaries[0].require.uid, vec![1000]);
    assert_eq!(c.boundaries[1].token_type, OutputType::Jwt);
    assert_eq!(
        c.boundaries[1].workload.as_ref().unwrap().to_string(),
        "spiffe://cluster-a.example/ns/ci/sa/deployer"
    );
    assert_eq!(c.clients[0].id, "payments-api");
}

#[test]
fn unknown_keys_are_refused_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = problems(
        dir.path(),
        "issuer = \"http://127.0.0.1:8080\"\n\n[tokens]\ndefault_tll = \"5m\"\n",
    );
    assert_eq!(p.len(), 1);
    assert!(p[0].contains("broker.toml:4:"), "{p:?}");
    assert!(p[0].contains("default_tll"), "{p:?}");
}

#[test]
fn every_problem_is_listed_with_file_line_and_path() {
    let dir = with_bundle();
    let p = problems(
        dir.path(),
        r#"issuer = "http://example.org"
listen = "0.0.0.0:8443"
[tokens]
default_ttl = "2h"
max_ttl = "1h"
[[trust_domain]]
name = "cluster-a.example"
bundle_file = "a.bundle.json"
[[boundary]]
name = "b"
from = "nowhere"
subjects = ["spiffe://a/*"]
audiences = ["https://x"]
scopes = ["a"]
max_ttl = "ten minutes"
attestation = "sometimes"
[[boundary]]
name = "b"
from = "cluster-a.example"
subjects = ["spiffe://a/*"]
audiences = ["has space"]
scopes = ["a"]
unattested_scopes = ["z"]
max_hops = 0
token_type = "saml"
"#,
    );
    let expect = [
        (
            "broker.toml:2:",
            "listen: plain HTTP is allowed only on loopback",
        ),
        ("broker.toml:1:", "issuer: must be https"),
        (
            "broker.toml:4:",
            "tokens.default_ttl: must not exceed max_ttl",
        ),
        ("broker.toml:11:", "boundary[0].from:"),
        ("broker.toml:15:", "boundary[0].max_ttl:"),
        ("broker.toml:16:", "boundary[0].attestation:"),
        ("broker.toml:18:", "boundary[1].name:"),
        ("broker.toml:21:", "boundary[1].audiences[0]:"),
        ("broker.toml:23:", "boundary[1].unattested_scopes:"),
        ("broker.toml:24:", "boundary[1].max_hops:"),
        ("broker.toml:25:", "boundary[1].token_type:"),
    ];
    for (loc, text) in expect {
        assert!(
            p.iter().any(|l| l.contains(loc) && l.contains(text)),
            "missing {loc} {text} in:\n{}",
            p.join("\n")
        );
    }
    assert_eq!(p.len(), expect.len(), "{}", p.join("\n"));
}

#[test]
fn key_files_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    // A bundle with a private key member refuses the config.
    std::fs::write(
        dir.path().join("bad.json"),
        BUNDLE.replace(r#""kid":"k1","#, r#""kid":"k1","d":"AAAA","#),
    )
    .unwrap();
    let p = problems(
        dir.path(),
        "[[trust_domain]]\nname = \"a.example\"\nbundle_file = \"bad.json\"\n",
    );
    assert!(
        p[0].contains("trust_domain[0].bundle_file") && p[0].contains("private"),
        "{p:?}"
    );
    let p = problems(
        dir.path(),
        "[[trust_domain]]\nname = \"a.example\"\nbundle_file = \"missing.json\"\n",
    );
    assert!(p[0].contains("cannot read"), "{p:?}");
    let p = problems(dir.path(), "[[trust_domain]]\nname = \"a.example\"\n");
    assert!(p[0].contains("needs keys"), "{p:?}");
    let p = problems(
        dir.path(),
        "[[trust_domain]]\nname = \"Upper.example\"\nbundle_file = \"bad.json\"\n",
    );
    assert!(
        p.iter().any(|l| l.contains("trust_domain[0].name")),
        "{p:?}"
    );
}

#[test]
fn domain_and_boundary_rules() {
    let dir = with_bundle();
    let base = "[[trust_domain]]\nname = \"a.example\"\nbundle_file = \"a.bundle.json\"\n";
    // OIDC without issuer; an alg that is never allowed.
    let p = problems(
        dir.path(),
        &format!(
            "{base}[[trust_domain]]\nname = \"gh\"\nkind = \"oidc\"\njwks_file = \"a.bundle.json\"\nalgorithms = [\"HS256\", \"none\"]\n"
        ),
    );
    assert!(
        p.iter()
            .any(|l| l.contains("trust_domain[1].issuer: is required")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|l| l.contains("trust_domain[1].algorithms[0]")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|l| l.contains("trust_domain[1].algorithms[1]")),
        "{p:?}"
    );
    // An OIDC boundary that requires attestation needs a workload.
    let p = problems(
        dir.path(),
        &format!(
            "{base}[[trust_domain]]\nname = \"gh\"\nkind = \"oidc\"\nissuer = \"https://gh.example\"\njwks_file = \"a.bundle.json\"\n[[boundary]]\nname = \"x\"\nfrom = \"gh\"\nsubjects = [\"**\"]\naudiences = [\"a\"]\nscopes = [\"s\"]\n"
        ),
    );
    assert!(
        p.iter().any(|l| l.contains("boundary[0].workload")),
        "{p:?}"
    );
    // A jwt boundary needs RS256 keys.
    let p = problems(
        dir.path(),
        &format!(
            "[keys]\nalgorithms = [\"ES256\"]\n{base}[[boundary]]\nname = \"x\"\nfrom = \"a.example\"\nsubjects = [\"**\"]\naudiences = [\"a\"]\nscopes = [\"s\"]\ntoken_type = \"jwt\"\n"
        ),
    );
    assert!(
        p.iter().any(|l| l.contains("boundary[0].token_type")),
        "{p:?}"
    );
    // The redis backend needs a URL and a 32-byte state key from the environment; the
    // embedded backend's keys do not apply to it, nor its keys to the embedded one.
    let p = problems(dir.path(), "[state]\nbackend = \"redis\"\npath = \"x\"\n");
    for k in ["state.url", "state.key_encryption_env", "state.path"] {
        assert!(p.iter().any(|l| l.contains(k)), "{k}: {p:?}");
    }
    let p = problems(
        dir.path(),
        "[state]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:1\"\nkey_encryption_env = \"PAYMENTS_API_SECRET\"\n",
    );
    assert!(
        p.iter()
            .any(|l| l.contains("PAYMENTS_API_SECRET must hold 32 bytes")),
        "a secret that is not a 32-byte key: {p:?}"
    );
    let p = problems(dir.path(), "[state]\nkey_encryption_env = \"X\"\n");
    assert!(p[0].contains("state.key_encryption_env"), "{p:?}");
    // Client secrets come from the environment and must be there.
    let p = problems(
        dir.path(),
        "[[client]]\nid = \"x\"\nsecret_env = \"NOT_SET_ANYWHERE\"\n",
    );
    assert!(p[0].contains("client[0].secret_env"), "{p:?}");
}

#[test]
fn syntax_errors_carry_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = problems(
        dir.path(),
        "issuer = \"http://127.0.0.1:8080\"\nlisten = \n",
    );
    assert_eq!(p.len(), 1);
    assert!(
        p[0].starts_with(&format!("{}:2:", dir.path().join("broker.toml").display())),
        "{p:?}"
    );
}

#[test]
fn private_ranges_are_allowed_per_fetched_domain_only() {
    let dir = with_bundle();
    let c = parse_in(
        dir.path(),
        r#"
[[trust_domain]]
name = "internal.example"
bundle_endpoint = { url = "https://spire.internal.example/bundle", profile = "https_web" }
allow_private_ranges = true
[[trust_domain]]
name = "public.example"
bundle_endpoint = { url = "https://spire.public.example/bundle", profile = "https_web" }
"#,
    )
    .unwrap();
    let policies = broker::serve::fetch_policies(&c).unwrap();
    let allowed: Vec<(&str, bool)> = policies
        .iter()
        .map(|(ep, p)| (ep.domain.as_str(), p.allow_private))
        .collect();
    assert_eq!(
        allowed,
        [("internal.example", true), ("public.example", false)]
    );

    // A domain with configured keys fetches nothing: the switch would mean nothing.
    let p = problems(
        dir.path(),
        r#"
[[trust_domain]]
name = "a.example"
bundle_file = "a.bundle.json"
allow_private_ranges = true
"#,
    );
    assert!(
        p.iter()
            .any(|p| p.contains("trust_domain[0].allow_private_ranges")),
        "{p:?}"
    );
}
