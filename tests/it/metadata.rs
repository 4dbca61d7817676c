//! Replicated metadata across instances: title (last writer wins), tags
//! (observed-remove set), views (grow-only counter) changed concurrently on
//! two instances converge, reach live clients, and survive a cold restart.

use std::time::Duration;

use serde_json::{json, Value};
use tandem_testkit::{cluster, Editor, Kind, RedisServer, TestServer};

use crate::TANDEM;

async fn meta_of(s: &TestServer, doc: &str) -> (String, Vec<String>, u64) {
    let (st, v) = s.get(&format!("/api/documents/{doc}")).await;
    assert_eq!(st, 200, "{v}");
    let tags = v["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    (
        v["title"].as_str().unwrap().to_owned(),
        tags,
        v["views"].as_u64().unwrap(),
    )
}

async fn send(method: reqwest::Method, url: String, body: Option<Value>) -> Value {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn title_tags_and_views_changed_on_two_instances_converge() {
    let mut redis = RedisServer::start();
    let (dir, mut servers) = cluster(TANDEM, &redis, 2, &[]);
    let doc = "meta";
    let mut eds = Vec::new();
    for i in 0..5 {
        eds.push(Editor::join(&servers[i % 2], doc, &format!("v{i}"), None).await);
    }
    let put = reqwest::Method::PUT;
    let post = reqwest::Method::POST;
    let del = reqwest::Method::DELETE;
    let (a, b) = (&servers[0], &servers[1]);
    let url = |s: &TestServer, p: &str| s.http(&format!("/api/documents/{doc}{p}"));
    for round in 0..10 {
        tokio::join!(
            send(
                put.clone(),
                url(a, ""),
                Some(json!({"title": format!("A{round}")}))
            ),
            send(
                put.clone(),
                url(b, ""),
                Some(json!({"title": format!("B{round}")}))
            ),
            send(
                post.clone(),
                url(a, "/tags"),
                Some(json!({"tag": format!("a{}", round % 3)}))
            ),
            send(
                post.clone(),
                url(b, "/tags"),
                Some(json!({"tag": format!("b{}", round % 4)}))
            ),
            send(del.clone(), url(a, &format!("/tags/b{}", round % 4)), None),
            send(
                del.clone(),
                url(b, &format!("/tags/a{}", (round + 1) % 3)),
                None
            ),
        );
    }
    // Both instances agree once the last states have crossed.
    let mut agreed = None;
    for _ in 0..100 {
        let (ma, mb) = (meta_of(a, doc).await, meta_of(b, doc).await);
        if ma == mb {
            agreed = Some(ma);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (title, tags, views) = agreed.expect("instances never agreed on the metadata");
    assert!(title == "A9" || title == "B9", "{title}");
    assert_eq!(views, 5, "five opens, counted across instances");
    assert!(tags.iter().any(|t| t.starts_with('a')) || tags.iter().any(|t| t.starts_with('b')));

    // Live clients on both instances were told, and saw the same end state.
    for ed in eds.iter_mut() {
        let mut last = None;
        while let Ok(Some(m)) = ed.ws.try_recv(Duration::from_millis(200)).await {
            if m.kind() == Kind::Meta {
                last = Some(m);
            }
        }
        let m = last.expect("no meta message reached a client");
        assert_eq!(m["title"], title.as_str());
        assert_eq!(m["views"], views);
    }
    let fresh = Editor::join(a, doc, "late", None).await;
    assert_eq!(fresh.init["meta"]["title"], title.as_str());
    assert_eq!(fresh.init["meta"]["views"], 6);

    // Cold restart with an empty Redis: the store's rows hold the merge.
    drop(eds);
    drop(fresh);
    for s in servers.iter_mut() {
        s.sigterm();
    }
    redis.restart();
    let url_r = redis.url();
    let again = TestServer::start_in(
        TANDEM,
        dir.path(),
        &[("REDIS_URL", url_r.as_str()), ("INSTANCE_ID", "inst9")],
    );
    let (t2, tags2, views2) = meta_of(&again, doc).await;
    assert_eq!((t2, tags2, views2), (title, tags, 6));
}

/// The last `meta` message that reaches `ed` within a moment.
async fn last_meta(ed: &mut Editor) -> Option<tandem_testkit::Frame> {
    let mut last = None;
    while let Ok(Some(m)) = ed.ws.try_recv(Duration::from_millis(300)).await {
        if m.kind() == Kind::Meta {
            last = Some(m);
        }
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_language_chosen_on_one_instance_reaches_editors_on_the_other() {
    use reqwest::Method;
    use tandem_testkit::Api;
    let redis = RedisServer::start();
    let (_dir, servers) = cluster(TANDEM, &redis, 2, &[]);
    let (a, b) = (&servers[0], &servers[1]);
    let (api, api_b) = (Api::new(a), Api::new(b));
    let (token, _) = api.user("linguist").await;
    let t = Some(token.as_str());

    // Guessed from the title, or chosen at creation; an unknown id is
    // refused and creates nothing.
    let (st, guessed) = api
        .call(
            Method::POST,
            "/api/documents",
            t,
            Some(json!({"title": "main.rs"})),
        )
        .await;
    assert_eq!(st, 201, "{guessed}");
    assert_eq!(
        (&guessed["language"], &guessed["language_set"]),
        (&json!("rust"), &json!(false))
    );
    let body = json!({"title": "notes", "language": "python"});
    let (_, chosen) = api
        .call(Method::POST, "/api/documents", t, Some(body))
        .await;
    assert_eq!(
        (&chosen["language"], &chosen["language_set"]),
        (&json!("python"), &json!(true))
    );
    let body = json!({"title": "x", "language": "cobol"});
    let (st, v) = api
        .call(Method::POST, "/api/documents", t, Some(body))
        .await;
    assert_eq!(st, 400, "{v}");
    let (_, list) = api.call(Method::GET, "/api/documents", t, None).await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");

    // An editor on instance B sees a choice made through instance A live.
    let id = guessed["id"].as_str().unwrap().to_owned();
    let url = b.ws_url(&id, &format!("token={token}"));
    let mut ed = Editor::join_url(&url).await.unwrap();
    assert_eq!(ed.init["meta"]["language"], "rust");
    let path = format!("/api/documents/{id}");
    let (st, v) = api
        .call(Method::PUT, &path, t, Some(json!({"language": "go"})))
        .await;
    assert_eq!(st, 200, "{v}");
    let m = last_meta(&mut ed)
        .await
        .expect("no meta reached instance B's editor");
    assert_eq!(
        (&m["language"], &m["language_set"]),
        (&json!("go"), &json!(true))
    );

    // A bad choice changes nothing; clearing the choice goes back to the
    // title, and a rename then changes the guess.
    let (st, _) = api
        .call(Method::PUT, &path, t, Some(json!({"language": "Rust "})))
        .await;
    assert_eq!(st, 400);
    let (_, v) = api_b.call(Method::GET, &path, t, None).await;
    assert_eq!(v["language"], "go");
    api.call(Method::PUT, &path, t, Some(json!({"language": ""})))
        .await;
    let (st, _) = api
        .call(Method::PUT, &path, t, Some(json!({"title": "README.md"})))
        .await;
    assert_eq!(st, 200);
    let m = last_meta(&mut ed).await.expect("no meta after the rename");
    assert_eq!(
        (&m["language"], &m["language_set"]),
        (&json!("markdown"), &json!(false))
    );
    // Lists say the same, on both instances (the store's row).
    for api in [&api, &api_b] {
        let (_, list) = api.call(Method::GET, "/api/documents", t, None).await;
        let langs: Vec<_> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["language"].clone())
            .collect();
        assert!(
            langs.contains(&json!("markdown")) && langs.contains(&json!("python")),
            "{list}"
        );
    }
    // The menu's list.
    let (st, langs) = api.call(Method::GET, "/api/languages", None, None).await;
    assert_eq!(st, 200);
    let ids: Vec<_> = langs
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    for want in [
        "plaintext",
        "markdown",
        "javascript",
        "typescript",
        "python",
        "rust",
        "go",
        "java",
        "c",
        "cpp",
        "json",
        "html",
        "css",
        "sql",
        "yaml",
    ] {
        assert!(ids.contains(&want), "{want} missing from {ids:?}");
    }
}
