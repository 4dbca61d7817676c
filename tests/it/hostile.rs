//! Hostile clients beyond malformed frames (those are in `server.rs`):
//! connection floods per address and per user, slow handshakes
//! (slowloris), and a flood of garbage from many sockets at once. Each is
//! refused with its HTTP status or protocol code, the document is
//! untouched, memory stays bounded, and the server keeps serving.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use tandem_testkit::{Frame, Kind, TestServer, Ws};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use crate::TANDEM;

type Socket = tokio_tungstenite::WebSocketStream<TcpStream>;

/// A TCP connection to the server from the loopback address 127.0.0.`from`.
async fn tcp_from(server: &TestServer, from: u8) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(std::net::SocketAddr::from(([127, 0, 0, from], 0)))
        .unwrap();
    s.connect(server.addr.parse().unwrap()).await.unwrap()
}

/// A WebSocket from 127.0.0.`from`; `Err(status)` when the upgrade is refused.
async fn ws_from(server: &TestServer, from: u8, doc: &str, user: &str) -> Result<Socket, u16> {
    let tcp = tcp_from(server, from).await;
    let url = server.ws_url(doc, &format!("user_id={user}"));
    match tokio_tungstenite::client_async(url, tcp).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("unexpected handshake failure: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_floods_are_capped_per_user_and_per_address() {
    let server = TestServer::start(
        TANDEM,
        &[("MAX_CONNS_PER_IP", "12"), ("MAX_SOCKETS_PER_USER", "4")],
    );
    let doc = "flood";
    // Per user: the fifth socket of one user is refused, from any address.
    let mut mallory = Vec::new();
    for i in 0..4 {
        mallory.push(ws_from(&server, 2 + i, doc, "mallory").await.unwrap());
    }
    assert_eq!(ws_from(&server, 9, doc, "mallory").await.err(), Some(429));
    // Per address: twelve sessions from 127.0.0.20, the thirteenth refused;
    // another address is not affected.
    let mut crowd = Vec::new();
    for i in 0..12 {
        crowd.push(ws_from(&server, 20, doc, &format!("c{i}")).await.unwrap());
    }
    assert_eq!(ws_from(&server, 20, doc, "c12").await.err(), Some(429));
    let mut other = ws_from(&server, 21, doc, "bob").await.unwrap();
    // Closing sessions gives their slots back.
    for mut ws in crowd.drain(..2) {
        ws.close(None).await.unwrap();
        while ws.next_message().await {}
    }
    drop(mallory.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(ws_from(&server, 20, doc, "c12").await.is_ok());
    assert!(ws_from(&server, 9, doc, "mallory").await.is_ok());

    // Raw TCP connections that never send a request: the address's cap
    // applies before HTTP, and the next one is told so.
    let mut idle = Vec::new();
    for _ in 0..12 {
        idle.push(tcp_from(&server, 30).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut refused = tcp_from(&server, 30).await;
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), refused.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    // A well-formed response: its body is the declared length and the
    // protocol's error shape.
    let (headers, body) = head.split_once("\r\n\r\n").expect("headers end");
    let declared: usize = headers
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .expect("content-length")
        .parse()
        .unwrap();
    assert_eq!(declared, body.len(), "{head}");
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"]["code"], "rate_limited");

    // Everyone admitted still edits; nothing refused touched the document.
    other
        .send(Message::Text(
            json!({"type":"op","version":0,"seq":1,"op":["ok"]})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    let ack = loop {
        let m = other.next_frame().await;
        if m.kind() == Kind::Ack {
            break m;
        }
    };
    assert_eq!(ack["version"], 1);
    assert_eq!(server.document(doc).await, ("ok".to_owned(), 1));
    let status = reqwest::get(server.http("/healthz"))
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handshakes_are_cut_off() {
    let server = TestServer::start(TANDEM, &[("HEADER_READ_TIMEOUT_MS", "400")]);
    // Half a request line, then silence.
    let mut silent = tcp_from(&server, 2).await;
    silent
        .write_all(b"GET /ws/doc?user_id=slow HTTP/1.1\r\n")
        .await
        .unwrap();
    // A slowloris: one header byte every 100 ms, forever.
    let mut trickle = tcp_from(&server, 3).await;
    let started = std::time::Instant::now();
    let trickler = tokio::spawn(async move {
        trickle
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        loop {
            if trickle.write_all(b"X").await.is_err() {
                return started.elapsed();
            }
            let mut b = [0u8; 256];
            if let Ok(Ok(0)) =
                tokio::time::timeout(Duration::from_millis(100), trickle.read(&mut b)).await
            {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "slowloris kept open"
            );
        }
    });
    let mut buf = vec![0u8; 512];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match silent.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue, // a 408 before the close is fine
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a silent half-request was kept open");
    let took = trickler.await.unwrap();
    assert!(took < Duration::from_secs(5), "slowloris held for {took:?}");
    // Well-behaved clients are unaffected.
    let (mut ws, init) = Ws::connect(&server.ws_url("doc", "user_id=ok"))
        .await
        .unwrap();
    assert_eq!(init.kind(), Kind::Init);
    ws.assert_open().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_garbage_flood_from_many_sockets_keeps_memory_bounded_and_changes_nothing() {
    let server = TestServer::start(
        TANDEM,
        &[
            ("MAX_FRAME_BYTES", "4096"),
            ("OP_RATE_PER_SEC", "50"),
            ("OP_RATE_BURST", "50"),
        ],
    );
    let doc = "target";
    let (mut owner, _) = Ws::connect(&server.ws_url(doc, "user_id=owner&client=o1"))
        .await
        .unwrap();
    owner
        .send(json!({"type":"op","version":0,"seq":1,"op":["precious"]}))
        .await;
    owner.recv_type(Kind::Ack).await;
    let before = server.document(doc).await;
    let rss_before = server.rss_kb();

    let garbage: Vec<String> = vec![
        "{".repeat(3000),
        "\u{0}\u{1}\u{2}".into(),
        r#"{"type":"op","version":1,"seq":1,"op":[999999,"x"]}"#.into(),
        r#"{"type":"op","version":18446744073709551615,"seq":1,"op":[8,"x"]}"#.into(),
        r#"{"type":"op","version":1,"seq":1,"op":[8,{"d":1}]}"#.into(),
        "x".repeat(4000),
        r#"{"type":"cursor","version":1,"anchor":99,"head":-1}"#.into(),
    ];
    let mut tasks = Vec::new();
    for i in 0..40u8 {
        let url = server.ws_url(doc, &format!("user_id=vandal{i}"));
        let garbage = garbage.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ws, _) = Ws::connect(&url).await.unwrap();
            let mut sent = 0;
            let until = std::time::Instant::now() + Duration::from_secs(2);
            while std::time::Instant::now() < until {
                for g in &garbage {
                    if ws.ws.send(Message::Text(g.clone().into())).await.is_err() {
                        return sent;
                    }
                    sent += 1;
                }
                // Over the hard limit: the server answers too_large and closes.
                if sent % 70 == 0 {
                    let _ = ws.ws.send(Message::Text("z".repeat(40_000).into())).await;
                    return sent;
                }
            }
            sent
        }));
    }
    let mut frames = 0;
    for t in tasks {
        frames += t.await.unwrap();
    }
    assert!(frames > 1000, "only {frames} garbage frames sent");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = server.rss_kb();
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB under a garbage flood"
    );
    assert_eq!(
        server.document(doc).await,
        before,
        "the flood changed the document"
    );
    owner
        .send(json!({"type":"op","version":1,"seq":2,"op":[8,"!"]}))
        .await;
    assert_eq!(owner.recv_type(Kind::Ack).await["version"], 2);
}

/// Small helpers on a raw client socket.
trait SocketExt {
    async fn next_frame(&mut self) -> Frame;
    async fn next_message(&mut self) -> bool;
}

impl SocketExt for Socket {
    async fn next_frame(&mut self) -> Frame {
        use futures_util::StreamExt;
        loop {
            match tokio::time::timeout(tandem_testkit::TIMEOUT, self.next())
                .await
                .unwrap()
            {
                Some(Ok(Message::Text(t))) => return Frame::parse(t),
                Some(Ok(_)) => continue,
                other => panic!("socket ended: {other:?}"),
            }
        }
    }
    async fn next_message(&mut self) -> bool {
        use futures_util::StreamExt;
        matches!(
            tokio::time::timeout(Duration::from_secs(2), self.next()).await,
            Ok(Some(Ok(_)))
        )
    }
}
