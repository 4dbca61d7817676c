//! The member list (owner first, readable by owner and members), owners in
//! the document list, sharing to a username nobody has; history as
//! sessions paged back to version 1, and per-version `before=` paging.

use reqwest::{Method, StatusCode};
use serde_json::json;
use tandem_testkit::{error_code, Api, TestServer};

use crate::TANDEM;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_listed_owner_first_and_the_list_shows_owners() {
    let server = TestServer::start(TANDEM, &[("ALLOW_ANONYMOUS", "false")]);
    let api = Api::new(&server);
    let (alice, _) = api.user("alice").await;
    let (bob, _) = api.user("bob").await;
    let (carol, _) = api.user("carol").await;
    let id = api.create(&alice, "shared", "x").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let members = format!("/api/documents/{id}/members");
    for (who, role) in [("carol", "viewer"), ("bob", "editor")] {
        let (st, _) = api
            .call(
                Method::PUT,
                &format!("{members}/{who}"),
                Some(&alice),
                Some(json!({"role": role})),
            )
            .await;
        assert_eq!(st, StatusCode::OK);
    }
    let (st, list) = api.call(Method::GET, &members, Some(&bob), None).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    assert_eq!((list["total"].as_u64(), list.get("next")), (Some(3), None));
    let got: Vec<(String, String, String)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["username"].as_str().unwrap().into(),
                m["name"].as_str().unwrap().into(),
                m["role"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want = [
        ("alice", "ALICE", "owner"),
        ("bob", "BOB", "editor"),
        ("carol", "CAROL", "viewer"),
    ];
    assert_eq!(
        got,
        want.map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    );
    // A stranger may not read it; nobody signed out either.
    let (_dave, _) = api.user("dave").await;
    let (st, _) = api.call(Method::GET, &members, Some(&_dave), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = api.call(Method::GET, &members, None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // Carol's list shows who owns the document.
    let (_, docs) = api
        .call(Method::GET, "/api/documents", Some(&carol), None)
        .await;
    assert_eq!(docs[0]["owner"], "alice");
    assert_eq!(docs[0]["role"], "viewer");
    // Sharing with a username nobody has says so.
    let (st, v) = api
        .call(
            Method::PUT,
            &format!("{members}/nobody"),
            Some(&alice),
            Some(json!({"role": "editor"})),
        )
        .await;
    assert_eq!((st, error_code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    assert!(
        v["error"]["message"].as_str().unwrap().contains("sign up"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_sessions_page_back_to_the_first_version() {
    let server = TestServer::start(TANDEM, &[("ALLOW_ANONYMOUS", "false")]);
    let api = Api::new(&server);
    let (alice, _) = api.user("alice").await;
    let id = api.create(&alice, "h", "").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // 30 versions, 2 of them deleting one character.
    let mut len = 0u64;
    for i in 0..30u64 {
        let op = if i % 15 == 14 {
            len -= 1;
            json!([len, -1])
        } else if len == 0 {
            len += 2;
            json!(["ab"])
        } else {
            len += 2;
            json!([len - 2, "ab"])
        };
        let (st, v) = api
            .call(
                Method::POST,
                &format!("/api/documents/{id}/ops"),
                Some(&alice),
                Some(json!({"version": i, "op": op})),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
    }
    let (st, page) = api
        .call(
            Method::GET,
            &format!("/api/documents/{id}/history/sessions"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{page}");
    let s = &page["sessions"][0];
    assert_eq!(
        (s["first"].as_u64(), s["last"].as_u64()),
        (Some(1), Some(30))
    );
    assert_eq!(s["authors"][0]["name"], "ALICE");
    assert_eq!(s["inserted"].as_u64().unwrap(), 28 * 2);
    assert_eq!(s["deleted"].as_u64().unwrap(), 2);
    assert!(page["next"].is_null());
    let (st, _) = api
        .call(
            Method::GET,
            &format!("/api/documents/{id}/history/sessions?before=zzz"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    // Per-version pages backwards: 30..21, 20..11, 10..1.
    let mut before = 31;
    let mut seen = Vec::new();
    while before > 1 {
        let (st, items) = api
            .call(
                Method::GET,
                &format!("/api/documents/{id}/history?before={before}&limit=10"),
                Some(&alice),
                None,
            )
            .await;
        assert_eq!(st, StatusCode::OK);
        let items = items.as_array().unwrap();
        assert_eq!(items.len(), 10);
        assert_eq!(items.last().unwrap()["version"], before - 1);
        before = items[0]["version"].as_u64().unwrap();
        seen.extend(items.iter().map(|i| i["version"].as_u64().unwrap()));
    }
    seen.sort();
    assert_eq!(seen, (1..=30).collect::<Vec<_>>());
}
