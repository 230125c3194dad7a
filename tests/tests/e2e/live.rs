//! Live federation on an injected clock: the broker's state built in-process exactly as
//! `serve` builds it, its real `/token` route, and a real HTTPS bundle endpoint (rcgen
//! certificate, trusted through `tls_ca`) whose answers the test changes mid-run.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::{App, test, web};
use broker::config::{Config, EndpointConfig};
use broker::server::AppState;
use federation::fetch::FetchPolicy;
use serde_json::{Value, json};
use trust_bundles::{Clock, ManualClock, UnixTime};
use trustbroker_tests::issuers::*;

/// The refresh hint of every bundle served here.
const HINT: u64 = 60;

/// A foreign domain's HTTPS bundle endpoint on loopback (its own rcgen CA), what it
/// answers (a bundle, or nothing: down), after how long, and how often it was reached.
struct Endpoint {
    port: u16,
    ca_pem: String,
    answer: Arc<Mutex<Option<String>>>,
    hits: Arc<AtomicUsize>,
}

impl Endpoint {
    fn start(delay: Duration) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap(),
        );
        let answer = Arc::new(Mutex::new(None::<String>));
        let hits = Arc::new(AtomicUsize::new(0));
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (a, h) = (answer.clone(), hits.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(tcp) = s else { continue };
                h.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(delay);
                let Some(body) = a.lock().unwrap().clone() else {
                    drop(tcp); // down: the connection closes before any TLS
                    continue;
                };
                let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                    continue;
                };
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut buf = [0u8; 4096];
                if tls.read(&mut buf).is_err() {
                    continue;
                }
                let _ = write!(
                    tls,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        });
        Self {
            port,
            ca_pem: ca.pem(),
            answer,
            hits,
        }
    }

    fn serve(&self, bundle: Option<String>) {
        *self.answer.lock().unwrap() = bundle;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A bundle of `keys` (kid, key) at `sequence`.
fn bundle(sequence: u64, keys: &[(&str, &IssuerKey)]) -> Option<String> {
    let keys: Vec<Value> = keys
        .iter()
        .map(|(kid, k)| {
            let b: Value = serde_json::from_str(&k.bundle_json(kid)).unwrap();
            b["keys"][0].clone()
        })
        .collect();
    Some(
        json!({"keys": keys, "spiffe_sequence": sequence, "spiffe_refresh_hint": HINT}).to_string(),
    )
}

/// A broker whose `cluster-a.example` follows `endpoint` and whose `cluster-b.example`
/// has a configured bundle (key `o` of `other`); the clock is the test's.
struct Live {
    state: Arc<AppState>,
    clock: Arc<ManualClock>,
    endpoint: EndpointConfig,
    policy: FetchPolicy,
    _dir: tempfile::TempDir,
}

impl Live {
    async fn new(endpoint: &Endpoint, other: &IssuerKey) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), &endpoint.ca_pem).unwrap();
        std::fs::write(dir.path().join("other.json"), other.bundle_json("o")).unwrap();
        let boundary = |d: &str| {
            format!(
                r#"[[boundary]]
name = "{d}"
from = "{d}"
subjects = ["spiffe://{d}/**"]
audiences = ["https://payments.example/api"]
scopes = ["payments.read"]
attestation = "none"
"#
            )
        };
        let text = format!(
            r#"issuer = "https://broker.test"
[state]
path = "state"
[[trust_domain]]
name = "cluster-a.example"
bundle_endpoint = {{ url = "https://127.0.0.1:{}/bundle", profile = "https_web" }}
tls_ca = "ca.pem"
[[trust_domain]]
name = "cluster-b.example"
bundle_file = "other.json"
{}{}"#,
            endpoint.port,
            boundary("cluster-a.example"),
            boundary("cluster-b.example")
        );
        let cfg = Config::parse_str(
            &text,
            Some(&dir.path().join("trustbroker.toml")),
            &std::collections::BTreeMap::new(),
        )
        .unwrap();
        let clock = Arc::new(ManualClock::new(UnixTime::from_secs(now())));
        let state = broker::serve::build(&cfg, clock.clone(), None)
            .await
            .unwrap();
        let (endpoint, policy) = broker::serve::fetch_policies(&cfg)
            .unwrap()
            .into_iter()
            .next()
            .unwrap();
        Self {
            state,
            clock,
            endpoint,
            policy,
            _dir: dir,
        }
    }

    async fn app(
        &self,
    ) -> impl Service<
        actix_http::Request,
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
    > {
        test::init_service(
            App::new()
                .app_data(web::Data::from(self.state.clone()))
                .configure(broker::server::routes),
        )
        .await
    }

    /// A scheduled refresh, as the refresher runs it when the domain is due.
    async fn refresh(&self) {
        assert!(
            broker::federated::refresh_once(
                &self.state.live,
                &self.endpoint,
                &self.policy,
                &*self.clock
            )
            .await
        );
    }

    /// The refresher task, as `serve` spawns it: it answers on-demand refetches.
    fn spawn_refresher(&self) {
        actix_web::rt::spawn(broker::federated::refresh_loop(
            self.state.live.clone(),
            self.endpoint.clone(),
            self.policy.clone(),
            self.clock.clone(),
        ));
    }

    /// An exchange of a token of `domain` by `key` under `kid`, issued at the test's now.
    fn exchange(&self, domain: &str, key: &IssuerKey, kid: &str) -> test::TestRequest {
        let t = self.clock.now().as_secs();
        let claims = json!({"sub": format!("spiffe://{domain}/ns/payments/sa/api"), "aud": ["https://broker.test"], "iat": t, "exp": t + 300});
        let token = key.token(&json!({"alg": "ES256", "kid": kid}), &claims);
        test::TestRequest::post().uri("/token").set_form([
            ("grant_type", TE),
            ("subject_token", token.as_str()),
            ("subject_token_type", JWT_TYPE),
            ("audience", "https://payments.example/api"),
        ])
    }
}

/// The status of `req`; every refusal must be `invalid_request` (an unusable subject).
async fn status<S, B>(app: &S, req: test::TestRequest) -> u16
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let resp = test::call_service(app, req.to_request()).await;
    let status = resp.status().as_u16();
    if status != 200 {
        let body: Value = test::read_body_json(resp).await;
        assert_eq!(body["error"], "invalid_request", "{body}");
    }
    status
}

#[actix_web::test]
async fn rotation_rollback_and_outage_follow_the_bundle_endpoint_on_an_injected_clock() {
    let (a, b, other) = (IssuerKey::es256(), IssuerKey::es256(), IssuerKey::es256());
    let ep = Endpoint::start(Duration::ZERO);
    ep.serve(bundle(1, &[("a", &a)]));
    let live = Live::new(&ep, &other).await;
    let app = live.app().await;
    let (dom_a, dom_b) = ("cluster-a.example", "cluster-b.example");

    // 1. The first fetch brings key a; its tokens validate.
    live.refresh().await;
    live.spawn_refresher();
    assert_eq!(status(&app, live.exchange(dom_a, &a, "a")).await, 200);
    assert_eq!(ep.hits(), 1);

    // 2. The domain rotates (a and b, sequence 2): a token by b validates at once (one
    // on-demand refetch), and a's tokens keep validating while a is published.
    ep.serve(bundle(2, &[("a", &a), ("b", &b)]));
    assert_eq!(status(&app, live.exchange(dom_a, &b, "b")).await, 200);
    assert_eq!(ep.hits(), 2);
    assert_eq!(status(&app, live.exchange(dom_a, &a, "a")).await, 200);

    // 3. At the next scheduled refresh a has left (sequence 3): its tokens stop validating.
    ep.serve(bundle(3, &[("b", &b)]));
    live.clock.advance(Duration::from_secs(HINT));
    live.refresh().await;
    assert_eq!(status(&app, live.exchange(dom_a, &a, "a")).await, 400);
    assert_eq!(status(&app, live.exchange(dom_a, &b, "b")).await, 200);

    // 4. A rollback to sequence 1 (which held a) is refused: a stays out, b stays in.
    ep.serve(bundle(1, &[("a", &a)]));
    live.clock.advance(Duration::from_secs(HINT));
    live.refresh().await;
    assert_eq!(status(&app, live.exchange(dom_a, &a, "a")).await, 400);
    assert_eq!(status(&app, live.exchange(dom_a, &b, "b")).await, 200);

    // 5. The endpoint goes down. The last good keys (confirmed at step 3, 2 × hint ago)
    // serve until 10 × hint after that...
    ep.serve(None);
    live.clock.advance(Duration::from_secs(HINT * 9 - 1));
    live.refresh().await;
    assert_eq!(status(&app, live.exchange(dom_a, &b, "b")).await, 200);
    // ...then the domain fails closed, and only that domain.
    live.clock.advance(Duration::from_secs(2));
    live.refresh().await;
    assert_eq!(status(&app, live.exchange(dom_a, &b, "b")).await, 400);
    assert_eq!(status(&app, live.exchange(dom_b, &other, "o")).await, 200);

    // 6. The endpoint comes back with a newer bundle: the domain serves again.
    ep.serve(bundle(4, &[("b", &b)]));
    live.clock.advance(Duration::from_secs(HINT));
    live.refresh().await;
    assert_eq!(status(&app, live.exchange(dom_a, &b, "b")).await, 200);
}

#[actix_web::test]
async fn a_thousand_first_askers_with_bogus_kids_cause_one_fetch() {
    let (a, b, other) = (IssuerKey::es256(), IssuerKey::es256(), IssuerKey::es256());
    // Each answer takes 300 ms, so every asker arrives while the fetch is in flight.
    let ep = Endpoint::start(Duration::from_millis(300));
    ep.serve(bundle(1, &[("a", &a)]));
    let live = Live::new(&ep, &other).await;
    let app = live.app().await;
    let dom = "cluster-a.example";
    live.refresh().await;
    live.spawn_refresher();
    assert_eq!(ep.hits(), 1);

    // 1. 1,000 tokens with 1,000 different unknown kids, all at once: one fetch answers
    // them all, and none validates.
    let reqs: Vec<_> = (0..1000)
        .map(|i| live.exchange(dom, &a, &format!("bogus-{i}")))
        .collect();
    let statuses = futures_util::future::join_all(reqs.into_iter().map(|r| status(&app, r))).await;
    assert!(statuses.iter().all(|s| *s == 400));
    assert_eq!(ep.hits(), 2);

    // 2. Within 30 s of that refetch, even a real rotation is not fetched on demand...
    ep.serve(bundle(2, &[("a", &a), ("b", &b)]));
    live.clock.advance(Duration::from_secs(29));
    assert_eq!(status(&app, live.exchange(dom, &b, "b")).await, 400);
    assert_eq!(ep.hits(), 2);

    // 3. ...and 30 s after it, the next unknown kid refetches once and validates.
    live.clock.advance(Duration::from_secs(1));
    assert_eq!(status(&app, live.exchange(dom, &b, "b")).await, 200);
    assert_eq!(ep.hits(), 3);
}
