//! Memory and storage bounded by bytes, not only counts, and per-user and
//! per-document quotas: the in-memory history and the Redis op log under a
//! flood of large ops (the document stays correct, late clients still get
//! it), history pages capped in bytes (from memory and from the journal),
//! tag count, length and charset, documents per owner, and the client-seq
//! dedupe rows REST edits and many sockets leave behind.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tandem_testkit::{
    cluster, error_code, Api, Editor, Kind, RedisServer, TestServer, Ws, TIMEOUT,
};

use crate::TANDEM;

/// `n` characters of a letter that depends on `i` (each op's text differs).
fn text(i: usize, n: usize) -> String {
    char::from(b'a' + (i % 26) as u8).to_string().repeat(n)
}

/// Replace the whole document (`len` chars at `version`) with `new` over
/// REST (anonymous mode); the version it produced.
async fn replace(api: &Api<'_>, doc: &str, version: u64, len: usize, new: &str) -> u64 {
    let op = if len == 0 {
        json!([new])
    } else {
        json!([new, -(len as i64)])
    };
    let (st, v) = api
        .call(
            Method::POST,
            &format!("/api/documents/{doc}/ops"),
            None,
            Some(json!({"version": version, "op": op})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["version"].as_u64().unwrap()
}

/// GET a history page: (version, op JSON length) per item.
async fn history_page(api: &Api<'_>, doc: &str, since: u64) -> Vec<(u64, usize)> {
    let (st, v) = api
        .call(
            Method::GET,
            &format!("/api/documents/{doc}/history?since={since}&limit=1000"),
            None,
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| (i["version"].as_u64().unwrap(), i["op"].to_string().len()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_under_large_ops_and_late_clients_still_get_the_document() {
    // 1 MiB of history per document: ops of 200 KB keep about five.
    let server = TestServer::start(TANDEM, &[("HISTORY_RETAIN_BYTES", "1048576")]);
    let api = Api::new(&server);
    let doc = "big-ops";
    // A client that saw version 0 and went away (a connected one would
    // hold every op in its outbound queue).
    let late = Editor::join(&server, doc, "late", Some("late1")).await;
    let (late_version, late_history) = (late.ot.version, late.init.init().history.to_owned());
    assert_eq!(late_version, 0);
    drop(late);

    // Warm up (allocator arenas, the first snapshot), then measure.
    let size = 200 * 1024;
    let mut version = 0;
    let mut len = 0;
    for i in 0..5 {
        version = replace(&api, doc, version, len, &text(i, size)).await;
        len = size;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.rss_kb();
    let ops = 300; // 60 MB of ops
    for i in 5..5 + ops {
        version = replace(&api, doc, version, len, &text(i, size)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = server.rss_kb();
    eprintln!(
        "RSS before {before} KiB, after {} ops of {size} B: {after} KiB (+{} KiB)",
        ops,
        after.saturating_sub(before)
    );
    assert!(
        after < before + 24 * 1024,
        "RSS grew from {before} KiB to {after} KiB: the history kept the ops"
    );
    let expected = text(4 + ops, size);
    assert_eq!(server.document(doc).await, (expected.clone(), version));

    // A client resuming from before the retained window gets a full init.
    let q = format!("user_id=late&client=late1&version={late_version}&history={late_history}");
    let (_ws, init) = Ws::connect(&server.ws_url(doc, &q)).await.unwrap();
    let i = init.init();
    assert_eq!(i.resumed, Some(false), "replayed 60 MB instead of an init");
    assert_eq!((i.content, i.version), (Some(expected.as_str()), version));
    // A resume within the window still replays.
    let q = format!(
        "user_id=r&client=r1&version={}&history={late_history}",
        version - 1
    );
    let (_ws, init) = Ws::connect(&server.ws_url(doc, &q)).await.unwrap();
    assert_eq!(init.init().resumed, Some(true));
    // The journal still has the whole history, a bounded page at a time.
    let page = history_page(&api, doc, 0).await;
    assert_eq!(page.first().map(|p| p.0), Some(1));
    assert!(page.len() <= 6, "{} ops of 200 KB in one page", page.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_and_version_replays_are_bounded_in_bytes() {
    // Memory keeps one op, so older pages come from the journal's SQL.
    let server = TestServer::start(
        TANDEM,
        &[
            ("HISTORY_PAGE_BYTES", "500000"),
            ("HISTORY_RETAIN_BYTES", "1"),
        ],
    );
    let api = Api::new(&server);
    let doc = "pages";
    let _ed = Editor::join(&server, doc, "u", None).await;
    let size = 150_000;
    let mut version = 0;
    let mut len = 0;
    let mut contents = vec![String::new()];
    for i in 0..10 {
        let t = text(i, size);
        version = replace(&api, doc, version, len, &t).await;
        len = size;
        contents.push(t);
    }
    // One op bigger than a page still comes, alone.
    let huge = text(20, 600_000);
    version = replace(&api, doc, version, len, &huge).await;
    contents.push(huge);
    assert_eq!(version, 11);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut since = 0;
    let mut pages = Vec::new();
    while since < version {
        let page = history_page(&api, doc, since).await;
        assert!(!page.is_empty());
        let bytes: usize = page.iter().map(|p| p.1).sum();
        assert!(
            page.len() == 1 || bytes <= 500_000 + 64,
            "page after {since}: {} ops, {bytes} bytes",
            page.len()
        );
        for (i, p) in page.iter().enumerate() {
            assert_eq!(p.0, since + 1 + i as u64);
        }
        since = page.last().unwrap().0;
        pages.push(page.len());
    }
    // 150 KB ops three to a page, then the 600 KB one alone.
    assert_eq!(pages, [3, 3, 3, 1, 1], "page sizes");
    // From memory (the newest op) too.
    assert_eq!(history_page(&api, doc, 10).await.len(), 1);

    // A version's content is replayed a bounded page at a time.
    for n in [0, 4, 10, 11] {
        let (st, v) = api
            .call(
                Method::GET,
                &format!("/api/documents/{doc}/versions/{n}"),
                None,
                None,
            )
            .await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(v["content"], contents[n as usize].as_str(), "version {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_op_log_is_bounded_in_bytes_while_instances_converge() {
    let redis = RedisServer::start();
    let budget = 1024 * 1024;
    let (_dir, servers) = cluster(
        TANDEM,
        &redis,
        2,
        &[
            ("OPLOG_RETAIN_BYTES", "1048576"),
            ("SNAPSHOT_INTERVAL_MS", "50"),
            ("MAX_CLIENTS_PER_DOC", "3"),
        ],
    );
    let doc = "oplog";
    let mut a = Editor::join(&servers[0], doc, "a", Some("wa")).await;
    let mut b = Editor::join(&servers[1], doc, "b", Some("wb")).await;
    let apis = [Api::new(&servers[0]), Api::new(&servers[1])];
    let size = 100 * 1024;
    let mut version = 0;
    let mut len = 0;
    for i in 0..60 {
        version = replace(&apis[i % 2], doc, version, len, &text(i, size)).await;
        len = size;
    }
    // Six socket clients commit one small op each (the dedupe hash keeps 3).
    a.sync_to(version).await;
    b.sync_to(version).await;
    for c in 0..6 {
        let mut e = Editor::join(&servers[c % 2], doc, "s", Some(&format!("sock{c}"))).await;
        e.edit(tandem::ot::splice(e.ot.text().chars().count(), 0, 0, "!"))
            .await;
        e.settle().await;
        version = e.ot.version;
    }
    // Let the store catch up (the trim floor), then one more commit trims.
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.sync_to(version).await;
    a.edit(tandem::ot::splice(a.ot.text().chars().count(), 0, 0, "<"))
        .await;
    a.settle().await;

    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = |k: &str| format!("tandem:{{doc:{doc}}}:{k}");
    let log: Vec<String> = redis::cmd("LRANGE")
        .arg(key("log"))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let bytes: usize = log.iter().map(String::len).sum();
    let counted: usize = redis::cmd("GET")
        .arg(key("logbytes"))
        .query_async(&mut conn)
        .await
        .unwrap();
    eprintln!(
        "Redis op log after 60 ops of {size} B: {} records, {bytes} bytes",
        log.len()
    );
    assert_eq!(counted, bytes, "the running total drifted");
    assert!(bytes <= budget, "op log holds {bytes} bytes");
    assert!(!log.is_empty());
    let clients: usize = redis::cmd("HLEN")
        .arg(key("clients"))
        .query_async(&mut conn)
        .await
        .unwrap();
    // 3 socket clients at most, plus the REST edits' own (up to 256).
    let minted: usize = redis::cmd("ZCARD")
        .arg(key("clientv~"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(clients <= 3 + minted, "{clients} client rows");
    assert!(minted <= 256);

    // A log from before the running total is counted once from the list.
    let _: () = redis::cmd("DEL")
        .arg(key("logbytes"))
        .query_async(&mut conn)
        .await
        .unwrap();
    a.edit(tandem::ot::splice(a.ot.text().chars().count(), 0, 0, ">"))
        .await;
    a.settle().await;
    version = a.ot.version;
    let log: Vec<String> = redis::cmd("LRANGE")
        .arg(key("log"))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let counted: usize = redis::cmd("GET")
        .arg(key("logbytes"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(counted, log.iter().map(String::len).sum::<usize>());

    // Both instances and their clients agree.
    b.sync_to(version).await;
    assert_eq!(a.ot.text(), b.ot.text());
    let (content, v0) = servers[0].document(doc).await;
    assert_eq!(v0, version);
    assert_eq!(a.ot.text(), content);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while servers[1].document(doc).await != (content.clone(), version) {
        assert!(tokio::time::Instant::now() < deadline, "instances diverged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fresh = Editor::join(&servers[1], doc, "late", None).await;
    assert_eq!(fresh.init["content"], content.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_count_length_and_charset_are_limited_and_a_refusal_changes_nothing() {
    let server = TestServer::start(TANDEM, &[("MAX_TAGS_PER_DOC", "3")]);
    let api = Api::new(&server);
    let (token, _) = api.user("tagger").await;
    let doc = api.create(&token, "Tags", "x").await;
    let id = doc["id"].as_str().unwrap();
    let tags_path = format!("/api/documents/{id}/tags");
    let add = |tag: &str| {
        api.call(
            Method::POST,
            &tags_path,
            Some(&token),
            Some(json!({ "tag": tag })),
        )
    };
    for t in ["one", "two", "v1.2"] {
        let (st, v) = add(t).await;
        assert_eq!(st, StatusCode::OK, "{v}");
    }
    let tags = |v: &Value| v["tags"].clone();
    let current = || async {
        let (st, v) = api
            .call(
                Method::GET,
                &format!("/api/documents/{id}"),
                Some(&token),
                None,
            )
            .await;
        assert_eq!(st, StatusCode::OK);
        tags(&v)
    };
    let full = json!(["one", "two", "v1.2"]);
    assert_eq!(current().await, full);
    // A fourth is refused; re-adding one it has is fine.
    let (st, v) = add("four").await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::BAD_REQUEST, "bad_request"),
        "{v}"
    );
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("at most 3 tags"));
    assert_eq!(current().await, full);
    let (st, v) = add("two").await;
    assert_eq!((st, tags(&v)), (StatusCode::OK, full.clone()));
    // Too long, bad characters, blank: refused before the document is asked.
    for bad in [
        "t".repeat(33),
        "<b>".into(),
        "a,b".into(),
        " x".into(),
        "".into(),
        "a\"b".into(),
    ] {
        let (st, v) = add(&bad).await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::BAD_REQUEST, "bad_request"),
            "{bad:?}"
        );
    }
    let (st, _) = api
        .call(
            Method::DELETE,
            &format!("{tags_path}/%3Cb%3E"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(current().await, full);
    // Removing one makes room.
    let (st, _) = api
        .call(
            Method::DELETE,
            &format!("{tags_path}/one"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) = add("four").await;
    assert_eq!(
        (st, tags(&v)),
        (StatusCode::OK, json!(["four", "two", "v1.2"]))
    );
    // A socket's init carries them.
    let (_ws, init) = Ws::connect(&server.ws_url(id, &format!("token={token}")))
        .await
        .unwrap();
    assert_eq!(init["meta"]["tags"], json!(["four", "two", "v1.2"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_per_owner_are_capped() {
    let server = TestServer::start(TANDEM, &[("MAX_DOCS_PER_USER", "2")]);
    let api = Api::new(&server);
    let (ann, _) = api.user("ann").await;
    let (bob, _) = api.user("bob").await;
    let first = api.create(&ann, "1", "").await;
    api.create(&ann, "2", "").await;
    let (st, v) = api
        .call(
            Method::POST,
            "/api/documents",
            Some(&ann),
            Some(json!({"title": "3", "content": "x"})),
        )
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::FORBIDDEN, "quota_exceeded"),
        "{v}"
    );
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("2 documents"));
    let (_, list) = api
        .call(Method::GET, "/api/documents", Some(&ann), None)
        .await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    // Another user is not affected; deleting one makes room.
    api.create(&bob, "b", "").await;
    let id = first["id"].as_str().unwrap();
    let (st, _) = api
        .call(
            Method::DELETE,
            &format!("/api/documents/{id}"),
            Some(&ann),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    api.create(&ann, "3", "").await;
}

/// Client-seq rows the embedded store holds for `doc`.
async fn client_rows(server: &TestServer, doc: &str) -> Vec<String> {
    let url = format!(
        "sqlite://{}?mode=ro",
        server.data_dir.join("tandem.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT client FROM client_seqs WHERE document_id = ?")
            .bind(doc)
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_seq_rows_stay_bounded_and_recent_resends_are_still_deduplicated() {
    let server = TestServer::start(
        TANDEM,
        &[("MAX_CLIENTS_PER_DOC", "4"), ("SNAPSHOT_INTERVAL_MS", "50")],
    );
    let api = Api::new(&server);
    let doc = "seqs";
    let _ed = Editor::join(&server, doc, "u", None).await;
    // REST edits leave no rows at all.
    let mut version = 0;
    for i in 0..30 {
        version = replace(&api, doc, version, i, &text(i, i + 1)).await;
    }
    // Ten socket clients, one op each: the four newest keep rows.
    let mut len = 30;
    for c in 0..10 {
        let (mut ws, _) = Ws::connect(&server.ws_url(doc, &format!("user_id=s&client=sock{c}")))
            .await
            .unwrap();
        ws.send(json!({"type": "op", "version": version, "seq": 1, "op": [len, "!"]}))
            .await;
        version = ws.recv_type(Kind::Ack).await["version"].as_u64().unwrap();
        len += 1;
        if c == 9 {
            // A resend of the newest client's op is answered with its
            // version, not applied again.
            let (mut again, _) = Ws::connect(&server.ws_url(doc, "user_id=s&client=sock9"))
                .await
                .unwrap();
            again
                .send(json!({"type": "op", "version": version - 1, "seq": 1, "op": [len - 1, "!"]}))
                .await;
            assert_eq!(again.recv_type(Kind::Ack).await["version"], version);
        }
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (content, v) = server.document(doc).await;
    assert_eq!((content.chars().count(), v), (40, version));
    let rows = client_rows(&server, doc).await;
    eprintln!("client rows after 30 REST edits and 10 sockets: {rows:?}");
    // (The server may scope a socket's id to its user: `sock6@…`.)
    let mut names: Vec<&str> = rows.iter().map(|c| c.split('@').next().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["sock6", "sock7", "sock8", "sock9"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_that_would_replay_megabytes_gets_a_full_init() {
    let server = TestServer::start(TANDEM, &[]);
    let api = Api::new(&server);
    let doc = "resume-bytes";
    let gone = Editor::join(&server, doc, "g", Some("g1")).await;
    let history = gone.init.init().history.to_owned();
    drop(gone);
    // 25 ops of 200 KB: all in memory, few enough for the outbound queue,
    // but 5 MB to replay: more than the content costs.
    let size = 200 * 1024;
    let (mut version, mut len) = (0, 0);
    for i in 0..25 {
        version = replace(&api, doc, version, len, &text(i, size)).await;
        len = size;
    }
    let q = format!("user_id=g&client=g1&version=0&history={history}");
    let (_ws, init) = Ws::connect(&server.ws_url(doc, &q)).await.unwrap();
    let i = init.init();
    assert_eq!(i.resumed, Some(false), "5 MB replayed");
    assert_eq!(i.content, Some(text(24, size).as_str()));
    assert_eq!(i.version, version);
    // A short gap is still replayed.
    let q = format!(
        "user_id=g&client=g1&version={}&history={history}",
        version - 3
    );
    let (_ws, init) = Ws::connect(&server.ws_url(doc, &q)).await.unwrap();
    assert_eq!(init.init().resumed, Some(true));
}

/// Undo stacks are bounded in bytes as well as entries, in Redis as in
/// memory: six replacements of a 1 MB text (each undo step holds the 1 MB it
/// deleted) keep the newest 4 MB of undo, and undo still reverts the newest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undo_stacks_are_bounded_in_bytes() {
    let redis = RedisServer::start();
    let (_dir, servers) = cluster(
        TANDEM,
        &redis,
        1,
        &[("MAX_FRAME_BYTES", "2097152"), ("OP_RATE_BURST", "1000")],
    );
    let doc = "pastes";
    let mut e = Editor::join(&servers[0], doc, "paster", Some("p1")).await;
    let paste = 1_000_000;
    for i in 0..6 {
        let len = e.ot.text().chars().count();
        e.edit(tandem::ot::splice(len, 0, len, &text(i, paste)))
            .await;
        e.settle().await;
        // Pastes a second apart: each its own undo step.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let stacks: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("tandem:{{doc:{doc}}}:stacks"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let undo: Vec<String> = serde_json::from_str(&stacks["u:paster"]).unwrap();
    let bytes: usize = undo.iter().map(String::len).sum();
    println!(
        "undo stack after 6 replacements of 1 MB: {} entries, {bytes} bytes",
        undo.len()
    );
    assert!(bytes <= tandem::undo::STACK_BYTES, "{bytes} bytes kept");
    assert_eq!(undo.len(), 4, "{} entries", undo.len());
    // Undo reverts the newest replacement.
    e.ws.send(json!({"type": "undo"})).await;
    let m = e.ws.recv_type(Kind::Op).await;
    e.handle(&m).await;
    assert_eq!(e.ot.text(), text(4, paste));
}
