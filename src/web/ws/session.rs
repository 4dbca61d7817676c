//! One WebSocket session after the upgrade, over any `Sink` of frames and
//! any `Stream` of read results (axum's split `WebSocket` in production,
//! channels in the tests): the reader (size, rate and parse checks, then
//! the hub's [`ConnHandle`]), the bounded writer (the document task's
//! queue, the reader's own replies, server pings), the idle timeout, and
//! the close when the session's token is revoked.
//!
//! Owns: [`run_session`], [`Joined`]. Must not import: axum's extractors or
//! `AppState` (the upgrade in `ws.rs` does the HTTP side and hands over
//! only what a session needs), sqlx, redis.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use axum::BoxError;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::mpsc;
use tracing::debug;

use crate::config::Config;
use crate::hub::{close, error_msg, ConnHandle, Outbound};
use crate::limits::TokenBucket;
use crate::ot::{OpError, Operation};
use crate::protocol::{parse_client, ClientMessage, ErrorCode, ServerMessage};
use crate::web::tokens::LiveGuard;

/// Messages written before one flush, when more are already queued.
const WRITE_BATCH: usize = 64;

/// What the upgrade hands a session: its place in the document.
pub(crate) struct Joined {
    /// The connection's handle into the document task.
    pub conn: ConnHandle,
    /// What the document task sends this connection.
    pub outbound: mpsc::Receiver<Outbound>,
    /// The document's id (for the spans of traced edits).
    pub doc: String,
    /// The session's token registration (none when anonymous): when the
    /// token is revoked the socket is closed with 1008.
    pub live: Option<LiveGuard>,
}

/// Runs one session until the socket ends (or the writer closes it, or its
/// token is revoked), then leaves the document.
pub(crate) async fn run_session<W, R, E>(sink: W, stream: R, config: Arc<Config>, joined: Joined)
where
    W: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, E>> + Unpin,
    E: Into<BoxError>,
{
    let Joined {
        conn,
        outbound,
        doc,
        live,
    } = joined;
    metrics::gauge!("tandem_connections").increment(1.0);
    let mut session = Session::new(config, conn, doc);
    let (local_tx, local_rx) = mpsc::channel(64);
    let ping = Duration::from_millis(session.config.ping_interval_ms);
    let writer = write_loop(sink, outbound, local_rx, ping);
    tokio::pin!(writer);
    let closer = local_tx.clone();
    let revoked = async move {
        match live.as_ref() {
            Some(l) => l.closed.cancelled().await,
            None => std::future::pending().await,
        }
        (closer, live)
    };
    tokio::select! {
        // The writer closed the socket (shutdown, slow consumer): stop reading.
        _ = &mut writer => {}
        // The reader is done; the writer drains its last replies and exits.
        _ = session.read_loop(stream, local_tx) => {
            let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
        }
        // The token was revoked (logout, password change, account deleted).
        (closer, _live) = revoked => {
            debug!("token revoked; closing");
            let _ = closer.send(Outbound::Close(close::POLICY, "token revoked")).await;
            drop(closer);
            let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
        }
    }
    debug!("session ended");
    metrics::gauge!("tandem_connections").decrement(1.0);
    session.conn.leave().await;
}

/// The reply to a frame the socket could not read: a text frame that is
/// not UTF-8 is a bad message (1007); otherwise, most likely, a frame over
/// the hard limit (1009).
fn read_error(e: BoxError) -> (ErrorCode, u16, &'static str) {
    // axum wraps tungstenite's error in its own.
    let e = match e.downcast::<axum::Error>() {
        Ok(e) => e.into_inner(),
        Err(e) => e,
    };
    match e.downcast::<tungstenite::Error>().map(|e| *e) {
        Ok(tungstenite::Error::Utf8(_)) => {
            (ErrorCode::BadMessage, 1007, "text frames must be UTF-8")
        }
        _ => (ErrorCode::TooLarge, 1009, "frame too large"),
    }
}

/// The reader's state: the connection and its rate limits.
struct Session {
    config: Arc<Config>,
    conn: ConnHandle,
    /// The document's id (for the spans of traced edits).
    doc: String,
    ops: TokenBucket,
    cursors: TokenBucket,
    /// Awareness updates, limited as cursors are (their own bucket).
    awareness: TokenBucket,
    last_cursor_notice: Option<Instant>,
    /// A checksum mismatch was counted for this session (at most one: the
    /// client reloads on a new connection).
    mismatch_counted: bool,
}

/// Replies the reader makes itself (pong, refusals of unparsable frames).
type Local = mpsc::Sender<Outbound>;

impl Session {
    fn new(config: Arc<Config>, conn: ConnHandle, doc: String) -> Self {
        let now = Instant::now();
        let c = &config;
        let ops = TokenBucket::new(c.op_rate_per_sec, c.op_rate_burst, now);
        let cursors = TokenBucket::new(c.cursor_rate_per_sec, c.cursor_rate_per_sec, now);
        let awareness = TokenBucket::new(c.cursor_rate_per_sec, c.cursor_rate_per_sec, now);
        Self {
            config,
            conn,
            doc,
            ops,
            cursors,
            awareness,
            last_cursor_notice: None,
            mismatch_counted: false,
        }
    }

    /// Reads until the socket ends; dropping `local` tells the writer.
    async fn read_loop<R, E>(&mut self, mut stream: R, local: Local)
    where
        R: Stream<Item = Result<Message, E>> + Unpin,
        E: Into<BoxError>,
    {
        let idle = Duration::from_millis(self.config.idle_timeout_ms);
        loop {
            let frame = match tokio::time::timeout(idle, stream.next()).await {
                Err(_) => {
                    debug!("idle timeout");
                    return;
                }
                Ok(None) => return,
                Ok(Some(Err(e))) => {
                    let e = e.into();
                    debug!(error = %e, "read error");
                    let (code, close, why) = read_error(e);
                    let _ = local.try_send(error_msg(code, why, None));
                    let _ = local.try_send(Outbound::Close(close, why));
                    return;
                }
                Ok(Some(Ok(f))) => f,
            };
            let reply = match frame {
                Message::Text(t) => self.on_text(&t).await,
                Message::Binary(_) => Some(error_msg(
                    ErrorCode::BadMessage,
                    "binary frames are not accepted",
                    None,
                )),
                Message::Close(_) => return,
                Message::Ping(_) | Message::Pong(_) => None,
            };
            if let Some(msg) = reply {
                let closing = matches!(msg, Outbound::Close(..));
                if local.send(msg).await.is_err() || closing {
                    return;
                }
            }
        }
    }

    /// Handle one text frame; returns the reply the reader sends itself.
    async fn on_text(&mut self, text: &str) -> Option<Outbound> {
        let cfg = &self.config;
        if text.len() > cfg.max_frame_bytes {
            let m = format!(
                "frame of {} bytes is over the limit of {}",
                text.len(),
                cfg.max_frame_bytes
            );
            return Some(error_msg(ErrorCode::TooLarge, &m, None));
        }
        let msg = match parse_client(text) {
            Ok(m) => m,
            Err(e) => return Some(error_msg(ErrorCode::BadMessage, &e, None)),
        };
        let sent = match msg {
            ClientMessage::Op { version, seq, op } => {
                if !self.ops.allow(Instant::now()) {
                    return Some(error_msg(
                        ErrorCode::RateLimited,
                        "too many ops; slow down",
                        Some(seq),
                    ));
                }
                let op = match Operation::from_json(&op, cfg.max_op_components) {
                    Ok(op) => op,
                    Err(e @ OpError::TooManyComponents { .. }) => {
                        return Some(error_msg(ErrorCode::TooLarge, &e.to_string(), Some(seq)))
                    }
                    Err(e) => return Some(error_msg(ErrorCode::BadOp, &e.to_string(), Some(seq))),
                };
                let span = crate::otel::receipt_span(&self.doc, seq);
                self.conn.op_in(version, seq, op, span).await
            }
            ClientMessage::Cursor {
                version,
                anchor,
                head,
            } => {
                if let Some(notice) = self.throttled(false) {
                    return notice;
                }
                self.conn.cursor(version, anchor, head).await
            }
            ClientMessage::Awareness { state, presence } => {
                if let Err(e) = crate::awareness::check_state(&state) {
                    return Some(error_msg(ErrorCode::BadMessage, &e, None));
                }
                if let Some(notice) = self.throttled(true) {
                    return notice;
                }
                self.conn.awareness(state, presence).await
            }
            // An undo or redo commits an op: limited as ops are.
            ClientMessage::Undo {} | ClientMessage::Redo {} if !self.ops.allow(Instant::now()) => {
                return Some(error_msg(
                    ErrorCode::RateLimited,
                    "too many undos and redos; slow down",
                    None,
                ));
            }
            ClientMessage::Undo {} => self.conn.undo(false).await,
            ClientMessage::Redo {} => self.conn.undo(true).await,
            ClientMessage::Ping {} => {
                return Some(Outbound::Text(ServerMessage::Pong.to_text().into()));
            }
            ClientMessage::Mismatch { version, hash } => return self.mismatch(version, &hash),
        };
        // The document task is gone: end the session (the writer closes).
        sent.err()
            .map(|_| Outbound::Close(close::TRY_AGAIN, "document unavailable"))
    }

    /// Whether a cursor (or, `awareness`, an awareness update) is over its
    /// rate: then it is dropped, and `Some` holds the reply: a
    /// `rate_limited` notice at most once a second (shared by both).
    fn throttled(&mut self, awareness: bool) -> Option<Option<Outbound>> {
        let now = Instant::now();
        let bucket = if awareness {
            &mut self.awareness
        } else {
            &mut self.cursors
        };
        if bucket.allow(now) {
            return None;
        }
        if self
            .last_cursor_notice
            .is_some_and(|t| now - t < Duration::from_secs(1))
        {
            return Some(None);
        }
        self.last_cursor_notice = Some(now);
        let what = if awareness { "awareness" } else { "cursor" };
        let m = format!("too many {what} updates; some were dropped");
        Some(Some(error_msg(ErrorCode::RateLimited, &m, None)))
    }
}

/// Writes the document task's queue and the reader's replies to `sink`,
/// pinging every `ping_every`, until a close is written, the sink fails,
/// or the reader has finished.
async fn write_loop<W>(
    mut sink: W,
    mut outbound: mpsc::Receiver<Outbound>,
    mut local: mpsc::Receiver<Outbound>,
    ping_every: Duration,
) where
    W: Sink<Message> + Unpin,
{
    let mut ping = tokio::time::interval(ping_every);
    ping.tick().await;
    loop {
        let msg = tokio::select! {
            biased;
            m = outbound.recv() => m.unwrap_or(Outbound::Close(close::TRY_AGAIN, "too far behind; resume")),
            m = local.recv() => match m {
                Some(m) => m,
                // The reader has finished and its replies are written.
                None => return,
            },
            _ = ping.tick() => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
                continue;
            }
        };
        // Write what is queued (up to a bound) and flush once: under load a
        // busy document's fan-out costs one write per batch, not per op.
        let mut next = Some(msg);
        let mut batched = 0;
        while let Some(msg) = next.take() {
            match msg {
                Outbound::Text(t) => {
                    if sink
                        .feed(Message::Text(Utf8Bytes::from(&*t)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Outbound::Close(code, reason) => {
                    let frame = CloseFrame {
                        code,
                        reason: Utf8Bytes::from_static(reason),
                    };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    let _ = sink.flush().await;
                    return;
                }
            }
            batched += 1;
            if batched < WRITE_BATCH {
                next = outbound.try_recv().ok();
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests;

impl Session {
    /// A client's report that its text at `version` does not match the
    /// `check` sent there: counted (once per session) and logged with the
    /// document id only. Nothing else changes; the client reloads. A report
    /// of a version no check is sent for, or of a malformed hash, is
    /// `bad_message`.
    fn mismatch(&mut self, version: u64, hash: &str) -> Option<Outbound> {
        let every = self.config.checksum_every;
        if !crate::checksum::valid_hash(hash) {
            let m = "a mismatch names its hash as 8 lowercase hex digits";
            return Some(error_msg(ErrorCode::BadMessage, m, None));
        }
        if every == 0 || version == 0 || version % every != 0 {
            let m = "no check is sent at that version";
            return Some(error_msg(ErrorCode::BadMessage, m, None));
        }
        if !std::mem::replace(&mut self.mismatch_counted, true) {
            metrics::counter!("tandem_checksum_mismatches_total").increment(1);
            tracing::warn!(document = %self.doc, version, "a client's text did not match the checksum; it reloads");
        }
        None
    }
}
