//! A `trustbroker serve` child process, stopped by PID when dropped.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The `trustbroker` binary built by `cargo test --workspace` (the broker crate's
/// integration tests make cargo build it next to the test executables).
pub fn binary() -> PathBuf {
    workspace_binary("broker", "trustbroker")
}

/// A workspace binary next to the test executables, built on demand when missing.
///
/// `cargo test --workspace` rebuilds these binaries before any test runs. Run alone
/// (`cargo test -p trustbroker-tests`), an existing but stale binary is used as it is:
/// build the workspace first when product code changed.
pub fn workspace_binary(package: &str, name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // A binary of this crate (`trustbroker-bench`) sits beside them; a test executable
    // one level down, in `deps/`.
    let beside = exe.parent().unwrap().join(name);
    if beside.is_file() {
        return beside;
    }
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join(name);
    if !bin.is_file() {
        // Run alone (`cargo test -p trustbroker-tests`): build it once.
        let status = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", package, "--bin", name])
            .status()
            .unwrap();
        assert!(status.success(), "building {name} failed");
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

/// A running broker.
pub struct Broker {
    child: Child,
    pub port: u16,
    pub base: String,
    pub dir: PathBuf,
    log: PathBuf,
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
        Self::launch(
            dir,
            config,
            port,
            "http",
            reqwest::blocking::Client::new(),
            env,
        )
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
        Self::launch(dir, config, port, scheme, client, &[])
    }

    fn launch(
        dir: &Path,
        config: &str,
        port: u16,
        scheme: &str,
        client: reqwest::blocking::Client,
        env: &[(&str, &str)],
    ) -> Self {
        let cfg_path = dir.join("broker.toml");
        std::fs::write(&cfg_path, config.replace("{PORT}", &port.to_string())).unwrap();
        let log = dir.join("broker.log");
        let out = std::fs::File::create(&log).unwrap();
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
        let mut b = Self {
            child,
            port,
            base: format!("{scheme}://127.0.0.1:{port}"),
            dir: dir.to_path_buf(),
            log,
        };
        b.wait_ready(&client);
        b
    }

    fn wait_ready(&mut self, client: &reqwest::blocking::Client) {
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
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
