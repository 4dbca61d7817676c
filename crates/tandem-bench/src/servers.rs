//! The systems under test, each started as its own process so that its CPU
//! and memory are measured apart from the generator's: Tandem (the `tandem`
//! binary beside this one, or `TANDEM_BIN`; started by the test kit), the
//! echo floor (`tandem-bench echo-server`) and ShareDB
//! (`node bench/peers/sharedb/server.js`). Dropping `Servers` kills them and
//! removes their data.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tandem_testkit::{free_port, Balance, NginxServer, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum System {
    /// Tandem.
    Tandem,
    /// A minimal tokio-tungstenite broadcast server (the floor).
    Echo,
    /// ShareDB with ot-text-unicode behind `ws` (bench/peers/sharedb).
    Sharedb,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Tandem => "tandem",
            System::Echo => "echo",
            System::Sharedb => "sharedb",
        }
    }
}

/// What the clients connect to: the instances themselves (the generator
/// spreads each document's clients over them), or nginx running the
/// shipped nginx.conf in front of them with one balancing policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Balancer {
    /// No proxy: clients alternate between the instances.
    #[default]
    None,
    /// nginx, `least_conn;`.
    LeastConn,
    /// nginx, `hash $tandem_doc consistent;` (sticky per document).
    Hash,
}

impl Balancer {
    pub fn name(self) -> &'static str {
        match self {
            Balancer::None => "none",
            Balancer::LeastConn => "least-conn",
            Balancer::Hash => "hash",
        }
    }

    fn balance(self) -> Option<Balance> {
        match self {
            Balancer::None => None,
            Balancer::LeastConn => Some(Balance::LeastConn),
            Balancer::Hash => Some(Balance::Hash),
        }
    }
}

/// Where the systems keep shared state: Tandem and ShareDB on more than one
/// instance need Redis; ShareDB on more than one instance also needs a shared
/// database (PostgreSQL).
#[derive(Clone, Debug, Default)]
pub struct Backing {
    pub redis: Option<String>,
    pub database_url: Option<String>,
}

/// One running instance: Tandem through the test kit, the others as
/// plain child processes.
enum Process {
    Tandem(TestServer),
    Other(Child),
}

impl Process {
    fn pid(&self) -> u32 {
        match self {
            Process::Tandem(s) => s.pid(),
            Process::Other(c) => c.id(),
        }
    }

    /// How it ended, if it has.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        match self {
            Process::Tandem(s) => s.exited(),
            Process::Other(c) => c.try_wait().ok().flatten(),
        }
    }

    fn kill(&mut self) {
        match self {
            Process::Tandem(s) => s.kill(),
            Process::Other(c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

pub struct Servers {
    pub system: System,
    pub ports: Vec<u16>,
    children: Vec<Process>,
    /// nginx in front of the instances, when a balancer was asked for.
    front: Option<NginxServer>,
    dir: PathBuf,
    redis_prefix: String,
}

/// The server binary: `TANDEM_BIN`, else the `tandem` built beside this
/// binary (`cargo build --release` puts both in target/release).
pub(crate) fn tandem_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TANDEM_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.parent().unwrap().join("tandem")
}

/// The ShareDB peer's directory; its packages are installed (`npm ci`) the
/// first time.
pub fn sharedb_dir() -> PathBuf {
    let dir = std::env::var_os("TANDEM_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| tandem_testkit::repo_root().join("bench/peers"))
        .join("sharedb");
    if !dir.join("node_modules").exists() {
        eprintln!("installing the ShareDB peer (npm ci in {})", dir.display());
        let ok = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "npm ci failed in {}: the ShareDB peer needs Node.js and npm (apt-get install nodejs npm)",
            dir.display()
        );
    }
    dir
}

impl Servers {
    pub async fn start(system: System, instances: usize, backing: &Backing) -> Servers {
        let dir =
            std::env::temp_dir().join(format!("tandem-bench-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let run = uuid::Uuid::new_v4().simple().to_string();
        let secret = format!("bench-{run}-{}", uuid::Uuid::new_v4().simple());
        let mut servers = Servers {
            system,
            ports: Vec::new(),
            children: Vec::new(),
            front: None,
            dir,
            redis_prefix: format!("tandem-bench-{}", &run[..12]),
        };
        for i in 0..instances {
            let port = free_port();
            let log = std::fs::File::create(servers.dir.join(format!("server-{i}.log"))).unwrap();
            let mut cmd = match system {
                System::Tandem => {
                    let bin = tandem_bin();
                    assert!(
                        bin.is_file(),
                        "no server binary at {}: build it (`cargo build --release`) or set TANDEM_BIN",
                        bin.display()
                    );
                    let mut c = Command::new(bin);
                    c.env("HOST", "127.0.0.1")
                        .env("PORT", port.to_string())
                        .env("DATA_DIR", servers.dir.join(format!("data-{i}")))
                        .env("ALLOW_ANONYMOUS", "true")
                        .env("OP_RATE_PER_SEC", "1000000")
                        .env("OP_RATE_BURST", "1000000")
                        .env("MAX_CONNS_PER_IP", "1000000")
                        .env("MAX_SOCKETS_PER_USER", "1000000")
                        .env("INSTANCE_ID", format!("bench-{i}"))
                        .env("JWT_SECRET", &secret)
                        .env("REDIS_PREFIX", &servers.redis_prefix)
                        .env("RUST_LOG", "warn");
                    if let Some(r) = &backing.redis {
                        c.env("REDIS_URL", r);
                    }
                    if let Some(d) = &backing.database_url {
                        c.env("DATABASE_URL", d);
                    }
                    c
                }
                System::Echo => {
                    let mut c = Command::new(std::env::current_exe().unwrap());
                    c.args(["echo-server", "--port", &port.to_string()]);
                    c
                }
                System::Sharedb => {
                    let mut c = Command::new("node");
                    c.arg(sharedb_dir().join("server.js"))
                        .env("PORT", port.to_string())
                        .env("REDIS_PREFIX", format!("sharedb-bench-{}", &run[..12]));
                    if instances > 1 {
                        let redis = backing
                            .redis
                            .as_ref()
                            .expect("ShareDB on 2 instances needs Redis");
                        let pg = backing
                            .database_url
                            .as_ref()
                            .expect("ShareDB on 2 instances needs PostgreSQL");
                        c.env("REDIS_URL", redis).env("PG_URL", pg);
                        if i == 0 {
                            c.env("PG_RESET", "1");
                        }
                    }
                    c
                }
            };
            cmd.stdin(Stdio::null()).stderr(log.try_clone().unwrap());
            let process = if system == System::Tandem {
                // The kit reads the "listening on" line from its stdout.
                let data = servers.dir.join(format!("data-{i}"));
                let started = tokio::task::spawn_blocking(move || TestServer::launch(cmd, &data))
                    .await
                    .expect("start tandem");
                Process::Tandem(started.unwrap_or_else(|e| servers.start_failed(i, &e)))
            } else {
                let child = cmd
                    .stdout(log)
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot start {}: {e}", system.name()));
                Process::Other(child)
            };
            servers.children.push(process);
            servers.ports.push(port);
            servers.wait_ready(i, port).await;
        }
        servers
    }

    /// An instance exited while starting: say how, with its log.
    fn start_failed(&self, i: usize, how: &str) -> ! {
        let log =
            std::fs::read_to_string(self.dir.join(format!("server-{i}.log"))).unwrap_or_default();
        panic!("{} {how} while starting:\n{log}", self.system.name());
    }

    async fn wait_ready(&mut self, i: usize, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.children[i].exited() {
                self.start_failed(i, &format!("exited ({status})"));
            }
            if ready(self.system, port).await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not start",
                self.system.name()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Process::pid).collect()
    }

    /// Put nginx (nginx.conf balancing with `balancer`) in front of
    /// the instances: from now on every URL points at it.
    pub async fn front(&mut self, balancer: Balancer) {
        let Some(balance) = balancer.balance() else {
            return;
        };
        let upstreams: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let nginx =
            tokio::task::spawn_blocking(move || NginxServer::start_with(&upstreams, balance))
                .await
                .expect("start nginx");
        self.front = Some(nginx);
    }

    /// nginx's processes (master and workers), if it runs.
    pub fn front_pids(&self) -> Vec<u32> {
        self.front
            .as_ref()
            .map(|n| {
                let master = n.pid();
                let mut pids = vec![master];
                pids.extend(crate::sys::children(master));
                pids
            })
            .unwrap_or_default()
    }

    /// Each instance's open WebSocket sessions (Tandem's
    /// `tandem_connections` gauge; `None` for the other systems).
    pub async fn sessions(&self) -> Vec<Option<u64>> {
        let mut out = Vec::new();
        for &port in &self.ports {
            out.push(if self.system == System::Tandem {
                metric(port, "tandem_connections").await.map(|v| v as u64)
            } else {
                None
            });
        }
        out
    }

    /// A Tandem counter summed over the instances (`None`: another system,
    /// or an instance did not answer).
    pub async fn counter_sum(&self, name: &str) -> Option<u64> {
        if self.system != System::Tandem {
            return None;
        }
        let mut sum = 0.0;
        for &port in &self.ports {
            sum += metric(port, name).await?;
        }
        Some(sum as u64)
    }

    /// Resident memory of all instances, KiB.
    pub fn rss_kb(&self) -> u64 {
        self.pids()
            .iter()
            .map(|&p| crate::sys::status_kb(p, "VmRSS:"))
            .sum()
    }

    /// The WebSocket URL of a document on an instance.
    pub fn url(&self, instance: usize, doc: &str, user: &str) -> String {
        let port = match &self.front {
            Some(nginx) => nginx.port(),
            None => self.ports[instance % self.ports.len()],
        };
        match self.system {
            System::Tandem => format!("ws://127.0.0.1:{port}/ws/{doc}?user_id={user}"),
            System::Echo => format!("ws://127.0.0.1:{port}/ws/{doc}"),
            System::Sharedb => format!("ws://127.0.0.1:{port}/"),
        }
    }
}

impl Servers {
    /// Stop the servers and delete what Tandem left in Redis.
    pub async fn finish(mut self, backing: &Backing) {
        drop(self.front.take());
        for c in &mut self.children {
            c.kill();
        }
        if let (System::Tandem, Some(url)) = (self.system, &backing.redis) {
            let tracker = tokio_util::task::TaskTracker::new();
            let cancel = tokio_util::sync::CancellationToken::new();
            let settings = tandem::bus::redis::RedisSettings {
                url: url.clone(),
                // A seed list is a cluster's (REDIS_CLUSTER=true).
                cluster: url.contains(','),
                prefix: self.redis_prefix.clone(),
                retain: 1,
                ..Default::default()
            };
            if let Ok(b) =
                tandem::bus::redis::RedisBackend::connect(settings, &tracker, cancel.clone()).await
            {
                let _ = b.delete_all_keys().await;
            }
            cancel.cancel();
            tracker.close();
            tracker.wait().await;
        }
    }
}

/// Tandem is ready when `/readyz` says 200; the others once they accept.
async fn ready(system: System, port: u16) -> bool {
    let Ok(mut tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if system != System::Tandem {
        return true;
    }
    let req = "GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n";
    if tcp.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    let n = tcp.read(&mut buf).await.unwrap_or(0);
    buf[..n].starts_with(b"HTTP/1.1 200") || buf[..n].starts_with(b"HTTP/1.0 200")
}

/// An unlabelled metric from an instance's `/metrics` (`None`: no answer).
async fn metric(port: u16, name: &str) -> Option<f64> {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let req = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n";
    tcp.write_all(req.as_bytes()).await.ok()?;
    let mut body = String::new();
    tcp.read_to_string(&mut body).await.ok()?;
    if !body.starts_with("HTTP/1.1 200") && !body.starts_with("HTTP/1.0 200") {
        return None;
    }
    // A metric never set is not listed: 0.
    Some(
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0),
    )
}

impl Drop for Servers {
    fn drop(&mut self) {
        drop(self.front.take());
        for c in &mut self.children {
            c.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
