//! OpenTelemetry: two instances on Redis export their spans over OTLP/HTTP
//! (JSON) to a receiver started by the test; an op typed on one instance,
//! seen by a client of the other, is one trace holding spans from both in
//! parent order (receive → rebase, commit → fan-out on each instance), and
//! a REST edit joins the trace of the `traceparent` it came with.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tandem_testkit::{cluster, Editor, RedisServer};

use crate::TANDEM;

/// One exported span: (instance, trace id, span id, parent span id, name).
#[derive(Clone, Debug)]
struct Exported {
    instance: String,
    trace: String,
    id: String,
    parent: String,
    name: String,
}

type Received = Arc<Mutex<(Vec<Exported>, Vec<Value>)>>;

fn attr<'a>(attrs: &'a Value, key: &str) -> Option<&'a str> {
    attrs.as_array()?.iter().find(|a| a["key"] == key)?["value"]["stringValue"].as_str()
}

/// A minimal OTLP/HTTP JSON receiver: `POST /v1/traces`.
async fn receiver() -> (String, Received) {
    use axum::routing::post;
    let got: Received = Arc::default();
    let state = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let state = state.clone();
            async move {
                let v: Value = serde_json::from_slice(&body).expect("OTLP JSON");
                let mut got = state.lock().unwrap();
                for rs in v["resourceSpans"].as_array().into_iter().flatten() {
                    let res = &rs["resource"]["attributes"];
                    got.1.push(res.clone());
                    let instance = attr(res, "service.instance.id").unwrap_or("").to_owned();
                    for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                        for s in ss["spans"].as_array().into_iter().flatten() {
                            got.0.push(Exported {
                                instance: instance.clone(),
                                trace: s["traceId"].as_str().unwrap_or("").to_owned(),
                                id: s["spanId"].as_str().unwrap_or("").to_owned(),
                                parent: s["parentSpanId"].as_str().unwrap_or("").to_owned(),
                                name: s["name"].as_str().unwrap_or("").to_owned(),
                            });
                        }
                    }
                }
                axum::Json(json!({}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), got)
}

/// Wait until `check` finds what it looks for among the spans received.
async fn wait_for<T>(got: &Received, check: impl Fn(&[Exported]) -> Option<T>) -> T {
    for _ in 0..100 {
        if let Some(t) = check(&got.lock().unwrap().0) {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("spans never arrived: {:#?}", got.lock().unwrap().0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_edit_is_one_trace_across_instances() {
    let (endpoint, got) = receiver().await;
    let redis = RedisServer::start();
    let (_dir, servers) = cluster(
        TANDEM,
        &redis,
        2,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_SERVICE_NAME", "tandem-test"),
        ],
    );
    let doc = "traced";
    let mut bob = Editor::join(&servers[1], doc, "bob", None).await;
    let mut alice = Editor::join(&servers[0], doc, "alice", None).await;
    alice.edit(tandem::ot::splice(0, 0, 0, "hi")).await;
    alice.settle().await;
    bob.sync_to(1).await;

    // The receipt on inst0 starts the trace; its rebase and commit are its
    // children; the fan-out on both instances continues the commit.
    let (receive, commit, fanouts) = wait_for(&got, |spans| {
        let receive = spans
            .iter()
            .find(|s| s.name == "op.receive" && s.instance == "inst0")?;
        let in_trace = |name: &str| {
            spans
                .iter()
                .filter(|s| s.trace == receive.trace && s.name == name)
                .cloned()
                .collect::<Vec<_>>()
        };
        let commit = in_trace("op.commit").into_iter().next()?;
        let fanouts = in_trace("op.fanout");
        let rebase = in_trace("op.rebase");
        (fanouts.len() >= 2 && !rebase.is_empty()).then(|| {
            assert_eq!(rebase[0].parent, receive.id);
            (receive.clone(), commit, fanouts)
        })
    })
    .await;
    assert!(receive.parent.is_empty(), "the receipt is the root");
    assert_eq!(
        (commit.parent.as_str(), commit.instance.as_str()),
        (receive.id.as_str(), "inst0")
    );
    let mut on: Vec<&str> = fanouts.iter().map(|f| f.instance.as_str()).collect();
    on.sort();
    assert_eq!(on, ["inst0", "inst1"], "{fanouts:#?}");
    for f in &fanouts {
        assert_eq!(f.parent, commit.id, "{f:?}");
    }
    let resources = got.lock().unwrap().1.clone();
    let r = &resources[0];
    assert_eq!(attr(r, "service.name"), Some("tandem-test"));
    assert_eq!(attr(r, "service.version"), Some(env!("CARGO_PKG_VERSION")));

    // A REST edit joins the caller's trace.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = reqwest::Client::new()
        .post(servers[0].http(&format!("/api/documents/{doc}/ops")))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(&json!({"version": 1, "op": [2, "!"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let spans = wait_for(&got, |spans| {
        let mine: Vec<Exported> = spans.iter().filter(|s| s.trace == trace).cloned().collect();
        let names: HashMap<&str, usize> = mine.iter().fold(HashMap::new(), |mut m, s| {
            *m.entry(s.name.as_str()).or_default() += 1;
            m
        });
        (names.get("op.fanout") >= Some(&2)).then_some(mine)
    })
    .await;
    let http = spans
        .iter()
        .find(|s| s.name == "http")
        .expect("the request's span");
    assert_eq!(http.parent, "00f067aa0ba902b7");
    assert!(spans
        .iter()
        .any(|s| s.name == "op.fanout" && s.instance == "inst1"));
}

/// Metric names (`tandem_…`) an expression uses.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("tandem_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        out.push(name);
    }
    out
}

/// Every query of the Grafana dashboard and every alert rule names a
/// series a fresh server exports (after one edit); the rules pass
/// `promtool check rules` where promtool is installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_use_only_exported_metrics() {
    let server = tandem_testkit::TestServer::start(TANDEM, &[]);
    let mut ed = Editor::join(&server, "metered", "u", None).await;
    ed.edit(tandem::ot::splice(0, 0, 0, "x")).await;
    ed.settle().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let text = reqwest::get(server.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exported: std::collections::HashSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let root = tandem_testkit::repo_root().join("observability");
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let rules_path = root.join("alerts.yml");
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&rules_path).unwrap()).unwrap();
    for rule in rules["groups"][0]["rules"].as_sequence().unwrap() {
        assert!(rule["alert"].as_str().is_some() && rule["annotations"]["summary"].is_string());
        exprs.push(rule["expr"].as_str().unwrap().to_owned());
    }
    for e in &exprs {
        for name in metric_names(e) {
            assert!(
                exported.contains(name.as_str()),
                "{name} (in `{e}`) is not exported; /metrics has {exported:?}"
            );
        }
    }
    if let Ok(out) = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules_path)
        .output()
    {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// With JSON logs, a log line written inside a traced request carries its
/// trace and span ids, so a log line leads to its trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_carry_the_trace_id() {
    let (endpoint, _got) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let server = tandem_testkit::TestServer::start_logged(
        TANDEM,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "debug"),
        ],
        &log,
    );
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let r = reqwest::Client::new()
        .get(server.http("/api/documents/nothing-here"))
        .header("traceparent", format!("00-{trace}-b7ad6b7169203331-01"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["span"]["trace_id"] == trace)
        .unwrap_or_else(|| panic!("no log line with the trace id in:\n{text}"));
    assert!(
        line["span"]["span_id"]
            .as_str()
            .is_some_and(|s| s.len() == 16),
        "{line}"
    );
}
