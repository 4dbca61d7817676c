//! Test harness: the real `tandem` binary on a random port with its own data
//! directory (killed on Drop), real WebSocket clients, and an editor that
//! speaks protocol v1 through the pure OT client.
#![allow(dead_code)]

pub mod proxy;
pub mod traces;
pub mod typist;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tandem::client::{OtClient, Outgoing};
use tandem::ot::Operation;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const TIMEOUT: Duration = Duration::from_secs(15);

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
    pub fn start(env: &[(&str, &str)]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut s = Self::start_in(&dir, env);
        s._tmp = Some(tmp);
        s
    }

    /// Like [`TestServer::start`], with the server's log written to `log`.
    pub fn start_logged(env: &[(&str, &str)], log: &Path) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut s = Self::spawn(&dir, env, Some(log));
        s._tmp = Some(tmp);
        s
    }

    /// A server on an existing data directory (for restarts).
    pub fn start_in(dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::spawn(dir, env, None)
    }

    fn spawn(dir: &Path, env: &[(&str, &str)], log: Option<&Path>) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tandem"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("DATA_DIR", dir)
            .env("ALLOW_ANONYMOUS", "true")
            .env("SNAPSHOT_INTERVAL_MS", "200")
            .env("RUST_LOG", "error")
            .env("JWT_SECRET", TEST_JWT_SECRET)
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(match log {
                Some(p) => Stdio::from(std::fs::File::create(p).unwrap()),
                None => Stdio::inherit(),
            });
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start tandem");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(a) = l.strip_prefix("listening on http://") {
                        break a.trim().to_owned();
                    }
                }
                _ => panic!("tandem exited before listening: {:?}", child.wait()),
            }
        };
        // Keep draining stdout so the child never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child: Some(child),
            addr,
            data_dir: dir.to_path_buf(),
            _tmp: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
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

type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A raw protocol connection.
pub struct Ws {
    pub ws: Stream,
}

impl Ws {
    pub async fn connect(url: &str) -> Result<(Ws, Value), tokio_tungstenite::tungstenite::Error> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        let mut ws = Ws { ws };
        let init = ws.recv().await;
        assert_eq!(init["type"], "init", "{init}");
        Ok((ws, init))
    }

    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, s: &str) {
        self.ws.send(Message::Text(s.into())).await.unwrap();
    }

    /// Next JSON message (skipping control frames); panics on close/timeout.
    pub async fn recv(&mut self) -> Value {
        match self.try_recv(TIMEOUT).await {
            Ok(Some(v)) => v,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Ok(None) on timeout; Err(close frame) when the server closed.
    pub async fn try_recv(&mut self, wait: Duration) -> Result<Option<Value>, Option<CloseFrame>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Ok(None),
                Ok(None) | Ok(Some(Err(_))) => return Err(None),
                Ok(Some(Ok(Message::Text(t)))) => {
                    return Ok(Some(serde_json::from_str(&t).unwrap()))
                }
                Ok(Some(Ok(Message::Close(f)))) => return Err(f),
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Next message of type `ty`, skipping presence and cursor chatter.
    pub async fn recv_type(&mut self, ty: &str) -> Value {
        loop {
            let v = self.recv().await;
            if v["type"] == ty {
                return v;
            }
            let t = v["type"].as_str().unwrap_or("");
            assert!(
                matches!(t, "user_joined" | "user_left" | "cursor" | "meta"),
                "expected {ty}, got {v}"
            );
        }
    }

    /// The connection is open: a ping is answered.
    pub async fn assert_open(&mut self) {
        self.send(json!({"type": "ping"})).await;
        self.recv_type("pong").await;
    }

    /// Wait for the server to close; returns the close code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            match self.try_recv(TIMEOUT).await {
                Err(f) => return f.map(|f| u16::from(f.code)),
                Ok(None) => panic!("connection not closed"),
                Ok(Some(_)) => continue,
            }
        }
    }
}

/// A protocol-v1 editor: the pure OT client over a real socket.
pub struct Editor {
    pub ws: Ws,
    pub ot: OtClient,
    pub init: Value,
}

impl Editor {
    pub async fn join(server: &TestServer, doc: &str, user: &str, client: Option<&str>) -> Editor {
        let q = match client {
            Some(c) => format!("user_id={user}&name={user}&client={c}"),
            None => format!("user_id={user}&name={user}"),
        };
        let (ws, init) = Ws::connect(&server.ws_url(doc, &q)).await.unwrap();
        let ot = OtClient::new(
            init["client"].as_str().unwrap(),
            init["content"].as_str().unwrap(),
            init["version"].as_u64().unwrap(),
            init["seq"].as_u64().unwrap(),
        );
        Editor { ws, ot, init }
    }

    /// Reconnect with `client` and `version` (resume), then resend the
    /// in-flight op, as a real client does.
    pub async fn resume(&mut self, server: &TestServer, doc: &str, user: &str) -> Value {
        self.resume_at(&server.addr, doc, user).await.unwrap()
    }

    /// Resume on the server at `addr` (any instance).
    pub async fn resume_at(
        &mut self,
        addr: &str,
        doc: &str,
        user: &str,
    ) -> Result<Value, tokio_tungstenite::tungstenite::Error> {
        let q = format!(
            "user_id={user}&name={user}&client={}&version={}",
            self.ot.client_id, self.ot.version
        );
        let (ws, init) = Ws::connect(&format!("ws://{addr}/ws/{doc}?{q}")).await?;
        self.ws = ws;
        if init["resumed"] == false {
            // Too far behind to replay: start over from the full state.
            assert!(
                !self.ot.has_pending(),
                "pending edits cannot survive a full reload: {init}"
            );
            self.ot = OtClient::new(
                init["client"].as_str().unwrap(),
                init["content"].as_str().unwrap(),
                init["version"].as_u64().unwrap(),
                init["seq"].as_u64().unwrap(),
            );
        }
        if let Some(out) = self.ot.resend() {
            self.send_op(&out).await;
        }
        Ok(init)
    }

    /// Cut the connection abruptly (TCP shutdown, no close frame).
    pub async fn cut(&mut self) {
        use tokio::io::AsyncWriteExt;
        if let MaybeTlsStream::Plain(s) = self.ws.ws.get_mut() {
            let _ = s.shutdown().await;
        }
    }

    pub async fn send_op(&mut self, out: &Outgoing) {
        self.ws
            .send(json!({"type": "op", "version": out.version, "seq": out.seq, "op": out.op}))
            .await;
    }

    pub async fn edit(&mut self, op: Operation) {
        if let Some(out) = self.ot.local_edit(op).unwrap() {
            self.send_op(&out).await;
        }
    }

    /// Apply one server message to the OT client. As the contract asks of
    /// a client, an op refused with `internal` (not committed: backend
    /// trouble or contention) or `rate_limited` is kept and resent; any
    /// other refusal fails the test.
    pub async fn handle(&mut self, m: &Value) {
        match self.try_handle(m).await {
            Ok(()) => {}
            Err(e)
                if (e["code"] == "internal" || e["code"] == "rate_limited")
                    && e["seq"].as_u64() == self.ot.inflight_seq() =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if let Some(out) = self.ot.resend() {
                    self.send_op(&out).await;
                }
            }
            Err(e) => panic!("server refused: {e}"),
        }
    }

    /// Apply one server message; an `error` is returned to the caller.
    pub async fn try_handle(&mut self, m: &Value) -> Result<(), Value> {
        let next = match m["type"].as_str().unwrap() {
            "ack" => self
                .ot
                .on_ack(m["seq"].as_u64().unwrap(), m["version"].as_u64().unwrap())
                .unwrap(),
            "op" => {
                let op = Operation::from_json(&m["op"], usize::MAX).unwrap();
                self.ot
                    .on_remote(
                        m["version"].as_u64().unwrap(),
                        &op,
                        m["client"].as_str().unwrap(),
                        m["seq"].as_u64().unwrap(),
                    )
                    .unwrap()
            }
            "error" => return Err(m.clone()),
            _ => None,
        };
        if let Some(out) = next {
            self.send_op(&out).await;
        }
        Ok(())
    }

    /// Process messages for up to `wait`.
    pub async fn pump(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.ws.try_recv(left).await {
                Ok(Some(m)) => self.handle(&m).await,
                Ok(None) => return,
                Err(f) => panic!("closed: {f:?}"),
            }
        }
    }

    /// Process messages until nothing is pending and `version` is reached.
    pub async fn sync_to(&mut self, version: u64) {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while self.ot.has_pending() || self.ot.version < version {
            assert!(
                tokio::time::Instant::now() < deadline,
                "sync timed out at {}",
                self.ot.version
            );
            let m = self.ws.recv().await;
            self.handle(&m).await;
        }
    }

    /// Process until no op is pending.
    pub async fn settle(&mut self) {
        self.sync_to(0).await;
    }
}

pub const EMOJI_ALPHABET: &[&str] = &["a", "b", "c", " ", "\n", "é", "中", "😀", "👍🏽", "𝄞", "🇫🇷"];

/// A random single-splice edit of the editor's current text.
/// Flood `writer`'s document with 16 KiB insert/delete pairs until the
/// client `slow` is reported gone (true) or `edits` pass (false). Every edit
/// must be acknowledged within `limit`: a reader that never reads must not
/// stall a writer.
pub async fn flood_until_dropped(
    writer: &mut Editor,
    slow: &str,
    edits: usize,
    limit: Duration,
) -> bool {
    let big = "w".repeat(16 * 1024);
    for i in 0..edits {
        let len = writer.ot.len_chars();
        let op = if i % 2 == 0 {
            tandem::ot::splice(len, 0, 0, &big)
        } else {
            tandem::ot::splice(len, 0, len, "")
        };
        writer.edit(op).await;
        let start = std::time::Instant::now();
        let mut dropped = false;
        while writer.ot.has_pending() {
            let m = writer.ws.recv().await;
            if m["type"] == "user_left" && m["client"] == slow {
                dropped = true;
            }
            writer.handle(&m).await;
        }
        assert!(
            start.elapsed() < limit,
            "the writer stalled behind a slow reader"
        );
        if dropped {
            return true;
        }
    }
    false
}

pub fn random_edit(rng: &mut impl rand::Rng, len: usize) -> Operation {
    let pos = rng.gen_range(0..=len);
    let del = if len > pos && rng.gen_bool(0.3) {
        rng.gen_range(1..=(len - pos).min(4))
    } else {
        0
    };
    let mut ins: String = (0..rng.gen_range(0..4))
        .map(|_| EMOJI_ALPHABET[rng.gen_range(0..EMOJI_ALPHABET.len())])
        .collect();
    if del == 0 && ins.is_empty() {
        ins.push('x');
    }
    tandem::ot::splice(len, pos, del, &ins)
}

/// A throwaway `redis-server` on its own port and directory, killed on Drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    aof: bool,
}

/// Path of a server binary, or a clear message saying what to install.
pub fn require_binary(name: &str, package: &str) -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/usr/bin"])
    {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{name}` not found: these tests start a throwaway {name}. Install it (Debian/Ubuntu: `apt-get install {package}`; macOS: `brew install {package}`).");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    /// No persistence: a restart comes back empty.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// With `aof`, `appendonly yes` + `appendfsync always`: a restart keeps
    /// every acknowledged write.
    pub fn start_with(aof: bool) -> Self {
        let mut s = RedisServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            aof,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let bin = require_binary("redis-server", "redis-server");
        let mut cmd = Command::new(bin);
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--dir", self.dir.path().to_str().unwrap()])
        .args(["--appendonly", if self.aof { "yes" } else { "no" }])
        .args([
            "--appendfsync",
            "always",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        self.child = Some(cmd.spawn().expect("start redis-server"));
        let start = std::time::Instant::now();
        while !self.ping() {
            assert!(start.elapsed() < TIMEOUT, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILL, then start again on the same port and directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `n` instances on one Redis, sharing one data directory (the store).
pub fn cluster(
    redis: &RedisServer,
    n: usize,
    env: &[(&str, &str)],
) -> (tempfile::TempDir, Vec<TestServer>) {
    let dir = tempfile::tempdir().unwrap();
    let url = redis.url();
    let servers = (0..n)
        .map(|i| {
            let id = format!("inst{i}");
            let mut e: Vec<(&str, &str)> = vec![("REDIS_URL", &url), ("INSTANCE_ID", &id)];
            e.extend_from_slice(env);
            TestServer::start_in(dir.path(), &e)
        })
        .collect();
    (dir, servers)
}

/// A throwaway PostgreSQL cluster (initdb into a temp dir, its own port),
/// stopped on Drop. Runs as the `postgres` user when the tests run as root.
pub struct PgServer {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    child: Option<Child>,
}

/// A directory holding initdb, postgres and pg_isready together.
fn pg_bin_dir() -> PathBuf {
    let complete = |d: &Path| {
        ["initdb", "postgres", "pg_isready"]
            .iter()
            .all(|b| d.join(b).is_file())
    };
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.sort();
    versions.reverse();
    let path_dirs = std::env::var("PATH").unwrap_or_default();
    versions
        .into_iter()
        .chain(path_dirs.split(':').map(PathBuf::from))
        .find(|d| complete(d))
        .unwrap_or_else(|| {
            panic!("PostgreSQL server binaries (initdb, postgres, pg_isready) not found: these tests start a throwaway cluster. Install them (Debian/Ubuntu: `apt-get install postgresql`; macOS: `brew install postgresql`).")
        })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// `cmd args` as the postgres user when root (PostgreSQL refuses root).
fn pg_command(bin: &Path, args: &[&str]) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin).args(args);
        c
    } else {
        let mut c = Command::new(bin);
        c.args(args);
        c
    }
}

impl PgServer {
    pub fn start() -> Self {
        let bin = pg_bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("tandem-pg")
            .tempdir()
            .unwrap();
        if is_root() {
            assert!(Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir.path())
                .status()
                .unwrap()
                .success());
        }
        let data = dir.path().join("data");
        let out = pg_command(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )
        .stdout(Stdio::null())
        .output()
        .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut s = PgServer {
            port: free_port(),
            dir,
            bin,
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let data = self.dir.path().join("data");
        let port = self.port.to_string();
        let sock = self.dir.path().to_str().unwrap().to_owned();
        let child = pg_command(
            &self.bin.join("postgres"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-p",
                &port,
                "-k",
                &sock,
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ],
        )
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(self.dir.path().join("postgres.log"))
                .map_or(Stdio::null(), Stdio::from),
        )
        .spawn()
        .expect("start postgres");
        self.child = Some(child);
        let start = std::time::Instant::now();
        while !self.ready() {
            if start.elapsed() > TIMEOUT {
                let log = std::fs::read_to_string(self.dir.path().join("postgres.log"))
                    .unwrap_or_default();
                let probe = Command::new(self.bin.join("pg_isready"))
                    .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                    .output();
                panic!("postgres did not start: {log}\n{probe:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ready(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn postmaster_pid(&self) -> Option<String> {
        let pidfile = self.dir.path().join("data").join("postmaster.pid");
        std::fs::read_to_string(pidfile)
            .ok()?
            .lines()
            .next()
            .map(str::to_owned)
    }

    /// Fast shutdown (SIGINT to the postmaster), waiting until it is down.
    pub fn stop(&mut self) {
        if let Some(pid) = self.postmaster_pid() {
            let _ = Command::new("kill").args(["-INT", &pid]).status();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        let start = std::time::Instant::now();
        while self.postmaster_pid().is_some() && start.elapsed() < TIMEOUT {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Run one query with psql; unaligned, tuples only.
    pub fn query(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-d", "postgres", "-At", "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(pid) = self.postmaster_pid() {
            let _ = Command::new("kill").args(["-QUIT", &pid]).status();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }
}

/// Debian's nginx running the project's `deploy/nginx.conf`, rendered for
/// loopback (listen port, upstream servers, pid and temp paths).
pub struct NginxServer {
    child: Option<Child>,
    pub addr: String,
    _dir: tempfile::TempDir,
}

/// Render deploy/nginx.conf: each replaced piece must exist, so a change to
/// the file that breaks the rendering fails loudly.
pub fn render_nginx_conf(upstreams: &[String], port: u16, dir: &Path) -> String {
    let conf =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx.conf")).unwrap();
    let servers: String = upstreams
        .iter()
        .map(|a| format!("        server {a} max_fails=1 fail_timeout=5s;\n"))
        .collect();
    let d = dir.display();
    let mut out = conf.clone();
    for (from, to) in [
        ("pid /var/run/nginx.pid;".to_owned(), format!("pid {d}/nginx.pid;")),
        (
            "        server tandem-1:8080 max_fails=1 fail_timeout=5s;\n        server tandem-2:8080 max_fails=1 fail_timeout=5s;\n".to_owned(),
            servers,
        ),
        ("listen 80;".to_owned(), format!("listen 127.0.0.1:{port};")),
        (
            "http {\n".to_owned(),
            format!("http {{\n    client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n    fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n"),
        ),
    ] {
        assert!(out.contains(&from), "deploy/nginx.conf no longer contains {from:?}");
        out = out.replacen(&from, &to, 1);
    }
    out
}

impl NginxServer {
    pub fn start(upstreams: &[String]) -> Self {
        let bin = require_binary("nginx", "nginx");
        let dir = tempfile::tempdir().unwrap();
        let _ = Command::new("chmod").arg("777").arg(dir.path()).status();
        let port = free_port();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, render_nginx_conf(upstreams, port, dir.path())).unwrap();
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        let addr = format!("127.0.0.1:{port}");
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(start.elapsed() < TIMEOUT, "nginx did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        NginxServer {
            child: Some(child),
            addr,
            _dir: dir,
        }
    }
}

impl Drop for NginxServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-QUIT", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}

/// Each editor, concurrently, makes `edits` random edits (with emoji),
/// pausing up to `max_pause_ms` between them while handling what arrives,
/// then waits until nothing is pending. Seeded per editor.
pub async fn type_concurrently(
    editors: Vec<Editor>,
    seed: u64,
    edits: usize,
    max_pause_ms: u64,
) -> Vec<Editor> {
    use rand::{Rng, SeedableRng};
    let tasks: Vec<_> = editors
        .into_iter()
        .enumerate()
        .map(|(i, mut ed)| {
            tokio::spawn(async move {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed + i as u64);
                for _ in 0..edits {
                    let op = random_edit(&mut rng, ed.ot.len_chars());
                    ed.edit(op).await;
                    let pause = rng.gen_range(0..max_pause_ms);
                    ed.pump(Duration::from_millis(pause)).await;
                }
                ed.settle().await;
                ed
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}
