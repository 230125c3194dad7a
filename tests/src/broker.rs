//! A `trustbroker serve` child process, stopped by PID when dropped.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// The `trustbroker` binary built by `cargo test --workspace` (the broker crate's
/// integration tests make cargo build it next to the test executables).
pub fn binary() -> PathBuf {
    workspace_binary("broker", "trustbroker")
}

/// A workspace binary next to the test executables, brought up to date once per process.
///
/// `cargo test --workspace` builds these binaries before any test runs, and the build
/// here is then a no-op (under a second). Run alone (`cargo test -p trustbroker-tests`),
/// cargo builds this crate's tests but not the broker: without the build here, a stale
/// binary from before the last change to product code would be tested without a word.
pub fn workspace_binary(package: &str, name: &str) -> PathBuf {
    static BUILT: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let exe = std::env::current_exe().unwrap();
    // A binary of this crate (`trustbroker-bench`) sits beside them, and builds them
    // itself; a test executable one level down, in `deps/`.
    let beside = exe.parent().unwrap().join(name);
    if beside.is_file() {
        return beside;
    }
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join(name);
    {
        let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
        if !built.contains(name) {
            let mut cmd = Command::new(env!("CARGO"));
            cmd.args(["build", "-q", "-p", package, "--bin", name]);
            if dir.ends_with("release") {
                cmd.arg("--release");
            }
            let status = cmd.status().unwrap();
            assert!(status.success(), "building {name} failed");
            built.insert(name.to_owned());
        }
    }
    assert!(
        bin.is_file(),
        "{name} binary not found at {}",
        bin.display()
    );
    bin
}

/// A free TCP port on 127.0.0.1 (bound and released; the broker binds it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where a broker's stdout and stderr go.
enum Output {
    /// Straight to `broker.log`.
    File,
    /// Through a pipe, copied to `broker.log` by a thread.
    Pipe,
}

/// Room in the pipe for the broker's output while the copying thread waits on the disk:
/// 1 MiB (Linux's default limit for an unprivileged process) holds 100 ms or more of audit
/// lines at the benchmark's rates.
const PIPE_BYTES: i32 = 1 << 20;

/// The write end of a pipe whose every byte a thread copies to `file`, until every write
/// end is closed; and that thread.
fn pipe_to(mut file: std::fs::File) -> (std::os::fd::OwnedFd, std::thread::JoinHandle<()>) {
    let (mut reader, writer) = std::io::pipe().unwrap();
    // Best effort, said aloud: in a 64 KiB pipe, read 100 times a second, a broker
    // writing more than 6.4 MB/s would wait for room, and its rate would drop unexplained.
    if let Err(e) = nix::fcntl::fcntl(&writer, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_BYTES)) {
        eprintln!(
            "the broker's output pipe stays at its default size ({e}): fast phases may wait on it"
        );
    }
    let copier = std::thread::spawn(move || {
        // `read` and `write`, not `io::copy`: that splices, and a splice holds the pipe's
        // lock while the file's write waits for the disk, which blocks the broker's
        // writes all the same.
        let mut buf = vec![0u8; 1 << 20];
        let mut keep = true;
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return,
                // Past a failed write, drained and dropped: never a broker stuck on a
                // full pipe.
                Ok(n) => {
                    if keep && let Err(e) = file.write_all(&buf[..n]) {
                        eprintln!(
                            "the broker's log is no longer written ({e}); its output is dropped"
                        );
                        keep = false;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
            // What arrives meanwhile is read at once, as a log shipper polling its pipe
            // reads it: this thread wakes 100 times a second, not once per line.
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    (writer.into(), copier)
}

/// A running broker.
pub struct Broker {
    child: Child,
    pub port: u16,
    pub base: String,
    pub dir: PathBuf,
    log: PathBuf,
    /// The thread copying a piped broker's output to `log`.
    copier: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("base", &self.base)
            .field("pid", &self.child.id())
            .finish()
    }
}

impl Broker {
    /// Writes `config` (with `{PORT}` replaced) to `dir/broker.toml` and starts
    /// `trustbroker serve` on it, waiting until `/readyz` answers.
    pub fn start(dir: &Path, config: &str, port: u16) -> Self {
        Self::start_with(dir, config, port, "http", reqwest::blocking::Client::new())
    }

    /// As [`Broker::start`], with `TRUSTBROKER_ADMIN_TOKEN` set to `admin_token`.
    pub fn start_admin(dir: &Path, config: &str, port: u16, admin_token: &str) -> Self {
        Self::start_env(
            dir,
            config,
            port,
            &[("TRUSTBROKER_ADMIN_TOKEN", admin_token)],
        )
    }

    /// As [`Broker::start`], with `env` set for the broker process.
    pub fn start_env(dir: &Path, config: &str, port: u16, env: &[(&str, &str)]) -> Self {
        Self::start_env_to(dir, config, port, env, Output::File)
    }

    /// As [`Broker::start_env`], with the broker's output read through a pipe, as a
    /// container runtime or the journal reads it, and copied to the log by a thread of
    /// this process. For the benchmark: with 10 000 audit lines a second written straight
    /// to a file on this machine's ext4 disk, requests stalled together for 10 to 15 ms
    /// now and then (p99 at half rate 3.7 and 6.0 ms, against 2.0 ms with the file on
    /// tmpfs and 1.5 to 3.9 ms through this pipe, embedded store). A line a test looks for
    /// may still be in the pipe, so tests keep the file.
    pub fn start_env_piped(dir: &Path, config: &str, port: u16, env: &[(&str, &str)]) -> Self {
        Self::start_env_to(dir, config, port, env, Output::Pipe)
    }

    fn start_env_to(
        dir: &Path,
        config: &str,
        port: u16,
        env: &[(&str, &str)],
        output: Output,
    ) -> Self {
        let client = reqwest::blocking::Client::new();
        Self::launch(dir, config, port, "http", client, env, output)
    }

    /// As [`Broker::start`], for a broker serving `scheme` that `client` can reach (a
    /// TLS listener needs a client trusting its CA).
    pub fn start_with(
        dir: &Path,
        config: &str,
        port: u16,
        scheme: &str,
        client: reqwest::blocking::Client,
    ) -> Self {
        Self::launch(dir, config, port, scheme, client, &[], Output::File)
    }

    fn launch(
        dir: &Path,
        config: &str,
        port: u16,
        scheme: &str,
        client: reqwest::blocking::Client,
        env: &[(&str, &str)],
        output: Output,
    ) -> Self {
        let cfg_path = dir.join("broker.toml");
        std::fs::write(&cfg_path, config.replace("{PORT}", &port.to_string())).unwrap();
        let log = dir.join("broker.log");
        let (out, copier) = match output {
            Output::File => (std::fs::File::create(&log).unwrap().into(), None),
            Output::Pipe => {
                let (out, copier) = pipe_to(std::fs::File::create(&log).unwrap());
                (out, Some(copier))
            }
        };
        let mut cmd = Command::new(binary());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .args(["serve", "--config"])
            .arg(&cfg_path)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        // It holds this process's copies of the pipe's write end: gone, the copy ends when
        // the broker does.
        drop(cmd);
        let mut b = Self {
            child,
            port,
            base: format!("{scheme}://127.0.0.1:{port}"),
            dir: dir.to_path_buf(),
            log,
            copier,
        };
        b.wait_ready(&client);
        b
    }

    fn wait_ready(&mut self, client: &reqwest::blocking::Client) {
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Its last words may still be in the pipe: the copy ends once it is empty.
                if let Some(copier) = self.copier.take() {
                    let _ = copier.join();
                }
                panic!("trustbroker exited with {status}:\n{}", self.log());
            }
            if let Ok(r) = client.get(format!("{}/readyz", self.base)).send()
                && r.status().is_success()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("trustbroker did not become ready:\n{}", self.log());
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the broker printed so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The audit lines printed so far, parsed.
    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        self.log()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("decision").is_some())
            .collect()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        for _ in 0..300 {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("trustbroker did not exit after SIGTERM");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
