//! Runtime facts of a process, from the kernel's `/proc` (behind [`ProcSource`] so unit
//! tests use a fake). Nothing here trusts what the process says about itself.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aws_lc_rs::digest;
use token_exchange::attestation::ProcFacts;

/// Largest executable hashed, a budget against pathological files.
pub const MAX_EXE_BYTES: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("process {pid} is gone or unreadable: {why}")]
    Unreadable { pid: u32, why: String },
    #[error("/proc/{pid}/{file} is malformed")]
    Malformed { pid: u32, file: &'static str },
}

/// Where runtime facts come from.
pub trait ProcSource: Send + Sync {
    /// All facts of `pid`, uid and gid as the kernel reports them.
    fn facts(&self, pid: u32) -> Result<ProcFacts, ProcError>;
    /// Just the start time, to check after signing that `pid` is still the same process.
    fn start_time(&self, pid: u32) -> Result<u64, ProcError>;
    /// Whether the process that started at `start_time` as `pid` is still running (not
    /// gone, not a zombie, not replaced by another process under a reused pid).
    fn is_running(&self, pid: u32, start_time: u64) -> bool {
        self.start_time(pid).is_ok_and(|s| s == start_time)
    }
}

/// What identifies a file's content for the hash cache: device, inode, size, and ctime to
/// the nanosecond — a user can set mtime, but every write or `touch` moves ctime, which no
/// user can set back.
type FileIdentity = (u64, u64, u64, i64, i64);

/// Most cached digests; the cache is cleared when full (a budget, not an LRU).
const MAX_CACHED_HASHES: usize = 1024;

/// The real `/proc`. Executable digests are cached by [`FileIdentity`], so a replaced or
/// rewritten binary is hashed again and an unchanged one is not.
#[derive(Debug)]
pub struct RealProc {
    root: PathBuf,
    hashes: Mutex<HashMap<FileIdentity, String>>,
}

impl Default for RealProc {
    fn default() -> Self {
        Self::new("/proc")
    }
}

impl RealProc {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            hashes: Mutex::new(HashMap::new()),
        }
    }

    fn read(&self, pid: u32, file: &str) -> Result<String, ProcError> {
        std::fs::read_to_string(self.root.join(pid.to_string()).join(file)).map_err(|e| {
            ProcError::Unreadable {
                pid,
                why: e.to_string(),
            }
        })
    }

    fn exe_sha256(&self, pid: u32, exe: &Path) -> Result<String, ProcError> {
        use std::os::unix::fs::MetadataExt;
        // /proc/<pid>/exe opens the inode the process runs, even if the path was replaced.
        let link = self.root.join(pid.to_string()).join("exe");
        let unreadable = |e: std::io::Error| ProcError::Unreadable {
            pid,
            why: format!("{}: {e}", exe.display()),
        };
        let mut file = std::fs::File::open(&link).map_err(unreadable)?;
        let meta = file.metadata().map_err(unreadable)?;
        let key = (
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.ctime(),
            meta.ctime_nsec(),
        );
        if let Some(h) = self
            .hashes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(h.clone());
        }
        if meta.size() > MAX_EXE_BYTES {
            return Err(ProcError::Malformed { pid, file: "exe" });
        }
        let mut ctx = digest::Context::new(&digest::SHA256);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf).map_err(unreadable)?;
            if n == 0 {
                break;
            }
            ctx.update(buf.get(..n).unwrap_or_default());
        }
        let hex: String = ctx
            .finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut cache = self.hashes.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED_HASHES {
            cache.clear();
        }
        cache.insert(key, hex.clone());
        Ok(hex)
    }
}

/// `/proc/<pid>/stat` field 22 (starttime). The command name (field 2) may contain spaces
/// and parentheses, so fields are counted after the last `)`.
/// The state letter of `/proc/<pid>/stat` (field 3): `Z` and `X` are exited processes.
pub fn parse_state(stat: &str) -> Option<char> {
    stat.get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

pub fn parse_start_time(stat: &str) -> Option<u64> {
    let after = stat.get(stat.rfind(')')? + 1..)?;
    // After ")" come fields 3.. ; starttime is field 22, the 20th of them.
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Real uid and gid from `/proc/<pid>/status` (`Uid:`/`Gid:` lines, first column).
pub fn parse_ids(status: &str) -> Option<(u32, u32)> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    Some((field("Uid:")?, field("Gid:")?))
}

/// Cgroup subtrees that only a container runtime (root) can create. A delegated subtree
/// (`/user.slice/…`, rootless runtimes) lets its user name directories at will, so an id
/// found there proves nothing.
const RUNTIME_ROOTS: [&str; 5] = [
    "/system.slice/",
    "/kubepods",
    "/docker/",
    "/machine.slice/",
    "/lxc/",
];

/// A container id from a cgroup path: a 64-hex-digit token in the last path segment
/// (`docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>`, `/docker/<id>`), and
/// only under a runtime-owned root.
pub fn container_id(cgroup: &str) -> Option<String> {
    let path = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .or_else(|| cgroup.lines().next().and_then(|l| l.splitn(3, ':').nth(2)))?;
    if !RUNTIME_ROOTS.iter().any(|root| path.starts_with(root)) {
        return None;
    }
    let last = path.rsplit('/').next()?;
    let last = last.strip_suffix(".scope").unwrap_or(last);
    let id = last.rsplit('-').next()?;
    (id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then(|| id.to_owned())
}

impl ProcSource for RealProc {
    fn facts(&self, pid: u32) -> Result<ProcFacts, ProcError> {
        let start_time = self.start_time(pid)?;
        let (uid, gid) = parse_ids(&self.read(pid, "status")?).ok_or(ProcError::Malformed {
            pid,
            file: "status",
        })?;
        let exe = std::fs::read_link(self.root.join(pid.to_string()).join("exe")).map_err(|e| {
            ProcError::Unreadable {
                pid,
                why: e.to_string(),
            }
        })?;
        let exe_sha256 = self.exe_sha256(pid, &exe)?;
        // cgroup v2: one line "0::<path>"; v1: several; keep the whole text's first path.
        let cgroup_text = self.read(pid, "cgroup")?;
        let cgroup = cgroup_text
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .or_else(|| {
                cgroup_text
                    .lines()
                    .next()
                    .and_then(|l| l.splitn(3, ':').nth(2))
            })
            .unwrap_or_default()
            .to_owned();
        Ok(ProcFacts {
            pid,
            start_time,
            uid,
            gid,
            exe: exe.to_string_lossy().into_owned(),
            exe_sha256,
            container_id: container_id(&cgroup_text),
            cgroup,
        })
    }

    fn start_time(&self, pid: u32) -> Result<u64, ProcError> {
        parse_start_time(&self.read(pid, "stat")?).ok_or(ProcError::Malformed { pid, file: "stat" })
    }

    fn is_running(&self, pid: u32, start_time: u64) -> bool {
        self.read(pid, "stat").is_ok_and(|stat| {
            parse_start_time(&stat) == Some(start_time)
                && !matches!(parse_state(&stat), Some('Z' | 'X' | 'x') | None)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_hostile_command_names() {
        let stat = "4242 (evil) 1 2 3) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100 18446744073709551615";
        assert_eq!(parse_start_time(stat), Some(987_654));
        assert_eq!(parse_state(stat), Some('S'));
        assert_eq!(parse_state("9 (a) b) Z 1"), Some('Z'));
        assert_eq!(parse_start_time("no parens"), None);
        assert_eq!(parse_start_time("1 (x) S 1"), None);
    }

    #[test]
    fn ids_from_status() {
        let status = "Name:\tapi\nUid:\t1000\t1000\t1000\t1000\nGid:\t100\t100\t100\t100\n";
        assert_eq!(parse_ids(status), Some((1000, 100)));
        assert_eq!(parse_ids("Name: x\n"), None);
    }

    #[test]
    fn container_ids_from_cgroup_paths() {
        let id = "a".repeat(64);
        for path in [
            format!("0::/system.slice/docker-{id}.scope"),
            format!("0::/kubepods/burstable/pod1234/cri-containerd-{id}.scope"),
            format!("12:memory:/docker/{id}"),
        ] {
            assert_eq!(container_id(&path).as_deref(), Some(id.as_str()), "{path}");
        }
        assert_eq!(
            container_id("0::/user.slice/user-1000.slice/session-2.scope"),
            None
        );
        assert_eq!(container_id(&format!("0::/x/{}", "a".repeat(63))), None);
    }

    #[test]
    fn real_proc_reads_this_process() {
        let me = std::process::id();
        let f = RealProc::default().facts(me).unwrap();
        assert_eq!(f.pid, me);
        assert_eq!(f.exe_sha256.len(), 64);
        assert!(f.start_time > 0);
        assert_eq!(RealProc::default().start_time(me).unwrap(), f.start_time);
        assert!(RealProc::default().facts(u32::MAX).is_err());
    }
}
