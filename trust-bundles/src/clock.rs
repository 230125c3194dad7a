//! Time, injected. This module is the one place in the workspace that reads the wall clock;
//! everything else takes a [`Clock`] so tests move time by hand and never sleep.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

/// Seconds since the Unix epoch, the unit of JWT `exp`/`iat`/`nbf` and certificate validity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixTime(u64);

impl UnixTime {
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs)
    }

    pub const fn as_secs(self) -> u64 {
        self.0
    }

    /// `self + d`, or `None` past the end of time.
    pub fn checked_add(self, d: Duration) -> Option<Self> {
        self.0.checked_add(d.as_secs()).map(Self)
    }

    /// `self - d`, or `None` before the epoch.
    pub fn checked_sub(self, d: Duration) -> Option<Self> {
        self.0.checked_sub(d.as_secs()).map(Self)
    }

    /// How long after `earlier` this is; zero when it is not later.
    pub fn saturating_since(self, earlier: Self) -> Duration {
        Duration::from_secs(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for UnixTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<UnixTime> for rustls_pki_types::UnixTime {
    fn from(t: UnixTime) -> Self {
        rustls_pki_types::UnixTime::since_unix_epoch(Duration::from_secs(t.0))
    }
}

/// A source of the current time.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> UnixTime;
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixTime {
        #[expect(
            clippy::disallowed_methods,
            reason = "the single sanctioned wall-clock read of the workspace"
        )]
        let now = std::time::SystemTime::now();
        // A clock set before 1970 reads as the epoch: every `exp` is then in the future
        // but every `nbf`/`iat` check still holds, and certificates are "not yet valid".
        UnixTime(now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
    }
}

/// A clock that moves only when told to. For tests and simulations.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(start: UnixTime) -> Self {
        Self(AtomicU64::new(start.0))
    }

    pub fn set(&self, t: UnixTime) {
        self.0.store(t.0, Ordering::SeqCst);
    }

    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_secs(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixTime {
        UnixTime(self.0.load(Ordering::SeqCst))
    }
}

/// A monotonic stopwatch for measuring latency (never for deciding validity: that is
/// [`Clock`]'s job). Lives here so the workspace has one module that reads clocks.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch(std::time::Instant);

impl Stopwatch {
    pub fn start() -> Self {
        #[expect(
            clippy::disallowed_methods,
            reason = "monotonic time for latency measurement only"
        )]
        let now = std::time::Instant::now();
        Self(now)
    }

    pub fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(UnixTime::from_secs(1_000));
        assert_eq!(c.now(), UnixTime::from_secs(1_000));
        c.advance(Duration::from_secs(61));
        assert_eq!(c.now().as_secs(), 1_061);
        c.set(UnixTime::from_secs(5));
        assert_eq!(c.now().as_secs(), 5);
    }

    #[test]
    fn checked_arithmetic() {
        let t = UnixTime::from_secs(u64::MAX - 1);
        assert_eq!(t.checked_add(Duration::from_secs(2)), None);
        assert_eq!(
            UnixTime::from_secs(1).checked_sub(Duration::from_secs(2)),
            None
        );
        assert_eq!(
            UnixTime::from_secs(10).saturating_since(UnixTime::from_secs(20)),
            Duration::ZERO
        );
    }

    #[test]
    fn system_clock_is_after_2024() {
        assert!(SystemClock.now().as_secs() > 1_700_000_000);
    }
}
