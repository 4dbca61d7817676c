//! A protocol-v1 editor: the pure OT client (`tandem_core::client::OtClient`)
//! over a real socket, one op in flight, answering checksum `check`s (a
//! drifted editor reports, then reloads keeping its pending edits); and
//! random typing with it.
//!
//! Must not import: Tandem's code beyond `tandem_core`'s `ot`, `client`,
//! `protocol`.

use std::time::Duration;

use serde_json::json;
use tandem_core::client::{Check, OtClient, Outgoing};
use tandem_core::ot::Operation;
use tandem_core::protocol::{ErrorCode, ServerFrame};
use tokio_tungstenite::tungstenite::Error;
use tokio_tungstenite::MaybeTlsStream;

use crate::server::TestServer;
use crate::ws::{Frame, Ws};
use crate::TIMEOUT;

pub struct Editor {
    pub ws: Ws,
    pub ot: OtClient,
    pub init: Frame,
    /// Where it joined (a fresh join: no resume), for a checksum reload.
    pub url: String,
    /// Checks its text agreed with.
    pub checks: usize,
    /// Reloads after a check its text disagreed with.
    pub checksum_reloads: usize,
    /// A check disagreed: new ops are held until the op on the wire is
    /// answered, then the editor reloads.
    resync: bool,
    /// The highest seq sent on a socket (0: none).
    sent_seq: u64,
}

impl Editor {
    pub async fn join(server: &TestServer, doc: &str, user: &str, client: Option<&str>) -> Editor {
        let q = match client {
            Some(c) => format!("user_id={user}&name={user}&client={c}"),
            None => format!("user_id={user}&name={user}"),
        };
        Editor::join_url(&server.ws_url(doc, &q)).await.unwrap()
    }

    /// Join at `url` and start from the full state `init` carries.
    pub async fn join_url(url: &str) -> Result<Editor, Error> {
        let (ws, init) = Ws::connect(url).await?;
        let ot = fresh_client(&init);
        Ok(Editor::new(ws, ot, init, url))
    }

    pub(crate) fn new(ws: Ws, ot: OtClient, init: Frame, url: &str) -> Editor {
        Editor {
            ws,
            ot,
            init,
            url: url.to_owned(),
            checks: 0,
            checksum_reloads: 0,
            resync: false,
            sent_seq: 0,
        }
    }

    /// A check disagreed and the reload has not happened yet.
    pub fn resyncing(&self) -> bool {
        self.resync
    }

    /// Reconnect with `client`, `version` and `history` (resume), then
    /// resend the in-flight op, as a real client does.
    pub async fn resume(&mut self, server: &TestServer, doc: &str, user: &str) -> Frame {
        self.resume_at(&server.addr, doc, user).await.unwrap()
    }

    /// Resume on the server at `addr` (any instance). On a full init (the
    /// server cannot replay: too far behind, or another history), start
    /// over from its content with the pending edits rebased onto it, as the
    /// browser client does.
    pub async fn resume_at(&mut self, addr: &str, doc: &str, user: &str) -> Result<Frame, Error> {
        let q = format!(
            "user_id={user}&name={user}&client={}&{}",
            self.ot.client_id,
            self.resume_query()
        );
        let (ws, init) = Ws::connect(&format!("ws://{addr}/ws/{doc}?{q}")).await?;
        self.ws = ws;
        if init.init().resumed == Some(false) {
            self.start_over(&init).await;
        } else if let Some(out) = self.ot.resend() {
            self.send_op(&out).await;
        }
        Ok(init)
    }

    /// `version=…&history=…`: where this editor resumes from.
    pub fn resume_query(&self) -> String {
        resume_query(self.ot.version, self.init.init().history)
    }

    /// Cut the connection abruptly (TCP shutdown, no close frame).
    pub async fn cut(&mut self) {
        use tokio::io::AsyncWriteExt;
        if let MaybeTlsStream::Plain(s) = self.ws.ws.get_mut() {
            let _ = s.shutdown().await;
        }
    }

    /// Send an op, unless a reload is due (then it waits for it, and is
    /// sent afterwards under a new seq).
    pub async fn send_op(&mut self, out: &Outgoing) {
        if self.resync {
            return;
        }
        self.sent_seq = self.sent_seq.max(out.seq);
        self.ws
            .send(json!({"type": "op", "version": out.version, "seq": out.seq, "op": out.op}))
            .await;
    }

    /// A `check`: agreed, or reported (`mismatch`) and a reload due.
    async fn on_check(&mut self, version: u64, hash: &str) {
        match self.ot.check(version, hash) {
            Check::Agrees => self.checks += 1,
            Check::Differs { ours } if !self.resync => {
                self.ws
                    .send(json!({"type": "mismatch", "version": version, "hash": ours}))
                    .await;
                self.resync = true;
            }
            _ => {}
        }
    }

    /// Reload once no op this editor sent is unanswered: an op on the wire
    /// might yet be committed after the fresh `init` names our last seq,
    /// and re-sent as a new edit it would land twice. Then a fresh join
    /// (same client id, no resume) and the pending edits on its content.
    async fn reload_if_due(&mut self) {
        if !self.resync || self.ot.inflight_seq().is_some_and(|s| s <= self.sent_seq) {
            return;
        }
        let url = fresh_url(&self.url, &self.ot.client_id);
        let (ws, init) = Ws::connect(&url).await.expect("reload after a mismatch");
        self.ws = ws;
        self.resync = false;
        self.checksum_reloads += 1;
        self.start_over(&init).await;
    }

    /// Start over from a full `init`, the pending edits rebased onto its
    /// content and sent.
    async fn start_over(&mut self, init: &Frame) {
        let i = init.init();
        let content = i.content.expect("a full init carries the content");
        let out = self.ot.reload(content, i.version, i.seq).unwrap();
        self.init = init.clone();
        if let Some(out) = out {
            self.send_op(&out).await;
        }
    }

    /// A local edit: sent now, or composed into what waits for the ack.
    pub async fn edit(&mut self, op: Operation) {
        if let Some(out) = self.ot.local_edit(op).unwrap() {
            self.send_op(&out).await;
        }
    }

    /// Apply one server message to the OT client. As the contract asks of
    /// a client, an op refused with `internal` (not committed: backend
    /// trouble or contention) or `rate_limited` is kept and resent; any
    /// other refusal fails the test.
    pub async fn handle(&mut self, m: &Frame) {
        match self.try_handle(m).await {
            Ok(()) => {}
            Err(e) if retryable(&e) && error_seq(&e) == self.ot.inflight_seq() => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if let Some(out) = self.ot.resend() {
                    self.send_op(&out).await;
                }
            }
            Err(e) => panic!("server refused: {e}"),
        }
    }

    /// Apply one server message; an `error` is returned to the caller.
    pub async fn try_handle(&mut self, m: &Frame) -> Result<(), Frame> {
        let next = match &m.msg {
            ServerFrame::Ack { seq, version } => self.ot.on_ack(*seq, *version).unwrap(),
            ServerFrame::Op {
                version,
                op,
                client,
                seq,
                ..
            } => self.ot.on_remote(*version, op, client, *seq).unwrap(),
            ServerFrame::Check { version, hash } => {
                self.on_check(*version, hash).await;
                None
            }
            ServerFrame::Error { .. } => return Err(m.clone()),
            _ => None,
        };
        if let Some(out) = next {
            self.send_op(&out).await;
        }
        self.reload_if_due().await;
        Ok(())
    }

    /// Process messages for up to `wait`.
    pub async fn pump(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.ws.try_recv(left).await {
                Ok(Some(m)) => self.handle(&m).await,
                Ok(None) => return,
                Err(f) => panic!("closed: {f:?}"),
            }
        }
    }

    /// Process messages until nothing is pending and `version` is reached.
    pub async fn sync_to(&mut self, version: u64) {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while self.ot.has_pending() || self.ot.version < version {
            assert!(
                tokio::time::Instant::now() < deadline,
                "sync timed out at {}",
                self.ot.version
            );
            let m = self.ws.recv().await;
            self.handle(&m).await;
        }
    }

    /// Process until no op is pending.
    pub async fn settle(&mut self) {
        self.sync_to(0).await;
    }
}

/// The query of a resume from `version` of the history `history` (not
/// named when empty: a server from before history identities).
pub fn resume_query(version: u64, history: &str) -> String {
    if history.is_empty() {
        format!("version={version}")
    } else {
        format!("version={version}&history={history}")
    }
}

/// `url` as a fresh join of client `client`: no resume, no other client id.
fn fresh_url(url: &str, client: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut q: Vec<&str> = query
        .split('&')
        .filter(|p| {
            !p.is_empty()
                && !["client=", "version=", "history="]
                    .iter()
                    .any(|k| p.starts_with(k))
        })
        .collect();
    let own = format!("client={client}");
    q.push(&own);
    format!("{base}?{}", q.join("&"))
}

/// An OT client starting from a full `init`.
fn fresh_client(init: &Frame) -> OtClient {
    let i = init.init();
    OtClient::new(
        i.client,
        i.content.expect("a full init carries the content"),
        i.version,
        i.seq,
    )
}

/// An op refused without being committed: resend it (`internal`:
/// contention; `storage_unavailable`: storage refused the write;
/// `rate_limited`: too fast).
pub(crate) fn retryable(e: &Frame) -> bool {
    matches!(
        e.msg,
        ServerFrame::Error {
            code: ErrorCode::Internal | ErrorCode::StorageUnavailable | ErrorCode::RateLimited,
            ..
        }
    )
}

fn error_seq(e: &Frame) -> Option<u64> {
    match e.msg {
        ServerFrame::Error { seq, .. } => seq,
        _ => None,
    }
}

pub const EMOJI_ALPHABET: &[&str] = &["a", "b", "c", " ", "\n", "é", "中", "😀", "👍🏽", "𝄞", "🇫🇷"];

/// Flood `writer`'s document with 16 KiB insert/delete pairs until the
/// client `slow` is reported gone (true) or `edits` pass (false). Every edit
/// must be acknowledged within `limit`: a reader that never reads must not
/// stall a writer.
pub async fn flood_until_dropped(
    writer: &mut Editor,
    slow: &str,
    edits: usize,
    limit: Duration,
) -> bool {
    let big = "w".repeat(16 * 1024);
    for i in 0..edits {
        let len = writer.ot.len_chars();
        let op = if i % 2 == 0 {
            tandem_core::ot::splice(len, 0, 0, &big)
        } else {
            tandem_core::ot::splice(len, 0, len, "")
        };
        writer.edit(op).await;
        let start = std::time::Instant::now();
        let mut dropped = false;
        while writer.ot.has_pending() {
            let m = writer.ws.recv().await;
            if matches!(&m.msg, ServerFrame::UserLeft { client, .. } if client == slow) {
                dropped = true;
            }
            writer.handle(&m).await;
        }
        assert!(
            start.elapsed() < limit,
            "the writer stalled behind a slow reader"
        );
        if dropped {
            return true;
        }
    }
    false
}

/// A random single-splice edit of a text of `len` code points.
pub fn random_edit(rng: &mut impl rand::Rng, len: usize) -> Operation {
    let pos = rng.gen_range(0..=len);
    let del = if len > pos && rng.gen_bool(0.3) {
        rng.gen_range(1..=(len - pos).min(4))
    } else {
        0
    };
    let mut ins: String = (0..rng.gen_range(0..4))
        .map(|_| EMOJI_ALPHABET[rng.gen_range(0..EMOJI_ALPHABET.len())])
        .collect();
    if del == 0 && ins.is_empty() {
        ins.push('x');
    }
    tandem_core::ot::splice(len, pos, del, &ins)
}

/// Each editor, concurrently, makes `edits` random edits (with emoji),
/// pausing up to `max_pause_ms` between them while handling what arrives,
/// then waits until nothing is pending. Seeded per editor.
pub async fn type_concurrently(
    editors: Vec<Editor>,
    seed: u64,
    edits: usize,
    max_pause_ms: u64,
) -> Vec<Editor> {
    use rand::{Rng, SeedableRng};
    let tasks: Vec<_> = editors
        .into_iter()
        .enumerate()
        .map(|(i, mut ed)| {
            tokio::spawn(async move {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed + i as u64);
                for _ in 0..edits {
                    let op = random_edit(&mut rng, ed.ot.len_chars());
                    ed.edit(op).await;
                    let pause = rng.gen_range(0..max_pause_ms);
                    ed.pump(Duration::from_millis(pause)).await;
                }
                ed.settle().await;
                ed
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}
