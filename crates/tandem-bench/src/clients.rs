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

use rand::Rng;
use serde_json::{json, Value};
use tandem::client::OtClient;
use tandem::ot::splice;
use tandem::protocol::{ErrorCode, ServerFrame};
use tandem_testkit::{Editor, Ws};

use crate::servers::System;

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

/// The connection and protocol state of one client.
pub enum Link {
    /// The test kit's protocol-v1 editor (socket + `OtClient`).
    Tandem(Box<Editor>),
    Echo {
        ws: Ws,
        version: u64,
    },
    Sharedb {
        ws: Ws,
        version: u64,
        fetching: bool,
    },
}

pub struct Client {
    pub idx: usize,
    pub doc: String,
    pub link: Link,
    seq: u64,
    inflight: bool,
    /// Tandem refused the op in flight without committing it: when to send
    /// it again.
    resend_at: Option<tokio::time::Instant>,
    /// How many times that happened.
    pub resends: u64,
}

/// Tandem's answer that the op in flight was not committed and should be
/// sent again (`internal`: contention, e.g. a document too busy on several
/// instances at once, or backend trouble; `rate_limited`).
fn refused_for_now(e: &tandem_testkit::Frame, inflight: Option<u64>) -> bool {
    matches!(
        e.msg,
        ServerFrame::Error {
            code: ErrorCode::Internal | ErrorCode::StorageUnavailable | ErrorCode::RateLimited,
            seq: Some(seq),
            ..
        } if Some(seq) == inflight
    )
}

/// Retry while the server is still coming up.
async fn retrying<T, E: std::fmt::Display, F: std::future::Future<Output = Result<T, E>>>(
    url: &str,
    attempt: impl Fn() -> F,
) -> T {
    let mut tries = 0;
    loop {
        match attempt().await {
            Ok(v) => return v,
            Err(_) if tries < 20 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20 * tries)).await;
            }
            Err(e) => panic!("connect {url}: {e}"),
        }
    }
}

async fn connect(url: &str) -> Ws {
    retrying(url, || Ws::open(url)).await
}

async fn recv_json(ws: &mut Ws) -> Value {
    let t = ws
        .next_text()
        .await
        .unwrap_or_else(|f| panic!("socket ended: {f:?}"));
    serde_json::from_str(&t).expect("JSON frame")
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
        ws.send(m).await;
        loop {
            let r = recv_json(&mut ws).await;
            if r["a"] == "op" && r["d"] == d.as_str() {
                assert!(r.get("error").is_none(), "create refused: {r}");
                break;
            }
        }
    }
    ws.close().await;
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
        let link = match system {
            System::Tandem => Link::Tandem(Box::new(retrying(url, || Editor::join_url(url)).await)),
            System::Echo => Link::Echo {
                ws: connect(url).await,
                version: 0,
            },
            System::Sharedb => {
                let mut ws = connect(url).await;
                ws.send(json!({"a":"hs","protocol":1,"protocolMinor":1,"id":src_name(idx)}))
                    .await;
                ws.send(json!({"a":"s","c":COLLECTION,"d":doc})).await;
                let version = loop {
                    let r = recv_json(&mut ws).await;
                    if r["a"] == "s" {
                        assert!(r.get("error").is_none(), "subscribe refused: {r}");
                        break r["data"]["v"].as_u64().unwrap();
                    }
                };
                Link::Sharedb {
                    ws,
                    version,
                    fetching: false,
                }
            }
        };
        Client {
            idx,
            doc: doc.to_string(),
            link,
            seq: 0,
            inflight: false,
            resend_at: None,
            resends: 0,
        }
    }

    /// Tandem's server-assigned client id (for mapping remote ops back to
    /// their sender).
    pub fn server_id(&self) -> String {
        match &self.link {
            Link::Tandem(ed) => ed.ot.client_id.clone(),
            _ => src_name(self.idx),
        }
    }

    pub fn version(&self) -> u64 {
        match &self.link {
            Link::Tandem(ed) => ed.ot.version,
            Link::Echo { version, .. } | Link::Sharedb { version, .. } => *version,
        }
    }

    fn ws(&mut self) -> &mut Ws {
        match &mut self.link {
            Link::Tandem(ed) => &mut ed.ws,
            Link::Echo { ws, .. } | Link::Sharedb { ws, .. } => ws,
        }
    }

    /// Send one edit: delete `del` code points at `pos` and insert `ins`
    /// (the caller keeps one in flight). Returns its seq.
    pub async fn send_edit(&mut self, pos: usize, del: usize, ins: &str) -> u64 {
        assert!(!self.inflight, "one op in flight");
        self.seq += 1;
        self.inflight = true;
        let frame = match &mut self.link {
            Link::Tandem(ed) => {
                let op = splice(ed.ot.len_chars(), pos, del, ins);
                let out = ed
                    .ot
                    .local_edit(op)
                    .expect("valid edit")
                    .expect("nothing in flight");
                self.seq = out.seq;
                ed.send_op(&out).await;
                return self.seq;
            }
            Link::Echo { .. } => format!("{} {} {pos},{del},{ins}", self.idx, self.seq),
            Link::Sharedb { version, .. } => {
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
        self.send_text(&frame).await;
        self.seq
    }

    /// Send one text frame as is.
    pub async fn send_text(&mut self, frame: &str) {
        self.ws().send_text(frame).await;
    }

    /// Tandem's OT state.
    pub fn ot(&self) -> &OtClient {
        match &self.link {
            Link::Tandem(ed) => &ed.ot,
            _ => panic!("not a Tandem client"),
        }
    }

    /// Receive and handle the next frame. `ids` maps Tandem's client ids
    /// to indexes.
    pub async fn next(&mut self, ids: &std::collections::HashMap<String, usize>) -> Event {
        loop {
            let ev = match &mut self.link {
                Link::Tandem(ed) => {
                    let m = match self.resend_at {
                        Some(at) => tokio::select! {
                            m = ed.ws.next_frame() => m,
                            _ = tokio::time::sleep_until(at) => {
                                self.resend_at = None;
                                if let Some(out) = ed.ot.resend() {
                                    ed.send_op(&out).await;
                                }
                                continue;
                            }
                        },
                        None => ed.ws.next_frame().await,
                    };
                    if let Err(e) = ed.try_handle(&m).await {
                        if refused_for_now(&e, ed.ot.inflight_seq()) {
                            // As the browser client does: keep it, and send
                            // the same seq again in 0.3–1 s.
                            self.resends += 1;
                            let wait = rand::thread_rng().gen_range(300..1000);
                            self.resend_at = Some(
                                tokio::time::Instant::now()
                                    + std::time::Duration::from_millis(wait),
                            );
                            continue;
                        }
                        panic!("tandem refused: {e}");
                    }
                    match m.msg {
                        // A second ack for one seq: an op refused with
                        // `internal` whose first round had committed after
                        // all is acked by its fan-out and by the resend's
                        // dedupe; only the one the OT client takes for its
                        // op in flight counts.
                        ServerFrame::Ack { .. }
                            if !self.inflight || ed.ot.inflight_seq().is_some() =>
                        {
                            Event::Other
                        }
                        ServerFrame::Ack { .. } => {
                            self.inflight = false;
                            Event::Ack
                        }
                        ServerFrame::Op { client, seq, .. } => ids
                            .get(&client)
                            .map_or(Event::Other, |&i| Event::Remote(i, seq)),
                        _ => Event::Other,
                    }
                }
                Link::Echo { ws, version } => {
                    let m = ws.next_text().await.expect("socket ended");
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
                Link::Sharedb {
                    ws,
                    version,
                    fetching,
                } => {
                    let v = recv_json(ws).await;
                    let ev = sharedb_event(&v, self.idx, version, fetching);
                    if ev == Event::Ack {
                        self.inflight = false;
                    }
                    ev
                }
            };
            match ev {
                Event::Gap => self.fetch_missing().await,
                ev => return ev,
            }
        }
    }

    /// Ask ShareDB for the ops from our version on (they come back as ops,
    /// in order; the ones we then hold twice are skipped). One request per
    /// gap is enough: the reply covers everything up to the head.
    async fn fetch_missing(&mut self) {
        if let Link::Sharedb {
            ws,
            version,
            fetching,
        } = &mut self.link
        {
            *fetching = true;
            ws.send(json!({"a":"f","c":COLLECTION,"d":self.doc,"v":*version}))
                .await;
        }
    }

    /// The document's text as this client ends with it: Tandem's own copy;
    /// ShareDB's fetched snapshot (its client keeps none here); none for echo.
    pub async fn final_text(&mut self) -> Option<(u64, String)> {
        match &mut self.link {
            Link::Tandem(ed) => Some((ed.ot.version, ed.ot.text())),
            Link::Echo { .. } => None,
            Link::Sharedb { ws, .. } => {
                ws.send(json!({"a":"f","c":COLLECTION,"d":self.doc})).await;
                loop {
                    let r = recv_json(ws).await;
                    if r["a"] == "f" && r.get("data").is_some() {
                        let d = &r["data"];
                        return Some((d["v"].as_u64().unwrap(), d["data"].as_str()?.to_string()));
                    }
                }
            }
        }
    }

    pub async fn close(self) {
        let ws = match self.link {
            Link::Tandem(ed) => ed.ws,
            Link::Echo { ws, .. } | Link::Sharedb { ws, .. } => ws,
        };
        ws.close().await;
    }
}

/// What one ShareDB message means to client `idx` at `version`.
fn sharedb_event(v: &Value, idx: usize, version: &mut u64, fetching: &mut bool) -> Event {
    if v["a"] == "f" {
        *fetching = false;
    }
    if v["a"] != "op" {
        return Event::Other;
    }
    assert!(v.get("error").is_none(), "sharedb refused: {v}");
    let at = v["v"].as_u64().unwrap();
    let src = v["src"].as_str().unwrap_or("");
    if v.get("op").is_none() && src == src_name(idx) {
        *version = at + 1;
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
