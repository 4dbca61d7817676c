//! What Tandem's integration tests and its bench share: the real `tandem`
//! binary and its neighbours (Redis, PostgreSQL, nginx) as throwaway
//! processes killed on Drop, a TCP proxy that can cut connections, a typed
//! protocol client (`Ws`, `Editor`, `Typist`), a small REST client, and the
//! editing traces in `tests/data`.
//!
//! Owns: process starters, client-side protocol handling for tests and the
//! bench. Must not import: the server crate (`tandem` is no dependency:
//! servers are driven as processes, over the wire); of Tandem's own code
//! only the pure core, `tandem_core` (`ot`, `client`, `protocol`, `meta`).

pub mod disk;
pub mod editor;
pub mod nginx;
pub mod postgres;
pub mod proxy;
pub mod redis;
pub mod redis_cluster;
pub mod rest;
pub mod server;
pub mod traces;
pub mod typist;
pub mod ws;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use disk::Tmpfs;
pub use editor::{flood_until_dropped, random_edit, type_concurrently, Editor, EMOJI_ALPHABET};
pub use nginx::{render_nginx_conf, render_nginx_conf_with, Balance, NginxServer};
pub use postgres::PgServer;
pub use redis::RedisServer;
pub use redis_cluster::RedisCluster;
pub use rest::{error_code, Api};
pub use server::{cluster, cluster_on, TestServer, TEST_JWT_SECRET};
pub use ws::{Frame, Init, Kind, Ws};

/// How long a test waits for any one thing (a message, a process).
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// The repository's root (`deploy/`, `tests/data/`, `bench/` live there).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
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

/// Send `sig` (`-STOP`, `-CONT`, `-KILL`) to process `pid`.
pub fn signal(pid: u32, sig: &str) {
    assert!(std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
