//! The deployment as shipped: the compose file and Dockerfile checked
//! against what operators rely on, and the real topology run as processes
//! on loopback (no Docker engine here): PostgreSQL, Redis, two instances and
//! Debian's nginx with the project's nginx.conf: its per-document routing
//! (one document's sockets and REST calls on one instance, documents spread
//! over the instances, failover to the survivor). Here: the README's block
//! run as pasted, `--help`, the start-up log, readiness and a fresh
//! server's metrics; the shipped files are checked in `deploy/files.rs`,
//! the topology through nginx runs in `deploy/nginx.rs`, the image's build
//! stage in `deploy/docker_build.rs`.

use std::time::Duration;

use tandem_testkit::{cluster, RedisServer, TestServer};

use crate::TANDEM;

mod docker_build;
mod files;
mod nginx;

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_backends() {
    let mut redis = RedisServer::start();
    let (_dir, servers) = cluster(TANDEM, &redis, 1, &[]);
    let ready = || async {
        reqwest::get(servers[0].http("/readyz"))
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(ready().await, 200);
    redis.kill();
    assert_eq!(ready().await, 503);
    assert_eq!(
        reqwest::get(servers[0].http("/healthz"))
            .await
            .unwrap()
            .status(),
        200,
        "alive though not ready"
    );
    redis.restart();
    let deadline = tokio::time::Instant::now() + tandem_testkit::TIMEOUT;
    while ready().await != 200 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The README's "Trying it" block, run as written with bash, on the test
/// build of the server (instead of `cargo build --release` and its binary)
/// and on a free port instead of 8080: it waits for readiness, creates
/// both users, watches the document with the shipped `scripts/tandem-ws`,
/// edits over HTTP and over the socket, shares with bob and reads back.
#[test]
fn readme_trying_it_works_when_pasted() {
    let readme = read("README.md");
    let section = &readme[readme.find("## Trying it\n").expect("Trying it section")..];
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("a sh block");
    assert!(block.starts_with("cargo build --release\n"), "{block}");
    let port = tandem_testkit::free_port().to_string();
    let script = block
        .replacen("cargo build --release\n", "", 1)
        .replace("./target/release/tandem", TANDEM)
        .replace("localhost:8080", &format!("localhost:{port}"))
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
    assert!(!script.contains("8080"), "{script}");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("JWT_SECRET")
        .env("PORT", &port)
        .env("HOST", "127.0.0.1")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let all = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(out.status.success(), "{all}");
    assert!(!stderr.contains("curl:"), "a curl call failed: {all}");
    let lines: Vec<&str> = stdout.lines().collect();
    // bob exists; the socket saw init, its own ack and alice's HTTP edit.
    assert!(stdout.contains("\"bob\""), "{all}");
    assert!(
        lines.iter().any(|l| l.starts_with("{\"type\":\"init\"")),
        "{all}"
    );
    assert!(
        lines.iter().any(|l| l.contains("\"type\":\"ack\"")),
        "{all}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"type\":\"op\"") && l.contains(", world 🌍")),
        "{all}"
    );
    // The document holds both edits.
    let content = lines.last().unwrap();
    assert!(
        content.starts_with("hello") && content.contains(", world 🌍") && content.contains('!'),
        "{all}"
    );
}

/// `tandem --help` as an operator reads it, with the secrets set in the
/// environment (as in a compose file or `.env`): no secret value shows,
/// every option has its text, and the log format is a choice.
#[test]
fn help_shows_every_setting_and_no_secret() {
    let secrets = [
        (
            "DATABASE_URL",
            "postgres://tandem:pg-pass-4c1d@db:5432/tandem",
        ),
        ("REDIS_URL", "redis://:redis-pass-9e2a@redis:6379"),
        ("JWT_SECRET", "jwt-secret-7f3b-0123456789abcdef0123456789"),
        (
            "JWT_PREVIOUS_SECRET",
            "jwt-prev-secret-5a8c-0123456789abcdef012345",
        ),
    ];
    let out = std::process::Command::new(TANDEM)
        .arg("--help")
        .envs(secrets)
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for (var, value) in secrets {
        assert!(help.contains(var), "{var} not documented");
        for part in value
            .split([':', '@', '/'])
            .filter(|p| p.contains("pass") || p.contains("secret"))
        {
            assert!(!help.contains(part), "--help prints {var}'s value:\n{help}");
        }
    }
    assert!(
        help.contains("- pretty:") && help.contains("- json:"),
        "LOG_FORMAT is not a choice:\n{help}"
    );
    // Long help: each option's line is followed by its text, not straight
    // by its [env: …] / [default: …] lines.
    let lines: Vec<&str> = help.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.trim_start().starts_with("--") || l.trim_start().starts_with("-h") {
            let next = lines.get(i + 1).map(|n| n.trim()).unwrap_or("");
            assert!(
                !next.is_empty() && !next.starts_with('['),
                "{l} has no help text"
            );
        }
    }
}

/// Logs to a file or pipe carry no terminal colour codes, and the start-up
/// line says where the data lives.
#[test]
fn start_up_log_is_plain_off_a_terminal_and_says_where_data_lives() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(TANDEM)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PORT", "0")
        .env("DATA_DIR", dir.path())
        .env("RUST_LOG", "info")
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.starts_with("listening on"), "{line}");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8(out.stderr).unwrap();
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a piped log:\n{log}"
    );
    let db = dir.path().join("tandem.db");
    let listening = log
        .lines()
        .find(|l| l.contains("tandem listening on"))
        .unwrap_or_else(|| panic!("no start-up line:\n{log}"));
    assert!(
        listening.contains(&format!("data in sqlite {}", db.display())),
        "{listening}"
    );
}

/// A fresh server's /metrics: every series is there before its first
/// event, with HELP text; every histogram is a Prometheus histogram with
/// buckets (aggregatable across instances), not a summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_of_a_fresh_server_have_every_series_with_help_and_buckets() {
    use tandem::telemetry::{Kind, CATALOG};
    let server = TestServer::start(TANDEM, &[]);
    let text = server.metrics().await;
    assert!(
        !text.contains("quantile="),
        "summaries in /metrics:\n{text}"
    );
    for m in CATALOG {
        let name = m.name;
        assert!(
            text.contains(&format!("# HELP {name} {}", m.help)),
            "{name} has no HELP:\n{text}"
        );
        let samples: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && l.starts_with(name))
            .collect();
        match m.kind {
            Kind::Histogram(buckets) => {
                assert!(text.contains(&format!("# TYPE {name} histogram")), "{name}");
                for b in buckets {
                    let le = format!("{name}_bucket{{le=\"{b}\"}} 0");
                    assert!(text.contains(&le), "{le} missing:\n{text}");
                }
                assert!(text.contains(&format!("{name}_bucket{{le=\"+Inf\"}} 0")));
                assert!(text.contains(&format!("{name}_count 0")), "{name}");
            }
            Kind::Counter | Kind::Gauge => {
                let kind = if m.kind == Kind::Counter {
                    "counter"
                } else {
                    "gauge"
                };
                assert!(text.contains(&format!("# TYPE {name} {kind}")), "{name}");
                match m.label {
                    None => assert!(
                        samples.contains(&format!("{name} 0").as_str()),
                        "{name}: {samples:?}"
                    ),
                    Some((key, values)) => {
                        for v in values {
                            let line = format!("{name}{{{key}=\"{v}\"}} 0");
                            assert!(
                                samples.contains(&line.as_str()),
                                "{line} missing: {samples:?}"
                            );
                        }
                    }
                }
            }
        }
    }
}
