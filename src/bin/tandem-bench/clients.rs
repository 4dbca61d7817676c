//! One protocol client per system, behind one interface, so every workload
//! drives Tandem and its baselines with the same generator:
//! - Tandem: protocol v1 with the engine's own `OtClient` (one op in flight).
//! - Echo: frames `"<client> <seq> <payload>"`; its own frame back is the ack.
//! - ShareDB: its JSON protocol (`hs`, `s`, `op`, `f`) with ot-text-unicode
//!   ops; one op in flight, as ShareDB's client does.
//!
//! Edits are inserts at position 0 of a unique token ending in `;`, so every
//! document is a concatenation of whole tokens and the checker can tell that
//! each acknowledged token is there exactly once.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tandem::client::OtClient;
use tandem::ot::{splice, Operation};
use tokio_tungstenite::tungstenite::Message;

use crate::servers::System;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub const COLLECTION: &str = "bench";
const TEXT_UNICODE: &str = "http://sharejs.org/types/text-unicode";

/// What a received frame meant.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// Our op in flight was acknowledged.
    Ack,
    /// Another client's op `(client index, seq)` was applied.
    Remote(usize, u64),
    /// Nothing to count (presence, duplicates, replies).
    Other,
    /// ShareDB: an op from beyond the next version arrived (instances
    /// publish independently, so their ops can cross); like ShareDB's own
    /// client, fetch the missing ops.
    Gap,
}

pub enum Proto {
    Tandem(Box<OtClient>),
    Echo { version: u64 },
    Sharedb { version: u64, fetching: bool },
}

pub struct Client {
    pub idx: usize,
    pub doc: String,
    pub ws: Ws,
    pub proto: Proto,
    seq: u64,
    inflight: bool,
}

async fn connect(url: &str) -> Ws {
    let mut tries = 0;
    loop {
        match tokio_tungstenite::connect_async_with_config(url, None, true).await {
            Ok((ws, _)) => return ws,
            Err(e) if tries < 20 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_millis(20 * tries)).await;
            }
            Err(e) => panic!("connect {url}: {e}"),
        }
    }
}

async fn recv_json(ws: &mut Ws) -> Value {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).expect("JSON frame"),
            Some(Ok(_)) => continue,
            other => panic!("socket ended: {other:?}"),
        }
    }
}

/// Tandem's id for client `idx` is assigned by the server; the generator
/// names ShareDB's (`src`) and the echo frames' itself.
pub fn src_name(idx: usize) -> String {
    format!("g{idx}")
}

/// Create the documents a ShareDB run uses (Tandem and echo need nothing).
pub async fn prepare(system: System, url: &str, docs: &[String]) {
    if system != System::Sharedb {
        return;
    }
    let mut ws = connect(url).await;
    for (i, d) in docs.iter().enumerate() {
        let m = json!({"a":"op","c":COLLECTION,"d":d,"v":0,"seq":i+1,
            "create":{"type":TEXT_UNICODE,"data":""}});
        ws.send(Message::Text(m.to_string().into())).await.unwrap();
        loop {
            let r = recv_json(&mut ws).await;
            if r["a"] == "op" && r["d"] == d.as_str() {
                assert!(r.get("error").is_none(), "create refused: {r}");
                break;
            }
        }
    }
    let _ = ws.close(None).await;
}

/// Join every `(url, index, document)` target, at most `parallel`
/// handshakes at a time; the clients come back in completion order.
pub async fn join_many(
    system: System,
    targets: Vec<(String, usize, String)>,
    parallel: usize,
) -> Vec<Client> {
    let mut clients = Vec::with_capacity(targets.len());
    let mut joins = tokio::task::JoinSet::new();
    for (url, idx, doc) in targets {
        joins.spawn(async move { Client::join(system, &url, idx, &doc).await });
        if joins.len() >= parallel {
            clients.push(joins.join_next().await.unwrap().unwrap());
        }
    }
    while let Some(c) = joins.join_next().await {
        clients.push(c.unwrap());
    }
    clients
}

impl Client {
    pub async fn join(system: System, url: &str, idx: usize, doc: &str) -> Client {
        let mut ws = connect(url).await;
        let proto = match system {
            System::Tandem => {
                let init = recv_json(&mut ws).await;
                assert_eq!(init["type"], "init", "no init: {init}");
                Proto::Tandem(Box::new(OtClient::new(
                    init["client"].as_str().unwrap(),
                    init["content"].as_str().unwrap(),
                    init["version"].as_u64().unwrap(),
                    init["seq"].as_u64().unwrap(),
                )))
            }
            System::Echo => Proto::Echo { version: 0 },
            System::Sharedb => {
                let hs = json!({"a":"hs","protocol":1,"protocolMinor":1,"id":src_name(idx)});
                ws.send(Message::Text(hs.to_string().into())).await.unwrap();
                let s = json!({"a":"s","c":COLLECTION,"d":doc});
                ws.send(Message::Text(s.to_string().into())).await.unwrap();
                let version = loop {
                    let r = recv_json(&mut ws).await;
                    if r["a"] == "s" {
                        assert!(r.get("error").is_none(), "subscribe refused: {r}");
                        break r["data"]["v"].as_u64().unwrap();
                    }
                };
                Proto::Sharedb {
                    version,
                    fetching: false,
                }
            }
        };
        Client {
            idx,
            doc: doc.to_string(),
            ws,
            proto,
            seq: 0,
            inflight: false,
        }
    }

    /// Tandem's server-assigned client id (for mapping remote ops back to
    /// their sender).
    pub fn server_id(&self) -> String {
        match &self.proto {
            Proto::Tandem(ot) => ot.client_id.clone(),
            _ => src_name(self.idx),
        }
    }

    pub fn version(&self) -> u64 {
        match &self.proto {
            Proto::Tandem(ot) => ot.version,
            Proto::Echo { version } | Proto::Sharedb { version, .. } => *version,
        }
    }

    /// Send one edit: delete `del` code points at `pos` and insert `ins`
    /// (the caller keeps one in flight). Returns its seq.
    pub async fn send_edit(&mut self, pos: usize, del: usize, ins: &str) -> u64 {
        assert!(!self.inflight, "one op in flight");
        self.seq += 1;
        let frame = match &mut self.proto {
            Proto::Tandem(ot) => {
                let op = splice(ot.len_chars(), pos, del, ins);
                let out = ot
                    .local_edit(op)
                    .expect("valid edit")
                    .expect("nothing in flight");
                self.seq = out.seq;
                json!({"type":"op","version":out.version,"seq":out.seq,"op":out.op}).to_string()
            }
            Proto::Echo { .. } => format!("{} {} {pos},{del},{ins}", self.idx, self.seq),
            Proto::Sharedb { version, .. } => {
                let mut op = Vec::new();
                if pos > 0 {
                    op.push(json!(pos));
                }
                if del > 0 {
                    op.push(json!({ "d": del }));
                }
                if !ins.is_empty() {
                    op.push(json!(ins));
                }
                json!({"a":"op","c":COLLECTION,"d":self.doc,"v":*version,"seq":self.seq,"op":op})
                    .to_string()
            }
        };
        self.inflight = true;
        self.send_text(frame).await;
        self.seq
    }

    /// Send one text frame as is.
    pub async fn send_text(&mut self, frame: String) {
        self.ws.send(Message::Text(frame.into())).await.unwrap();
    }

    /// Tandem's OT state.
    pub fn ot(&self) -> &OtClient {
        match &self.proto {
            Proto::Tandem(ot) => ot,
            _ => panic!("not a Tandem client"),
        }
    }

    /// Handle one received frame. `ids` maps Tandem's client ids to indexes.
    pub fn handle(&mut self, m: &str, ids: &std::collections::HashMap<String, usize>) -> Event {
        match &mut self.proto {
            Proto::Tandem(ot) => {
                let v: Value = serde_json::from_str(m).expect("JSON frame");
                match v["type"].as_str() {
                    Some("ack") => {
                        ot.on_ack(v["seq"].as_u64().unwrap(), v["version"].as_u64().unwrap())
                            .expect("ack");
                        self.inflight = false;
                        Event::Ack
                    }
                    Some("op") => {
                        let op = Operation::from_json(&v["op"], usize::MAX).unwrap();
                        let client = v["client"].as_str().unwrap();
                        let seq = v["seq"].as_u64().unwrap();
                        ot.on_remote(v["version"].as_u64().unwrap(), &op, client, seq)
                            .expect("remote op");
                        ids.get(client)
                            .map_or(Event::Other, |&i| Event::Remote(i, seq))
                    }
                    Some("error") => panic!("tandem refused: {v}"),
                    _ => Event::Other,
                }
            }
            Proto::Echo { version } => {
                *version += 1;
                let mut it = m.splitn(3, ' ');
                let from: usize = it.next().unwrap().parse().unwrap();
                let seq: u64 = it.next().unwrap().parse().unwrap();
                if from == self.idx {
                    self.inflight = false;
                    Event::Ack
                } else {
                    Event::Remote(from, seq)
                }
            }
            Proto::Sharedb { version, fetching } => {
                let v: Value = serde_json::from_str(m).expect("JSON frame");
                if v["a"] == "f" {
                    *fetching = false;
                }
                if v["a"] != "op" {
                    return Event::Other;
                }
                assert!(v.get("error").is_none(), "sharedb refused: {v}");
                let at = v["v"].as_u64().unwrap();
                let src = v["src"].as_str().unwrap_or("");
                if v.get("op").is_none() && src == src_name(self.idx) {
                    *version = at + 1;
                    self.inflight = false;
                    return Event::Ack;
                }
                if at < *version {
                    return Event::Other; // sent twice (submit catch-up and stream)
                }
                if at > *version {
                    return if *fetching { Event::Other } else { Event::Gap };
                }
                *version += 1;
                let idx = src.strip_prefix('g').and_then(|s| s.parse().ok());
                idx.map_or(Event::Other, |i| {
                    Event::Remote(i, v["seq"].as_u64().unwrap())
                })
            }
        }
    }

    /// Receive and handle the next frame.
    pub async fn next(&mut self, ids: &std::collections::HashMap<String, usize>) -> Event {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) => match self.handle(&t, ids) {
                    Event::Gap => self.fetch_missing().await,
                    ev => return ev,
                },
                Some(Ok(_)) => continue,
                other => panic!("socket ended: {other:?}"),
            }
        }
    }

    /// Ask ShareDB for the ops from our version on (they come back as ops,
    /// in order; the ones we then hold twice are skipped). One request per
    /// gap is enough: the reply covers everything up to the head.
    async fn fetch_missing(&mut self) {
        if let Proto::Sharedb { version, fetching } = &mut self.proto {
            *fetching = true;
            let f = json!({"a":"f","c":COLLECTION,"d":self.doc,"v":*version});
            self.ws
                .send(Message::Text(f.to_string().into()))
                .await
                .unwrap();
        }
    }

    /// The document's text as this client ends with it: Tandem's own copy;
    /// ShareDB's fetched snapshot (its client keeps none here); none for echo.
    pub async fn final_text(&mut self) -> Option<(u64, String)> {
        match &mut self.proto {
            Proto::Tandem(ot) => Some((ot.version, ot.text())),
            Proto::Echo { .. } => None,
            Proto::Sharedb { .. } => {
                let f = json!({"a":"f","c":COLLECTION,"d":self.doc});
                self.ws
                    .send(Message::Text(f.to_string().into()))
                    .await
                    .unwrap();
                loop {
                    let r = recv_json(&mut self.ws).await;
                    if r["a"] == "f" && r.get("data").is_some() {
                        let d = &r["data"];
                        return Some((d["v"].as_u64().unwrap(), d["data"].as_str()?.to_string()));
                    }
                }
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
