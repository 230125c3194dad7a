//! The load generator: prepared HTTP/1.1 requests written on keep-alive connections,
//! closed-loop (as fast as the broker answers) or open-loop at a fixed rate. Latency runs
//! from each request's intended start, so a stalled broker shows in the numbers instead
//! of slowing the generator down (no coordinated omission).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// One request, ready to write.
pub struct Prepared(pub Vec<u8>);

impl Prepared {
    pub fn post(host: &str, path: &str, headers: &[(&str, &str)], form: &str) -> Self {
        let mut r = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            form.len()
        );
        for (k, v) in headers {
            r.push_str(k);
            r.push_str(": ");
            r.push_str(v);
            r.push_str("\r\n");
        }
        r.push_str("\r\n");
        r.push_str(form);
        Self(r.into_bytes())
    }
}

#[derive(Default)]
pub struct Outcome {
    /// Microseconds, from intended start to the last byte of the answer.
    pub latencies: Vec<u32>,
    /// Open loop: microseconds from each request's intended start to its first byte
    /// written, inside every latency above: the generator's own lag, and the wait for a
    /// free connection when all of them have a request in flight. A broker stall of
    /// `connections / rate` seconds or more shows here too, not only the generator's.
    pub lateness: Vec<u32>,
    /// Open loop: each latency's intended start, in microseconds from the run's start (for
    /// `--timeline`: a stall shows as a run of slow requests).
    pub sent: Vec<u32>,
    /// `status error` → count, for every answer but 200.
    pub errors: BTreeMap<String, u64>,
    /// Bodies of the 200 answers, when asked for (to chain tokens).
    pub bodies: Vec<Vec<u8>>,
    pub elapsed: Duration,
    /// The pool ran dry before the duration was up.
    pub exhausted: bool,
}

impl Outcome {
    pub fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// Adds a later run's answers to this one's (its time too).
    pub fn absorb(&mut self, other: Outcome) {
        self.latencies.extend(other.latencies);
        self.lateness.extend(other.lateness);
        self.sent.extend(other.sent);
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.bodies.extend(other.bodies);
        self.elapsed += other.elapsed;
        self.exhausted |= other.exhausted;
    }

    pub fn percentile(&self, sorted: &[u32], p: f64) -> f64 {
        if sorted.is_empty() {
            return 0.0;
        }
        let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        f64::from(sorted[i.min(sorted.len() - 1)]) / 1000.0
    }
}

struct Shared {
    reqs: Vec<Prepared>,
    next: AtomicUsize,
}

/// Where a connection takes its next request from.
enum Schedule {
    /// Closed loop: the next request in the pool, at once.
    Now,
    /// Open loop: indices and intended starts handed out by the pacer, on time.
    Paced(tokio::sync::Mutex<mpsc::UnboundedReceiver<(usize, Instant)>>),
}

/// Drives `reqs` at `addr` over `connections` keep-alive connections for `duration`:
/// closed-loop when `rate` is `None`, else one request every `1/rate` seconds.
///
/// Closed-loop with a non-zero `tick`, the generator wakes once per tick and answers every
/// connection that became ready meanwhile, instead of waking on each answer. It shares the
/// broker's cores: woken per answer it preempts a broker worker thousands of times a
/// second, and each broker `send` pays for waking it (about 35 µs of broker CPU per
/// exchange on a 2-core machine). A broker's callers are not on its cores in production.
///
/// Open loop never ticks, and is paced by a thread of its own: tokio's timer has a
/// resolution of 1 ms, and a request sent late by the generator counts as late against the
/// broker (latency runs from the schedule). Timed by the runtime, sends lagged their
/// schedule by 0.9 ms at the median and 2 to 2.6 ms at the p99; paced by the thread, by
/// 0.11 to 0.13 ms at the median (the tail is whatever the shared cores make it).
/// `Outcome::lateness` keeps the lag of every request so that a run shows what it was.
pub async fn run(
    addr: SocketAddr,
    reqs: Vec<Prepared>,
    connections: usize,
    duration: Duration,
    rate: Option<f64>,
    tick: Duration,
    keep_bodies: bool,
) -> Outcome {
    let count = reqs.len();
    let shared = Arc::new(Shared {
        reqs,
        next: AtomicUsize::new(0),
    });
    let start = Instant::now();
    let deadline = start + duration;
    let (schedule, pacer) = match rate {
        None => (Schedule::Now, None),
        Some(rate) => {
            let (tx, rx) = mpsc::unbounded_channel();
            let pacer = std::thread::spawn(move || pace(tx, start, deadline, rate, count));
            (Schedule::Paced(tokio::sync::Mutex::new(rx)), Some(pacer))
        }
    };
    let schedule = Arc::new(schedule);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let shared = shared.clone();
        let schedule = schedule.clone();
        tasks.push(tokio::spawn(async move {
            worker(addr, &shared, &schedule, start, deadline, keep_bodies).await
        }));
    }
    let done = Arc::new(AtomicBool::new(false));
    if rate.is_none() && !tick.is_zero() {
        let done = done.clone();
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                // Blocks this (the only) runtime thread on purpose: readiness piles up
                // meanwhile, and the yield lets the runtime collect all of it with one
                // `epoll_wait` and run every ready connection before this task again.
                std::thread::sleep(tick);
                tokio::task::yield_now().await;
            }
        });
    }
    let mut out = Outcome::default();
    for t in tasks {
        let Ok(w) = t.await else { continue };
        out.latencies.extend(w.latencies);
        out.lateness.extend(w.lateness);
        out.sent.extend(w.sent);
        for (k, v) in w.errors {
            *out.errors.entry(k).or_default() += v;
        }
        out.bodies.extend(w.bodies);
        out.exhausted |= w.exhausted;
    }
    done.store(true, Ordering::Relaxed);
    if let Some(p) = pacer {
        out.exhausted |= p.join().unwrap_or(false);
    }
    out.elapsed = start.elapsed().min(duration);
    if out.exhausted {
        out.elapsed = start.elapsed();
    }
    out
}

/// Hands out request `i` at `start + i/rate` (a thread sleep wakes within tens of
/// microseconds, not on the next millisecond), until the deadline. `true` if the pool ran
/// dry first.
fn pace(
    tx: mpsc::UnboundedSender<(usize, Instant)>,
    start: Instant,
    deadline: Instant,
    rate: f64,
    count: usize,
) -> bool {
    for i in 0.. {
        let intended = start + Duration::from_secs_f64(i as f64 / rate);
        if intended >= deadline {
            return false;
        }
        if i >= count {
            return true;
        }
        let now = Instant::now();
        if intended > now {
            std::thread::sleep(intended - now);
        }
        if tx.send((i, intended)).is_err() {
            return false;
        }
    }
    false
}

async fn worker(
    addr: SocketAddr,
    shared: &Shared,
    schedule: &Schedule,
    start: Instant,
    deadline: Instant,
    keep_bodies: bool,
) -> Outcome {
    let mut out = Outcome::default();
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        *out.errors.entry("connect".into()).or_default() += 1;
        return out;
    };
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let (i, intended) = match schedule {
            Schedule::Now => {
                let i = shared.next.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                (i, now)
            }
            Schedule::Paced(rx) => match rx.lock().await.recv().await {
                Some(next) => next,
                None => break,
            },
        };
        let Some(req) = shared.reqs.get(i) else {
            out.exhausted = true;
            break;
        };
        if matches!(schedule, Schedule::Paced(_)) {
            out.lateness
                .push(u32::try_from(intended.elapsed().as_micros()).unwrap_or(u32::MAX));
        }
        let answer = async {
            stream.write_all(&req.0).await?;
            read_response(&mut stream, &mut buf).await
        }
        .await;
        let latency = intended.elapsed();
        out.latencies
            .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
        if matches!(schedule, Schedule::Paced(_)) {
            let at = intended.saturating_duration_since(start).as_micros();
            out.sent.push(u32::try_from(at).unwrap_or(u32::MAX));
        }
        match answer {
            Ok((200, body)) => {
                if keep_bodies {
                    out.bodies.push(body);
                }
            }
            Ok((status, body)) => {
                let code = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
                    .unwrap_or_default();
                *out.errors.entry(format!("{status} {code}")).or_default() += 1;
            }
            Err(e) => {
                *out.errors.entry(format!("io {}", e.kind())).or_default() += 1;
                match TcpStream::connect(addr).await {
                    Ok(s) => stream = s,
                    Err(_) => break,
                }
            }
        }
    }
    out
}

/// Reads one HTTP/1.1 response with a `Content-Length` body.
async fn read_response(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<(u16, Vec<u8>)> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    buf.clear();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(bad("closed"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("head"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("status"))?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .ok_or_else(|| bad("no content-length"))?;
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(bad("closed"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok((status, buf[head_end..head_end + length].to_vec()))
}
