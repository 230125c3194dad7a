//! The bundle held for one federated trust domain, and the rules for replacing it.

use std::time::Duration;

use trust_bundles::bundle::MIN_REFRESH_HINT;
use trust_bundles::{SpiffeBundle, UnixTime};

/// Longest a domain's last good keys serve when its endpoint is down (SPEC §7), before
/// the refresh-hint × 10 rule is applied.
pub const MAX_STALENESS: Duration = Duration::from_secs(24 * 60 * 60);
/// How many refresh hints an outage may last before the domain fails closed.
pub const STALENESS_HINTS: u32 = 10;

/// Why a fetched bundle was not taken. The held bundle stays.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("spiffe_sequence {offered} is lower than the held {held} (rollback)")]
    Rollback { held: u64, offered: u64 },
    #[error("the bundle dropped spiffe_sequence after one was held")]
    SequenceDropped,
}

/// What accepting a fetched bundle did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Same keys as held; only the freshness moved.
    Unchanged,
    /// New keys: what was added and removed, by `kid` (JWT) and count (X.509).
    Changed {
        added_kids: Vec<String>,
        removed_kids: Vec<String>,
    },
    /// `"keys": []`: the domain revoked every key; nothing it signed validates now.
    Revoked,
}

/// Whether the domain's keys may be used now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Never fetched nor bootstrapped: nothing to serve.
    Unknown,
    /// Within the refresh hint.
    Fresh,
    /// Past the hint (an outage, or a refresh not yet done) but within the cap.
    Stale { age_secs: u64 },
    /// Past min(10 × hint, 24 h): fail closed for this domain only.
    Expired { age_secs: u64 },
}

/// The bundle held for one domain.
#[derive(Debug, Clone, Default)]
pub struct HeldBundle {
    bundle: Option<SpiffeBundle>,
    /// When the held bundle was last confirmed by a successful fetch (or bootstrap).
    confirmed_at: Option<UnixTime>,
    /// When the last attempt (success or failure) happened, for pacing.
    attempted_at: Option<UnixTime>,
    failures: u32,
}

fn kids(b: &SpiffeBundle) -> Vec<String> {
    b.jwt_authorities()
        .iter()
        .map(|a| a.kid.as_str().to_owned())
        .collect()
}

impl HeldBundle {
    /// Starts from a configured bundle (`https_spiffe` bootstrap, or `bundle_file`).
    pub fn bootstrapped(bundle: SpiffeBundle, now: UnixTime) -> Self {
        Self {
            bundle: Some(bundle),
            confirmed_at: Some(now),
            attempted_at: None,
            failures: 0,
        }
    }

    /// The held bundle, if its keys may be used at `now` (fails closed past the cap).
    pub fn usable(&self, now: UnixTime) -> Option<&SpiffeBundle> {
        match self.freshness(now) {
            Freshness::Fresh | Freshness::Stale { .. } => self.bundle.as_ref(),
            Freshness::Unknown | Freshness::Expired { .. } => None,
        }
    }

    /// The held bundle whatever its age (for serving diagnostics, never for verifying).
    pub fn held(&self) -> Option<&SpiffeBundle> {
        self.bundle.as_ref()
    }

    /// How long ago the held bundle was last confirmed (by a fetch or bootstrap).
    pub fn age(&self, now: UnixTime) -> Option<std::time::Duration> {
        self.confirmed_at.map(|at| now.saturating_since(at))
    }

    pub fn freshness(&self, now: UnixTime) -> Freshness {
        let (Some(b), Some(at)) = (&self.bundle, self.confirmed_at) else {
            return Freshness::Unknown;
        };
        let age = now.saturating_since(at);
        let cap = (b.refresh_hint() * STALENESS_HINTS).min(MAX_STALENESS);
        if age <= b.refresh_hint() {
            Freshness::Fresh
        } else if age <= cap {
            Freshness::Stale {
                age_secs: age.as_secs(),
            }
        } else {
            Freshness::Expired {
                age_secs: age.as_secs(),
            }
        }
    }

    /// When to fetch next: at the hint after the last success; after a failure, back off
    /// (doubling from 30 s, capped at the hint). Never more than once per 30 s.
    pub fn next_refresh(&self, now: UnixTime) -> UnixTime {
        let hint = self
            .bundle
            .as_ref()
            .map_or(MIN_REFRESH_HINT, SpiffeBundle::refresh_hint);
        let Some(attempted) = self.attempted_at else {
            return now;
        };
        let wait = if self.failures == 0 {
            hint
        } else {
            let backoff = MIN_REFRESH_HINT.saturating_mul(1 << self.failures.min(10));
            backoff.min(hint.max(MIN_REFRESH_HINT))
        };
        attempted
            .checked_add(wait.max(MIN_REFRESH_HINT))
            .unwrap_or(attempted)
    }

    /// A fetch failed (network, TLS, parse, profile check): keep the last good keys.
    pub fn fetch_failed(&mut self, now: UnixTime) {
        self.attempted_at = Some(now);
        self.failures = self.failures.saturating_add(1);
    }

    /// Offers a fetched, parsed and authenticated bundle.
    pub fn offer(&mut self, fetched: SpiffeBundle, now: UnixTime) -> Result<Accepted, Refused> {
        self.attempted_at = Some(now);
        if let Some(held) = &self.bundle {
            match (held.sequence(), fetched.sequence()) {
                (Some(h), Some(o)) if o < h => {
                    self.failures = self.failures.saturating_add(1);
                    return Err(Refused::Rollback {
                        held: h,
                        offered: o,
                    });
                }
                (Some(_), None) => {
                    self.failures = self.failures.saturating_add(1);
                    return Err(Refused::SequenceDropped);
                }
                _ => {}
            }
        }
        self.failures = 0;
        let outcome = match &self.bundle {
            _ if fetched.is_empty() => Accepted::Revoked,
            Some(held) if *held == fetched => Accepted::Unchanged,
            held => {
                let before = held.as_ref().map(kids).unwrap_or_default();
                let after = kids(&fetched);
                Accepted::Changed {
                    added_kids: after
                        .iter()
                        .filter(|k| !before.contains(k))
                        .cloned()
                        .collect(),
                    removed_kids: before
                        .iter()
                        .filter(|k| !after.contains(k))
                        .cloned()
                        .collect(),
                }
            }
        };
        self.bundle = Some(fetched);
        self.confirmed_at = Some(now);
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(seq: Option<u64>, hint: u64, kids: &[&str]) -> SpiffeBundle {
        // A real EC key (the RFC 7515 A.3 example), under each kid.
        let keys: Vec<String> = kids
            .iter()
            .map(|k| format!(r#"{{"use":"jwt-svid","kid":"{k}","kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}}"#))
            .collect();
        let seq = seq
            .map(|s| format!(r#","spiffe_sequence":{s}"#))
            .unwrap_or_default();
        SpiffeBundle::parse(
            format!(
                r#"{{"keys":[{}],"spiffe_refresh_hint":{hint}{seq}}}"#,
                keys.join(",")
            )
            .as_bytes(),
        )
        .unwrap()
    }

    fn t(s: u64) -> UnixTime {
        UnixTime::from_secs(s)
    }

    #[test]
    fn nothing_is_usable_before_the_first_bundle() {
        let h = HeldBundle::default();
        assert_eq!(h.freshness(t(0)), Freshness::Unknown);
        assert!(h.usable(t(0)).is_none());
        assert_eq!(h.next_refresh(t(5)), t(5));
    }

    #[test]
    fn rotation_reports_added_and_removed_kids() {
        let mut h = HeldBundle::default();
        assert!(matches!(
            h.offer(bundle(Some(1), 300, &["a"]), t(0)),
            Ok(Accepted::Changed { .. })
        ));
        assert_eq!(
            h.offer(bundle(Some(1), 300, &["a"]), t(10)),
            Ok(Accepted::Unchanged)
        );
        assert_eq!(
            h.offer(bundle(Some(2), 300, &["a", "b"]), t(20)),
            Ok(Accepted::Changed {
                added_kids: vec!["b".into()],
                removed_kids: vec![]
            })
        );
        assert_eq!(
            h.offer(bundle(Some(3), 300, &["b"]), t(30)),
            Ok(Accepted::Changed {
                added_kids: vec![],
                removed_kids: vec!["a".into()]
            })
        );
        assert!(h.usable(t(30)).unwrap().jwt_authority("a").is_none());
    }

    #[test]
    fn rollback_is_refused_and_the_held_bundle_stays() {
        let mut h = HeldBundle::default();
        h.offer(bundle(Some(5), 300, &["new"]), t(0)).unwrap();
        assert_eq!(
            h.offer(bundle(Some(4), 300, &["old"]), t(60)),
            Err(Refused::Rollback {
                held: 5,
                offered: 4
            })
        );
        assert_eq!(
            h.offer(bundle(None, 300, &["old"]), t(61)),
            Err(Refused::SequenceDropped)
        );
        assert!(h.usable(t(61)).unwrap().jwt_authority("new").is_some());
        // An equal sequence is not a rollback.
        assert!(h.offer(bundle(Some(5), 300, &["new"]), t(62)).is_ok());
    }

    #[test]
    fn empty_keys_revoke_the_domain() {
        let mut h = HeldBundle::default();
        h.offer(bundle(Some(1), 300, &["a"]), t(0)).unwrap();
        assert_eq!(
            h.offer(bundle(Some(2), 300, &[]), t(10)),
            Ok(Accepted::Revoked)
        );
        assert!(h.usable(t(10)).unwrap().is_empty());
    }

    #[test]
    fn outages_serve_last_good_keys_then_fail_closed() {
        // Hint 300 s: stale after 300 s, closed after 10 × 300 s.
        let mut h = HeldBundle::default();
        h.offer(bundle(Some(1), 300, &["a"]), t(0)).unwrap();
        assert_eq!(h.freshness(t(300)), Freshness::Fresh);
        h.fetch_failed(t(300));
        assert_eq!(h.freshness(t(301)), Freshness::Stale { age_secs: 301 });
        assert!(h.usable(t(3000)).is_some());
        assert!(h.usable(t(3001)).is_none());
        assert_eq!(h.freshness(t(3001)), Freshness::Expired { age_secs: 3001 });
        // A successful fetch brings the domain back.
        h.offer(bundle(Some(1), 300, &["a"]), t(4000)).unwrap();
        assert!(h.usable(t(4000)).is_some());
    }

    #[test]
    fn the_cap_is_24_hours_for_long_hints() {
        let mut h = HeldBundle::default();
        h.offer(bundle(Some(1), 86_400, &["a"]), t(0)).unwrap();
        assert!(h.usable(t(86_400)).is_some());
        assert!(h.usable(t(86_401)).is_none(), "not 10 days");
    }

    #[test]
    fn refresh_pacing() {
        let mut h = HeldBundle::default();
        h.offer(bundle(Some(1), 600, &["a"]), t(1000)).unwrap();
        assert_eq!(h.next_refresh(t(1000)), t(1600));
        h.fetch_failed(t(1600));
        assert_eq!(h.next_refresh(t(1600)), t(1660));
        h.fetch_failed(t(1660));
        assert_eq!(h.next_refresh(t(1660)), t(1780));
        for i in 0..10 {
            h.fetch_failed(t(2000 + i));
        }
        assert_eq!(
            h.next_refresh(t(2009)),
            t(2609),
            "backoff never exceeds the hint"
        );
        // Never more often than every 30 s, even with a 30 s hint.
        let mut fast = HeldBundle::default();
        fast.offer(bundle(Some(1), 1, &["a"]), t(0)).unwrap();
        assert_eq!(fast.next_refresh(t(0)), t(30));
    }

    #[test]
    fn bootstrap_counts_as_confirmed() {
        let h = HeldBundle::bootstrapped(bundle(Some(1), 300, &["a"]), t(100));
        assert_eq!(h.freshness(t(100)), Freshness::Fresh);
        assert_eq!(
            h.next_refresh(t(100)),
            t(100),
            "fetch at once after bootstrap"
        );
    }
}
