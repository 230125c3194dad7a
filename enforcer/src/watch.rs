//! Workloads the enforcer attested, watched until they exit (SPEC §6, issue: workload
//! state changes). When one exits, its DPoP key is reported to the broker, which revokes
//! every token bound to it: a token outliving its process is worth nothing.

use std::collections::{BTreeSet, HashMap};

use crate::procfs::ProcSource;

/// Most processes watched at once. Past it, new ones are not watched (their tokens still
/// expire on their own) and a warning says so.
pub const MAX_WATCHED: usize = 4096;
/// Most exits held for a broker that cannot be reached; the oldest are dropped first.
pub const MAX_PENDING: usize = 4096;
/// Most exits in one report (the broker's limit).
pub const MAX_EXITS_PER_REPORT: usize = 256;

/// One exited workload process, as reported to the broker.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Exited {
    pub jkt: String,
    pub pid: u32,
    pub start_time: u64,
}

/// Attested processes (pid, start time) and the keys their evidence bound.
#[derive(Debug, Default)]
pub struct Watchlist {
    live: HashMap<(u32, u64), BTreeSet<String>>,
    pending: Vec<Exited>,
}

impl Watchlist {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that evidence binding `jkt` was issued to this process. `false` when the
    /// list is full.
    pub fn record(&mut self, pid: u32, start_time: u64, jkt: &str) -> bool {
        let key = (pid, start_time);
        if !self.live.contains_key(&key) && self.live.len() >= MAX_WATCHED {
            return false;
        }
        self.live.entry(key).or_default().insert(jkt.to_owned());
        true
    }

    pub fn watched(&self) -> usize {
        self.live.len()
    }

    /// Moves every process that is no longer running to the pending reports, and returns
    /// all pending reports (up to `max`) for sending.
    pub fn sweep(&mut self, procs: &dyn ProcSource, max: usize) -> Vec<Exited> {
        let gone: Vec<(u32, u64)> = self
            .live
            .keys()
            .filter(|(pid, start)| !procs.is_running(*pid, *start))
            .copied()
            .collect();
        for key in gone {
            if let Some(jkts) = self.live.remove(&key) {
                for jkt in jkts {
                    self.pending.push(Exited {
                        jkt,
                        pid: key.0,
                        start_time: key.1,
                    });
                }
            }
        }
        if self.pending.len() > MAX_PENDING {
            let excess = self.pending.len() - MAX_PENDING;
            self.pending.drain(..excess);
        }
        self.pending.iter().take(max).cloned().collect()
    }

    /// The first `n` pending reports were delivered.
    pub fn delivered(&mut self, n: usize) {
        let n = n.min(self.pending.len());
        self.pending.drain(..n);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Mutex;

    use token_exchange::attestation::ProcFacts;

    use super::*;
    use crate::procfs::ProcError;

    /// Processes that run until the test ends them.
    #[derive(Default)]
    struct Procs(Mutex<HashSet<(u32, u64)>>);

    impl ProcSource for Procs {
        fn facts(&self, pid: u32) -> Result<ProcFacts, ProcError> {
            Err(ProcError::Malformed { pid, file: "stat" })
        }
        fn start_time(&self, pid: u32) -> Result<u64, ProcError> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .find(|(p, _)| *p == pid)
                .map(|(_, s)| *s)
                .ok_or(ProcError::Malformed { pid, file: "stat" })
        }
    }

    #[test]
    fn exits_and_pid_reuse_are_reported_once_until_delivered() {
        let procs = Procs::default();
        procs
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend([(10, 100), (11, 200)]);
        let mut w = Watchlist::new();
        assert!(w.record(10, 100, "k1"));
        assert!(w.record(10, 100, "k2"));
        assert!(w.record(11, 200, "k3"));
        assert_eq!(w.sweep(&procs, 10), vec![]);

        // 10 exits; 11's pid is reused by another process (another start time).
        {
            let mut p = procs.0.lock().unwrap_or_else(|e| e.into_inner());
            p.remove(&(10, 100));
            p.remove(&(11, 200));
            p.insert((11, 999));
        }
        let mut got: Vec<String> = w.sweep(&procs, 10).into_iter().map(|e| e.jkt).collect();
        got.sort();
        assert_eq!(got, ["k1", "k2", "k3"]);
        assert_eq!(w.watched(), 0);
        // Not delivered: offered again; delivered: gone.
        assert_eq!(w.sweep(&procs, 2).len(), 2);
        w.delivered(2);
        assert_eq!(w.sweep(&procs, 10).len(), 1);
        w.delivered(1);
        assert!(w.sweep(&procs, 10).is_empty());
    }

    #[test]
    fn the_list_is_bounded() {
        let mut w = Watchlist::new();
        for pid in 0..MAX_WATCHED {
            assert!(w.record(u32::try_from(pid).unwrap_or(0), 1, "k"));
        }
        assert!(!w.record(u32::MAX, 1, "k"), "full");
        assert!(w.record(0, 1, "another key of a watched process"));
    }
}
