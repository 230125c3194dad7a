//! Subject-token validation, through the whole exchange: each hostile token gets the
//! exact refusal, `invalid_request`, and no token.

use serde_json::json;
use token_exchange::ExchangeError;
use token_exchange::subject::TokenError;
use trust_bundles::jws::JwsError;

use crate::support::*;

const PAYMENTS_SVID: &str = "/ns/payments/sa/api";

fn refused(w: &World, token: &str) -> TokenError {
    let out = w.simple(token, PAYMENTS, None);
    assert_eq!(World::code(&out), "invalid_request", "{:?}", out.result);
    assert_eq!(out.audit.reason, "invalid_request");
    match out.result {
        Err(r) => match r.error {
            ExchangeError::Subject(e) => e,
            other => panic!("not a subject error: {other:?}"),
        },
        Ok(_) => panic!("a token was issued"),
    }
}

#[test]
fn a_valid_jwt_svid_is_exchanged() {
    let w = World::new();
    let out = w.simple(&w.svid(PAYMENTS_SVID, 600), PAYMENTS, Some("payments.read"));
    let resp = out.result.unwrap();
    assert_eq!(resp.token_type, "Bearer");
    assert_eq!(resp.scope, "payments.read");
    assert_eq!(resp.expires_in, 600);
    let c = claims_of(resp.access_token());
    assert_eq!(c["sub"], "spiffe://cluster-a.example/ns/payments/sa/api");
    assert_eq!(c["aud"], PAYMENTS);
    assert_eq!(c["iss"], ISSUER);
    assert_eq!(header_of(resp.access_token())["typ"], "at+jwt");
    assert_eq!(out.audit.decision, token_exchange::audit::Decision::Allow);
}

#[test]
fn alg_none_in_any_case_is_refused() {
    let w = World::new();
    let good = w.svid(PAYMENTS_SVID, 600);
    let payload = good.split('.').nth(1).unwrap();
    for alg in ["none", "None", "NONE"] {
        let header = b64u(format!(r#"{{"alg":"{alg}","kid":"c1"}}"#).as_bytes());
        let t = format!("{header}.{payload}.");
        assert!(matches!(refused(&w, &t), TokenError::Jws(JwsError::Alg(_))));
    }
}

#[test]
fn rs256_to_hs256_with_the_public_key_as_secret_is_refused() {
    let w = World::new();
    let secret = serde_json::to_vec(&w.github.jwk_value()).unwrap();
    let claims = json!({"iss": GITHUB_ISS, "sub": "repo:acme/app", "aud": ISSUER, "exp": w.now() + 60, "repository": "acme/app"});
    let input = trust_bundles::jws::signing_input(&json!({"alg":"HS256","kid":"g1"}), &claims);
    let tag = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret),
        input.as_bytes(),
    );
    let t = trust_bundles::jws::compact(&input, tag.as_ref());
    assert!(matches!(refused(&w, &t), TokenError::Jws(JwsError::Alg(_))));
}

#[test]
fn unknown_kid_and_path_traversal_kid() {
    let w = World::new();
    let claims = json!({"sub": "spiffe://cluster-a.example/ns/payments/sa/api", "aud": ISSUER, "exp": w.now() + 60, "iat": w.now()});
    for kid in ["c2", "../../etc/passwd", "c1/../c1", "g1"] {
        let t = w
            .cluster
            .token(json!({"alg":"ES256","kid":kid}), claims.clone());
        assert_eq!(refused(&w, &t), TokenError::UnknownKid, "{kid}");
    }
    let t = w.cluster.token(json!({"alg":"ES256"}), claims);
    assert_eq!(refused(&w, &t), TokenError::MissingKid);
}

#[test]
fn a_kid_of_another_domain_never_verifies() {
    // GitHub's token signed by cluster-a's key, claiming cluster-a's kid: the lookup is
    // by the issuer's own keys only.
    let w = World::new();
    let t = w.cluster.token(
        json!({"alg":"ES256","kid":"c1"}),
        json!({"iss": GITHUB_ISS, "sub": "repo:acme/app", "aud": ISSUER, "exp": w.now() + 60}),
    );
    assert!(matches!(
        refused(&w, &t),
        TokenError::AlgNotAllowed(_) | TokenError::UnknownKid
    ));
}

#[test]
fn key_carrying_headers_are_refused_and_never_followed() {
    let w = World::new();
    let claims = json!({"sub": "spiffe://cluster-a.example/ns/payments/sa/api", "aud": ISSUER, "exp": w.now() + 60, "iat": w.now()});
    for (h, v) in [
        ("jku", json!("http://127.0.0.1:9/jwks")),
        ("x5u", json!("http://127.0.0.1:9/cert")),
        ("jwk", w.cluster.jwk_value()),
        ("x5c", json!(["MIIB"])),
    ] {
        let mut header = json!({"alg":"ES256","kid":"c1"});
        header[h] = v;
        let t = w.cluster.token(header, claims.clone());
        assert_eq!(refused(&w, &t), TokenError::ForbiddenHeader(h));
    }
}

#[test]
fn crit_is_refused() {
    let w = World::new();
    let t = w.cluster.token(
        json!({"alg":"ES256","kid":"c1","crit":["b64"],"b64":false}),
        json!({"sub": "spiffe://cluster-a.example/ns/payments/sa/api", "aud": ISSUER, "exp": w.now() + 60}),
    );
    assert_eq!(refused(&w, &t), TokenError::Jws(JwsError::Crit));
}

#[test]
fn degenerate_ecdsa_signatures() {
    let w = World::new();
    let good = w.svid(PAYMENTS_SVID, 600);
    let (input, _) = good.rsplit_once('.').unwrap();
    let n = "FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551";
    let n: Vec<u8> = (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&n[i..i + 2], 16).unwrap())
        .collect();
    let rs_n = [n.clone(), n].concat();
    for sig in [vec![0u8; 64], rs_n] {
        let t = format!("{input}.{}", b64u(&sig));
        assert!(matches!(
            refused(&w, &t),
            TokenError::Jws(JwsError::Signature(_))
        ));
    }
}

#[test]
fn duplicate_members_in_header_and_payload() {
    let w = World::new();
    let claims = format!(
        r#"{{"sub":"spiffe://cluster-a.example/ns/payments/sa/api","aud":"{ISSUER}","exp":{},"exp":{}}}"#,
        w.now() + 60,
        w.now() + 99999
    );
    let header = r#"{"alg":"ES256","kid":"c1"}"#;
    let input = format!("{}.{}", b64u(header.as_bytes()), b64u(claims.as_bytes()));
    let t = format!("{input}.{}", b64u(&w.cluster.sign(input.as_bytes())));
    assert!(matches!(
        refused(&w, &t),
        TokenError::Jws(JwsError::BadJson {
            part: "payload",
            ..
        })
    ));
    let header = r#"{"alg":"ES256","kid":"c1","kid":"c2"}"#;
    let input = format!("{}.{}", b64u(header.as_bytes()), b64u(br#"{}"#));
    let t = format!("{input}.{}", b64u(&w.cluster.sign(input.as_bytes())));
    assert!(matches!(
        refused(&w, &t),
        TokenError::Jws(JwsError::BadJson { part: "header", .. })
    ));
}

#[test]
fn oversized_tokens_are_refused_before_parsing() {
    let w = World::new();
    let big = w.svid_with(PAYMENTS_SVID, json!({"pad": "x".repeat(1024 * 1024)}));
    let out = w.simple(&big, PAYMENTS, None);
    assert_eq!(World::code(&out), "invalid_request");
    assert!(matches!(
        out.result.unwrap_err().error,
        ExchangeError::Request(token_exchange::request::RequestError::TokenTooLarge { .. })
    ));
}

#[test]
fn exp_must_be_a_present_future_number() {
    let w = World::new();
    assert_eq!(
        refused(
            &w,
            &w.svid_with(PAYMENTS_SVID, json!({"exp": "9999999999"}))
        ),
        TokenError::BadClaim("exp")
    );
    assert_eq!(
        refused(&w, &w.svid_with(PAYMENTS_SVID, json!({"exp": -5}))),
        TokenError::BadClaim("exp")
    );
    assert_eq!(
        refused(&w, &w.svid_with(PAYMENTS_SVID, json!({"exp": null}))),
        TokenError::MissingClaim("exp")
    );
    assert!(matches!(
        refused(&w, &w.svid_with(PAYMENTS_SVID, json!({"exp": w.now()}))),
        TokenError::Expired { .. }
    ));
    assert_eq!(
        refused(&w, &w.svid_with(PAYMENTS_SVID, json!({"iat": "now"}))),
        TokenError::BadClaim("iat")
    );
    assert_eq!(
        refused(&w, &w.svid_with(PAYMENTS_SVID, json!({"nbf": true}))),
        TokenError::BadClaim("nbf")
    );
}

#[test]
fn time_claims_respect_the_skew() {
    let w = World::new();
    // nbf/iat up to 30 s ahead are tolerated; 31 s are not.
    assert!(
        w.simple(
            &w.svid_with(
                PAYMENTS_SVID,
                json!({"nbf": w.now() + 30, "iat": w.now() + 30})
            ),
            PAYMENTS,
            None
        )
        .result
        .is_ok()
    );
    assert!(matches!(
        refused(
            &w,
            &w.svid_with(PAYMENTS_SVID, json!({"nbf": w.now() + 31}))
        ),
        TokenError::NotYetValid { .. }
    ));
    assert!(matches!(
        refused(
            &w,
            &w.svid_with(PAYMENTS_SVID, json!({"iat": w.now() + 31}))
        ),
        TokenError::IssuedInFuture { .. }
    ));
}

#[test]
fn max_token_age() {
    let w = World::new();
    let day = 24 * 3600;
    assert!(
        w.simple(
            &w.svid_with(PAYMENTS_SVID, json!({"iat": w.now(), "exp": w.now() + day})),
            PAYMENTS,
            None
        )
        .result
        .is_ok()
    );
    assert!(matches!(
        refused(
            &w,
            &w.svid_with(
                PAYMENTS_SVID,
                json!({"iat": w.now(), "exp": w.now() + day + 1})
            )
        ),
        TokenError::TooOld { .. }
    ));
    assert_eq!(
        refused(&w, &w.svid_with(PAYMENTS_SVID, json!({"iat": null}))),
        TokenError::MissingClaim("iat")
    );
}

#[test]
fn aud_shapes() {
    let w = World::new();
    assert_eq!(
        refused(&w, &w.svid_with(PAYMENTS_SVID, json!({"aud": []}))),
        TokenError::BadClaim("aud")
    );
    assert_eq!(
        refused(&w, &w.svid_with(PAYMENTS_SVID, json!({"aud": 123}))),
        TokenError::BadClaim("aud")
    );
    assert_eq!(
        refused(&w, &w.svid_with(PAYMENTS_SVID, json!({"aud": [123]}))),
        TokenError::BadClaim("aud")
    );
    assert_eq!(
        refused(&w, &w.svid_with(PAYMENTS_SVID, json!({"aud": null}))),
        TokenError::MissingClaim("aud")
    );
    for lookalike in [
        "http://127.0.0.1:8080/",
        "HTTP://127.0.0.1:8080",
        "http://127.0.0.1:8080.evil",
        "http://127.0.0.1:808",
    ] {
        assert_eq!(
            refused(&w, &w.svid_with(PAYMENTS_SVID, json!({"aud": lookalike}))),
            TokenError::AudienceMismatch,
            "{lookalike}"
        );
    }
    assert!(
        w.simple(
            &w.svid_with(PAYMENTS_SVID, json!({"aud": ["x", ISSUER]})),
            PAYMENTS,
            None
        )
        .result
        .is_ok()
    );
}

#[test]
fn iss_is_byte_exact() {
    let w = World::new();
    assert!(
        w.simple(&w.github_token(json!({})), PAYMENTS, None)
            .result
            .is_ok()
    );
    for iss in [
        "https://token.actions.githubusercontent.com/",
        "https://Token.Actions.GitHubUserContent.com",
        "https://token.actions.githubusercontent.com.evil",
    ] {
        assert_eq!(
            refused(&w, &w.github_token(json!({"iss": iss}))),
            TokenError::UnknownIssuer,
            "{iss}"
        );
    }
    assert_eq!(
        refused(&w, &w.github_token(json!({"iss": 7}))),
        TokenError::BadClaim("iss")
    );
}

#[test]
fn spiffe_subjects_must_be_ids_of_their_domain() {
    let w = World::new();
    let t = w.cluster.token(
        json!({"alg":"ES256","kid":"c1"}),
        json!({"sub": "spiffe://other.example/ns/payments/sa/api", "aud": ISSUER, "exp": w.now() + 60}),
    );
    assert_eq!(refused(&w, &t), TokenError::UnknownIssuer);
    let t = w.cluster.token(
        json!({"alg":"ES256","kid":"c1"}),
        json!({"sub": "not-a-spiffe-id", "aud": ISSUER, "exp": w.now() + 60}),
    );
    assert_eq!(refused(&w, &t), TokenError::UnknownIssuer);
}

#[test]
fn alg_allowlist_per_domain() {
    // GitHub's domain allows RS256 only; an ES256 token claiming its issuer is refused
    // before any key is looked up.
    let w = World::new();
    let t = w.cluster.token(
        json!({"alg":"ES256","kid":"g1"}),
        json!({"iss": GITHUB_ISS, "sub": "repo:acme/app", "aud": ISSUER, "exp": w.now() + 60}),
    );
    assert!(matches!(refused(&w, &t), TokenError::AlgNotAllowed(_)));
}

#[test]
fn typ_is_checked_per_token_type() {
    let w = World::new();
    // A broker access token presented as an ID token.
    let at = w
        .simple(
            &w.svid("/ns/payments/sa/api", 600),
            PAYMENTS,
            Some("payments.read"),
        )
        .result
        .unwrap();
    let out = w.exchange(
        &[
            ("grant_type", TE),
            ("subject_token", at.access_token()),
            ("subject_token_type", ID_TYPE),
            ("audience", ISSUER),
        ],
        &[],
        &[],
    );
    // The broker token's audience is payments, not the broker: refused either way, but
    // the typ check comes first and names the real problem.
    assert!(matches!(
        out.result.unwrap_err().error,
        ExchangeError::Subject(TokenError::BadTyp { .. })
    ));
    // Foreign tokens with an unexpected typ.
    let t = w.cluster.token(
        json!({"alg":"ES256","kid":"c1","typ":"dpop+jwt"}),
        json!({"sub": "spiffe://cluster-a.example/ns/payments/sa/api", "aud": ISSUER, "exp": w.now() + 60}),
    );
    assert!(matches!(refused(&w, &t), TokenError::BadTyp { .. }));
    let t = w.cluster.token(
        json!({"alg":"ES256","kid":"c1","typ":"at+jwt"}),
        json!({"sub": "spiffe://cluster-a.example/ns/payments/sa/api", "aud": ISSUER, "exp": w.now() + 60, "iat": w.now()}),
    );
    let out = w.exchange(
        &[
            ("grant_type", TE),
            ("subject_token", &t),
            ("subject_token_type", ID_TYPE),
            ("audience", PAYMENTS),
        ],
        &[],
        &[],
    );
    assert!(matches!(
        out.result.unwrap_err().error,
        ExchangeError::Subject(TokenError::BadTyp { .. })
    ));
}
