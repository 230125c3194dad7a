//! Live federation in the broker: one refresh task per bundle endpoint keeps a
//! [`HeldBundle`] per domain, and subject validation reads keys from it (fail closed past
//! the outage cap) or, for statically configured domains, from the config.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use federation::fetch::{FetchPolicy, fetch, fetch_fresh};
use federation::held::{Accepted, HeldBundle};
use token_exchange::state::{BoxFuture, KeySource, StateError, StaticKeys};
use tokio::sync::{Notify, watch};
use trust_bundles::{Clock, Jwk, SpiffeBundle, UnixTime};

use crate::config::{EndpointConfig, EndpointSource};

/// How often OIDC keys are refetched when the JWKS response carries no cache headers.
/// With them, their lifetime is the refresh hint (clamped to [30 s, 1 day] like any hint),
/// so the outage cap follows it too: min(10 × lifetime, 24 h).
pub const OIDC_DEFAULT_REFRESH: Duration = Duration::from_secs(300);

/// One fetch of a domain's keys, as a bundle.
async fn fetch_keys(
    source: &EndpointSource,
    policy: &FetchPolicy,
    held: Option<SpiffeBundle>,
) -> Result<SpiffeBundle, String> {
    match source {
        EndpointSource::SpiffeBundle { url, spiffe_id } => {
            let mut policy = policy.clone();
            if let Some(id) = spiffe_id {
                // https_spiffe: the endpoint proves itself with an SVID of the bundle we
                // hold now; never a fallback to WebPKI.
                let bundle =
                    held.ok_or("https_spiffe: no bundle held to authenticate the endpoint")?;
                policy.spiffe = Some(federation::fetch::SpiffeEndpoint {
                    trust_domain: id.trust_domain(),
                    id: id.clone(),
                    bundle,
                });
            }
            let bytes = fetch(url, &policy).await.map_err(|e| e.to_string())?;
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
            let jwks = fetch_fresh(&jwks_uri, policy)
                .await
                .map_err(|e| format!("jwks: {e}"))?;
            let refresh = jwks.fresh_for.unwrap_or(OIDC_DEFAULT_REFRESH);
            federation::oidc::jwks_bundle(&jwks.body, refresh).map_err(|e| e.to_string())
        }
    }
}

/// How often an unknown `kid` may trigger a refetch, per domain (SPEC §7).
pub const UNKNOWN_KID_REFETCH_EVERY: Duration = Duration::from_secs(30);
/// How long a request waits for an on-demand refetch.
const REFETCH_WAIT: Duration = Duration::from_secs(5);

/// One live domain: its held bundle and the machinery of on-demand refetches.
#[derive(Debug)]
struct Slot {
    held: HeldBundle,
    last_on_demand: Option<UnixTime>,
    /// On-demand refetches asked for so far (a generation counter).
    requested: u64,
    /// The `requested` generation the latest fetch started at: a fetch that started
    /// before a request cannot answer it (it may predate the rotation).
    started: u64,
    wake: Arc<Notify>,
    /// The highest generation a completed fetch answered.
    done: watch::Sender<u64>,
}

impl Slot {
    fn new(bootstrap: Option<SpiffeBundle>, now: UnixTime) -> Self {
        Self {
            held: bootstrap
                .map(|b| HeldBundle::bootstrapped(b, now))
                .unwrap_or_default(),
            last_on_demand: None,
            requested: 0,
            started: 0,
            wake: Arc::new(Notify::new()),
            done: watch::channel(0).0,
        }
    }
}

/// Bundles fetched live, by domain name.
#[derive(Debug, Default)]
pub struct LiveBundles {
    domains: RwLock<HashMap<String, Slot>>,
}

/// What a request for an unknown `kid` may do.
enum Refetch {
    /// Wait until a fetch started at or after generation `.1` completes (asked for now,
    /// or by another request still pending).
    Wait(watch::Receiver<u64>, u64),
    /// Too soon after the last on-demand refetch: answer from what is held.
    No,
}

impl LiveBundles {
    /// Live domains, each with its bootstrap bundle when it has one.
    pub fn new(
        domains: impl IntoIterator<Item = (String, Option<SpiffeBundle>)>,
        now: UnixTime,
    ) -> Self {
        let slots = domains
            .into_iter()
            .map(|(d, bootstrap)| (d, Slot::new(bootstrap, now)))
            .collect();
        Self {
            domains: RwLock::new(slots),
        }
    }

    /// Makes the live domains exactly `wanted`: new ones start from their bootstrap (or
    /// nothing), vanished ones are dropped, existing ones keep what they hold.
    pub fn sync_domains(
        &self,
        wanted: impl IntoIterator<Item = (String, Option<SpiffeBundle>)>,
        now: UnixTime,
    ) {
        let wanted: HashMap<String, Option<SpiffeBundle>> = wanted.into_iter().collect();
        let mut map = self.domains.write().unwrap_or_else(PoisonError::into_inner);
        map.retain(|d, _| wanted.contains_key(d));
        for (d, bootstrap) in wanted {
            map.entry(d).or_insert_with(|| Slot::new(bootstrap, now));
        }
    }

    /// Per live domain: the age of its held keys, and whether they may be used now.
    pub fn status(&self, now: UnixTime) -> Vec<(String, Option<Duration>, bool)> {
        let map = self.domains.read().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<_> = map
            .iter()
            .map(|(d, s)| (d.clone(), s.held.age(now), s.held.usable(now).is_some()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn with<T>(&self, domain: &str, f: impl FnOnce(&mut Slot) -> T) -> Option<T> {
        let mut map = self.domains.write().unwrap_or_else(PoisonError::into_inner);
        map.get_mut(domain).map(f)
    }

    fn lookup(&self, domain: &str, kid: &str, now: UnixTime) -> Option<Option<Arc<Jwk>>> {
        let map = self.domains.read().unwrap_or_else(PoisonError::into_inner);
        map.get(domain).map(|slot| {
            slot.held
                .usable(now)
                .and_then(|b| b.jwt_authority(kid))
                .cloned()
                .map(Arc::new)
        })
    }

    /// An unknown `kid` for `domain` at `now`: start a refetch if none ran in the last
    /// 30 s, or join the one in flight (single flight: one fetch however many ask).
    fn request_refetch(&self, domain: &str, now: UnixTime) -> Refetch {
        self.with(domain, |slot| {
            if slot.requested > *slot.done.borrow() {
                return Refetch::Wait(slot.done.subscribe(), slot.requested);
            }
            let allowed = slot
                .last_on_demand
                .is_none_or(|t| now.saturating_since(t) >= UNKNOWN_KID_REFETCH_EVERY);
            if !allowed {
                return Refetch::No;
            }
            slot.requested = slot.requested.wrapping_add(1);
            slot.last_on_demand = Some(now);
            slot.wake.notify_one();
            Refetch::Wait(slot.done.subscribe(), slot.requested)
        })
        .unwrap_or(Refetch::No)
    }
}

/// Keys of every foreign domain: live ones first, configured ones otherwise.
pub struct FederatedKeys {
    pub live: Arc<LiveBundles>,
    /// Configured keys (`bundle_file`, `jwks_file`, admin bundles); replaced whole.
    pub fixed: RwLock<Arc<StaticKeys>>,
    pub clock: Arc<dyn Clock>,
}

impl FederatedKeys {
    pub fn set_fixed(&self, keys: StaticKeys) {
        *self.fixed.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
    }
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
        Box::pin(async move {
            let now = self.clock.now();
            match self.live.lookup(domain, kid, now) {
                None => Ok(self
                    .fixed
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(domain, kid)),
                Some(Some(key)) => Ok(Some(key)),
                // A key we do not hold: perhaps the domain rotated. Refetch (at most once
                // per 30 s, one fetch for all askers), then look again.
                Some(None) => match self.live.request_refetch(domain, now) {
                    Refetch::No => Ok(None),
                    Refetch::Wait(mut rx, generation) => {
                        let answered = rx.wait_for(|done| *done >= generation);
                        let _ = actix_web::rt::time::timeout(REFETCH_WAIT, answered).await;
                        Ok(self.live.lookup(domain, kid, self.clock.now()).flatten())
                    }
                },
            }
        })
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
    let Some(wake) = live.with(&endpoint.domain, |s| s.wake.clone()) else {
        return;
    };
    loop {
        let now = clock.now();
        let (next, on_demand) = live
            .with(&endpoint.domain, |s| {
                (s.held.next_refresh(now), s.requested > s.started)
            })
            .unwrap_or((now, false));
        let wait = next.saturating_since(now);
        if !wait.is_zero() && !on_demand {
            tokio::select! {
                () = actix_web::rt::time::sleep(wait.min(Duration::from_secs(3600))) => {}
                () = wake.notified() => {}
            }
            continue;
        }
        if !refresh_once(&live, &endpoint, &policy, &*clock).await {
            return;
        }
    }
}

/// One fetch of `endpoint`, offered to its held bundle, audited; then everyone waiting
/// on it is released. `false` when the domain is not live (nothing to refresh).
pub async fn refresh_once(
    live: &LiveBundles,
    endpoint: &EndpointConfig,
    policy: &FetchPolicy,
    clock: &dyn Clock,
) -> bool {
    let domain = endpoint.domain.as_str();
    let Some((held, generation)) = live.with(domain, |s| {
        s.started = s.requested;
        (s.held.held().cloned(), s.requested)
    }) else {
        return false;
    };
    let result = fetch_keys(&endpoint.source, policy, held).await;
    let now = clock.now();
    match result {
        Ok(bundle) => {
            let seq = bundle.sequence();
            for s in bundle.skipped() {
                audit(
                    domain,
                    "deny",
                    "key_skipped",
                    &format!("keys[{}]: {}", s.index, s.reason),
                    seq,
                );
            }
            match live.with(domain, |s| s.held.offer(bundle, now)) {
                Some(Ok(Accepted::Unchanged)) | None => {}
                Some(Ok(Accepted::Changed {
                    added_kids,
                    removed_kids,
                })) => audit(
                    domain,
                    "allow",
                    "ok",
                    &format!("added {added_kids:?}, removed {removed_kids:?}"),
                    seq,
                ),
                Some(Ok(Accepted::Revoked)) => audit(
                    domain,
                    "allow",
                    "revoked",
                    "keys: [] revokes every key",
                    seq,
                ),
                Some(Err(refused)) => audit(domain, "deny", "refused", &refused.to_string(), seq),
            }
        }
        Err(why) => {
            live.with(domain, |s| s.held.fetch_failed(now));
            audit(domain, "deny", "fetch_failed", &why, None);
        }
    }
    // Release everyone whose request this fetch answers.
    live.with(domain, |s| {
        s.done.send_if_modified(|done| {
            let newer = generation > *done;
            if newer {
                *done = generation;
            }
            newer
        });
    })
    .is_some()
}
