//! A throwaway `redis-server` on its own port and directory, killed on
//! Drop; restartable (with or without its append-only file), and emptied in
//! place (`FLUSHALL`).
//!
//! Must not import: `tandem_core` (Redis is driven over its port only).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, require_binary, TIMEOUT};

/// A throwaway `redis-server` on its own port and directory, killed on Drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    aof: bool,
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
            // Tests move `dir` to make a save fail (MISCONF).
            "--enable-protected-configs",
            "yes",
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

    /// `FLUSHALL`: Redis loses every key while its clients stay connected
    /// (subscriptions too), as after a failover to an empty replica.
    pub fn flushall(&self) {
        use std::io::{Read, Write};
        let mut s =
            std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut buf = [0u8; 5];
        s.write_all(b"FLUSHALL\r\n").unwrap();
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"+OK\r\n", "FLUSHALL");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Run `redis-cli` against this server; its output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let bin = require_binary("redis-cli", "redis-tools");
        let out = Command::new(bin)
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
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
        crate::signal(self.child.as_ref().unwrap().id(), sig);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
