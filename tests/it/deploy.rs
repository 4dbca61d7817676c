//! The deployment as shipped: the compose file and Dockerfile checked
//! against what operators rely on, and the real topology run as processes
//! on loopback (no Docker engine here): PostgreSQL, Redis, two instances and
//! Debian's nginx with the project's nginx.conf.

use std::time::Duration;

use serde_yaml::Value;
use tandem_testkit::typist::{check_exactly_once, run_typists};
use tandem_testkit::{
    cluster, render_nginx_conf, require_binary, NginxServer, PgServer, RedisServer, TestServer,
};

use crate::TANDEM;

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn compose_file_has_the_topology_operators_rely_on() {
    let compose: Value =
        serde_yaml::from_str(&read("docker-compose.yml")).expect("docker-compose.yml is YAML");
    let services = compose["services"].as_mapping().expect("services");
    let svc = |name: &str| &compose["services"][name];
    // Redis: AOF every second, on a volume, health-checked.
    let redis_cmd = serde_yaml::to_string(&svc("redis")["command"]).unwrap();
    assert!(
        redis_cmd.contains("appendonly") && redis_cmd.contains("yes"),
        "{redis_cmd}"
    );
    assert!(
        redis_cmd.contains("appendfsync") && redis_cmd.contains("everysec"),
        "{redis_cmd}"
    );
    for s in ["redis", "postgres"] {
        assert!(
            svc(s)["volumes"]
                .as_sequence()
                .is_some_and(|v| !v.is_empty()),
            "{s} has no volume"
        );
        assert!(
            svc(s)["healthcheck"]["test"].is_sequence(),
            "{s} has no healthcheck"
        );
    }
    // Two or more instances, each waiting for healthy backends, configured
    // for the cluster (the YAML merge key `<<` is resolved by hand here).
    let anchor = &compose["x-tandem"];
    let tandems: Vec<&str> = services
        .keys()
        .filter_map(|k| k.as_str())
        .filter(|k| k.starts_with("tandem"))
        .collect();
    assert!(tandems.len() >= 2, "{tandems:?}");
    for t in &tandems {
        let merged = |key: &str| {
            let own = &svc(t)[key];
            if own.is_null() {
                anchor[key].clone()
            } else {
                own.clone()
            }
        };
        let deps = merged("depends_on");
        for backend in ["redis", "postgres"] {
            assert_eq!(
                deps[backend]["condition"], "service_healthy",
                "{t} → {backend}"
            );
        }
        let env = merged("environment");
        for var in ["REDIS_URL", "DATABASE_URL", "JWT_SECRET"] {
            assert!(env[var].is_string(), "{t} lacks {var}");
        }
    }
    // nginx in front, with the project's config, after healthy instances.
    let nginx = svc("nginx");
    let mounts = serde_yaml::to_string(&nginx["volumes"]).unwrap();
    assert!(mounts.contains("deploy/nginx.conf"), "{mounts}");
    for t in &tandems {
        assert_eq!(nginx["depends_on"][*t]["condition"], "service_healthy");
    }
    assert!(nginx["ports"].as_sequence().is_some_and(|p| !p.is_empty()));
    // Only nginx publishes ports.
    for (name, s) in services {
        if name.as_str() != Some("nginx") {
            assert!(s["ports"].is_null(), "{name:?} publishes ports");
        }
    }
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
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        render_nginx_conf(&["127.0.0.1:1".into()], 8, dir.path()),
    )
    .unwrap();
    let out = std::process::Command::new(bin)
        .arg("-t")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let raw = read("deploy/nginx.conf");
    assert!(raw.contains("least_conn") && raw.contains("proxy_set_header Upgrade"));
    assert!(raw.contains("location = /metrics"));
}

fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn scrape(s: &TestServer) -> String {
    reqwest::get(s.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
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
    let committed_before = counter(&scrape(&servers[1]).await, "tandem_ops_committed_total");

    let doc = "behind-nginx";
    let victim = &mut servers[0];
    let mut typists = run_typists(
        vec![nginx.addr.clone()],
        doc,
        6,
        Duration::from_millis(1500),
        async {
            tokio::time::sleep(Duration::from_millis(800)).await;
            let status = tokio::task::block_in_place(|| victim.sigterm());
            assert!(status.success(), "drained instance exited with {status:?}");
        },
    )
    .await;
    assert!(
        typists.iter().any(|t| t.reconnects > 0),
        "nobody was moved off the drained instance"
    );
    check_exactly_once(&servers[1], doc, &mut typists).await;
    let acked: usize = typists.iter().map(|t| t.acked.len()).sum();
    assert!(acked > 50, "only {acked} acknowledged");
    // The survivor's counters moved; its readiness holds.
    let m = scrape(&servers[1]).await;
    assert!(counter(&m, "tandem_ops_committed_total") > committed_before);
    assert!(m.contains("tandem_connections"));
    assert_eq!(
        reqwest::get(servers[1].http("/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );
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
