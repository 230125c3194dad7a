//! Foreign trust domains: how the broker follows their keys safely (SPEC §7).
//!
//! [`held::HeldBundle`] is the policy of a federated bundle, pure and clock-driven: when
//! to refresh, which fetched bundles to accept (never a rollback), when a domain revokes
//! itself (`"keys": []`), and how long the last good keys serve through an outage before
//! the domain fails closed. The network side (bundle endpoints, OIDC discovery, outbound
//! safety) builds on it behind a feature.
//!
//! What it will not do: fall back from one endpoint profile to another, or keep serving
//! keys past the outage cap.

pub mod cache;
#[cfg(feature = "net")]
pub mod fetch;
pub mod held;
pub mod oidc;
pub mod outbound;
