//! A throwaway PostgreSQL cluster (initdb into a temp dir, its own port),
//! stopped on Drop; restartable, and queried with psql.
//!
//! Must not import: `tandem_core` (PostgreSQL is driven over psql only).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, TIMEOUT};

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
