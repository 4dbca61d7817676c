//! `tandem-bench suite --profile smoke` against throwaway Redis and
//! PostgreSQL: every workload and both baselines (echo floor, ShareDB) run
//! for a few seconds, and each must converge and produce its figures. No
//! timing is asserted: speed is measured by the full profile, not by tests.
//!
//! A test binary of its own: the suite loads the machine (many clients,
//! servers, Node), so it runs alone, as the other suites' tests would
//! otherwise share the cores with it. It lives in the bench's package so
//! that cargo builds the bench in the same run, with the same features, as
//! everything else `cargo test` builds.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// This package's binary, built by cargo for this test.
const BENCH: &str = env!("CARGO_BIN_EXE_tandem-bench");

/// The server under test: the `tandem` built beside the bench. Plain
/// `cargo test` builds it in the same run (the server's own tests need it);
/// `cargo test -p tandem-bench` alone may not, and then it is built here,
/// with this test's profile.
fn tandem_binary() -> PathBuf {
    let bin = Path::new(BENCH).with_file_name("tandem");
    if bin.exists() {
        return bin;
    }
    let profile = match Path::new(BENCH)
        .parent()
        .and_then(|d| d.file_name())
        .and_then(|d| d.to_str())
    {
        Some("debug") | None => "dev".to_owned(),
        Some(p) => p.to_owned(),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "-p",
            "tandem",
            "--bin",
            "tandem",
            "--profile",
            &profile,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit())
        .status()
        .expect("run cargo build -p tandem");
    assert!(status.success(), "cargo build -p tandem failed");
    assert!(bin.exists(), "no server binary at {}", bin.display());
    bin
}

#[test]
fn smoke_profile_converges_and_reports_every_workload() {
    tandem_testkit::require_binary("node", "nodejs");
    tandem_testkit::require_binary("npm", "npm");
    let tandem = tandem_binary();
    let redis = tandem_testkit::RedisServer::start();
    let pg = tandem_testkit::PgServer::start();
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(BENCH)
        .env("TANDEM_BIN", &tandem)
        .args(["suite", "--profile", "smoke", "--redis", &redis.url()])
        .args(["--database-url", &pg.url()])
        .arg("--out")
        .arg(out.path())
        .status()
        .expect("run tandem-bench");
    assert!(
        status.success(),
        "tandem-bench suite --profile smoke failed"
    );

    let doc: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("results.json")).unwrap()).unwrap();
    let results = doc["results"].as_array().unwrap();
    let names: Vec<String> = results
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["name"].as_str().unwrap(),
                r["system"].as_str().unwrap_or("")
            )
        })
        .collect();
    for w in ["W3", "W4", "W5", "W6", "W7", "W8", "W9", "commit script"] {
        assert!(
            names.iter().any(|n| n.starts_with(w)),
            "{w} missing from {names:?}"
        );
    }
    for system in ["tandem", "echo", "sharedb"] {
        assert!(
            results
                .iter()
                .any(|r| r["name"].as_str().unwrap().starts_with("W3") && r["system"] == system),
            "W3 has no {system} run"
        );
    }
    for r in results {
        let name = r["name"].as_str().unwrap();
        assert_ne!(
            r["converged"],
            Value::Bool(false),
            "{name} did not converge"
        );
        if r.get("cdf").is_some() {
            // Load runs: ops were sent, delivered to other clients and timed.
            assert!(r["ops"].as_u64().unwrap() > 0, "{name}: no ops");
            assert!(
                r["deliveries"].as_u64().unwrap() > 0,
                "{name}: no deliveries"
            );
            assert!(
                r["latency_us"]["p50"].as_f64().unwrap() > 0.0,
                "{name}: no latency"
            );
            assert_eq!(r["converged"], Value::Bool(true), "{name}: not checked");
        }
        if name.starts_with("W9") {
            assert!(
                r["ops_per_second"].as_f64().unwrap() > 0.0,
                "{name}: no rate"
            );
        }
        if name.starts_with("W7") {
            assert!(
                r["bytes_per_connection"].as_f64().unwrap() > 0.0,
                "{name}: no RSS"
            );
        }
    }
    for plot in [
        "w3-latency-cdf.svg",
        "w3-latency-by-n.svg",
        "w5-cross-instance.svg",
        "w9-replay.svg",
    ] {
        let svg = std::fs::read_to_string(out.path().join(plot)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("<rect"),
            "{plot} is empty"
        );
    }
}
