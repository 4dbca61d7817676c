//! The shipped files checked against what operators rely on: the compose
//! file (topology, scaling, hostnames as instance ids), the Dockerfile
//! (multi-stage, non-root, health-checked) and nginx.conf (valid for
//! Debian's nginx).

use serde_yaml::Value;
use tandem_testkit::{render_nginx_conf_with, require_binary, Balance};

use super::read;

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
