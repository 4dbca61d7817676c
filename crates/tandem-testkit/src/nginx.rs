//! Debian's nginx running the project's top-level `nginx.conf`, rendered
//! for loopback, stopped on Drop.
//!
//! Must not import: `tandem_core`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, repo_root, require_binary, TIMEOUT};

/// How nginx picks the instance for a request: the balancing line of the
/// `upstream tandem` block. The shipped file carries one of them; rendering
/// swaps it for the other (the bench compares both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Balance {
    /// `least_conn;`: each new connection to the instance with the fewest.
    LeastConn,
    /// `hash $tandem_doc consistent;`: every request naming a document (its
    /// sockets, its REST calls) to one instance; the rest spread.
    Hash,
}

impl Balance {
    pub const ALL: [Balance; 2] = [Balance::LeastConn, Balance::Hash];

    /// The directive's line as nginx.conf writes it.
    pub fn line(self) -> &'static str {
        match self {
            Balance::LeastConn => "        least_conn;\n",
            Balance::Hash => "        hash $tandem_doc consistent;\n",
        }
    }

    /// The policy nginx.conf ships with.
    pub fn shipped() -> Balance {
        let conf = std::fs::read_to_string(repo_root().join("nginx.conf")).unwrap();
        let found: Vec<Balance> = Balance::ALL
            .into_iter()
            .filter(|b| conf.contains(b.line()))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "nginx.conf must carry exactly one of {:?}",
            Balance::ALL.map(Balance::line)
        );
        found[0]
    }
}

/// Debian's nginx running the project's `nginx.conf`, rendered for
/// loopback (listen port, upstream servers, pid and temp paths).
pub struct NginxServer {
    child: Option<Child>,
    pub addr: String,
    _dir: tempfile::TempDir,
}

/// Render nginx.conf: each replaced piece must exist, so a change to
/// the file that breaks the rendering fails loudly.
pub fn render_nginx_conf(upstreams: &[String], port: u16, dir: &Path) -> String {
    render_nginx_conf_with(upstreams, port, dir, Balance::shipped())
}

/// [`render_nginx_conf`] with the upstream's balancing line set to `balance`.
pub fn render_nginx_conf_with(
    upstreams: &[String],
    port: u16,
    dir: &Path,
    balance: Balance,
) -> String {
    let conf = std::fs::read_to_string(repo_root().join("nginx.conf")).unwrap();
    let servers: String = upstreams
        .iter()
        .map(|a| format!("        server {a} max_fails=1 fail_timeout=5s;\n"))
        .collect();
    let d = dir.display();
    let mut out = conf.clone();
    for (from, to) in [
        ("pid /var/run/nginx.pid;".to_owned(), format!("pid {d}/nginx.pid;")),
        (
            // The compose service name, re-resolved through Docker's DNS
            // (nginx 1.27.3+), becomes the loopback instances.
            "        server tandem:8080 resolve max_fails=1 fail_timeout=5s;\n".to_owned(),
            servers,
        ),
        ("listen 80;".to_owned(), format!("listen 127.0.0.1:{port};")),
        (
            "http {\n".to_owned(),
            format!("http {{\n    client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n    fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n"),
        ),
        (
            Balance::shipped().line().to_owned(),
            balance.line().to_owned(),
        ),
    ] {
        assert!(out.contains(&from), "nginx.conf no longer contains {from:?}");
        out = out.replacen(&from, &to, 1);
    }
    out
}

impl NginxServer {
    /// nginx with the shipped configuration in front of `upstreams`.
    pub fn start(upstreams: &[String]) -> Self {
        Self::start_with(upstreams, Balance::shipped())
    }

    /// Like [`NginxServer::start`], balancing with `balance`.
    pub fn start_with(upstreams: &[String], balance: Balance) -> Self {
        let bin = require_binary("nginx", "nginx");
        let dir = tempfile::tempdir().unwrap();
        let _ = Command::new("chmod").arg("777").arg(dir.path()).status();
        let port = free_port();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(
            &conf,
            render_nginx_conf_with(upstreams, port, dir.path(), balance),
        )
        .unwrap();
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

impl NginxServer {
    /// The master process (its workers are its children).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .expect("host:port")
    }
}

impl Drop for NginxServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Fast shutdown (TERM), not graceful (QUIT): a graceful one
            // waits for open WebSockets, and a test that failed with its
            // clients still typing through nginx would hang here.
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}
