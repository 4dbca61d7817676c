//! Prometheus metrics: the catalog of every series the server exports (its
//! kind, HELP text, histogram buckets and the label values it takes), the
//! process-wide exporter built from it, and the start-up registration that
//! makes every series appear at zero before its first event, so dashboards
//! and alerts see zeros, not holes.
//!
//! Owns: the `metrics-exporter-prometheus` recorder. Every
//! `metrics::counter!/gauge!/histogram!` name in `src` must be listed in
//! [`CATALOG`] (a test reads the sources to check).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// What a series is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Counter,
    Gauge,
    /// A histogram with these bucket bounds.
    Histogram(&'static [f64]),
}

/// One exported metric.
#[derive(Debug)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    /// The label it is split by and every value it takes (registered at
    /// start); `None`: unlabelled.
    pub label: Option<(&'static str, &'static [&'static str])>,
}

/// Latencies from 0.25 ms to 10 s.
pub const SECONDS: &[f64] = &[
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Counts (ops in a batch, versions behind, ...) from 1 to 10,000.
pub const COUNTS: &[f64] = &[
    0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];

const REFUSAL_CODES: &[&str] = &[
    "bad_message",
    "bad_op",
    "version_out_of_range",
    "too_large",
    "doc_too_large",
    "rate_limited",
    "forbidden",
    "unauthorized",
    "storage_unavailable",
    "internal",
];

/// Every metric the server exports.
pub const CATALOG: &[Metric] = &[
    Metric { name: "tandem_connections", kind: Kind::Gauge, help: "Open WebSocket sessions on this instance.", label: None },
    Metric { name: "tandem_open_documents", kind: Kind::Gauge, help: "Documents loaded in memory on this instance.", label: None },
    Metric { name: "tandem_persist_pending_docs", kind: Kind::Gauge, help: "Documents in the snapshot batch being written to the store.", label: None },
    Metric { name: "tandem_ops_committed_total", kind: Kind::Counter, help: "Ops committed by this instance (acknowledged to their authors).", label: None },
    Metric { name: "tandem_commit_seconds", kind: Kind::Histogram(SECONDS), help: "Time of one commit round (sequencer call for a batch of ops), in seconds.", label: None },
    Metric { name: "tandem_commit_batch_ops", kind: Kind::Histogram(COUNTS), help: "Ops committed together in one commit round.", label: None },
    Metric { name: "tandem_rebase_depth", kind: Kind::Histogram(COUNTS), help: "Versions an incoming op was transformed past before commit.", label: None },
    Metric { name: "tandem_commit_retries_total", kind: Kind::Counter, help: "Commit rounds retried (another instance committed first, or the sequencer was slow).", label: None },
    Metric { name: "tandem_forwarded_edits_total", kind: Kind::Counter, help: "Edits this instance forwarded to the instance holding their document's commit lease (COMMIT_LEADER).", label: None },
    Metric { name: "tandem_leader_grants_total", kind: Kind::Counter, help: "Document commit leases this instance was granted (COMMIT_LEADER).", label: None },
    Metric { name: "tandem_commit_queue_full_total", kind: Kind::Counter, help: "Ops refused because a document's commit queue was full (count or bytes).", label: None },
    Metric { name: "tandem_duplicate_resubmits_total", kind: Kind::Counter, help: "Resent ops recognised as already committed and acknowledged again.", label: None },
    Metric { name: "tandem_fanout_lag_seconds", kind: Kind::Histogram(SECONDS), help: "From an op's commit to its delivery to this instance's clients, in seconds.", label: None },
    Metric { name: "tandem_pubsub_reconnects_total", kind: Kind::Counter, help: "Redis pub/sub connections re-established.", label: None },
    Metric { name: "tandem_redis_wait_shortfalls_total", kind: Kind::Counter, help: "Commits whose WAIT for Redis replicas timed out (REDIS_WAIT_REPLICAS): not acked, retried.", label: None },
    Metric { name: "tandem_gap_refills_total", kind: Kind::Counter, help: "Missed ops refilled from the shared op log.", label: None },
    Metric { name: "tandem_reseeds_total", kind: Kind::Counter, help: "Documents re-seeded into a sequencer that had lost them.", label: None },
    Metric { name: "tandem_checksum_mismatches_total", kind: Kind::Counter, help: "Clients that reported their text at a checked version did not match the server's checksum (they reload).", label: None },
    Metric { name: "tandem_forks_total", kind: Kind::Counter, help: "Documents reset because the shared history moved to another epoch.", label: None },
    Metric { name: "tandem_snapshot_seconds", kind: Kind::Histogram(SECONDS), help: "Time to write one batch of snapshots and journal rows to the store, in seconds.", label: None },
    Metric { name: "tandem_snapshot_lag_versions", kind: Kind::Histogram(COUNTS), help: "Versions a document was ahead of its last durable snapshot when one was offered.", label: None },
    Metric { name: "tandem_snapshots_written_total", kind: Kind::Counter, help: "Document snapshots written to the store.", label: None },
    Metric { name: "tandem_journal_rows_written_total", kind: Kind::Counter, help: "Op journal rows written to the store.", label: None },
    Metric { name: "tandem_journal_group_batches", kind: Kind::Histogram(COUNTS), help: "Commit batches written to the journal in one group.", label: None },
    Metric { name: "tandem_persist_errors_total", kind: Kind::Counter, help: "Failed writes of snapshots or journal rows (retried).", label: None },
    Metric { name: "tandem_persist_doc_failures_total", kind: Kind::Counter, help: "Writes of one document's rows the store refused while it took the others' (the document backs off and is retried).", label: None },
    Metric { name: "tandem_persist_failing_docs", kind: Kind::Gauge, help: "Documents whose rows the store refuses, backing off.", label: None },
    Metric { name: "tandem_storage_failing", kind: Kind::Gauge, help: "1 while a part of storage refuses writes: commit (the write an ack waits for: the embedded journal or Redis; edits are refused) or persist (snapshots and journal rows behind it).", label: Some(("part", &["commit", "persist"])) },
    Metric { name: "tandem_storage_faults_total", kind: Kind::Counter, help: "Failed storage writes, by what their error says.", label: Some(("fault", &["disk_full", "out_of_memory", "read_only", "refused", "unreachable", "other"])) },
    Metric { name: "tandem_store_connections_discarded_total", kind: Kind::Counter, help: "Database connections closed instead of reused after a write transaction failed on them.", label: None },
    Metric { name: "tandem_refusals_total", kind: Kind::Counter, help: "Client messages refused, by protocol error code.", label: Some(("code", REFUSAL_CODES)) },
    Metric { name: "tandem_connections_refused_total", kind: Kind::Counter, help: "Connections refused: server full (total), per address (per_ip), per user (sessions), or silent past the header timeout (silent).", label: Some(("reason", &["total", "per_ip", "sessions", "silent"])) },
    Metric { name: "tandem_rate_limited_total", kind: Kind::Counter, help: "Requests refused by a rate limit, by limit.", label: Some(("limit", &["login_ip", "login_user", "login_account", "register", "rest_edit", "new_share", "ws_ticket", "password_hash"])) },
    Metric { name: "tandem_request_bodies_refused_total", kind: Kind::Counter, help: "Request bodies refused before their handler: past the read deadline (timeout, 408), no room in BODY_BUDGET_BYTES (budget, 503), no room in the client address's share of it (address, 503), over the largest body (too_large, 413), cut short (broken, 400).", label: Some(("reason", &["timeout", "budget", "address", "too_large", "broken"])) },
    Metric { name: "tandem_request_body_bytes", kind: Kind::Gauge, help: "Bytes of request bodies held now (against BODY_BUDGET_BYTES).", label: None },
    Metric { name: "tandem_ws_tickets_refused_total", kind: Kind::Counter, help: "WebSocket tickets refused because the ticket store held its cap of live tickets.", label: None },
    Metric { name: "tandem_limiter_full_total", kind: Kind::Counter, help: "Requests refused because a rate limiter held its most keys.", label: None },
    Metric { name: "tandem_shared_limit_fallbacks_total", kind: Kind::Counter, help: "Shared (Redis) rate-limit checks that fell back to this instance's own limit.", label: None },
    Metric { name: "tandem_sessions_revoked_total", kind: Kind::Counter, help: "WebSocket sessions closed because their token was revoked.", label: None },
];

/// The process-wide Prometheus recorder (installed once), with every
/// catalogued series described and registered.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            for m in CATALOG {
                if let Kind::Histogram(buckets) = m.kind {
                    builder = builder
                        .set_buckets_for_metric(Matcher::Full(m.name.to_owned()), buckets)
                        .ok()?;
                }
            }
            let handle = builder.install_recorder().ok()?;
            register_all();
            Some(handle)
        })
        .clone()
}

/// Describe every series and touch it (a zero increment registers it
/// without changing it).
fn register_all() {
    for m in CATALOG {
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, m.help),
            Kind::Histogram(_) => metrics::describe_histogram!(m.name, m.help),
        }
        let labels: Vec<Vec<(&str, &str)>> = match m.label {
            None => vec![vec![]],
            Some((key, values)) => values.iter().map(|v| vec![(key, *v)]).collect(),
        };
        for l in labels {
            let l: Vec<metrics::Label> = l
                .into_iter()
                .map(|(k, v)| metrics::Label::new(k, v))
                .collect();
            match m.kind {
                Kind::Counter => metrics::counter!(m.name, l).increment(0),
                Kind::Gauge => metrics::gauge!(m.name, l).increment(0.0),
                // Registered: rendered with empty buckets until a sample.
                Kind::Histogram(_) => drop(metrics::histogram!(m.name, l)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    /// Every metric name the sources emit is catalogued (so it has HELP,
    /// buckets and a zero at start), and every catalogued one is emitted.
    #[test]
    fn the_catalog_lists_every_metric_in_the_sources() {
        fn walk(dir: &std::path::Path, out: &mut String) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") && !p.ends_with("telemetry.rs") {
                    out.push_str(&std::fs::read_to_string(&p).unwrap());
                }
            }
        }
        let mut src = String::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut src,
        );
        let mut used = std::collections::BTreeSet::new();
        for macro_ in [
            "metrics::counter!(",
            "metrics::gauge!(",
            "metrics::histogram!(",
        ] {
            for (i, _) in src.match_indices(macro_) {
                let rest = src[i + macro_.len()..].trim_start();
                let name = rest.strip_prefix('"').and_then(|r| r.split('"').next());
                used.insert(
                    name.unwrap_or_else(|| {
                        panic!(
                            "a metric named by a non-literal: {}",
                            &rest[..40.min(rest.len())]
                        )
                    })
                    .to_owned(),
                );
            }
        }
        let listed: std::collections::BTreeSet<String> =
            CATALOG.iter().map(|m| m.name.to_owned()).collect();
        assert_eq!(used, listed, "src and the metrics catalog differ");
        for m in CATALOG {
            if m.name.ends_with("_seconds") {
                assert_eq!(m.kind, Kind::Histogram(SECONDS), "{}", m.name);
            }
        }
    }

    #[test]
    fn refusal_codes_are_every_protocol_code() {
        use ErrorCode::*;
        for c in [
            BadMessage,
            BadOp,
            VersionOutOfRange,
            TooLarge,
            DocTooLarge,
            RateLimited,
            Forbidden,
            Unauthorized,
            StorageUnavailable,
            Internal,
        ] {
            assert!(REFUSAL_CODES.contains(&c.as_str()), "{c:?}");
        }
        assert_eq!(REFUSAL_CODES.len(), 10);
    }
}
