//! `trustbroker serve`: everything is validated and opened before a port is bound, so a
//! bad configuration or an unusable state directory never half-starts.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use std::collections::HashMap;
use token_exchange::Exchanger;

use token_exchange::attestation::{NodeAuthorities, X509EvidenceVerifier};
use token_exchange::exchange::{ExchangeSettings, Stores};
use token_exchange::keys::{BrokerKeySource, KeyRing, RotationPolicy};
use token_exchange::policy::Policy;
use token_exchange::subject::Validator;
use trust_bundles::bundle::X509Authority;
use trust_bundles::{Clock, SystemClock};
use trust_bundles::{SpiffeBundle, TrustDomain};

use crate::backend::Backend;
use crate::config::Config;
use crate::config::Env;
use crate::nodes::{NodeCa, StoreNodeStatus};
use crate::server::{self, AdminToken, AppState};

/// How often the key ring is brought up to date.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(60);
/// SPEC §9: in-flight requests get this long to finish after SIGTERM.
const SHUTDOWN_GRACE_SECS: u64 = 10;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("signing keys: {0}")]
    Keys(#[from] token_exchange::keys::KeyError),
    #[error("tls: {0}")]
    Tls(String),
    #[error("listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Config(String),
}

fn rotation(cfg: &Config) -> RotationPolicy {
    RotationPolicy {
        rotate_every: cfg.keys.rotate_every,
        publish_ahead: cfg.keys.publish_ahead,
        max_token_ttl: cfg.limits.max_ttl,
    }
}

/// Loads the `enforcer_ca` of SPIFFE domains as node authorities for their subjects.
fn foreign_node_cas(
    cfg: &Config,
) -> Result<HashMap<String, (TrustDomain, SpiffeBundle)>, ServeError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut out = HashMap::new();
    for (name, path) in &cfg.enforcer_cas {
        let td: TrustDomain = name
            .parse()
            .map_err(|e| ServeError::Config(format!("trust_domain {name}: {e}")))?;
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| ServeError::Config(format!("{}: {e}", path.display())))?;
        let mut authorities = Vec::new();
        for certificate in certs {
            let jwk = trust_bundles::x509::leaf_public_key(&certificate)
                .map_err(|e| ServeError::Config(format!("{}: {e}", path.display())))?;
            authorities.push(X509Authority { certificate, jwk });
        }
        let bundle = SpiffeBundle::new(None, Duration::from_secs(300), authorities, Vec::new())
            .map_err(|e| ServeError::Config(e.to_string()))?;
        out.insert(name.clone(), (td, bundle));
    }
    Ok(out)
}

/// Loads the signing keys from the backend, brings them up to date at `now` and stores
/// them back if that changed anything. Replicas racing to rotate agree through the
/// backend's compare-and-set: the loser takes the winner's keys.
///
/// A backend that lost its keys (a Redis flushed or rebuilt without persistence) is
/// re-seeded from `current`, the ring this process holds, so tokens already issued keep
/// verifying on every replica.
async fn sync_keys(
    backend: &Backend,
    cfg: &Config,
    now: trust_bundles::UnixTime,
    current: Option<&RwLock<KeyRing>>,
) -> Result<(KeyRing, u64), ServeError> {
    for _ in 0..8 {
        let (mut records, seq) = backend.load_keys().await?;
        if seq == 0
            && records.is_empty()
            && let Some(current) = current
        {
            records = current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .records();
            if !records.is_empty() {
                tracing::warn!("the state backend holds no signing keys: re-seeding it with ours");
            }
        }
        let mut ring = KeyRing::from_records(records)?;
        let changed = ring.maintain(&cfg.keys.algorithms, &rotation(cfg), now)?;
        if !changed && seq != 0 {
            return Ok((ring, seq));
        }
        if let Some(seq) = backend.save_keys(&ring.records(), seq).await? {
            return Ok((ring, seq));
        }
    }
    Err(ServeError::Config(
        "signing keys: the backend kept changing under us".into(),
    ))
}

/// Opens state and builds the application, without binding anything.
pub async fn build(
    cfg: &Config,
    clock: Arc<dyn Clock>,
    admin_token: Option<AdminToken>,
) -> Result<Arc<AppState>, ServeError> {
    let backend = Backend::open(&cfg.state).await?;
    let (ring, seq) = sync_keys(&backend, cfg, clock.now(), None).await?;
    let ring = Arc::new(RwLock::new(ring));
    let node_ca = Arc::new(
        NodeCa::load_or_create(&backend, &cfg.local_trust_domain, clock.now())
            .await
            .map_err(ServeError::Config)?,
    );
    let node_status = Arc::new(StoreNodeStatus {
        store: backend.clone(),
        trust_domain: cfg.local_trust_domain.clone(),
    });
    let authorities = NodeAuthorities {
        local_domain: cfg.local_trust_domain.clone(),
        local: node_ca.bundle().map_err(ServeError::Config)?,
        foreign: foreign_node_cas(cfg)?,
    };
    let verifier = Arc::new(X509EvidenceVerifier::new(
        Arc::new(RwLock::new(authorities)),
        node_status.clone(),
        cfg.clock_skew,
    ));

    let live = Arc::new(crate::federated::LiveBundles::new(
        cfg.endpoints
            .iter()
            .map(|e| (e.domain.clone(), e.bootstrap.clone())),
        clock.now(),
    ));
    let federated = Arc::new(crate::federated::FederatedKeys {
        live: live.clone(),
        fixed: RwLock::new(Arc::new(cfg.static_keys.clone())),
        clock: clock.clone(),
    });
    let keys = Arc::new(BrokerKeySource::new(
        cfg.local_trust_domain.as_str().to_owned(),
        ring.clone(),
        clock.clone(),
        federated.clone(),
    ));
    let validator = Validator::new(cfg.domains.clone(), keys, cfg.clock_skew);
    let exchanger = Exchanger::new(
        ExchangeSettings {
            issuer: cfg.issuer.clone(),
            limits: cfg.limits,
            skew: cfg.clock_skew,
        },
        validator,
        Policy::new(cfg.boundaries.clone()),
        ring.clone(),
        Stores {
            nonce_key: backend.nonce_key(),
            nonces: backend.nonces(),
            replay: backend.replay(),
            // Durable: a restart must not reopen a single-use token's window.
            single_use: backend.single_use(),
            // Durable: a revocation must survive a restart.
            revocations: backend.revocations(),
        },
        verifier,
        clock.clone(),
    );
    Ok(Arc::new(AppState {
        exchanger,
        ring,
        clock,
        issuer: cfg.issuer.clone(),
        local_trust_domain: cfg.local_trust_domain.clone(),
        bundle_sequence: AtomicU64::new(seq),
        node_ca,
        node_status,
        admin_token,
        renewals: backend.replay(),
        backend,
        live,
        clients: cfg.clients.clone(),
        metrics: crate::metrics::Metrics::new(),
        federated,
        base: cfg.clone(),
        admin: crate::admin::AdminRuntime::default(),
    }))
}

/// Brings the ring up to date (and, on Redis, takes other replicas' rotations).
async fn maintain(state: &AppState, cfg: &Config) {
    match sync_keys(&state.backend, cfg, state.clock.now(), Some(&state.ring)).await {
        Ok((ring, seq)) => {
            let before = state
                .bundle_sequence
                .swap(seq, std::sync::atomic::Ordering::SeqCst);
            *state.ring.write().unwrap_or_else(PoisonError::into_inner) = ring;
            if before != seq {
                tracing::info!(bundle_sequence = seq, "signing keys updated");
            }
        }
        // The ring in memory keeps serving; the next round tries again.
        Err(e) => tracing::error!(error = %e, "key maintenance failed"),
    }
}

fn tls_config(cfg: &crate::config::TlsConfig) -> Result<rustls::ServerConfig, ServeError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&cfg.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ServeError::Tls(format!("{}: {e}", cfg.cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key)
        .map_err(|e| ServeError::Tls(format!("{}: {e}", cfg.key.display())))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .map_err(|e| ServeError::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| ServeError::Tls(e.to_string()))
}

/// How each live domain is fetched: its own `tls_ca` roots and private-range switch, the
/// broker-wide loopback switch. Read once, before anything binds.
pub fn fetch_policies(
    cfg: &Config,
) -> Result<
    Vec<(
        crate::config::EndpointConfig,
        federation::fetch::FetchPolicy,
    )>,
    ServeError,
> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut out = Vec::new();
    for ep in &cfg.endpoints {
        let extra_roots = match &ep.tls_ca {
            Some(path) => CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| ServeError::Config(format!("{}: {e}", path.display())))?,
            None => Vec::new(),
        };
        let policy = federation::fetch::FetchPolicy {
            allow_http_loopback: cfg.allow_http_fetch_to_loopback,
            allow_private: ep.allow_private,
            extra_roots,
            ..federation::fetch::FetchPolicy::default()
        };
        out.push((ep.clone(), policy));
    }
    Ok(out)
}

/// Runs the broker until SIGTERM or SIGINT, then drains in-flight requests. The admin
/// token comes from the environment variable the config names.
pub async fn run(cfg: Config) -> Result<(), ServeError> {
    let admin_token = crate::config::ProcessEnv
        .var(&cfg.admin_token_env)
        .and_then(AdminToken::new);
    run_with(cfg, admin_token).await
}

/// [`run`] with the admin token given directly (the demo makes its own).
pub async fn run_with(cfg: Config, admin_token: Option<AdminToken>) -> Result<(), ServeError> {
    if cfg.allow_http_fetch_to_loopback {
        tracing::warn!(
            switch = "danger.allow_http_fetch_to_loopback",
            "plain-http fetches to loopback are allowed: anyone on this host can serve keys"
        );
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    if admin_token.is_none() {
        tracing::info!(env = %cfg.admin_token_env, "no admin token set: the admin API is disabled");
    }
    let state = build(&cfg, clock, admin_token).await?;
    let tls = cfg.tls.as_ref().map(tls_config).transpose()?;
    // Everything a refresher needs is read now, before binding: no half-start.
    fetch_policies(&cfg)?;

    let data = web::Data::from(state.clone());
    let server =
        HttpServer::new(move || App::new().app_data(data.clone()).configure(server::routes))
            .shutdown_timeout(SHUTDOWN_GRACE_SECS);
    let server = match tls {
        Some(tls) => server.bind_rustls_0_23(cfg.listen, tls),
        None => server.bind(cfg.listen),
    }
    .map_err(|source| ServeError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let bound: Vec<String> = server.addrs().iter().map(ToString::to_string).collect();
    tracing::info!(
        listen = %bound.join(","),
        issuer = %cfg.issuer,
        trust_domains = cfg.domains.len().saturating_sub(1),
        boundaries = cfg.boundaries.len(),
        state = %state.backend.describe(),
        "trustbroker is serving"
    );

    let maint_state = state.clone();
    let maint_cfg = cfg.clone();
    let maintenance = actix_web::rt::spawn(async move {
        let mut tick = actix_web::rt::time::interval(MAINTENANCE_EVERY);
        loop {
            tick.tick().await;
            maintain(&maint_state, &maint_cfg).await;
        }
    });
    // The file's live domains, then whatever admin objects the backend holds.
    crate::admin::sync_refreshers(&state, &cfg);
    crate::admin::refresh(&state, true).await?;
    let admin_poll = actix_web::rt::spawn(crate::admin::poll_loop(state.clone()));
    let result = server.run().await;
    maintenance.abort();
    admin_poll.abort();
    state.admin.stop();
    tracing::info!("trustbroker stopped");
    result.map_err(ServeError::Io)
}
