//! Hostile clients with an account, round two: the member surface (a cap
//! per document, lists paged with a cursor and a total, no username
//! oracle), member and metadata floods (the edit limit, over REST and
//! WebSocket), names and titles that pass for others (bidi controls and
//! invisible characters), and a guesser spread over many addresses (the
//! per-account login limit, which a browser that signed in before skips).

use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use tandem_testkit::{error_code, Api, Kind, TestServer, Ws};

use crate::TANDEM;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_capped_paged_and_usernames_not_told() {
    let server = TestServer::start(
        TANDEM,
        &[
            ("ALLOW_ANONYMOUS", "false"),
            ("MAX_MEMBERS_PER_DOC", "5"),
            ("NEW_SHARES_PER_HOUR", "8"),
        ],
    );
    let api = Api::new(&server);
    let (owner, _) = api.user("owner").await;
    let id = api.create_id(&owner, "team", "x").await;
    let members = format!("/api/documents/{id}/members");
    let share = |who: String, role: &'static str| {
        let api = &api;
        let (owner, path) = (owner.clone(), format!("{members}/{who}"));
        async move {
            api.call(
                Method::PUT,
                &path,
                Some(&owner),
                Some(json!({"role": role})),
            )
            .await
        }
    };
    let names: Vec<String> = (0..7).map(|i| format!("mem{i}")).collect();
    for n in &names {
        api.user(n).await;
    }
    for n in &names[..5] {
        let (st, v) = share(n.clone(), "viewer").await;
        assert_eq!(st, StatusCode::OK, "{v}");
    }
    // The cap: nobody new joins; a member's role still changes.
    let (st, v) = share(names[5].clone(), "viewer").await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::FORBIDDEN, "quota_exceeded")
    );
    let (st, _) = share(names[0].clone(), "editor").await;
    assert_eq!(st, StatusCode::OK);
    // Pages of two: everyone once, owner first, with the total.
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let (st, page) = api
            .call(
                Method::GET,
                &format!("{members}?limit=2&after={after}"),
                Some(&owner),
                None,
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{page}");
        assert_eq!(page["total"], 6);
        for m in page["items"].as_array().unwrap() {
            seen.push(m["username"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(n) => after = n.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, ["owner", "mem0", "mem1", "mem2", "mem3", "mem4"]);
    let (st, _) = api
        .call(
            Method::GET,
            &format!("{members}?after=%E2%80%AE"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    // Removing tells nothing: a member, a non-member and nobody alike.
    for who in ["mem4", "mem6", "ghost"] {
        let (st, _) = api
            .call(
                Method::DELETE,
                &format!("{members}/{who}"),
                Some(&owner),
                None,
            )
            .await;
        assert_eq!(st, StatusCode::NO_CONTENT, "{who}");
    }
    // New shares are limited before the username is looked up: 6 of 8
    // spent; a ghost is 404, then the limit answers for anyone alike.
    let (st, _) = share("ghost".into(), "viewer").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = share(names[4].clone(), "viewer").await;
    assert_eq!(st, StatusCode::OK);
    for who in ["ghost2", "mem6"] {
        let (st, v) = share(who.into(), "viewer").await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            "{who}"
        );
    }
    // Role changes of members are not new shares.
    let (st, _) = share(names[1].clone(), "editor").await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn title_tag_member_and_undo_floods_are_limited_as_edits_are() {
    let server = TestServer::start(
        TANDEM,
        &[
            ("ALLOW_ANONYMOUS", "false"),
            ("OP_RATE_PER_SEC", "2"),
            ("OP_RATE_BURST", "4"),
        ],
    );
    let api = Api::new(&server);
    let (alice, _) = api.user("alice").await;
    api.user("bob").await;
    let id = api.create_id(&alice, "t", "").await;
    let path = format!("/api/documents/{id}");
    let mut watcher = Ws::open(&server.ws_url(&id, &format!("token={alice}")))
        .await
        .unwrap();
    let mut statuses = Vec::new();
    for i in 0..6 {
        let body = json!({"title": format!("title {i}")});
        statuses.push(
            api.call(Method::PUT, &path, Some(&alice), Some(body))
                .await
                .0,
        );
        let tag = json!({"tag": format!("t{i}")});
        let tags = format!("{path}/tags");
        statuses.push(
            api.call(Method::POST, &tags, Some(&alice), Some(tag))
                .await
                .0,
        );
        let member = json!({"role": "viewer"});
        let m = format!("{path}/members/bob");
        statuses.push(
            api.call(Method::PUT, &m, Some(&alice), Some(member))
                .await
                .0,
        );
    }
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!((4..=8).contains(&ok) && ok + limited == 18, "{statuses:?}");
    // Only the accepted title and tag changes reached the clients.
    let mut metas = 0;
    while let Ok(Some(f)) = watcher
        .try_recv(std::time::Duration::from_millis(300))
        .await
    {
        metas += usize::from(f.kind() == Kind::Meta);
    }
    // (One more: the second socket's view count.)
    assert!(
        metas <= ok + 1,
        "{metas} meta messages for {ok} accepted changes"
    );
    // Undo and redo over a socket draw on its op limit.
    let mut ws = Ws::open(&server.ws_url(&id, &format!("token={alice}")))
        .await
        .unwrap();
    for _ in 0..20 {
        ws.send(json!({"type": "undo"})).await;
    }
    let mut refused = 0;
    while let Ok(Some(f)) = ws.try_recv(std::time::Duration::from_millis(300)).await {
        if f.kind() == Kind::Error && f.json()["code"] == "rate_limited" {
            refused += 1;
        }
    }
    assert!(refused >= 14, "{refused} of 20 undos refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_titles_that_pass_for_others_are_refused() {
    let server = TestServer::start(TANDEM, &[("ALLOW_ANONYMOUS", "false")]);
    let api = Api::new(&server);
    for name in [
        "admin\u{202E}nimda",
        "\u{2067}root",
        "a\u{200B}b",
        "\u{3164}",
    ] {
        let body = json!({"username": "spoof", "password": "correct horse battery", "name": name});
        let (st, v) = api
            .call(Method::POST, "/api/auth/register", None, Some(body))
            .await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::BAD_REQUEST, "bad_request"),
            "{name:?}"
        );
    }
    // Scripts and emoji that need joiners still pass.
    let body = json!({"username": "aisha", "password": "correct horse battery", "name": "عائشة 👩\u{200D}💻"});
    let (st, v) = api
        .call(Method::POST, "/api/auth/register", None, Some(body))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let token = v["token"].as_str().unwrap().to_owned();
    let body = json!({"title": "invoice\u{202E}fdp.exe", "content": ""});
    let (st, _) = api
        .call(Method::POST, "/api/documents", Some(&token), Some(body))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let id = api.create_id(&token, "ملاحظات", "").await;
    let (st, _) = api
        .call(
            Method::PUT,
            &format!("/api/documents/{id}"),
            Some(&token),
            Some(json!({"title": "a\u{2066}b"})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(api.document(&token, &id).await.1["title"], "ملاحظات");
}

/// POST a login for `username` with `password` from `from` (loopback is a
/// trusted proxy), with `cookie` if any: status, and the device cookie set.
async fn login(
    server: &TestServer,
    username: &str,
    password: &str,
    from: &str,
    cookie: Option<&str>,
) -> (StatusCode, Option<String>) {
    let mut req = Client::new()
        .post(server.http("/api/auth/login"))
        .header("X-Real-IP", from)
        .json(&json!({"username": username, "password": password}));
    if let Some(c) = cookie {
        req = req.header("Cookie", c);
    }
    let r = req.send().await.unwrap();
    (r.status(), device_cookie(&r))
}

/// The `name=value` of the device cookie a response sets.
fn device_cookie(r: &reqwest::Response) -> Option<String> {
    let set = r.headers().get("set-cookie")?.to_str().ok()?;
    assert!(
        set.contains("HttpOnly") && set.contains("Path=/api/auth/login"),
        "{set}"
    );
    set.split(';').next().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guesser_on_many_addresses_is_slowed_without_locking_out_the_owner() {
    let server = TestServer::start(
        TANDEM,
        &[
            ("ALLOW_ANONYMOUS", "false"),
            ("TRUSTED_PROXIES", "127.0.0.1/32"),
            ("LOGIN_ACCOUNT_BURST", "3"),
            ("LOGIN_ACCOUNT_ATTEMPTS_PER_HOUR", "1"),
        ],
    );
    let register = |name: &'static str| {
        let body = json!({"username": name, "password": "correct horse battery"});
        Client::new()
            .post(server.http("/api/auth/register"))
            .json(&body)
            .send()
    };
    let r = register("alice").await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let alices = device_cookie(&r).expect("register sets the device cookie");
    let bobs = device_cookie(&register("bob").await.unwrap()).unwrap();
    // One wrong guess from each of many addresses: past the burst of 3,
    // the account is slowed everywhere.
    let mut statuses = Vec::new();
    for i in 0..8 {
        let from = format!("10.31.{i}.9");
        statuses.push(
            login(&server, "alice", "a wrong guess", &from, None)
                .await
                .0,
        );
    }
    assert_eq!(statuses[..3], [StatusCode::UNAUTHORIZED; 3], "{statuses:?}");
    assert_eq!(
        statuses[3..],
        [StatusCode::TOO_MANY_REQUESTS; 5],
        "{statuses:?}"
    );
    // A stranger's new browser is slowed too, and so is one holding the
    // device cookie of another account.
    let right = "correct horse battery";
    let (st, _) = login(&server, "alice", right, "10.32.0.1", None).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    let borrowed = format!("td_alice={}", bobs.split_once('=').unwrap().1);
    let (st, _) = login(&server, "alice", right, "10.32.0.2", Some(&borrowed)).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    // The owner's browser, which signed in before, is not.
    let (st, again) = login(&server, "alice", right, "10.32.0.3", Some(&alices)).await;
    assert_eq!(st, StatusCode::OK);
    assert!(again.is_some());
    // A password change ends older device cookies; the browser that made
    // it gets a new one.
    let token = {
        let body = json!({"username": "alice", "password": right});
        let r = Client::new()
            .post(server.http("/api/auth/login"))
            .header("Cookie", &alices)
            .json(&body)
            .send()
            .await
            .unwrap();
        r.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let body = json!({"current_password": right, "new_password": "another horse battery"});
    let r = Client::new()
        .post(server.http("/api/auth/password"))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let renewed = device_cookie(&r).expect("a password change sets a new device cookie");
    let new = "another horse battery";
    let (st, _) = login(&server, "alice", new, "10.33.0.1", Some(&alices)).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    let (st, _) = login(&server, "alice", new, "10.33.0.2", Some(&renewed)).await;
    assert_eq!(st, StatusCode::OK);
    // The cookie is no session: as a bearer token it is refused.
    let value = alices.split_once('=').unwrap().1;
    let r = Client::new()
        .get(server.http("/api/documents"))
        .bearer_auth(value)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let _: Value = r.json().await.unwrap();
}
