//! Baseline (a): the floor any Rust WebSocket server pays. A minimal
//! tokio-tungstenite server: each text frame a client sends on `/ws/{room}`
//! is sent to every member of the room, the sender included (its ack). No
//! parsing, no OT, no storage.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

type Rooms = Arc<Mutex<HashMap<String, Vec<(u64, mpsc::Sender<Message>)>>>>;

pub async fn serve(port: u16) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    println!("ready");
    let rooms: Rooms = Arc::default();
    let mut next_id = 0u64;
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        next_id += 1;
        tokio::spawn(connection(tcp, next_id, rooms.clone()));
    }
}

async fn connection(tcp: tokio::net::TcpStream, id: u64, rooms: Rooms) {
    let mut room = String::new();
    #[allow(clippy::result_large_err)] // the callback's signature is tungstenite's
    let capture = |req: &Request, resp: Response| {
        room = req.uri().path().to_string();
        Ok(resp)
    };
    // The same read buffer as Tandem's sockets, so W7 compares like with like.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4 * 1024);
    let Ok(ws) = tokio_tungstenite::accept_hdr_async_with_config(tcp, capture, Some(config)).await
    else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(1024);
    rooms
        .lock()
        .unwrap()
        .entry(room.clone())
        .or_default()
        .push((id, tx));
    // Write what is queued and flush once per batch, as Tandem's writer does.
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.feed(m).await.is_err() {
                return;
            }
            for _ in 1..64 {
                let Ok(m) = rx.try_recv() else { break };
                if sink.feed(m).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(m)) = stream.next().await {
        if let Message::Text(_) = m {
            let members: Vec<mpsc::Sender<Message>> = rooms.lock().unwrap()[&room]
                .iter()
                .map(|(_, tx)| tx.clone())
                .collect();
            for tx in members {
                let _ = tx.send(m.clone()).await;
            }
        }
    }
    if let Some(members) = rooms.lock().unwrap().get_mut(&room) {
        members.retain(|(i, _)| *i != id);
    }
    writer.abort();
}
