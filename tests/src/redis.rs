//! Real `redis-server` processes on loopback ports, started per test and stopped by PID.
//! `.ci/run` installs `redis-server` when the machine lacks it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::broker::free_port;

/// One `redis-server` (nothing persisted), or a node of a cluster.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    cluster: bool,
    /// Append-only file, fsynced on every write: a SIGKILL loses nothing.
    durable: bool,
    _tmp: Option<tempfile::TempDir>,
}

/// Sends one inline command and returns the raw reply (enough for PING and CLUSTER INFO).
pub fn raw_command(port: u16, command: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

impl RedisServer {
    /// Starts a standalone server on a free port, keeping nothing on disk.
    pub fn start() -> Self {
        Self::standalone(false)
    }

    /// Starts a standalone server that survives being killed (AOF, fsync always).
    pub fn start_durable() -> Self {
        Self::standalone(true)
    }

    fn standalone(durable: bool) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut s = Self {
            child: None,
            port: free_port(),
            dir,
            cluster: false,
            durable,
            _tmp: Some(tmp),
        };
        s.start_on_a_free_port();
        s
    }

    fn cluster_node(dir: &Path) -> Self {
        let mut s = Self {
            child: None,
            port: free_port(),
            dir: dir.to_path_buf(),
            cluster: true,
            durable: false,
            _tmp: None,
        };
        s.start_on_a_free_port();
        s
    }

    /// Starts the server; if it exits at once because another process took its port
    /// between `free_port` and its bind (tests run in parallel), on another free port.
    fn start_on_a_free_port(&mut self) {
        for _ in 0..5 {
            if self.spawn() {
                return;
            }
            self.port = free_port();
        }
        panic!("redis-server exited at start on five free ports in a row");
    }

    /// Starts the server on its port and waits for PING: `false` if it exited first.
    fn spawn(&mut self) -> bool {
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        let aof = if self.durable { "yes" } else { "no" };
        cmd.args([
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            aof,
        ])
        .args(["--appendfsync", "always"])
        .args(["--protected-mode", "yes", "--loglevel", "warning"])
        .arg("--dir")
        .arg(&self.dir);
        if self.cluster {
            cmd.args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (.ci/run installs it)");
        self.child = Some(child);
        for _ in 0..200 {
            if raw_command(self.port, "PING").is_some_and(|r| r.starts_with("+PONG")) {
                return true;
            }
            if self
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some())
            {
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL by PID: an outage, not a shutdown).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (empty unless durable).
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.spawn(),
            "redis-server exited restarting on port {}",
            self.port
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A three-node Redis Cluster on loopback ports (no replicas).
#[derive(Debug)]
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    _tmp: tempfile::TempDir,
}

impl RedisCluster {
    pub fn start() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| RedisServer::cluster_node(tmp.path()))
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli must be installed (.ci/run installs it)");
        assert!(status.success(), "redis-cli --cluster create failed");
        for _ in 0..400 {
            if nodes.iter().all(|n| {
                raw_command(n.port, "CLUSTER INFO").is_some_and(|i| i.contains("cluster_state:ok"))
            }) {
                return Self { nodes, _tmp: tmp };
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("the cluster did not become ready");
    }

    /// `redis+cluster://h1,h2,h3`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }
}
