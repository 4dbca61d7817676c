//! Documents as files over real sockets, on SQLite and on PostgreSQL:
//! `GET /api/documents/{id}/export` (the live content, a safe file name from
//! the title, the content type; access as for reads) and
//! `POST /api/documents/import` (a raw UTF-8 body and `?filename=`: a document
//! owned by the caller, titled from the name; the size limit (413), non-UTF-8
//! (415), the document quota and the REST edit rate refused with nothing
//! created).

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tandem_testkit::{error_code, Api, PgServer, TestServer};

use crate::TANDEM;

/// A raw import: (status, JSON body).
async fn import(
    server: &TestServer,
    token: Option<&str>,
    filename: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, Value) {
    let mut url = server.http("/api/documents/import");
    if let Some(f) = filename {
        url = format!("{url}?filename={}", urlencode(f));
    }
    let mut req = reqwest::Client::new().post(url).body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let st = r.status();
    (st, r.json().await.unwrap_or(Value::Null))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// An export: (status, headers, body text).
async fn export(
    server: &TestServer,
    token: Option<&str>,
    id: &str,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut req = reqwest::Client::new().get(server.http(&format!("/api/documents/{id}/export")));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status(), r.headers().clone(), r.text().await.unwrap())
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).map_or("", |v| v.to_str().unwrap())
}

/// `call`'s answer once the edit allowance (1/s here) lets it through.
async fn allowed<F, Fut>(call: F) -> (StatusCode, Value)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = (StatusCode, Value)>,
{
    for _ in 0..5 {
        let r = call().await;
        if r.0 != StatusCode::TOO_MANY_REQUESTS {
            return r;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    call().await
}

async fn list(api: &Api<'_>, token: &str) -> Vec<String> {
    let (_, v) = api
        .call(Method::GET, "/api/documents", Some(token), None)
        .await;
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| d["title"].as_str().unwrap().to_owned())
        .collect()
}

async fn files_round_trip(server: &TestServer) {
    let api = Api::new(server);
    let (ann, _) = api.user("ann").await;
    let (bob, _) = api.user("bob").await;
    let text = "# Trip\n\nCafé ☕ 😀 — line two\r\nend";

    // Import: owned by the caller, titled from the name, content intact
    // (a byte-order mark dropped).
    let body = [b"\xEF\xBB\xBF".as_slice(), text.as_bytes()].concat();
    let (st, doc) = import(server, Some(&ann), Some("Trip notes.md"), body).await;
    assert_eq!(st, StatusCode::CREATED, "{doc}");
    assert_eq!(
        (&doc["title"], &doc["content"], &doc["role"], &doc["owner"]),
        (
            &json!("Trip notes"),
            &json!(text),
            &json!("owner"),
            &json!("ann")
        )
    );
    let id = doc["id"].as_str().unwrap().to_owned();
    let (_, got) = api
        .call(
            Method::GET,
            &format!("/api/documents/{id}"),
            Some(&ann),
            None,
        )
        .await;
    assert_eq!(got["content"], text);
    // An empty file makes an empty document.
    let (st, empty) = import(server, Some(&ann), Some("dir/empty.txt"), Vec::new()).await;
    assert_eq!(
        (st, &empty["title"], &empty["content"]),
        (StatusCode::CREATED, &json!("empty"), &json!(""))
    );

    // Export: the live content (after an edit), named from the title.
    let (st, _) = api
        .call(
            Method::PUT,
            &format!("/api/documents/{id}"),
            Some(&ann),
            Some(json!({"title": "Trip: \"Lisbon\"/Porto", "content": format!("{text}!")})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, h, body) = export(server, Some(&ann), &id).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, format!("{text}!"));
    assert_eq!(header(&h, "content-type"), "text/markdown; charset=utf-8");
    assert_eq!(
        header(&h, "content-disposition"),
        "attachment; filename=\"Trip_ _Lisbon__Porto.md\"; filename*=UTF-8''Trip_%20_Lisbon__Porto.md"
    );
    // Plain text is .txt; JSON is served as such.
    let (_, h, _) = export(server, Some(&ann), empty["id"].as_str().unwrap()).await;
    assert_eq!(header(&h, "content-type"), "text/plain; charset=utf-8");
    assert!(header(&h, "content-disposition").contains("filename=\"empty.txt\""));
    let (st, j) = import(server, Some(&ann), Some("data.json"), "").await;
    assert_eq!(st, StatusCode::CREATED, "{j}");
    let (_, h, _) = export(server, Some(&ann), j["id"].as_str().unwrap()).await;
    assert_eq!(header(&h, "content-type"), "application/json");
    assert!(header(&h, "content-disposition").contains("filename=\"data.json\""));
    // Not a member: 403; no token: 401; unknown document: 404.
    let (st, _, body) = export(server, Some(&bob), &id).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(export(server, None, &id).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        export(server, Some(&ann), "nope").await.0,
        StatusCode::NOT_FOUND
    );
    // A member may export. (Sharing draws on the edit allowance, 1/s here:
    // wait for it.)
    let bob_path = format!("/api/documents/{id}/members/bob");
    let share = || {
        api.call(
            Method::PUT,
            &bob_path,
            Some(&ann),
            Some(json!({"role": "viewer"})),
        )
    };
    assert_eq!(allowed(share).await.0, StatusCode::OK);
    assert_eq!(export(server, Some(&bob), &id).await.2, format!("{text}!"));

    // Refusals create nothing.
    let before = list(&api, &ann).await;
    // (token, filename, body, status, error code)
    type Case<'a> = (
        Option<&'a str>,
        Option<&'a str>,
        Vec<u8>,
        StatusCode,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            None,
            Some("a.txt"),
            b"x".to_vec(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            Some(&ann),
            None,
            b"x".to_vec(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Some(&ann),
            Some("dir/"),
            b"x".to_vec(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Some(&ann),
            Some("a\u{7}b.txt"),
            b"x".to_vec(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Some(&ann),
            Some("bin.dat"),
            vec![0x66, 0xff, 0xfe, 0x00],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        // MAX_DOC_CHARS is 1000 here: 1001 characters are refused, in
        // characters (2 bytes each) and in bytes far past it.
        (
            Some(&ann),
            Some("big.txt"),
            "é".repeat(1001).into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            Some(&ann),
            Some("huge.txt"),
            vec![b'x'; 100_000],
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
    ];
    for (token, name, body, want, code) in cases {
        let (st, v) = import(server, token, name, body).await;
        assert_eq!(st, want, "{name:?}: {v}");
        if !code.is_empty() {
            assert_eq!(error_code(&v), code, "{name:?}: {v}");
        }
    }
    // At the limit it is taken.
    let edge = || import(server, Some(&ann), Some("edge.txt"), "é".repeat(1000));
    let (st, v) = allowed(edge).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let mut after = list(&api, &ann).await;
    after.retain(|t| t != "edge");
    assert_eq!(after.len(), 3, "{after:?}");
    // (The same documents; their order follows saves, which are timed.)
    let (mut after, mut before) = (after, before);
    after.sort();
    before.sort();
    assert_eq!(after, before);

    // The document quota (MAX_DOCS_PER_USER = 5; empty files take no edit).
    let (cat, _) = api.user("cat").await;
    for i in 0..5 {
        let (st, v) = import(server, Some(&cat), Some(&format!("c{i}")), "").await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }
    let (st, v) = import(server, Some(&cat), Some("six.txt"), "").await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::FORBIDDEN, "quota_exceeded"),
        "{v}"
    );
    assert_eq!(list(&api, &cat).await.len(), 5);

    // The REST edit rate (burst 3, 1/s): Bob's imports past it are refused,
    // and refused ones create nothing.
    let mut created = 0;
    let mut limited = 0;
    for i in 0..5 {
        let (st, v) = import(server, Some(&bob), Some(&format!("b{i}.txt")), "x").await;
        match st {
            StatusCode::CREATED => created += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(error_code(&v), "rate_limited");
                limited += 1;
            }
            other => panic!("{other}: {v}"),
        }
    }
    assert!(
        created >= 3 && limited >= 1,
        "{created} created, {limited} limited"
    );
    let owned = list(&api, &bob)
        .await
        .into_iter()
        .filter(|t| t.starts_with('b'))
        .count();
    assert_eq!(owned, created);
}

const LIMITS: [(&str, &str); 5] = [
    ("ALLOW_ANONYMOUS", "false"),
    ("MAX_DOC_CHARS", "1000"),
    ("MAX_DOCS_PER_USER", "5"),
    ("OP_RATE_PER_SEC", "1"),
    ("OP_RATE_BURST", "3"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_import_on_sqlite() {
    let server = TestServer::start(TANDEM, &LIMITS);
    files_round_trip(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_import_on_postgres() {
    let pg = PgServer::start();
    let url = pg.url();
    let mut env = LIMITS.to_vec();
    env.push(("DATABASE_URL", &url));
    let server = TestServer::start(TANDEM, &env);
    files_round_trip(&server).await;
}
