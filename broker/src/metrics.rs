//! `GET /metrics` (SPEC §9), in the OpenMetrics text format Prometheus scrapes: exchanges
//! by decision and reason, exchange latency, bundle age and usability per live domain,
//! in-process store sizes, and state-backend errors. Label values come from closed sets
//! (decisions, RFC error codes, configured domain names): nothing a caller sends becomes a
//! label.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Every metric the broker exports.
pub struct Metrics {
    registry: Registry,
    exchanges: Family<Labels, Counter>,
    latency: Histogram,
    state_errors: Counter,
    bundle_age: Family<Labels, Gauge<f64, AtomicU64>>,
    bundle_usable: Family<Labels, Gauge>,
    store_entries: Family<Labels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("trustbroker");
        let exchanges = Family::<Labels, Counter>::default();
        registry.register(
            "exchanges",
            "Token exchanges by decision and reason (the RFC error code, or ok)",
            exchanges.clone(),
        );
        // 250 µs … ~4 s.
        let latency = Histogram::new(exponential_buckets(0.000_25, 2.0, 15));
        registry.register(
            "exchange_duration_seconds",
            "Time from request to decision at /token",
            latency.clone(),
        );
        let state_errors = Counter::default();
        registry.register(
            "state_errors",
            "Requests refused because the state backend did not answer (503)",
            state_errors.clone(),
        );
        let bundle_age = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "bundle_age_seconds",
            "Seconds since a live trust domain's keys were last confirmed by a fetch",
            bundle_age.clone(),
        );
        let bundle_usable = Family::<Labels, Gauge>::default();
        registry.register(
            "bundle_usable",
            "1 when a live trust domain's keys may be used, 0 when it fails closed",
            bundle_usable.clone(),
        );
        let store_entries = Family::<Labels, Gauge>::default();
        registry.register(
            "store_entries",
            "Live entries in the in-process stores of spent nonces and of DPoP replay marks (embedded backend)",
            store_entries.clone(),
        );
        Self {
            registry,
            exchanges,
            latency,
            state_errors,
            bundle_age,
            bundle_usable,
            store_entries,
        }
    }

    /// One decision at `/token`.
    pub fn exchange(&self, decision: &'static str, reason: &'static str, elapsed: Duration) {
        self.exchanges
            .get_or_create(&vec![
                ("decision", decision.to_owned()),
                ("reason", reason.to_owned()),
            ])
            .inc();
        self.latency.observe(elapsed.as_secs_f64());
        if reason == "temporarily_unavailable" {
            self.state_errors.inc();
        }
    }

    /// A request outside `/token` refused because the backend did not answer.
    pub fn state_error(&self) {
        self.state_errors.inc();
    }

    /// The exposition, with the gauges read now.
    pub fn render(
        &self,
        domains: &[(String, Option<Duration>, bool)],
        stores: Option<(usize, usize)>,
    ) -> String {
        for (domain, age, usable) in domains {
            let l = vec![("domain", domain.clone())];
            if let Some(age) = age {
                self.bundle_age.get_or_create(&l).set(age.as_secs_f64());
            }
            self.bundle_usable.get_or_create(&l).set(i64::from(*usable));
        }
        if let Some((nonces, replay)) = stores {
            let gauge = |s: &str| {
                self.store_entries
                    .get_or_create(&vec![("store", s.to_owned())])
                    .clone()
            };
            gauge("nonces").set(i64::try_from(nonces).unwrap_or(i64::MAX));
            gauge("replay").set(i64::try_from(replay).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
