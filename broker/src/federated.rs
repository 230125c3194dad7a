//! Live federation in the broker: one refresh task per bundle endpoint keeps a
//! [`HeldBundle`] per domain, and subject validation reads keys from it (fail closed past
//! the outage cap) or, for statically configured domains, from the config.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use federation::fetch::{FetchPolicy, fetch};
use federation::held::{Accepted, HeldBundle};
use token_exchange::state::{BoxFuture, KeySource, StateError, StaticKeys};
use trust_bundles::{Clock, Jwk, SpiffeBundle};

use crate::config::{EndpointConfig, EndpointSource};

/// How often OIDC keys are refetched (cache headers are not read yet).
const OIDC_REFRESH: Duration = Duration::from_secs(300);

/// One fetch of a domain's keys, as a bundle.
async fn fetch_keys(source: &EndpointSource, policy: &FetchPolicy) -> Result<SpiffeBundle, String> {
    match source {
        EndpointSource::SpiffeBundle { url } => {
            let bytes = fetch(url, policy).await.map_err(|e| e.to_string())?;
            SpiffeBundle::parse(&bytes).map_err(|e| e.to_string())
        }
        EndpointSource::OidcDiscovery { issuer } => {
            let doc_url = format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            );
            let doc = fetch(&doc_url, policy)
                .await
                .map_err(|e| format!("discovery: {e}"))?;
            let jwks_uri = federation::oidc::jwks_uri(&doc, issuer).map_err(|e| e.to_string())?;
            // The JWKS is fetched under the same rules as the document: https (or
            // loopback http with the switch), checked addresses, no redirects.
            let jwks = fetch(&jwks_uri, policy)
                .await
                .map_err(|e| format!("jwks: {e}"))?;
            federation::oidc::jwks_bundle(&jwks, OIDC_REFRESH).map_err(|e| e.to_string())
        }
    }
}

/// Bundles fetched live, by domain name.
#[derive(Debug, Default)]
pub struct LiveBundles {
    domains: RwLock<HashMap<String, HeldBundle>>,
}

impl LiveBundles {
    pub fn new(domains: impl IntoIterator<Item = String>) -> Self {
        Self {
            domains: RwLock::new(
                domains
                    .into_iter()
                    .map(|d| (d, HeldBundle::default()))
                    .collect(),
            ),
        }
    }

    fn with<T>(&self, domain: &str, f: impl FnOnce(&mut HeldBundle) -> T) -> Option<T> {
        let mut map = self.domains.write().unwrap_or_else(PoisonError::into_inner);
        map.get_mut(domain).map(f)
    }

    fn lookup(&self, domain: &str, kid: &str, clock: &dyn Clock) -> Option<Option<Arc<Jwk>>> {
        let map = self.domains.read().unwrap_or_else(PoisonError::into_inner);
        map.get(domain).map(|held| {
            held.usable(clock.now())
                .and_then(|b| b.jwt_authority(kid))
                .cloned()
                .map(Arc::new)
        })
    }
}

/// Keys of every foreign domain: live ones first, configured ones otherwise.
pub struct FederatedKeys {
    pub live: Arc<LiveBundles>,
    pub fixed: StaticKeys,
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for FederatedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FederatedKeys").finish_non_exhaustive()
    }
}

impl KeySource for FederatedKeys {
    fn jwt_key<'a>(
        &'a self,
        domain: &'a str,
        kid: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<Jwk>>, StateError>> {
        let found = match self.live.lookup(domain, kid, self.clock.as_ref()) {
            Some(live) => live,
            None => self.fixed.get(domain, kid),
        };
        Box::pin(async move { Ok(found) })
    }
}

fn audit(domain: &str, decision: &'static str, reason: &str, detail: &str, sequence: Option<u64>) {
    tracing::info!(
        event = "bundle_refresh",
        decision,
        reason,
        domain,
        sequence,
        detail,
        "bundle refresh"
    );
}

/// Fetches `endpoint` whenever its held bundle is due, forever.
pub async fn refresh_loop(
    live: Arc<LiveBundles>,
    endpoint: EndpointConfig,
    policy: FetchPolicy,
    clock: Arc<dyn Clock>,
) {
    let domain = endpoint.domain.clone();
    loop {
        let now = clock.now();
        let next = live.with(&domain, |h| h.next_refresh(now)).unwrap_or(now);
        let wait = next.saturating_since(now);
        if !wait.is_zero() {
            actix_web::rt::time::sleep(wait.min(Duration::from_secs(3600))).await;
            continue;
        }
        let result = fetch_keys(&endpoint.source, &policy).await;
        let now = clock.now();
        match result {
            Ok(bundle) => {
                let seq = bundle.sequence();
                for s in bundle.skipped() {
                    audit(
                        &domain,
                        "deny",
                        "key_skipped",
                        &format!("keys[{}]: {}", s.index, s.reason),
                        seq,
                    );
                }
                match live.with(&domain, |h| h.offer(bundle, now)) {
                    Some(Ok(Accepted::Unchanged)) => {}
                    Some(Ok(Accepted::Changed {
                        added_kids,
                        removed_kids,
                    })) => audit(
                        &domain,
                        "allow",
                        "ok",
                        &format!("added {added_kids:?}, removed {removed_kids:?}"),
                        seq,
                    ),
                    Some(Ok(Accepted::Revoked)) => audit(
                        &domain,
                        "allow",
                        "revoked",
                        "keys: [] revokes every key",
                        seq,
                    ),
                    Some(Err(refused)) => {
                        audit(&domain, "deny", "refused", &refused.to_string(), seq)
                    }
                    None => return,
                }
            }
            Err(why) => {
                live.with(&domain, |h| h.fetch_failed(now));
                audit(&domain, "deny", "fetch_failed", &why, None);
            }
        }
    }
}
