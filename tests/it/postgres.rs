//! PostgreSQL as the durable home: the store contract (run against a fresh
//! throwaway PostgreSQL and against SQLite; token revocation and account
//! deletion included), and whole-cluster restarts with
//! Redis emptied, SIGKILL of everything, and PostgreSQL restarted mid-typing.
//! The store contract is in `postgres/contract.rs`.

use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tandem::ot::splice;
use tandem_testkit::server::metric;
use tandem_testkit::typist::{check_exactly_once, run_typists, tokens_in};
use tandem_testkit::{cluster, random_edit, Editor, PgServer, RedisServer, TestServer, TIMEOUT};

use crate::TANDEM;

mod contract;

fn pg_env(pg: &PgServer) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", pg.url()),
        ("SNAPSHOT_INTERVAL_MS", "100".into()),
        ("RUST_LOG", "warn".into()),
    ]
}

fn as_env<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

async fn all_documents(s: &TestServer, docs: &[String]) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for d in docs {
        out.push(s.document(d).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_cluster_restart_with_redis_emptied_restores_every_document() {
    let pg = PgServer::start();
    let mut redis = RedisServer::start();
    let env = pg_env(&pg);
    let (_d, mut servers) = cluster(TANDEM, &redis, 2, &as_env(&env));
    let docs: Vec<String> = (0..5).map(|i| format!("doc{i}")).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for (i, d) in docs.iter().enumerate() {
        let mut a = Editor::join(&servers[i % 2], d, "a", None).await;
        let mut b = Editor::join(&servers[(i + 1) % 2], d, "b", None).await;
        for _ in 0..30 {
            a.edit(random_edit(&mut rng, a.ot.len_chars())).await;
            b.edit(random_edit(&mut rng, b.ot.len_chars())).await;
            a.pump(Duration::from_millis(2)).await;
            b.pump(Duration::from_millis(2)).await;
        }
        a.settle().await;
        b.settle().await;
    }
    let before = all_documents(&servers[0], &docs).await;
    assert_eq!(before, all_documents(&servers[1], &docs).await);
    for s in &mut servers {
        assert!(s.sigterm().success());
    }
    redis.restart(); // no persistence: Redis comes back empty
    let (_d2, servers) = cluster(TANDEM, &redis, 2, &as_env(&env));
    for s in &servers {
        assert_eq!(
            all_documents(s, &docs).await,
            before,
            "after restart, on {}",
            s.addr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_everything_and_empty_redis_comes_back_at_the_last_journal_flush() {
    let pg = PgServer::start();
    let mut redis = RedisServer::start();
    let mut env = pg_env(&pg);
    env.push(("OP_RATE_PER_SEC", "100000".into()));
    env.push(("OP_RATE_BURST", "100000".into()));
    let (_d, mut servers) = cluster(TANDEM, &redis, 2, &as_env(&env));
    let doc = "crash";
    let mut ed = Editor::join(&servers[0], doc, "w", None).await;
    // Type steadily; remember the text at every acknowledged version.
    let mut texts = vec![String::new()];
    let mut acked_at = vec![Instant::now()];
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        ed.edit(random_edit(&mut rng, ed.ot.len_chars())).await;
        ed.settle().await;
        while texts.len() as u64 <= ed.ot.version {
            texts.push(ed.ot.text());
            acked_at.push(Instant::now());
        }
    }
    let killed_at = Instant::now();
    for s in &mut servers {
        s.kill(); // SIGKILL: no final flush
    }
    redis.restart();
    let (_d2, servers) = cluster(TANDEM, &redis, 2, &as_env(&env));
    let (content, version) = servers[1].document(doc).await;
    assert_eq!(
        content, texts[version as usize],
        "restored state is not a committed state"
    );
    let acked = ed.ot.version;
    let window = killed_at.duration_since(acked_at[version as usize]);
    eprintln!(
        "SIGKILL + empty Redis: acked {acked}, restored {version} ({} ops lost, window {:?})",
        acked - version,
        window
    );
    // Snapshots hand off every 100 ms and the persister flushes every 100 ms.
    assert!(
        window < Duration::from_millis(600),
        "lost {:?} of acknowledged edits",
        window
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarted_while_clients_type_loses_no_edit() {
    let mut pg = PgServer::start();
    let mut redis = RedisServer::start();
    let env = pg_env(&pg);
    let (_d, mut servers) = cluster(TANDEM, &redis, 2, &as_env(&env));
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
    let doc = "pgrestart";
    let pg_ref = &mut pg;
    let first = &servers[0];
    let mut down = (0, String::new());
    // Down for longer than the pool's 2 s acquire timeout, so persisting
    // fails (and is retried) rather than merely waits.
    let mut typists = run_typists(addrs, doc, 4, Duration::from_millis(1000), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        pg_ref.stop();
        tokio::time::sleep(Duration::from_millis(3000)).await;
        // Editing goes on in Redis: ready, with the degradation said.
        down = first.readiness().await;
        pg_ref.restart();
    })
    .await;
    assert_eq!(down.0, 200, "{down:?}");
    assert!(down.1.starts_with("ready (degraded: "), "{down:?}");
    check_exactly_once(&servers[0], doc, &mut typists).await;
    let live = servers[0].document(doc).await;
    // The outage was seen and counted.
    let errors = metric(&servers[0].metrics().await, "tandem_persist_errors_total");
    assert!(
        errors > 0.0,
        "no persistence errors counted during the outage"
    );
    // Persistence catches up by itself: give it a moment, then SIGKILL (no
    // final flush), empty Redis, and cold-start from PostgreSQL alone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for s in &mut servers {
        s.kill();
    }
    redis.restart();
    let (_d2, servers) = cluster(TANDEM, &redis, 1, &as_env(&env));
    let restored = servers[0].document(doc).await;
    assert_eq!(restored, live);
    let created: usize = typists.iter().map(|t| t.created.len()).sum();
    assert_eq!(tokens_in(&restored.0).len(), created);
}

/// A user types U+0000 into one document while another is edited beside
/// it on the same instance; both reach PostgreSQL byte-exact (issue 30:
/// PostgreSQL refused the NUL, the instance's one save transaction failed
/// forever, and a neighbouring document came back empty). Then everything
/// is SIGKILLed and Redis comes back empty: both documents come back from
/// PostgreSQL alone, as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nul_in_one_document_stops_no_save_and_survives_an_emptied_redis() {
    let pg = PgServer::start();
    let mut redis = RedisServer::start();
    let env = pg_env(&pg);
    let (_d, mut servers) = cluster(TANDEM, &redis, 1, &as_env(&env));
    let docs = vec!["nul".to_owned(), "plain".to_owned()];
    let mut nul = Editor::join(&servers[0], "nul", "a", None).await;
    let mut plain = Editor::join(&servers[0], "plain", "b", None).await;
    for i in 0..20 {
        let (n, p) = (nul.ot.len_chars(), plain.ot.len_chars());
        nul.edit(splice(n, 0, 0, &format!("{i}\u{0}\u{1}\u{202e}")))
            .await;
        plain.edit(splice(p, 0, 0, &format!("line {i}\n"))).await;
        nul.settle().await;
        plain.settle().await;
    }
    let before = all_documents(&servers[0], &docs).await;
    assert!(before[0].0.contains('\u{0}'));
    // Both are saved: PostgreSQL holds each at its live version.
    let deadline = Instant::now() + TIMEOUT;
    for (doc, (_, version)) in docs.iter().zip(&before) {
        loop {
            let v = pg.query(&format!(
                "SELECT snapshot_version FROM documents WHERE id = '{doc}'"
            ));
            if v.trim() == version.to_string() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{doc} not saved: {v} of {version}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    servers[0].kill();
    redis.restart(); // no persistence: Redis comes back empty
    let (_d2, servers) = cluster(TANDEM, &redis, 1, &as_env(&env));
    assert_eq!(all_documents(&servers[0], &docs).await, before);
}

/// PostgreSQL refuses one document's rows (a trigger raising a check
/// violation for it alone) while two documents are edited on one
/// instance: the other is saved all along, the refused one backs off, is
/// counted and reported, and is saved once PostgreSQL takes it again
/// (issue 30: one refused row stopped every save of the instance).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_document_the_database_refuses_holds_no_other_back() {
    let pg = PgServer::start();
    let redis = RedisServer::start();
    let env = pg_env(&pg);
    let (_d, servers) = cluster(TANDEM, &redis, 1, &as_env(&env));
    let s = &servers[0];
    let docs = vec!["refused".to_owned(), "fine".to_owned()];
    let mut eds = Vec::new();
    for d in &docs {
        eds.push(Editor::join(s, d, "u", None).await);
    }
    pg.query(
        "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN \
         RAISE EXCEPTION 'new row violates check constraint' USING ERRCODE = '23514'; \
         END $$ LANGUAGE plpgsql; \
         CREATE TRIGGER refuse BEFORE UPDATE ON documents FOR EACH ROW \
         WHEN (NEW.id = 'refused') EXECUTE FUNCTION refuse();",
    );
    let saved = |doc: &str| {
        pg.query(&format!(
            "SELECT snapshot_version FROM documents WHERE id = '{doc}'"
        ))
        .trim()
        .parse::<u64>()
        .unwrap_or(0)
    };
    type_five(&mut eds).await;
    let deadline = Instant::now() + TIMEOUT;
    while saved("fine") < eds[1].ot.version {
        assert!(
            Instant::now() < deadline,
            "the other document was not saved"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(saved("refused"), 0);
    let m = s.metrics().await;
    assert_eq!(metric(&m, "tandem_persist_failing_docs"), 1.0, "{m}");
    assert!(metric(&m, "tandem_persist_doc_failures_total") >= 1.0);
    assert_eq!(
        metric(&m, "tandem_storage_failing{part=\"persist\"}"),
        0.0,
        "the store takes the others' writes: not failing as a whole"
    );
    assert_eq!(s.readiness().await, (200, "ready".to_owned()));
    // Taken again: saved after its back-off.
    pg.query("DROP TRIGGER refuse ON documents;");
    type_five(&mut eds).await;
    let deadline = Instant::now() + Duration::from_secs(40);
    while saved("refused") < eds[0].ot.version || saved("fine") < eds[1].ot.version {
        assert!(
            Instant::now() < deadline,
            "not saved after the trigger went"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metric(&s.metrics().await, "tandem_persist_failing_docs"),
        0.0
    );
}

/// Five one-character edits on each editor, each acknowledged.
async fn type_five(eds: &mut [Editor]) {
    for ed in eds {
        for _ in 0..5 {
            ed.edit(splice(ed.ot.len_chars(), 0, 0, "x")).await;
            ed.settle().await;
        }
    }
}
