//! The real `tandem` binary as a child process on a port the OS picks, with
//! its own data directory, killed on Drop; and a cluster of them on one
//! Redis. The binary is the caller's: a test of the server crate passes
//! `env!("CARGO_BIN_EXE_tandem")`, the bench the one built beside it.
//!
//! Must not import: Tandem's code beyond `tandem_core::protocol` types —
//! the server is a process here.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::redis::RedisServer;
use crate::TIMEOUT;

/// Shared by every instance a test starts (clustered mode requires one).
pub const TEST_JWT_SECRET: &str = "test-secret-0123456789abcdef0123456789";

/// A running server process.
pub struct TestServer {
    child: Option<Child>,
    pub addr: String,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Anonymous mode, fresh data directory, plus `env` overrides.
    pub fn start(bin: impl AsRef<Path>, env: &[(&str, &str)]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut s = Self::start_in(bin, &dir, env);
        s._tmp = Some(tmp);
        s
    }

    /// Like [`TestServer::start`], with the server's log written to `log`.
    pub fn start_logged(bin: impl AsRef<Path>, env: &[(&str, &str)], log: &Path) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut s = Self::spawn(bin.as_ref(), &dir, env, Some(log));
        s._tmp = Some(tmp);
        s
    }

    /// A server on an existing data directory (for restarts).
    pub fn start_in(bin: impl AsRef<Path>, dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::spawn(bin.as_ref(), dir, env, None)
    }

    /// The test settings: a cleared environment, anonymous access, quick
    /// snapshots, quiet logs, the shared signing secret, registrations
    /// unlimited, no checksum checks; then `env`.
    fn spawn(bin: &Path, dir: &Path, env: &[(&str, &str)], log: Option<&Path>) -> Self {
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("DATA_DIR", dir)
            .env("ALLOW_ANONYMOUS", "true")
            .env("SNAPSHOT_INTERVAL_MS", "200")
            .env("RUST_LOG", "error")
            .env("JWT_SECRET", TEST_JWT_SECRET)
            // Tests make many accounts from one address; the abuse tests
            // set their own limit.
            .env("REGISTRATIONS_PER_HOUR", "100000")
            // Checks only where a test asks for them: many tests read
            // frames in an exact order.
            .env("CHECKSUM_EVERY", "0")
            .envs(mode_env())
            .current_dir(dir)
            .stderr(match log {
                Some(p) => Stdio::from(std::fs::File::create(p).unwrap()),
                None => Stdio::inherit(),
            });
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::launch(cmd, dir).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Start `cmd` (a `tandem` command with the caller's environment,
    /// `DATA_DIR` = `dir`, and stderr) and wait until it says where it
    /// listens. `Err` says how it ended when it exited first.
    pub fn launch(mut cmd: Command, dir: &Path) -> Result<Self, String> {
        cmd.stdout(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start tandem: {e}"))?;
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(a) = l.strip_prefix("listening on http://") {
                        break a.trim().to_owned();
                    }
                }
                _ => {
                    return Err(format!(
                        "tandem exited before listening: {:?}",
                        child.wait()
                    ))
                }
            }
        };
        // Keep draining stdout so the child never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Ok(Self {
            child: Some(child),
            addr,
            data_dir: dir.to_path_buf(),
            _tmp: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Send `sig` (`-STOP`, `-CONT`) to the process.
    pub fn signal(&self, sig: &str) {
        crate::signal(self.pid(), sig);
    }

    /// The process's resident memory (KiB), from /proc.
    pub fn rss_kb(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .expect("host:port")
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, doc: &str, query: &str) -> String {
        format!("ws://{}/ws/{}?{}", self.addr, doc, query)
    }

    /// SIGTERM and wait for exit.
    pub fn sigterm(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
        let start = std::time::Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "server did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// How the process ended, if it has (killed: `None`).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// SIGKILL and wait.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Take ownership of the temp dir so it outlives this server.
    pub fn take_dir(&mut self) -> Option<tempfile::TempDir> {
        self._tmp.take()
    }

    /// `/metrics`, as Prometheus text.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.http("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `/readyz`: its status and body.
    pub async fn readiness(&self) -> (u16, String) {
        readiness(&self.addr).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = reqwest::get(self.http(path)).await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Live content and version of a document, via REST.
    pub async fn document(&self, doc: &str) -> (String, u64) {
        let (st, v) = self.get(&format!("/api/documents/{doc}")).await;
        assert_eq!(st, 200, "{v}");
        (
            v["content"].as_str().unwrap().to_owned(),
            v["version"].as_u64().unwrap(),
        )
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `n` instances of `bin` on one Redis, sharing one data directory (the
/// store).
pub fn cluster(
    bin: impl AsRef<Path>,
    redis: &RedisServer,
    n: usize,
    env: &[(&str, &str)],
) -> (tempfile::TempDir, Vec<TestServer>) {
    cluster_on(bin, &redis.url(), n, env)
}

/// `n` instances of `bin` on the Redis at `url` (one server, or a
/// cluster's seed list with `REDIS_CLUSTER=true` in `env`), sharing one
/// data directory (the store).
pub fn cluster_on(
    bin: impl AsRef<Path>,
    url: &str,
    n: usize,
    env: &[(&str, &str)],
) -> (tempfile::TempDir, Vec<TestServer>) {
    let dir = tempfile::tempdir().unwrap();
    let url = url.to_owned();
    let servers = (0..n)
        .map(|i| {
            let id = format!("inst{i}");
            let mut e: Vec<(&str, &str)> = vec![("REDIS_URL", &url), ("INSTANCE_ID", &id)];
            e.extend_from_slice(env);
            TestServer::start_in(bin.as_ref(), dir.path(), &e)
        })
        .collect();
    (dir, servers)
}

/// `/readyz` of the server at `addr` (host:port): its status and body.
pub async fn readiness(addr: &str) -> (u16, String) {
    let r = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Settings every server of this test run gets (before the test's own):
/// `TANDEM_TEST_ENV="COMMIT_LEADER=true"` (space-separated `K=V`) runs a
/// suite in another mode, as `scripts/test` does for the clustered suites.
fn mode_env() -> Vec<(String, String)> {
    std::env::var("TANDEM_TEST_ENV")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The value of the series `name` (with its labels, if any, as printed:
/// `tandem_storage_failing{part="commit"}`) in Prometheus text; 0 when
/// absent.
pub fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}
