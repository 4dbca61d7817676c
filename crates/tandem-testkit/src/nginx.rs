//! Debian's nginx running the project's `deploy/nginx.conf`, rendered for
//! loopback, stopped on Drop.
//!
//! Must not import: `tandem`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, repo_root, require_binary, TIMEOUT};

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
    let conf = std::fs::read_to_string(repo_root().join("deploy/nginx.conf")).unwrap();
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
