//! The local API: HTTP/1.1 over a Unix socket, one request per connection. The caller is
//! identified by the kernel (SO_PEERCRED), never by anything it sends.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use serde::Deserialize;
use serde_json::json;
use token_exchange::attestation::ProcFacts;
use token_exchange::attestation::{EvidenceClaims, EvidenceCnf, MAX_EVIDENCE_AGE, encode_evidence};
use token_exchange::types::Jkt;
use trust_bundles::{Clock, Stopwatch};

use crate::config::Registrations;
use crate::identity::Identity;
use crate::procfs::ProcSource;

/// Largest request head and body accepted.
const MAX_HEAD: usize = 8 * 1024;
const MAX_BODY: usize = 4 * 1024;
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 64;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything a request needs.
pub struct Enforcer {
    pub identity: Arc<RwLock<Identity>>,
    pub registrations: Registrations,
    pub procs: Arc<dyn ProcSource>,
    pub clock: Arc<dyn Clock>,
    /// Attested processes, watched until they exit.
    pub watch: Arc<std::sync::Mutex<crate::watch::Watchlist>>,
}

impl std::fmt::Debug for Enforcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enforcer")
            .field("registrations", &self.registrations.0.len())
            .finish_non_exhaustive()
    }
}

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: serde_json::Value,
}

fn reply(status: u16, body: serde_json::Value) -> Reply {
    Reply { status, body }
}

fn error(status: u16, code: &str) -> Reply {
    reply(status, json!({"error": code}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EvidenceRequest {
    nonce: String,
    jkt: String,
}

impl Enforcer {
    /// The caller's facts, read as soon as it connects: a process that connects and only
    /// then `exec`s a registered binary is judged by what it was when it connected.
    pub fn facts_at_accept(&self, pid: u32) -> Option<ProcFacts> {
        match self.procs.facts(pid) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(pid, error = %e, "caller's /proc facts unreadable");
                None
            }
        }
    }

    /// `POST /v1/evidence` for the caller whose facts were read at accept.
    pub fn evidence(&self, facts: Option<ProcFacts>, body: &[u8]) -> Reply {
        let Ok(req) = serde_json::from_slice::<EvidenceRequest>(body) else {
            return error(400, "invalid_request");
        };
        if req.jkt.parse::<Jkt>().is_err() || req.nonce.is_empty() || req.nonce.len() > 256 {
            return error(400, "invalid_request");
        }
        let Some(facts) = facts else {
            return error(403, "no_registration");
        };
        let pid = facts.pid;
        let Some(reg) = self.registrations.find(&facts) else {
            tracing::info!(event = "evidence", decision = "deny", reason = "no_registration", pid, uid = facts.uid, exe = %facts.exe, "no registration matches the caller");
            return error(403, "no_registration");
        };
        let identity = self.identity.read().unwrap_or_else(PoisonError::into_inner);
        let now = self.clock.now().as_secs();
        let claims = EvidenceClaims {
            iss: identity.state.spiffe_id.clone(),
            sub: reg.spiffe_id.to_string(),
            nonce: req.nonce,
            cnf: EvidenceCnf { jkt: req.jkt },
            iat: now,
            exp: now + MAX_EVIDENCE_AGE.as_secs(),
            proc: facts.clone(),
        };
        let chain = match identity.chain() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "node certificate unreadable");
                return error(500, "server_error");
            }
        };
        let mut sign_err = None;
        let evidence = encode_evidence(&claims, &chain, |m| match identity.sign(m) {
            Ok(s) => s,
            Err(e) => {
                sign_err = Some(e);
                Vec::new()
            }
        });
        let evidence = match (evidence, sign_err) {
            (Ok(ev), None) => ev,
            _ => return error(500, "server_error"),
        };
        // The PID may have been reused, or the process may have exec'd, while we worked: it
        // must still be the one whose facts we signed (same start, same image).
        match self.procs.facts(pid) {
            Ok(now)
                if now.start_time == facts.start_time
                    && now.exe == facts.exe
                    && now.exe_sha256 == facts.exe_sha256 => {}
            _ => {
                tracing::warn!(pid, "caller changed while evidence was made; discarded");
                return error(403, "no_registration");
            }
        }
        let watched = self
            .watch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(pid, facts.start_time, &claims.cnf.jkt);
        if !watched {
            tracing::warn!(
                pid,
                "watch list full: this workload's exit will not revoke its tokens"
            );
        }
        tracing::info!(event = "evidence", decision = "allow", reason = "ok", pid, workload = %reg.spiffe_id, "evidence issued");
        reply(
            200,
            json!({"evidence": evidence, "expires_in": MAX_EVIDENCE_AGE.as_secs()}),
        )
    }

    /// Routes one parsed request from `pid` (facts read now).
    pub fn handle(&self, pid: u32, method: &str, path: &str, body: &[u8]) -> Reply {
        self.route(self.facts_at_accept(pid), method, path, body)
    }

    fn route(&self, facts: Option<ProcFacts>, method: &str, path: &str, body: &[u8]) -> Reply {
        match (method, path) {
            ("POST", "/v1/evidence") => self.evidence(facts, body),
            ("GET", "/healthz") => reply(200, json!({"status": "ok"})),
            _ => error(404, "not_found"),
        }
    }
}

/// A reader that gives up once the whole request has taken longer than its deadline, so a
/// client trickling a byte at a time cannot hold a connection slot.
struct Deadline<R> {
    inner: R,
    watch: Stopwatch,
}

impl<R: Read> Read for Deadline<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.watch.elapsed() > IO_TIMEOUT {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request deadline",
            ));
        }
        self.inner.read(buf)
    }
}

/// Reads one request: (method, path, body). `None` for anything malformed, too large or
/// too slow.
fn read_request(stream: &UnixStream) -> Option<(String, String, Vec<u8>)> {
    let deadline = Deadline {
        inner: stream.take((MAX_HEAD + MAX_BODY) as u64),
        watch: Stopwatch::start(),
    };
    let mut r = BufReader::new(deadline);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut head = line.len();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        head += h.len();
        if head > MAX_HEAD {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().ok()?;
        }
    }
    if length > MAX_BODY {
        return None;
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).ok()?;
    Some((method, path, body))
}

fn write_reply(mut stream: &UnixStream, r: &Reply) {
    let body = r.body.to_string();
    let reason = match r.status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Error",
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        r.status,
        body.len()
    );
}

fn serve_one(enforcer: &Enforcer, stream: &UnixStream) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    // SPEC §6: the caller is who the kernel says it is.
    let pid = match getsockopt(stream, PeerCredentials) {
        Ok(cred) => u32::try_from(cred.pid()).ok(),
        Err(_) => None,
    };
    let facts = pid.and_then(|pid| enforcer.facts_at_accept(pid));
    let reply = match (pid, read_request(stream)) {
        (Some(_), Some((method, path, body))) => enforcer.route(facts, &method, &path, &body),
        (None, _) => error(403, "no_registration"),
        (_, None) => error(400, "invalid_request"),
    };
    write_reply(stream, &reply);
}

/// Binds `socket` (replacing a stale socket file) and serves until the process ends.
pub fn run(enforcer: Arc<Enforcer>, socket: &Path) -> std::io::Result<()> {
    if socket.exists() {
        std::fs::remove_file(socket)?;
    }
    // Any local process may ask; the kernel tells us who it is. The mode is set through
    // the umask at bind, not by path afterwards (a path can be swapped for a symlink).
    let previous = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let bound = UnixListener::bind(socket);
    nix::sys::stat::umask(previous);
    let listener = bound?;
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        while active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            std::thread::sleep(Duration::from_millis(5));
        }
        active.fetch_add(1, Ordering::SeqCst);
        let (e, a) = (enforcer.clone(), active.clone());
        std::thread::spawn(move || {
            serve_one(&e, &stream);
            a.fetch_sub(1, Ordering::SeqCst);
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use aws_lc_rs::signature::{self, EcdsaKeyPair};
    use base64::Engine as _;
    use token_exchange::attestation::ProcFacts;
    use trust_bundles::ManualClock;

    use super::*;
    use crate::config::{Registration, Selectors};
    use crate::identity::NodeState;
    use crate::procfs::ProcError;

    /// A `/proc` that reports fixed facts, and a start time that can change between the
    /// first look and the re-check (PID reuse).
    struct FakeProc {
        facts: ProcFacts,
        start_time_on_recheck: AtomicU64,
        calls: AtomicUsize,
    }

    impl ProcSource for FakeProc {
        fn facts(&self, pid: u32) -> Result<ProcFacts, ProcError> {
            if pid == self.facts.pid {
                // The first look sees the original start time; later looks see the re-check.
                let calls = self.calls.fetch_add(1, Ordering::SeqCst);
                let start_time = if calls == 0 {
                    self.facts.start_time
                } else {
                    self.start_time_on_recheck.load(Ordering::SeqCst)
                };
                Ok(ProcFacts {
                    start_time,
                    ..self.facts.clone()
                })
            } else {
                Err(ProcError::Unreadable {
                    pid,
                    why: "gone".into(),
                })
            }
        }
        fn start_time(&self, _pid: u32) -> Result<u64, ProcError> {
            Ok(self.start_time_on_recheck.load(Ordering::SeqCst))
        }
    }

    fn facts() -> ProcFacts {
        ProcFacts {
            pid: 77,
            start_time: 1000,
            uid: 1000,
            gid: 1000,
            exe: "/usr/bin/api".into(),
            exe_sha256: "ab".repeat(32),
            cgroup: "0::/a".into(),
            container_id: None,
        }
    }

    fn enforcer(recheck: u64) -> Enforcer {
        let key = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let rc = rcgen::KeyPair::try_from(key.to_pkcs8v1().unwrap().as_ref()).unwrap();
        let cert = rcgen::CertificateParams::default()
            .self_signed(&rc)
            .unwrap();
        Enforcer {
            identity: Arc::new(RwLock::new(Identity {
                key,
                state: NodeState {
                    broker: String::new(),
                    node: "n1".into(),
                    spiffe_id: "spiffe://t/enforcer/n1".into(),
                    certificate: base64::engine::general_purpose::STANDARD
                        .encode(cert.der().as_ref()),
                    ca: String::new(),
                    issued_at: 0,
                    expires_at: 1,
                },
            })),
            registrations: Registrations(vec![Registration {
                spiffe_id: "spiffe://t/api".parse().unwrap(),
                selectors: Selectors {
                    uid: Some(1000),
                    ..Selectors::default()
                },
            }]),
            procs: Arc::new(FakeProc {
                facts: facts(),
                start_time_on_recheck: AtomicU64::new(recheck),
                calls: AtomicUsize::new(0),
            }),
            clock: Arc::new(ManualClock::new(trust_bundles::UnixTime::from_secs(5000))),
            watch: Arc::default(),
        }
    }

    const REQ: &[u8] = br#"{"nonce":"n","jkt":"NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"}"#;

    #[test]
    fn evidence_for_the_registered_process() {
        let e = enforcer(1000);
        let r = e.handle(77, "POST", "/v1/evidence", REQ);
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body["evidence"].as_str().unwrap().split('.').count() == 3);
        // The process is now watched for its exit.
        assert_eq!(e.watch.lock().unwrap().watched(), 1);
    }

    #[test]
    fn a_reused_pid_gets_no_evidence() {
        // The process exited and another took its PID while the evidence was signed.
        let r = enforcer(1001).handle(77, "POST", "/v1/evidence", REQ);
        assert_eq!(r, error(403, "no_registration"));
    }

    #[test]
    fn a_vanished_or_unregistered_caller_gets_403() {
        assert_eq!(
            enforcer(1000).handle(78, "POST", "/v1/evidence", REQ),
            error(403, "no_registration")
        );
        let mut e = enforcer(1000);
        e.registrations.0[0].selectors.uid = Some(0);
        assert_eq!(
            e.handle(77, "POST", "/v1/evidence", REQ),
            error(403, "no_registration")
        );
        assert_eq!(
            enforcer(1000).handle(77, "GET", "/v1/evidence", REQ).status,
            404
        );
    }
}
