//! Token typists: each types unique tokens (`[name:n🙂]`) at token
//! boundaries, one op in flight, through whichever instance is up, so the
//! final text shows whether every edit landed exactly once.
//!
//! Must not import: Tandem's code beyond `tandem_core`'s `ot`, `client`,
//! `protocol`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem_core::ot::splice;
use tandem_core::protocol::{ErrorCode, ServerFrame};

use crate::editor::{retryable, Editor};
use crate::server::TestServer;
use crate::ws::Ws;

/// Positions between whole tokens (`[...]`), so inserts never split one.
fn boundaries(text: &str) -> Vec<usize> {
    let mut out = vec![0];
    for (i, c) in text.chars().enumerate() {
        if c == ']' {
            out.push(i + 1);
        }
    }
    out
}

pub fn tokens_in(text: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for piece in text.split_inclusive(']') {
        assert!(
            piece.starts_with('[') && piece.ends_with(']'),
            "torn token {piece:?} in {text:?}"
        );
        *counts.entry(piece.to_owned()).or_insert(0) += 1;
    }
    counts
}

/// Types unique tokens, one op in flight, through any instance that is up:
/// reconnects and resumes when cut off, resends when the server says the
/// edit could not be committed.
pub struct Typist {
    pub ed: Editor,
    pub user: String,
    pub created: Vec<String>,
    pub acked: Vec<String>,
    inflight_token: Option<String>,
    pub reconnects: usize,
    pub retries: usize,
    /// Full reloads after `version_out_of_range`.
    pub reloads: usize,
    reload: bool,
}

impl Typist {
    async fn new(addr: &str, doc: &str, user: &str) -> Self {
        let url = format!("ws://{addr}/ws/{doc}?user_id={user}&client={user}");
        let (ws, init) = Ws::connect(&url).await.unwrap();
        let i = init.init();
        let ot = tandem_core::client::OtClient::new(i.client, i.content.unwrap(), i.version, 0);
        Typist {
            ed: Editor::new(ws, ot, init, &url),
            user: user.into(),
            created: Vec::new(),
            acked: Vec::new(),
            inflight_token: None,
            reconnects: 0,
            retries: 0,
            reloads: 0,
            reload: false,
        }
    }

    async fn reconnect(&mut self, addrs: &Mutex<Vec<String>>, doc: &str) {
        loop {
            let mut list = addrs.lock().unwrap().clone();
            // Spread reconnects over the instances rather than all to the first.
            let spread = self.user.bytes().map(usize::from).sum::<usize>() + self.reconnects;
            let n = list.len().max(1);
            list.rotate_left(spread % n);
            for a in &list {
                if self.rejoin(a, doc).await {
                    self.reconnects += 1;
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Handle messages for up to `wait`; false if the connection closed.
    async fn pump(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = match self.ed.ws.try_recv(left).await {
                Ok(Some(m)) => m,
                Ok(None) => return true,
                Err(_) => return false,
            };
            let had = self.ed.ot.inflight_seq();
            match self.ed.try_handle(&m).await {
                Ok(()) => {
                    if had.is_some() && self.ed.ot.inflight_seq().is_none() {
                        self.acked.extend(self.inflight_token.take());
                    }
                }
                Err(e) if retryable(&e) => {
                    // Not committed (backend trouble, or too fast): keep it,
                    // resend soon.
                    self.retries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if let Some(out) = self.ed.ot.resend() {
                        self.ed.send_op(&out).await;
                    }
                }
                Err(e)
                    if matches!(
                        e.msg,
                        ServerFrame::Error {
                            code: ErrorCode::VersionOutOfRange,
                            ..
                        }
                    ) =>
                {
                    // The server no longer holds the history to rebase this
                    // edit (it was not committed): reload the document and
                    // type the token again, as the browser client keeps its
                    // pending edits across a full reload.
                    self.reloads += 1;
                    self.reload = true;
                    return false;
                }
                Err(e) => panic!("refused: {e}"),
            }
        }
    }

    /// Reconnect to `addr`: resume at our version, or (after
    /// `version_out_of_range`) join afresh. When the server answers with a
    /// full `init` (it can no longer replay what we missed), start over from
    /// it: an edit in flight that the server has (its `seq` says so) counts
    /// as acknowledged, one it lacks is typed again on the fresh text, as the
    /// browser client keeps its pending edits across a full reload.
    async fn rejoin(&mut self, addr: &str, doc: &str) -> bool {
        let mut url = format!(
            "ws://{addr}/ws/{doc}?user_id={u}&name={u}&client={u}",
            u = self.user
        );
        if !self.reload {
            url.push('&');
            url.push_str(&self.ed.resume_query());
        }
        let Ok((ws, init)) = Ws::connect(&url).await else {
            return false;
        };
        self.ed.ws = ws;
        if init.init().resumed != Some(false) && !self.reload {
            if let Some(out) = self.ed.ot.resend() {
                self.ed.send_op(&out).await;
            }
            return true;
        }
        if !self.reload {
            self.reloads += 1;
        }
        self.reload = false;
        let i = init.init();
        let committed = i.seq;
        let inflight = self.ed.ot.inflight_seq();
        // Numbered past every seq already sent, as the browser client does:
        // the server's `seq` may be behind what it committed.
        let used = self.ed.ot.last_sent_seq();
        self.ed.ot = tandem_core::client::OtClient::new(
            i.client,
            i.content.unwrap(),
            i.version,
            committed.max(used),
        );
        self.ed.init = init;
        match (inflight, self.inflight_token.take()) {
            (Some(seq), Some(token)) if seq <= committed => self.acked.push(token),
            (_, Some(token)) => {
                let text = self.ed.ot.text();
                let b = boundaries(&text);
                let op = splice(text.chars().count(), b[b.len() / 2], 0, &token);
                self.inflight_token = Some(token);
                self.ed.edit(op).await;
            }
            _ => {}
        }
        true
    }

    async fn type_until(
        &mut self,
        stop: &AtomicBool,
        addrs: &Mutex<Vec<String>>,
        doc: &str,
        seed: u64,
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut n = 0;
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            if !self.ed.ot.has_pending() {
                if stopping {
                    return;
                }
                n += 1;
                let token = format!("[{}:{n}🙂]", self.user);
                let text = self.ed.ot.text();
                let b = boundaries(&text);
                let pos = b[rng.gen_range(0..b.len())];
                let op = splice(text.chars().count(), pos, 0, &token);
                self.created.push(token.clone());
                self.inflight_token = Some(token);
                self.ed.edit(op).await;
            }
            if !self.pump(Duration::from_millis(rng.gen_range(1..10))).await {
                self.reconnect(addrs, doc).await;
            }
        }
    }
}

pub async fn run_typists(
    addrs: Vec<String>,
    doc: &str,
    count: usize,
    typing: Duration,
    fault: impl std::future::Future<Output = ()>,
) -> Vec<Typist> {
    let alive = Arc::new(Mutex::new(addrs.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..count {
        let mut t = Typist::new(&addrs[i % addrs.len()], doc, &format!("t{i}")).await;
        let (alive, stop, doc) = (alive.clone(), stop.clone(), doc.to_owned());
        tasks.push(tokio::spawn(async move {
            t.type_until(&stop, &alive, &doc, i as u64).await;
            t
        }));
    }
    fault.await;
    tokio::time::sleep(typing).await;
    stop.store(true, Ordering::Relaxed);
    let mut typists = Vec::new();
    for t in tasks {
        typists.push(
            tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .expect("typist stuck")
                .unwrap(),
        );
    }
    typists
}

/// Every token typed appears exactly once, every client converged.
pub async fn check_exactly_once(server: &TestServer, doc: &str, typists: &mut [Typist]) {
    let (content, version) = server.document(doc).await;
    let counts = tokens_in(&content);
    let mut created = 0;
    for t in typists.iter_mut() {
        for tok in &t.created {
            assert_eq!(
                counts.get(tok),
                Some(&1),
                "token {tok} (acked: {})",
                t.acked.contains(tok)
            );
        }
        created += t.created.len();
        t.ed.sync_to(version).await;
        assert_eq!(t.ed.ot.text(), content, "{} diverged", t.user);
    }
    assert_eq!(counts.len(), created, "tokens nobody typed");
}
