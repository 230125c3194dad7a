//! Whole exchanges in-process: chains, escalation attempts, attestation routing, single
//! use, delegation, cloud-IAM output, and the audit record.

use serde_json::json;
use token_exchange::error::{ErrorCode, EvidenceError};
use token_exchange::policy::PolicyError;
use token_exchange::{ExchangeError, Outcome};
use trust_bundles::jws::UnverifiedJws;
use trust_bundles::{Jwk, UnixTime};

use crate::support::*;

const LEDGER: &str = "https://ledger.example";

fn verify_issued(w: &World, token: &str) -> serde_json::Value {
    let jws = UnverifiedJws::parse(token, 16 * 1024).unwrap();
    let kid = jws.header_str("kid").unwrap().to_owned();
    let ring = w.ring.read().unwrap();
    let key: Jwk = ring
        .verification_key(&kid, UnixTime::from_secs(w.now()))
        .unwrap()
        .clone();
    serde_json::Value::Object(jws.verify(&key).unwrap())
}

fn error(out: Outcome) -> ExchangeError {
    out.result.unwrap_err().error
}

#[test]
fn issued_access_tokens_carry_every_claim_of_spec_5() {
    let w = World::new();
    let resp = w
        .simple(&w.svid("/ns/payments/sa/api", 600), PAYMENTS, None)
        .result
        .unwrap();
    let c = verify_issued(&w, resp.access_token());
    assert_eq!(c["iss"], ISSUER);
    assert_eq!(c["sub"], "spiffe://cluster-a.example/ns/payments/sa/api");
    assert_eq!(c["client_id"], c["sub"]);
    assert_eq!(c["aud"], PAYMENTS);
    assert!(c["aud"].is_string());
    assert_eq!(c["iat"], w.now());
    assert_eq!(c["nbf"], w.now());
    assert_eq!(c["exp"], w.now() + 600);
    assert_eq!(c["scope"], "payments.read payments.write");
    assert_eq!(c["jti"].as_str().unwrap().len(), 22);
    assert_eq!(
        c["crossings"],
        json!([{"from": CLUSTER, "boundary": "cluster-a-to-payments", "iss": ISSUER}])
    );
    assert!(c.get("cnf").is_none());
    let h = header_of(resp.access_token());
    assert_eq!(h["alg"], "ES256");
    assert_eq!(h["typ"], "at+jwt");
    assert_eq!(resp.to_json()["issued_token_type"], AT_TYPE);
    // What the broker writes is exactly the map, serialised.
    assert_eq!(
        resp.to_json_string(),
        serde_json::to_string(&resp.to_json()).unwrap()
    );
}

#[test]
fn audience_escalation_is_invalid_target() {
    let w = World::new();
    let out = w.simple(
        &w.svid("/ns/payments/sa/api", 600),
        "https://admin.example",
        None,
    );
    assert_eq!(World::code(&out), "invalid_target");
    assert!(matches!(
        error(out),
        ExchangeError::Policy(PolicyError::AudienceNotAllowed { .. })
    ));
}

#[test]
fn scope_escalation_never_yields_more() {
    let w = World::new();
    let svid = w.svid("/ns/payments/sa/api", 600);
    let out = w.simple(&svid, PAYMENTS, Some("payments.admin"));
    assert_eq!(World::code(&out), "invalid_scope");
    let resp = w
        .simple(&svid, PAYMENTS, Some("payments.read payments.admin"))
        .result
        .unwrap();
    assert_eq!(resp.scope, "payments.read");
    assert_eq!(claims_of(resp.access_token())["scope"], "payments.read");
}

#[test]
fn unknown_subject_is_invalid_request() {
    let w = World::new();
    let out = w.simple(&w.svid("/ns/other/sa/api", 600), PAYMENTS, None);
    assert_eq!(World::code(&out), "invalid_request");
    assert_eq!(error(out), ExchangeError::Policy(PolicyError::NoBoundary));
}

fn chain_world() -> World {
    let mut first = boundary(
        "to-broker",
        CLUSTER,
        &["spiffe://cluster-a.example/ns/payments/**"],
        "payments.read payments.write",
    );
    first.audiences = vec![ISSUER.into()];
    first.max_ttl = Some(std::time::Duration::from_secs(600));
    let mut second = boundary(
        "to-ledger",
        LOCAL_TD,
        &["spiffe://cluster-a.example/**"],
        "payments.read payments.write",
    );
    second.audiences = vec![ISSUER.into(), LEDGER.into()];
    second.max_ttl = Some(std::time::Duration::from_secs(1200));
    second.max_hops = 2;
    World::with_boundaries(vec![first, second])
}

fn exchange_at(w: &World, subject: &str, audience: &str, scope: Option<&str>) -> Outcome {
    let mut form = vec![
        ("grant_type", TE),
        ("subject_token", subject),
        ("subject_token_type", AT_TYPE),
        ("audience", audience),
    ];
    if let Some(s) = scope {
        form.push(("scope", s));
    }
    w.exchange(&form, &[], &[])
}

#[test]
fn a_chained_exchange_narrows_and_stops_at_max_hops() {
    let w = chain_world();
    let first = w
        .simple(
            &w.svid("/ns/payments/sa/api", 3600),
            ISSUER,
            Some("payments.read"),
        )
        .result
        .unwrap();
    let c1 = claims_of(first.access_token());
    assert_eq!(c1["crossings"].as_array().unwrap().len(), 1);

    w.clock.advance(std::time::Duration::from_secs(100));
    // Asking for more than the subject token carries gets only what it carries, and no
    // longer life than it has left, even though the boundary allows 1200 s.
    let second = exchange_at(
        &w,
        first.access_token(),
        LEDGER,
        Some("payments.read payments.write"),
    )
    .result
    .unwrap();
    assert_eq!(second.scope, "payments.read");
    assert_eq!(second.expires_in, 500);
    let c2 = verify_issued(&w, second.access_token());
    assert_eq!(c2["exp"], c1["exp"]);
    assert_eq!(
        c2["crossings"],
        json!([
            {"from": CLUSTER, "boundary": "to-broker", "iss": ISSUER},
            {"from": LOCAL_TD, "boundary": "to-ledger", "iss": ISSUER},
        ])
    );
    // Only more than it carries: refused.
    assert_eq!(
        World::code(&exchange_at(
            &w,
            first.access_token(),
            LEDGER,
            Some("payments.write")
        )),
        "invalid_scope"
    );

    // A third crossing exceeds max_hops = 2.
    let via_broker = exchange_at(&w, first.access_token(), ISSUER, None)
        .result
        .unwrap();
    let out = exchange_at(&w, via_broker.access_token(), LEDGER, None);
    assert_eq!(World::code(&out), "invalid_request");
    assert!(matches!(
        error(out),
        ExchangeError::Policy(PolicyError::MaxHops {
            hops: 3,
            max: 2,
            ..
        })
    ));

    // The ledger token is not for this broker: it cannot be exchanged again.
    let out = exchange_at(&w, second.access_token(), LEDGER, None);
    assert!(matches!(
        error(out),
        ExchangeError::Subject(token_exchange::subject::TokenError::AudienceMismatch)
    ));
}

#[test]
fn a_dpop_bound_broker_token_needs_its_own_key_to_be_exchanged_again() {
    let w = chain_world();
    let d = Dpop::new();
    let svid = w.svid("/ns/payments/sa/api", 3600);
    let n = w.nonce();
    let proof = d.proof(w.now(), Some(&n));
    let first = w
        .exchange(
            &[
                ("grant_type", TE),
                ("subject_token", &svid),
                ("subject_token_type", JWT_TYPE),
                ("audience", ISSUER),
            ],
            &[&proof],
            &[],
        )
        .result
        .unwrap();
    assert_eq!(first.token_type, "DPoP");
    // No proof: refused.
    let out = exchange_at(&w, first.access_token(), LEDGER, None);
    assert_eq!(error(out), ExchangeError::DpopRequired);
    // A thief's key: refused.
    let thief = Dpop::new();
    let n = w.nonce();
    let p = thief.proof(w.now(), Some(&n));
    let form = [
        ("grant_type", TE),
        ("subject_token", first.access_token()),
        ("subject_token_type", AT_TYPE),
        ("audience", LEDGER),
    ];
    assert_eq!(
        error(w.exchange(&form, &[&p], &[])),
        ExchangeError::DpopKeyMismatch
    );
    // The holder: accepted, and the new token is bound to the same key.
    let p = d.proof(w.now(), Some(&n));
    let second = w.exchange(&form, &[&p], &[]).result.unwrap();
    assert_eq!(
        claims_of(second.access_token())["cnf"]["jkt"],
        d.jkt.as_str()
    );
}

#[test]
fn required_attestation_routes_and_fails_closed() {
    let w = World::new();
    let svid = w.svid("/ns/secure/sa/api", 600);
    let form = [
        ("grant_type", TE),
        ("subject_token", svid.as_str()),
        ("subject_token_type", JWT_TYPE),
        ("audience", PAYMENTS),
    ];
    let out = w.exchange(&form, &[], &[]);
    assert_eq!(World::code(&out), "use_attestation_challenge");
    assert!(out.result.unwrap_err().fresh_nonce.is_some());

    // Evidence without DPoP: DPoP is required whenever evidence is.
    let out = w.exchange(&form, &[], &["e.v.d"]);
    assert_eq!(error(out), ExchangeError::DpopRequired);

    // Evidence with DPoP: no verifier is configured, so it is refused.
    let d = Dpop::new();
    let n = w.nonce();
    let p = d.proof(w.now(), Some(&n));
    let out = w.exchange(&form, &[&p], &["e.v.d"]);
    assert_eq!(World::code(&out), "invalid_request");
    assert_eq!(
        error(out),
        ExchangeError::Evidence(EvidenceError::Unsupported)
    );
    // Two evidence headers are refused outright.
    let out = w.exchange(&form, &[&p], &["a.b.c", "a.b.c"]);
    assert!(matches!(
        error(out),
        ExchangeError::Evidence(EvidenceError::Invalid(_))
    ));
}

#[test]
fn optional_attestation_without_evidence_grants_only_unattested_scopes() {
    let w = World::new();
    let svid = w.svid("/ns/opt/sa/api", 600);
    let resp = w.simple(&svid, PAYMENTS, None).result.unwrap();
    assert_eq!(resp.scope, "a");
    assert_eq!(
        World::code(&w.simple(&svid, PAYMENTS, Some("b"))),
        "invalid_scope"
    );
}

#[test]
fn single_use_boundaries_accept_a_subject_token_once() {
    let w = World::new();
    let t = w.svid_with("/ns/once/sa/api", json!({"jti": "svid-1"}));
    assert!(w.simple(&t, PAYMENTS, None).result.is_ok());
    let out = w.simple(&t, PAYMENTS, None);
    assert_eq!(World::code(&out), "invalid_request");
    assert_eq!(error(out), ExchangeError::SubjectReplayed);
    let no_jti = w.svid("/ns/once/sa/api", 600);
    assert!(matches!(
        error(w.simple(&no_jti, PAYMENTS, None)),
        ExchangeError::Policy(PolicyError::SingleUseWithoutJti { .. })
    ));
}

#[test]
fn a_request_refused_for_its_nonce_does_not_spend_a_single_use_subject() {
    let w = World::new();
    let d = Dpop::new();
    let n = w.nonce();
    // The nonce is spent by one exchange...
    let other = w.svid("/ns/payments/sa/api", 600);
    let form = [
        ("grant_type", TE),
        ("subject_token", other.as_str()),
        ("subject_token_type", JWT_TYPE),
        ("audience", PAYMENTS),
    ];
    let first = d.proof(w.now(), Some(&n));
    assert!(w.exchange(&form, &[&first], &[]).result.is_ok());
    // ...so a single-use subject presented with it is refused at the state step,
    let t = w.svid_with("/ns/once/sa/api", json!({"jti": "svid-nonce"}));
    let form = [
        ("grant_type", TE),
        ("subject_token", t.as_str()),
        ("subject_token_type", JWT_TYPE),
        ("audience", PAYMENTS),
    ];
    let again = d.proof(w.now(), Some(&n));
    let out = w.exchange(&form, &[&again], &[]);
    assert_eq!(World::code(&out), "use_dpop_nonce");
    // and the subject has not been used up by that refusal.
    assert!(w.simple(&t, PAYMENTS, None).result.is_ok());
}

#[test]
fn cloud_iam_jwt_output() {
    let w = World::new();
    let svid = w.svid("/ns/iam/sa/deployer", 600);
    let d = Dpop::new();
    let n = w.nonce();
    let p = d.proof(w.now(), Some(&n));
    let form = [
        ("grant_type", TE),
        ("subject_token", svid.as_str()),
        ("subject_token_type", JWT_TYPE),
        ("audience", "sts.amazonaws.com"),
        ("requested_token_type", JWT_TYPE),
    ];
    let resp = w.exchange(&form, &[&p], &[]).result.unwrap();
    assert_eq!(resp.token_type, "N_A");
    assert_eq!(resp.to_json()["issued_token_type"], JWT_TYPE);
    let h = header_of(resp.access_token());
    assert_eq!(h["typ"], "JWT");
    assert_eq!(h["alg"], "RS256");
    let c = verify_issued(&w, resp.access_token());
    assert_eq!(c["aud"], "sts.amazonaws.com");
    assert!(c.get("cnf").is_none());
    // The access-token default is refused on a jwt boundary, and vice versa.
    let out = w.simple(&svid, "sts.amazonaws.com", None);
    assert!(matches!(
        error(out),
        ExchangeError::Policy(PolicyError::WrongOutputType { .. })
    ));
    let svid = w.svid("/ns/payments/sa/api", 600);
    let form = [
        ("grant_type", TE),
        ("subject_token", svid.as_str()),
        ("subject_token_type", JWT_TYPE),
        ("audience", PAYMENTS),
        ("requested_token_type", JWT_TYPE),
    ];
    assert!(matches!(
        error(w.exchange(&form, &[], &[])),
        ExchangeError::Policy(PolicyError::WrongOutputType { .. })
    ));
    // A broker's cloud-IAM JWT is not a subject token.
}

/// A delegated exchange's form: `actor` acting for `subject`, for the payments API.
fn delegated<'a>(subject: &'a str, actor: &'a str) -> [(&'a str, &'a str); 6] {
    [
        ("grant_type", TE),
        ("subject_token", subject),
        ("subject_token_type", JWT_TYPE),
        ("audience", PAYMENTS),
        ("actor_token", actor),
        ("actor_token_type", JWT_TYPE),
    ]
}

#[test]
fn delegation_nests_act_and_honours_may_act() {
    let w = World::new();
    let actor = w.svid("/ns/ci/sa/deployer", 600);
    let subject = w.svid_with(
        "/ns/payments/sa/api",
        json!({"may_act": {"sub": "spiffe://cluster-a.example/ns/ci/sa/deployer"}}),
    );
    let form = delegated(&subject, &actor);
    let out = w.exchange(&form, &[], &[]);
    assert_eq!(
        out.audit.actor.as_deref(),
        Some("spiffe://cluster-a.example/ns/ci/sa/deployer")
    );
    let resp = out.result.unwrap();
    assert_eq!(
        claims_of(resp.access_token())["act"],
        json!({"sub": "spiffe://cluster-a.example/ns/ci/sa/deployer"})
    );

    // An actor the subject did not name.
    let intruder = w.svid("/ns/evil/sa/x", 600);
    let mut form2 = form;
    form2[4] = ("actor_token", intruder.as_str());
    assert_eq!(
        error(w.exchange(&form2, &[], &[])),
        ExchangeError::ActorNotAllowed
    );

    // An invalid actor token.
    let mut form3 = form;
    form3[4] = ("actor_token", "x.y.z");
    assert!(matches!(
        error(w.exchange(&form3, &[], &[])),
        ExchangeError::Actor(_)
    ));

    // A prior actor chain nests inside the new actor.
    let subject = w.svid_with(
        "/ns/payments/sa/api",
        json!({"act": {"sub": "spiffe://cluster-a.example/ns/first"}}),
    );
    let mut form4 = form;
    form4[1] = ("subject_token", subject.as_str());
    let resp = w.exchange(&form4, &[], &[]).result.unwrap();
    assert_eq!(
        claims_of(resp.access_token())["act"],
        json!({"sub": "spiffe://cluster-a.example/ns/ci/sa/deployer", "act": {"sub": "spiffe://cluster-a.example/ns/first"}})
    );
}

#[test]
fn a_revoked_actor_or_subject_is_refused_and_says_which() {
    use token_exchange::revocation::Target;
    let w = World::new();
    let deployer = "spiffe://cluster-a.example/ns/ci/sa/deployer";
    let actor = w.svid("/ns/ci/sa/deployer", 600);
    let subject = w.svid_with("/ns/payments/sa/api", json!({"may_act": {"sub": deployer}}));
    let form = delegated(&subject, &actor);
    assert!(w.exchange(&form, &[], &[]).result.is_ok());

    // The actor's subject revoked after its token was issued: the actor is refused, the
    // subject alone still exchanges.
    let now = UnixTime::from_secs(w.now());
    let revoke = |t: Target| {
        block_on(w.exchanger.revocations().revoke(
            &t.storage_key(),
            now,
            UnixTime::from_secs(w.now() + 3600),
        ))
        .unwrap()
    };
    revoke(Target::Subject(deployer.into()));
    let out = w.exchange(&form, &[], &[]);
    assert_eq!(World::code(&out), "invalid_request");
    assert!(out.audit.jti_out.is_none());
    assert_eq!(
        error(out),
        ExchangeError::Revoked {
            which: "actor",
            by: "subject"
        }
    );
    assert!(
        w.exchange(&form[..4], &[], &[]).result.is_ok(),
        "only the actor was revoked"
    );

    // The subject revoked too: the subject is named first.
    revoke(Target::Subject(
        "spiffe://cluster-a.example/ns/payments/sa/api".into(),
    ));
    assert_eq!(
        error(w.exchange(&form, &[], &[])),
        ExchangeError::Revoked {
            which: "subject",
            by: "subject"
        }
    );
}

#[test]
fn malformed_forms() {
    let w = World::new();
    let svid = w.svid("/ns/payments/sa/api", 600);
    let base = vec![
        ("grant_type", TE),
        ("subject_token", svid.as_str()),
        ("subject_token_type", JWT_TYPE),
        ("audience", PAYMENTS),
    ];
    let mut dup = base.clone();
    dup.push(("subject_token_type", JWT_TYPE));
    assert_eq!(World::code(&w.exchange(&dup, &[], &[])), "invalid_request");
    let mut two = base.clone();
    two.push(("resource", "https://payments.example/api"));
    assert_eq!(World::code(&w.exchange(&two, &[], &[])), "invalid_target");
    let mut grant = base.clone();
    grant[0] = ("grant_type", "password");
    assert_eq!(
        World::code(&w.exchange(&grant, &[], &[])),
        "unsupported_grant_type"
    );
    let mut resource = base;
    resource[3] = ("resource", PAYMENTS);
    assert!(w.exchange(&resource, &[], &[]).result.is_ok());
}

#[test]
fn every_decision_has_one_audit_record_without_secrets() {
    let w = World::new();
    let svid = w.svid("/ns/payments/sa/api", 600);
    let ok = w.simple(&svid, PAYMENTS, Some("payments.read"));
    let token = ok.result.as_ref().unwrap().access_token().to_owned();
    let a = serde_json::to_value(&ok.audit).unwrap();
    assert_eq!(a["event"], "token_exchange");
    assert_eq!(a["decision"], "allow");
    assert_eq!(a["reason"], "ok");
    assert_eq!(
        a["subject"],
        "spiffe://cluster-a.example/ns/payments/sa/api"
    );
    assert_eq!(a["from"], CLUSTER);
    assert_eq!(a["audience"], PAYMENTS);
    assert_eq!(a["scope_requested"], "payments.read");
    assert_eq!(a["scope_granted"], "payments.read");
    assert_eq!(a["boundary"], "cluster-a-to-payments");
    assert_eq!(a["jti_out"], claims_of(&token)["jti"]);
    let text = a.to_string();
    assert!(!text.contains(&svid) && !text.contains(&token));

    let deny = w.simple(&svid, "https://admin.example", None);
    let a = serde_json::to_value(&deny.audit).unwrap();
    assert_eq!(a["decision"], "deny");
    assert_eq!(a["reason"], "invalid_target");
    assert!(a["detail"].as_str().unwrap().contains("does not issue"));
    assert!(!a.to_string().contains(&svid));
}

#[test]
fn error_codes_and_statuses() {
    for (code, status) in [
        (ErrorCode::InvalidRequest, 400),
        (ErrorCode::InvalidTarget, 400),
        (ErrorCode::InvalidScope, 400),
        (ErrorCode::UnsupportedGrantType, 400),
        (ErrorCode::UseDpopNonce, 400),
        (ErrorCode::InvalidDpopProof, 400),
        (ErrorCode::UseAttestationChallenge, 400),
        (ErrorCode::UseFreshAttestation, 400),
        (ErrorCode::InvalidClient, 401),
        (ErrorCode::TemporarilyUnavailable, 503),
        (ErrorCode::ServerError, 500),
    ] {
        assert_eq!(code.status(), status, "{code}");
    }
    assert_eq!(
        ExchangeError::Nonce {
            evidence_presented: true
        }
        .code(),
        ErrorCode::UseFreshAttestation
    );
    assert_eq!(
        ExchangeError::State(token_exchange::state::StateError("down".into())).code(),
        ErrorCode::TemporarilyUnavailable
    );
}
