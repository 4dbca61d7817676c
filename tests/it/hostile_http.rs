//! Hostile HTTP clients, round two: request bodies that stall or trickle
//! (408, their bytes released, their connections freed), bodies past the
//! global budget (503, memory bounded), HTTP/2 cleartext (not spoken), and
//! the per-address caps keyed on an IPv6 address's /64.

use std::time::{Duration, Instant};

use tandem_testkit::server::metric;
use tandem_testkit::{TestServer, Ws};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::TANDEM;

/// The start of a login request declaring a body of `len` bytes.
fn post_head(len: usize) -> String {
    format!(
        "POST /api/auth/login HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
    )
}

/// Everything the server sends until it closes the connection (or `wait`
/// passes: then `None`).
async fn until_closed(tcp: &mut TcpStream, wait: Duration) -> Option<String> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_trickling_bodies_get_408_and_free_their_connections() {
    let server = TestServer::start(
        TANDEM,
        &[
            ("BODY_READ_TIMEOUT_MS", "500"),
            ("BODY_MIN_BYTES_PER_SEC", "1000"),
            ("MAX_CONNECTIONS", "12"),
        ],
    );
    let addr = server.addr.clone();
    // Ten connections hold bodies: nine stall one byte short, one trickles
    // a byte every 100 ms (10 B/s, under the minimum of 1,000 B/s).
    let started = Instant::now();
    let mut held = Vec::new();
    for i in 0..9 {
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        let body = format!(r#"{{"username":"someone","password":"{:0>100}"}}"#, i);
        tcp.write_all(post_head(body.len()).as_bytes())
            .await
            .unwrap();
        tcp.write_all(&body.as_bytes()[..body.len() - 1])
            .await
            .unwrap();
        held.push(tcp);
    }
    let trickler = tokio::spawn({
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        async move {
            tcp.write_all(post_head(100_000).as_bytes()).await.unwrap();
            // A byte every 100 ms until the server answers.
            for _ in 0..300 {
                if tcp.write_all(b" ").await.is_err() {
                    break;
                }
                let readable = tokio::time::timeout(Duration::from_millis(100), tcp.readable());
                if readable.await.is_ok() {
                    break;
                }
            }
            until_closed(&mut tcp, Duration::from_secs(5)).await
        }
    });
    // The server is full while they are held: a new connection gets 503.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = Vec::new();
    for _ in 0..3 {
        extra.push(TcpStream::connect(&addr).await.unwrap());
    }
    let mut refused = 0;
    for tcp in &mut extra {
        let got = until_closed(tcp, Duration::from_millis(300)).await;
        refused += usize::from(got.is_some_and(|g| g.starts_with("HTTP/1.1 503")));
    }
    assert!(refused >= 1, "the held bodies did not fill MAX_CONNECTIONS");
    // Each held body is answered 408 and its connection closed, soon.
    for tcp in &mut held {
        let got = until_closed(tcp, Duration::from_secs(5))
            .await
            .expect("a stalled body was kept open");
        assert!(got.starts_with("HTTP/1.1 408"), "{got}");
        assert!(got.contains(r#""code":"timeout""#), "{got}");
    }
    assert!(started.elapsed() < Duration::from_secs(4));
    let got = trickler
        .await
        .unwrap()
        .expect("a trickling body was kept open");
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    // Their places are free: a client signs in as usual.
    let api = tandem_testkit::Api::new(&server);
    let (token, _) = api.user("after").await;
    assert!(!token.is_empty());
    let m = server.metrics().await;
    assert!(
        metric(
            &m,
            r#"tandem_request_bodies_refused_total{reason="timeout"}"#
        ) >= 10.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_past_the_budget_get_503_and_memory_stays_bounded() {
    const MIB: usize = 1 << 20;
    let server = TestServer::start(
        TANDEM,
        &[
            ("MAX_BODY_BYTES", &MIB.to_string()),
            // Imports may be 4 bytes a character: keep them to 1 MiB too.
            ("MAX_DOC_CHARS", &(MIB / 4).to_string()),
            ("BODY_BUDGET_BYTES", &(2 * MIB).to_string()),
            ("BODY_READ_TIMEOUT_MS", "3000"),
            ("ALLOW_ANONYMOUS", "false"),
        ],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.rss_kb();
    // 32 bodies of 1 MiB less one byte, at once: 32 MiB sent.
    let chunk = vec![b' '; MIB - 1];
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let addr = server.addr.clone();
        let chunk = chunk.clone();
        tasks.push(tokio::spawn(async move {
            let mut tcp = TcpStream::connect(&addr).await.unwrap();
            tcp.write_all(post_head(MIB).as_bytes()).await.unwrap();
            // The server may stop reading (and answer) part way.
            let _ = tcp.write_all(&chunk).await;
            until_closed(&mut tcp, Duration::from_secs(10))
                .await
                .is_some()
        }));
    }
    let mut peak = before;
    while tasks.iter().any(|t| !t.is_finished()) {
        peak = peak.max(server.rss_kb());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in tasks {
        assert!(t.await.unwrap(), "a body was held past its deadline");
    }
    let m = server.metrics().await;
    let refused = |reason: &str| {
        metric(
            &m,
            &format!(r#"tandem_request_bodies_refused_total{{reason="{reason}"}}"#),
        )
    };
    // Most found no room in their address's share of the budget (503);
    // those that did were cut off once stalled (408).
    let busy = refused("budget") + refused("address");
    let timed_out = refused("timeout");
    assert!(busy >= 16.0, "503: {busy}, 408: {timed_out}");
    assert_eq!(busy + timed_out, 32.0, "503: {busy}, 408: {timed_out}");
    assert_eq!(metric(&m, "tandem_request_body_bytes"), 0.0);
    let grew_mib = (peak.saturating_sub(before)) as f64 / 1024.0;
    eprintln!("32 bodies of 1 MiB held: RSS {before} KiB -> peak {peak} KiB (+{grew_mib:.1} MiB)");
    assert!(grew_mib < 12.0, "RSS grew {grew_mib:.1} MiB");
    // A declared length over MAX_BODY_BYTES is refused before a byte is read.
    let mut tcp = TcpStream::connect(&server.addr).await.unwrap();
    tcp.write_all(post_head(8 * MIB).as_bytes()).await.unwrap();
    let got = until_closed(&mut tcp, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    // Bodies declared but not sent hold nothing: with eight of them open
    // (8 MiB declared against a 2 MiB budget), ordinary requests go on.
    let mut declared = Vec::new();
    for _ in 0..8 {
        let mut tcp = TcpStream::connect(&server.addr).await.unwrap();
        tcp.write_all(post_head(MIB).as_bytes()).await.unwrap();
        declared.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let api = tandem_testkit::Api::new(&server);
    let (token, _) = api.user("after").await;
    assert!(!token.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_cleartext_is_not_spoken() {
    let server = TestServer::start(TANDEM, &[]);
    let mut tcp = TcpStream::connect(&server.addr).await.unwrap();
    // The HTTP/2 connection preface, then an empty SETTINGS frame.
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let got = until_closed(&mut tcp, Duration::from_secs(3))
        .await
        .expect("the connection stayed open");
    // An HTTP/2 server answers with its own SETTINGS frame (type 4).
    assert!(
        got.is_empty() || got.starts_with("HTTP/1.1 4") || got.starts_with("HTTP/1.1 5"),
        "{got:?}"
    );
    let (_ws, _) = Ws::connect(&server.ws_url("doc", "user_id=ok"))
        .await
        .unwrap();
}

/// IPv6 addresses given to this host's loopback, so connections can come
/// from them; removed on drop. `None` when they cannot be (not root, no
/// `ip`, no IPv6).
struct LocalAddrs(Vec<String>);

impl LocalAddrs {
    fn add(addrs: Vec<String>) -> Option<Self> {
        let mut added = Self(Vec::new());
        for a in addrs {
            let ok = std::process::Command::new("ip")
                .args([
                    "-6",
                    "addr",
                    "add",
                    &format!("{a}/128"),
                    "dev",
                    "lo",
                    "nodad",
                ])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return None;
            }
            added.0.push(a);
        }
        Some(added)
    }
}

impl Drop for LocalAddrs {
    fn drop(&mut self) {
        for a in &self.0 {
            let _ = std::process::Command::new("ip")
                .args(["-6", "addr", "del", &format!("{a}/128"), "dev", "lo"])
                .status();
        }
    }
}

/// A TCP connection to `to` from the IPv6 address `from`.
async fn tcp6(from: &str, to: std::net::SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v6().unwrap();
    s.bind(format!("[{from}]:0").parse().unwrap()).unwrap();
    s.connect(to).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_slash_64_is_one_address_for_connection_caps() {
    // Twelve hosts of one /64, and one of another; a process-unique block.
    let block = format!("2001:db8:{:x}", std::process::id() & 0xffff);
    let hosts: Vec<String> = (0..12)
        .map(|i| format!("{block}:1::{:x}", 0x100 + i))
        .collect();
    let stranger = format!("{block}:2::5");
    let Some(_local) = LocalAddrs::add([hosts.clone(), vec![stranger.clone()]].concat()) else {
        eprintln!("SKIPPED: cannot add IPv6 addresses to this host (needs root and `ip`)");
        return;
    };
    let server = TestServer::start(
        TANDEM,
        &[
            ("HOST", "::"),
            ("MAX_CONNS_PER_IP", "4"),
            ("TRUSTED_PROXIES", "::1/128"),
        ],
    );
    let port = server.port();
    let to: std::net::SocketAddr = format!("[::1]:{port}").parse().unwrap();
    // Four of the twelve hosts are let in, the rest refused at accept.
    let mut admitted = Vec::new();
    let mut refused = 0;
    for host in &hosts {
        let mut tcp = tcp6(host, to).await;
        match until_closed(&mut tcp, Duration::from_millis(300)).await {
            Some(got) if got.starts_with("HTTP/1.1 429") => refused += 1,
            Some(got) => panic!("unexpected answer {got:?}"),
            None => admitted.push(tcp),
        }
    }
    assert_eq!((admitted.len(), refused), (4, 8));
    // Another /64 is another address.
    let mut other = tcp6(&stranger, to).await;
    assert_eq!(
        until_closed(&mut other, Duration::from_millis(300)).await,
        None
    );
    drop(admitted);
    // WebSocket sessions behind a trusted proxy: the forwarded address's
    // /64 is what is counted.
    let url = format!("ws://[::1]:{port}/ws/doc?user_id=");
    let mut sessions = Vec::new();
    let mut refused = 0;
    for i in 0..8 {
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                format!("{url}u{i}"),
            )
            .unwrap();
        let ip = format!("2001:db8:99:7::{:x}", 0x10 + i);
        req.headers_mut().insert("x-real-ip", ip.parse().unwrap());
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => sessions.push(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status().as_u16(), 429);
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((sessions.len(), refused), (4, 4));
}
