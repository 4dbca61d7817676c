//! The deployment as shipped: the compose file and Dockerfile checked
//! against what operators rely on, and the real topology run as processes
//! on loopback (no Docker engine here): PostgreSQL, Redis, two instances and
//! Debian's nginx with the project's nginx.conf: its per-document routing
//! (one document's sockets and REST calls on one instance, documents spread
//! over the instances, failover to the survivor).

use std::time::Duration;

use serde_yaml::Value;
use tandem_testkit::server::metric;
use tandem_testkit::typist::{check_exactly_once, run_typists};
use tandem_testkit::{
    cluster, render_nginx_conf_with, require_binary, Balance, NginxServer, PgServer, RedisServer,
    TestServer, Ws,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::TANDEM;

mod docker_build;

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn compose_file_has_the_topology_operators_rely_on() {
    let raw = read("docker-compose.yml");
    let compose: Value = serde_yaml::from_str(&raw).expect("docker-compose.yml is YAML");
    let services = compose["services"].as_mapping().expect("services");
    let svc = |name: &str| &compose["services"][name];
    let names: Vec<&str> = services.keys().filter_map(|k| k.as_str()).collect();
    // The deployment, and the optional observability profile (traces,
    // metrics, dashboards) that `docker compose up` alone does not start.
    let (core, optional): (Vec<&str>, Vec<&str>) =
        names.iter().partition(|s| svc(s)["profiles"].is_null());
    assert_eq!(core, ["redis", "postgres", "tandem", "nginx"]);
    assert_eq!(optional, ["jaeger", "prometheus", "grafana"]);
    for s in &optional {
        assert_eq!(svc(s)["profiles"][0], "observability", "{s}");
    }
    for file in [
        "observability/prometheus.yml",
        "observability/alerts.yml",
        "observability/grafana-dashboard.json",
        "observability/grafana-provisioning/datasources/prometheus.yml",
    ] {
        assert!(
            raw.contains(&format!("./{file}"))
                || raw.contains("./observability/grafana-provisioning"),
            "{file} not mounted"
        );
        read(file);
    }
    // Redis: AOF every second, on a volume.
    let redis_cmd = serde_yaml::to_string(&svc("redis")["command"]).unwrap();
    assert!(
        redis_cmd.contains("appendonly") && redis_cmd.contains("yes"),
        "{redis_cmd}"
    );
    assert!(
        redis_cmd.contains("appendfsync") && redis_cmd.contains("everysec"),
        "{redis_cmd}"
    );
    // Bounded, and never evicting (the server refuses any other policy).
    assert!(
        redis_cmd.contains("maxmemory-policy") && redis_cmd.contains("noeviction"),
        "{redis_cmd}"
    );
    assert!(redis_cmd.contains("REDIS_MAXMEMORY"), "{redis_cmd}");
    for s in ["redis", "postgres"] {
        assert!(
            svc(s)["volumes"]
                .as_sequence()
                .is_some_and(|v| !v.is_empty()),
            "{s} has no volume"
        );
    }
    for s in &names {
        // Every service comes back after a crash or a reboot, and says
        // when it is healthy.
        let restart = svc(s)["restart"].as_str().unwrap_or("no");
        assert!(
            ["always", "unless-stopped"].contains(&restart),
            "{s}: restart {restart}"
        );
        assert!(
            svc(s)["healthcheck"]["test"].is_sequence(),
            "{s} has no healthcheck"
        );
        // Images pinned to an exact release: major.minor.patch, or
        // major.minor where that is the release (PostgreSQL 16.6).
        let image = svc(s)["image"]
            .as_str()
            .unwrap_or_else(|| panic!("{s}: no image"));
        if svc(s)["build"].is_null() {
            let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
            let version: Vec<&str> = tag
                .split('-')
                .next()
                .unwrap()
                .trim_start_matches('v')
                .split('.')
                .collect();
            assert!(
                (2..=3).contains(&version.len())
                    && version.iter().all(|p| p.parse::<u32>().is_ok()),
                "{s}: image {image} is not pinned to an exact version"
            );
        }
    }
    // One instance definition, built once: the only service with `build`,
    // with an image name the scaled containers share; nothing that stops
    // `--scale` (a fixed hostname, container name or published port).
    let built: Vec<&&str> = names
        .iter()
        .filter(|s| !svc(s)["build"].is_null())
        .collect();
    assert_eq!(built, [&"tandem"], "images built by several services");
    let tandem = svc("tandem");
    for key in ["hostname", "container_name", "ports"] {
        assert!(tandem[key].is_null(), "tandem sets {key}: it cannot scale");
    }
    for backend in ["redis", "postgres"] {
        assert_eq!(
            tandem["depends_on"][backend]["condition"], "service_healthy",
            "tandem → {backend}"
        );
    }
    let env = &tandem["environment"];
    for var in ["REDIS_URL", "DATABASE_URL", "JWT_SECRET"] {
        assert!(env[var].is_string(), "tandem lacks {var}");
    }
    // Secrets are required: compose refuses to start without them, never
    // falls back to a default password.
    for secret in ["POSTGRES_PASSWORD", "JWT_SECRET"] {
        let uses: Vec<&str> = raw
            .match_indices(&format!("${{{secret}"))
            .map(|(i, _)| &raw[i..])
            .collect();
        assert!(!uses.is_empty(), "{secret} unused");
        for u in uses {
            assert!(
                u.starts_with(&format!("${{{secret}:?")),
                "{secret} has a default: {}",
                &u[..u.find('}').unwrap_or(u.len()).min(60)]
            );
        }
    }
    // nginx in front, with the top-level nginx.conf, after healthy
    // instances, reaching them by the service's name.
    let nginx = svc("nginx");
    let mounts = serde_yaml::to_string(&nginx["volumes"]).unwrap();
    assert!(
        mounts.contains("./nginx.conf:/etc/nginx/nginx.conf"),
        "{mounts}"
    );
    assert_eq!(
        nginx["depends_on"]["tandem"]["condition"],
        "service_healthy"
    );
    assert!(nginx["ports"].as_sequence().is_some_and(|p| !p.is_empty()));
    assert!(read("nginx.conf").contains("server tandem:8080 resolve"));
    // Only nginx publishes ports; the observability UIs only on loopback.
    for (name, s) in services {
        let name = name.as_str().unwrap_or("");
        if optional.contains(&name) {
            for p in s["ports"].as_sequence().into_iter().flatten() {
                assert!(
                    p.as_str().is_some_and(|p| p.starts_with("127.0.0.1:")),
                    "{name}: {p:?}"
                );
            }
        } else if name != "nginx" {
            assert!(s["ports"].is_null(), "{name:?} publishes ports");
        }
    }
}

/// The instance's entrypoint as compose runs it (`$$` is a literal `$`),
/// with the server swapped for printing the id it would get.
#[test]
fn each_scaled_instance_takes_its_container_hostname_as_id() {
    let compose: Value = serde_yaml::from_str(&read("docker-compose.yml")).unwrap();
    let entry: Vec<String> = compose["services"]["tandem"]["entrypoint"]
        .as_sequence()
        .expect("tandem entrypoint")
        .iter()
        .map(|v| v.as_str().unwrap().replace("$$", "$"))
        .collect();
    assert_eq!(entry[..2], ["/bin/sh", "-c"]);
    let script = entry[2].replace("exec /usr/local/bin/tandem", "printf %s \"$INSTANCE_ID\"");
    assert_ne!(script, entry[2], "the entrypoint does not exec the server");
    let run = |id: Option<&str>| {
        let mut c = std::process::Command::new("sh");
        c.arg("-c").arg(&script).env_remove("INSTANCE_ID");
        if let Some(id) = id {
            c.env("INSTANCE_ID", id);
        }
        String::from_utf8(c.output().unwrap().stdout).unwrap()
    };
    let hostname = std::process::Command::new("hostname")
        .output()
        .unwrap()
        .stdout;
    let hostname = String::from_utf8(hostname).unwrap().trim().to_owned();
    assert!(!hostname.is_empty());
    assert_eq!(run(None), hostname);
    assert_eq!(run(Some("tandem-a")), "tandem-a");
}

#[test]
fn dockerfile_is_multi_stage_non_root_and_health_checked() {
    let d = read("Dockerfile");
    assert!(
        d.lines().filter(|l| l.starts_with("FROM ")).count() >= 2,
        "not multi-stage"
    );
    assert!(
        d.contains("COPY Cargo.toml Cargo.lock"),
        "no cached dependency layer"
    );
    let user = d
        .lines()
        .rev()
        .find(|l| l.starts_with("USER "))
        .expect("no USER");
    assert!(!user.contains("root"), "{user}");
    assert!(d.contains("HEALTHCHECK") && d.contains("/readyz"));
}

#[test]
fn nginx_conf_is_valid_for_nginx() {
    let bin = require_binary("nginx", "nginx");
    // The shipped policy, and the one the bench swaps in to compare.
    for balance in Balance::ALL {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(
            &conf,
            render_nginx_conf_with(&["127.0.0.1:1".into()], 8, dir.path(), balance),
        )
        .unwrap();
        let out = std::process::Command::new(&bin)
            .arg("-t")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{balance:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let raw = read("nginx.conf");
    assert_eq!(Balance::shipped(), Balance::Hash);
    // The browser's Host, port included (the Origin check compares them);
    // compose's instances found and re-found through Docker's DNS.
    assert!(
        !raw.contains("Host $host;"),
        "Host forwarded without its port"
    );
    assert_eq!(raw.matches("proxy_set_header Host $http_host;").count(), 2);
    assert!(raw.contains("resolver 127.0.0.11 valid=10s"));
    assert!(raw.contains("zone tandem "));
    assert!(raw.contains("hash $tandem_doc consistent;") && raw.contains("map $uri $tandem_doc"));
    assert!(raw.contains("proxy_set_header Upgrade") && raw.contains("proxy_next_upstream"));
    assert!(raw.contains("location = /metrics"));
}

/// A stand-in instance that answers every request with its own name.
async fn named_upstream(name: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
                    name.len()
                );
                let _ = tcp.write_all(reply.as_bytes()).await;
            });
        }
    });
    addr
}

/// The shipped routing, on stand-ins: every request about one document (its
/// socket URL with or without a query, its REST resource and sub-resources)
/// reaches one instance; documents and requests about no document spread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_routes_each_document_to_one_instance() {
    let upstreams = vec![named_upstream("A").await, named_upstream("B").await];
    let nginx = NginxServer::start(&upstreams);
    let http = reqwest::Client::new();
    let served_by = |path: String| {
        let http = http.clone();
        let url = format!("http://{}{path}", nginx.addr);
        async move {
            let r = http.get(&url).send().await.unwrap();
            assert_eq!(r.status(), 200, "{url}");
            r.text().await.unwrap()
        }
    };
    let mut per_instance = std::collections::HashMap::new();
    for i in 0..24 {
        let doc = format!("doc-{i}.x_y@z:{i}");
        let home = served_by(format!("/ws/{doc}")).await;
        for path in [
            format!("/ws/{doc}?user_id=u{i}&version=3"),
            format!("/api/documents/{doc}"),
            format!("/api/documents/{doc}/history?after=0"),
            format!("/api/documents/{doc}/versions/2/restore"),
        ] {
            for _ in 0..3 {
                assert_eq!(served_by(path.clone()).await, home, "{path}");
            }
        }
        *per_instance.entry(home).or_insert(0) += 1;
    }
    assert_eq!(
        per_instance.len(),
        2,
        "documents did not spread: {per_instance:?}"
    );
    // Requests about no document spread too.
    let mut others = std::collections::HashSet::new();
    for _ in 0..40 {
        others.insert(served_by("/api/documents".into()).await);
        others.insert(served_by("/readyz".into()).await);
    }
    assert_eq!(
        others.len(),
        2,
        "requests without a document stuck to one instance"
    );
}

/// Open WebSocket sessions on an instance.
async fn sessions(s: &TestServer) -> u64 {
    metric(&s.metrics().await, "tandem_connections") as u64
}

/// Wait until the instances' session counts are `want` (the gauge moves
/// just after a socket's `init` or close).
async fn wait_sessions(servers: &[&TestServer], want: &[u64]) {
    let deadline = tokio::time::Instant::now() + tandem_testkit::TIMEOUT;
    loop {
        let mut now = Vec::new();
        for s in servers {
            now.push(sessions(s).await);
        }
        if now == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "sessions per instance {now:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn through_nginx_clients_converge_and_survive_an_instance_draining() {
    let pg = PgServer::start();
    let redis = RedisServer::start();
    let db = pg.url();
    let env = [
        ("DATABASE_URL", db.as_str()),
        ("SNAPSHOT_INTERVAL_MS", "200"),
    ];
    let (_dir, mut servers) = cluster(TANDEM, &redis, 2, &env);
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
    let nginx = NginxServer::start(&addrs);
    let via = |path: &str| format!("http://{}{path}", nginx.addr);
    assert_eq!(reqwest::get(via("/readyz")).await.unwrap().status(), 200);
    assert_eq!(
        reqwest::get(via("/metrics")).await.unwrap().status(),
        404,
        "/metrics exposed through nginx"
    );
    let mut committed_before = Vec::new();
    for s in &servers {
        committed_before.push(metric(&s.metrics().await, "tandem_ops_committed_total"));
    }

    // Drain the instance holding the document's sockets (with the shipped
    // per-document hash, all of them).
    let doc = "behind-nginx";
    let mut victim = 0;
    let mut typists = run_typists(
        vec![nginx.addr.clone()],
        doc,
        6,
        Duration::from_millis(1500),
        async {
            tokio::time::sleep(Duration::from_millis(800)).await;
            if sessions(&servers[1]).await > sessions(&servers[0]).await {
                victim = 1;
            }
            let status = tokio::task::block_in_place(|| servers[victim].sigterm());
            assert!(status.success(), "drained instance exited with {status:?}");
        },
    )
    .await;
    let survivor = 1 - victim;
    assert!(
        typists.iter().any(|t| t.reconnects > 0),
        "nobody was moved off the drained instance"
    );
    check_exactly_once(&servers[survivor], doc, &mut typists).await;
    let acked: usize = typists.iter().map(|t| t.acked.len()).sum();
    assert!(acked > 50, "only {acked} acknowledged");
    // The survivor's counters moved; its readiness holds.
    let m = servers[survivor].metrics().await;
    assert!(metric(&m, "tandem_ops_committed_total") > committed_before[survivor]);
    assert!(m.contains("tandem_connections"));
    assert_eq!(
        reqwest::get(servers[survivor].http("/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );
}

/// The real instances behind the shipped nginx: (b) sockets of different
/// documents spread over both instances; (a) two clients of one document
/// land on the same instance, and when it is killed both reconnect through
/// nginx to the other one and converge there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn through_nginx_a_document_sticks_to_one_instance_and_fails_over() {
    let redis = RedisServer::start();
    let (_dir, mut servers) = cluster(TANDEM, &redis, 2, &[]);
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
    let nginx = NginxServer::start(&addrs);

    // (b) One socket on each of 24 documents: both instances hold some.
    let mut sockets = Vec::new();
    for i in 0..24 {
        let url = format!("ws://{}/ws/spread-{i}?user_id=s{i}", nginx.addr);
        sockets.push(Ws::connect(&url).await.unwrap().0);
    }
    let deadline = tokio::time::Instant::now() + tandem_testkit::TIMEOUT;
    let spread = loop {
        let n = [sessions(&servers[0]).await, sessions(&servers[1]).await];
        if n[0] + n[1] == 24 || tokio::time::Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(spread[0] + spread[1], 24, "{spread:?}");
    assert!(
        spread[0] > 0 && spread[1] > 0,
        "documents did not spread: {spread:?}"
    );
    for ws in sockets {
        ws.close().await;
    }
    wait_sessions(&[&servers[0], &servers[1]], &[0, 0]).await;

    // (a) Two typists on one document, through nginx only.
    let doc = "sticky-doc";
    let mut home = None;
    let mut typists = run_typists(
        vec![nginx.addr.clone()],
        doc,
        2,
        Duration::from_millis(1500),
        async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let n = [sessions(&servers[0]).await, sessions(&servers[1]).await];
            assert!(
                n == [2, 0] || n == [0, 2],
                "one document on both instances: {n:?}"
            );
            let h = usize::from(n[1] == 2);
            home = Some(h);
            // Kill it (no draining): both are cut off, nginx finds the
            // instance gone and sends their reconnects to the other one.
            tokio::task::block_in_place(|| servers[h].kill());
            wait_sessions(&[&servers[1 - h]], &[2]).await;
        },
    )
    .await;
    let survivor = 1 - home.expect("home instance");
    for t in &typists {
        assert!(t.reconnects > 0, "{} was never moved", t.user);
    }
    check_exactly_once(&servers[survivor], doc, &mut typists).await;
    for t in &typists {
        assert!(t.acked.len() > 5, "{} got {} acks", t.user, t.acked.len());
    }
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

/// Open a socket through nginx as a browser on the compose default port
/// does: it connected to `localhost:<port>`, so it sends that Host and
/// `Origin: http://localhost:<port>` (the server compares the two).
async fn browser_socket(
    nginx: &NginxServer,
    path: &str,
    origin: &str,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}{path}", nginx.addr)
        .into_client_request()
        .unwrap();
    let h = req.headers_mut();
    h.insert(
        "host",
        format!("localhost:{}", nginx.port()).parse().unwrap(),
    );
    h.insert("origin", origin.parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await?;
    Ok(Ws { ws })
}

/// What a browser on http://localhost:8080 does through the shipped nginx:
/// load the page and its client, then open the document's socket with its
/// own Origin, and get `init` (before nginx forwarded the Host with its
/// port, that socket was refused 403). A foreign Origin is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_nginx_a_browser_loads_the_page_and_opens_a_socket() {
    let server = TestServer::start(TANDEM, &[]);
    let nginx = NginxServer::start(std::slice::from_ref(&server.addr));
    let host = format!("localhost:{}", nginx.port());
    let http = reqwest::Client::new();
    for (path, needle) in [
        ("/", "<title>Tandem</title>"),
        ("/assets/app.js", "import"),
        ("/assets/tandem-client.js", "TandemClient"),
    ] {
        let r = http
            .get(format!("http://{}{path}", nginx.addr))
            .header("host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.text().await.unwrap().contains(needle), "{path}");
    }

    let origin = format!("http://{host}");
    let mut ws = browser_socket(&nginx, "/ws/browser-doc?user_id=b1&name=B", &origin)
        .await
        .unwrap_or_else(|e| panic!("the browser's socket was refused through nginx: {e}"));
    let init = ws.recv().await;
    assert_eq!(init.kind(), tandem_testkit::ws::Kind::Init, "{init}");
    ws.close().await;

    for foreign in [
        "http://evil.example",
        "http://localhost:9999",
        "http://localhost",
    ] {
        match browser_socket(&nginx, "/ws/browser-doc?user_id=b2", foreign).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), 403, "{foreign}")
            }
            Ok(_) => panic!("{foreign} was let through"),
            Err(e) => panic!("{foreign}: {e}"),
        }
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
