//! The real topology run as processes on loopback (no Docker engine here):
//! PostgreSQL, Redis, two instances and Debian's nginx with the project's
//! nginx.conf: its per-document routing (one document's sockets and REST
//! calls on one instance, documents spread over the instances, failover to
//! the survivor, draining), and a browser's page and socket through it.

use std::time::Duration;

use tandem_testkit::server::metric;
use tandem_testkit::typist::{check_exactly_once, run_typists};
use tandem_testkit::{cluster, NginxServer, PgServer, RedisServer, TestServer, Ws};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::TANDEM;

/// A stand-in instance that answers every request with its own name.
async fn named_upstream(name: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
                    name.len()
                );
                let _ = tcp.write_all(reply.as_bytes()).await;
            });
        }
    });
    addr
}

/// The shipped routing, on stand-ins: every request about one document (its
/// socket URL with or without a query, its REST resource and sub-resources)
/// reaches one instance; documents and requests about no document spread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_routes_each_document_to_one_instance() {
    let upstreams = vec![named_upstream("A").await, named_upstream("B").await];
    let nginx = NginxServer::start(&upstreams);
    let http = reqwest::Client::new();
    let served_by = |path: String| {
        let http = http.clone();
        let url = format!("http://{}{path}", nginx.addr);
        async move {
            let r = http.get(&url).send().await.unwrap();
            assert_eq!(r.status(), 200, "{url}");
            r.text().await.unwrap()
        }
    };
    let mut per_instance = std::collections::HashMap::new();
    for i in 0..24 {
        let doc = format!("doc-{i}.x_y@z:{i}");
        let home = served_by(format!("/ws/{doc}")).await;
        for path in [
            format!("/ws/{doc}?user_id=u{i}&version=3"),
            format!("/api/documents/{doc}"),
            format!("/api/documents/{doc}/history?after=0"),
            format!("/api/documents/{doc}/versions/2/restore"),
        ] {
            for _ in 0..3 {
                assert_eq!(served_by(path.clone()).await, home, "{path}");
            }
        }
        *per_instance.entry(home).or_insert(0) += 1;
    }
    assert_eq!(
        per_instance.len(),
        2,
        "documents did not spread: {per_instance:?}"
    );
    // Requests about no document spread too.
    let mut others = std::collections::HashSet::new();
    for _ in 0..40 {
        others.insert(served_by("/api/documents".into()).await);
        others.insert(served_by("/readyz".into()).await);
    }
    assert_eq!(
        others.len(),
        2,
        "requests without a document stuck to one instance"
    );
}

/// Open WebSocket sessions on an instance.
async fn sessions(s: &TestServer) -> u64 {
    metric(&s.metrics().await, "tandem_connections") as u64
}

/// Wait until the instances' session counts are `want` (the gauge moves
/// just after a socket's `init` or close).
async fn wait_sessions(servers: &[&TestServer], want: &[u64]) {
    let deadline = tokio::time::Instant::now() + tandem_testkit::TIMEOUT;
    loop {
        let mut now = Vec::new();
        for s in servers {
            now.push(sessions(s).await);
        }
        if now == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "sessions per instance {now:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn through_nginx_clients_converge_and_survive_an_instance_draining() {
    let pg = PgServer::start();
    let redis = RedisServer::start();
    let db = pg.url();
    let env = [
        ("DATABASE_URL", db.as_str()),
        ("SNAPSHOT_INTERVAL_MS", "200"),
    ];
    let (_dir, mut servers) = cluster(TANDEM, &redis, 2, &env);
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
    let nginx = NginxServer::start(&addrs);
    let via = |path: &str| format!("http://{}{path}", nginx.addr);
    assert_eq!(reqwest::get(via("/readyz")).await.unwrap().status(), 200);
    assert_eq!(
        reqwest::get(via("/metrics")).await.unwrap().status(),
        404,
        "/metrics exposed through nginx"
    );
    let mut committed_before = Vec::new();
    for s in &servers {
        committed_before.push(metric(&s.metrics().await, "tandem_ops_committed_total"));
    }

    // Drain the instance holding the document's sockets (with the shipped
    // per-document hash, all of them).
    let doc = "behind-nginx";
    let mut victim = 0;
    let mut typists = run_typists(
        vec![nginx.addr.clone()],
        doc,
        6,
        Duration::from_millis(1500),
        async {
            tokio::time::sleep(Duration::from_millis(800)).await;
            if sessions(&servers[1]).await > sessions(&servers[0]).await {
                victim = 1;
            }
            let status = tokio::task::block_in_place(|| servers[victim].sigterm());
            assert!(status.success(), "drained instance exited with {status:?}");
        },
    )
    .await;
    let survivor = 1 - victim;
    assert!(
        typists.iter().any(|t| t.reconnects > 0),
        "nobody was moved off the drained instance"
    );
    check_exactly_once(&servers[survivor], doc, &mut typists).await;
    let acked: usize = typists.iter().map(|t| t.acked.len()).sum();
    assert!(acked > 50, "only {acked} acknowledged");
    // The survivor's counters moved; its readiness holds.
    let m = servers[survivor].metrics().await;
    assert!(metric(&m, "tandem_ops_committed_total") > committed_before[survivor]);
    assert!(m.contains("tandem_connections"));
    assert_eq!(
        reqwest::get(servers[survivor].http("/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );
}

/// The real instances behind the shipped nginx: (b) sockets of different
/// documents spread over both instances; (a) two clients of one document
/// land on the same instance, and when it is killed both reconnect through
/// nginx to the other one and converge there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn through_nginx_a_document_sticks_to_one_instance_and_fails_over() {
    let redis = RedisServer::start();
    let (_dir, mut servers) = cluster(TANDEM, &redis, 2, &[]);
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
    let nginx = NginxServer::start(&addrs);

    // (b) One socket on each of 24 documents: both instances hold some.
    let mut sockets = Vec::new();
    for i in 0..24 {
        let url = format!("ws://{}/ws/spread-{i}?user_id=s{i}", nginx.addr);
        sockets.push(Ws::connect(&url).await.unwrap().0);
    }
    let deadline = tokio::time::Instant::now() + tandem_testkit::TIMEOUT;
    let spread = loop {
        let n = [sessions(&servers[0]).await, sessions(&servers[1]).await];
        if n[0] + n[1] == 24 || tokio::time::Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(spread[0] + spread[1], 24, "{spread:?}");
    assert!(
        spread[0] > 0 && spread[1] > 0,
        "documents did not spread: {spread:?}"
    );
    for ws in sockets {
        ws.close().await;
    }
    wait_sessions(&[&servers[0], &servers[1]], &[0, 0]).await;

    // (a) Two typists on one document, through nginx only.
    let doc = "sticky-doc";
    let mut home = None;
    let mut typists = run_typists(
        vec![nginx.addr.clone()],
        doc,
        2,
        Duration::from_millis(1500),
        async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let n = [sessions(&servers[0]).await, sessions(&servers[1]).await];
            assert!(
                n == [2, 0] || n == [0, 2],
                "one document on both instances: {n:?}"
            );
            let h = usize::from(n[1] == 2);
            home = Some(h);
            // Kill it (no draining): both are cut off, nginx finds the
            // instance gone and sends their reconnects to the other one.
            tokio::task::block_in_place(|| servers[h].kill());
            wait_sessions(&[&servers[1 - h]], &[2]).await;
        },
    )
    .await;
    let survivor = 1 - home.expect("home instance");
    for t in &typists {
        assert!(t.reconnects > 0, "{} was never moved", t.user);
    }
    check_exactly_once(&servers[survivor], doc, &mut typists).await;
    for t in &typists {
        assert!(t.acked.len() > 5, "{} got {} acks", t.user, t.acked.len());
    }
}

/// Open a socket through nginx as a browser on the compose default port
/// does: it connected to `localhost:<port>`, so it sends that Host and
/// `Origin: http://localhost:<port>` (the server compares the two).
async fn browser_socket(
    nginx: &NginxServer,
    path: &str,
    origin: &str,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}{path}", nginx.addr)
        .into_client_request()
        .unwrap();
    let h = req.headers_mut();
    h.insert(
        "host",
        format!("localhost:{}", nginx.port()).parse().unwrap(),
    );
    h.insert("origin", origin.parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await?;
    Ok(Ws { ws })
}

/// What a browser on http://localhost:8080 does through the shipped nginx:
/// load the page and its client, then open the document's socket with its
/// own Origin, and get `init` (before nginx forwarded the Host with its
/// port, that socket was refused 403). A foreign Origin is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_nginx_a_browser_loads_the_page_and_opens_a_socket() {
    let server = TestServer::start(TANDEM, &[]);
    let nginx = NginxServer::start(std::slice::from_ref(&server.addr));
    let host = format!("localhost:{}", nginx.port());
    let http = reqwest::Client::new();
    for (path, needle) in [
        ("/", "<title>Tandem</title>"),
        ("/assets/app.js", "import"),
        ("/assets/tandem-client.js", "TandemClient"),
    ] {
        let r = http
            .get(format!("http://{}{path}", nginx.addr))
            .header("host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.text().await.unwrap().contains(needle), "{path}");
    }

    let origin = format!("http://{host}");
    let mut ws = browser_socket(&nginx, "/ws/browser-doc?user_id=b1&name=B", &origin)
        .await
        .unwrap_or_else(|e| panic!("the browser's socket was refused through nginx: {e}"));
    let init = ws.recv().await;
    assert_eq!(init.kind(), tandem_testkit::ws::Kind::Init, "{init}");
    ws.close().await;

    for foreign in [
        "http://evil.example",
        "http://localhost:9999",
        "http://localhost",
    ] {
        match browser_socket(&nginx, "/ws/browser-doc?user_id=b2", foreign).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), 403, "{foreign}")
            }
            Ok(_) => panic!("{foreign} was let through"),
            Err(e) => panic!("{foreign}: {e}"),
        }
    }
}
