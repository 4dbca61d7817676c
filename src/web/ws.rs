//! WebSocket sessions: the upgrade (identity, query), then one task per
//! socket that reads frames (size, rate, parse checks) into the document
//! task and writes the document task's outbound queue to the socket, with
//! server pings and an idle timeout. A session opened with a token is
//! registered with `tokens` and closed (1008) when that token is revoked.
//! Identity: a single-use `?ticket=` (browsers; `api/tickets.rs`), else the
//! Authorization header or `?token=` (API clients).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::mpsc;
use tracing::{debug, info_span, Instrument};

use super::error::ApiError;
use super::identity::{identify, origin_allowed, role_for, Identity};
use super::tokens::LiveGuard;
use super::{client_ip, AppState};
use crate::hub::{close, error_msg, ConnHandle, Outbound, Resume};
use crate::limits::TokenBucket;
use crate::ot::{OpError, Operation};
use crate::protocol::{
    parse_client, valid_id, valid_name, ClientMessage, ErrorCode, Role, ServerMessage, UserInfo,
};

#[derive(Debug, Deserialize)]
pub struct WsQuery {
    user_id: Option<String>,
    name: Option<String>,
    client: Option<String>,
    version: Option<String>,
    /// The `init.history` the client's version belongs to.
    history: Option<String>,
    token: Option<String>,
    /// A single-use ticket from `POST /api/auth/ws-ticket` (browsers).
    ticket: Option<String>,
}

/// Frames up to this many times the limit are read and refused with
/// `too_large`; larger ones end the connection (1009).
const HARD_LIMIT_FACTOR: usize = 4;
/// Per-connection read buffer. tungstenite's default (128 KiB) would make
/// an idle connection cost ~140 KiB; frames larger than this still arrive,
/// the buffer grows for them.
const READ_BUFFER: usize = 4 * 1024;
/// Messages written before one flush, when more are already queued.
const WRITE_BATCH: usize = 64;

pub async fn upgrade(
    State(state): State<AppState>,
    Path(doc): Path<String>,
    Query(q): Query<WsQuery>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    held: Option<Extension<super::ConnPermit>>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    if state.hub.is_shutting_down() {
        return Err(ApiError::Unavailable);
    }
    if !origin_allowed(&state, &headers) {
        return Err(ApiError::Forbidden("origin not allowed"));
    }
    // The document id is checked by `role_for` below, on every path.
    let generation = state.tokens.generation();
    let who = match q.ticket.as_deref() {
        Some(ticket) => super::api::redeem(&state, ticket, &doc).await?,
        None => identify(&state, &headers, q.token.as_deref()).await?,
    };
    // Registered before the session starts, so a revocation from now on
    // closes it; one applied since the check above is checked again.
    let live = match &who {
        Identity::User(c) => {
            let live = state.tokens.track(c);
            if state.tokens.generation() != generation {
                state.tokens.check(c).await?;
            }
            Some(live)
        }
        Identity::Anonymous => None,
    };
    let client = match q.client {
        Some(c) if valid_id(&c) => c,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "client must be 1-64 characters of [A-Za-z0-9_.:@-]".into(),
            ))
        }
        None => uuid::Uuid::new_v4().simple().to_string(),
    };
    let version = match q.version.as_deref().map(str::parse::<u64>) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => {
            return Err(ApiError::BadRequest(
                "version must be a non-negative integer".into(),
            ))
        }
    };
    if q.history.as_deref().is_some_and(|h| !valid_id(h)) {
        return Err(ApiError::BadRequest(
            "history must be 1-64 characters of [A-Za-z0-9_.:@-]".into(),
        ));
    }
    let resume = version.map(|version| Resume {
        version,
        history: q.history,
    });
    let (user, role, create) = match &who {
        Identity::User(c) => (
            UserInfo::new(&c.sub, &c.name),
            role_for(&state, &doc, &who).await?,
            false,
        ),
        Identity::Anonymous => {
            let user_id = q
                .user_id
                .as_deref()
                .ok_or(ApiError::Unauthorized("authentication required"))?;
            if !valid_id(user_id) {
                return Err(ApiError::BadRequest(
                    "user_id must be 1-64 characters of [A-Za-z0-9_.:@-]".into(),
                ));
            }
            let name = q.name.as_deref().unwrap_or(user_id);
            if !valid_name(name) {
                return Err(ApiError::BadRequest(
                    "name must be 1-100 printable characters".into(),
                ));
            }
            // Anonymous users may open (and so create) documents nobody owns.
            let role = match role_for(&state, &doc, &who).await {
                Err(ApiError::NotFound(_)) => Role::Editor,
                r => r?,
            };
            (UserInfo::new(user_id, name), role, true)
        }
    };
    // Caps on open sessions, per client address and per user; the slots are
    // held by the session and given back when it ends.
    let limits = &state.conn_limits;
    let ip = client_ip(limits, peer.map(|p| p.0 .0), &headers);
    let slots = match (
        limits
            .ws_per_ip
            .acquire(&crate::web::abuse::address_key(&ip)),
        limits.ws_per_user.acquire(&user.id),
    ) {
        (Some(a), Some(b)) => (a, b),
        _ => {
            metrics::counter!("tandem_connections_refused_total", "reason" => "sessions")
                .increment(1);
            return Err(ApiError::TooManyConnections);
        }
    };
    let client = scoped_client(&user.id, client)?;
    // The socket outlives its HTTP connection: it takes over that
    // connection's place under MAX_CONNECTIONS once nothing can fail (or,
    // on a connection that carries several sockets, takes one of its own).
    let held = held.map(|Extension(p)| p).filter(super::ConnPermit::held);
    let own = match held {
        Some(_) => None,
        None => match limits.total.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                metrics::counter!("tandem_connections_refused_total", "reason" => "total")
                    .increment(1);
                return Err(ApiError::Unavailable);
            }
        },
    };
    let span = info_span!("ws", doc = %doc, client = %client, user = %user.id);
    if create {
        state.hub.ensure_document(&doc).await?;
    }
    let (conn, outbound) = state.hub.join(&doc, user, client, role, resume).await?;
    let permit = own.or_else(|| held.and_then(|p| p.take()));
    let max = state.config.max_frame_bytes;
    let hard = max.saturating_mul(HARD_LIMIT_FACTOR);
    let sessions = state.sessions.clone();
    let doc_name = doc.clone();
    Ok(ws
        .max_message_size(hard)
        .max_frame_size(hard)
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| {
            sessions.track_future(
                async move {
                    Session::new(state, conn, doc_name)
                        .run(socket, outbound, live)
                        .await;
                    drop((slots, permit));
                }
                .instrument(span),
            )
        })
        .into_response())
}

/// The reply to a frame the socket could not read: a text frame that is
/// not UTF-8 is a bad message (1007); otherwise, most likely, a frame over
/// the hard limit (1009).
fn read_error(e: axum::Error) -> (ErrorCode, u16, &'static str) {
    match e.into_inner().downcast::<tungstenite::Error>().map(|e| *e) {
        Ok(tungstenite::Error::Utf8(_)) => {
            (ErrorCode::BadMessage, 1007, "text frames must be UTF-8")
        }
        _ => (ErrorCode::TooLarge, 1009, "frame too large"),
    }
}

/// Client ids belong to their user: `<id>@<tag>`, the tag naming the user
/// (a hash of the user id). An id already carrying the caller's tag (one
/// the server gave out in `init.client`) is kept; any other gets the tag
/// appended, so nobody can take over another user's client id (its seqs,
/// its socket) by reading it from presence.
fn scoped_client(user: &str, client: String) -> Result<String, ApiError> {
    use sha2::Digest;
    let tag = format!(
        "@{}",
        hex::encode(&sha2::Sha256::digest(user.as_bytes())[..6])
    );
    if client.ends_with(&tag) {
        return Ok(client);
    }
    let scoped = client + &tag;
    if valid_id(&scoped) {
        Ok(scoped)
    } else {
        Err(ApiError::BadRequest(format!(
            "client ids are at most {} characters",
            64 - tag.len()
        )))
    }
}

struct Session {
    state: AppState,
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
    fn new(state: AppState, conn: ConnHandle, doc: String) -> Self {
        let now = Instant::now();
        let c = &state.config;
        let ops = TokenBucket::new(c.op_rate_per_sec, c.op_rate_burst, now);
        let cursors = TokenBucket::new(c.cursor_rate_per_sec, c.cursor_rate_per_sec, now);
        let awareness = TokenBucket::new(c.cursor_rate_per_sec, c.cursor_rate_per_sec, now);
        Self {
            state,
            conn,
            doc,
            ops,
            cursors,
            awareness,
            last_cursor_notice: None,
            mismatch_counted: false,
        }
    }

    /// `live`: the session's token registration (none when anonymous);
    /// when the token is revoked the socket is closed with 1008.
    async fn run(
        mut self,
        socket: WebSocket,
        outbound: mpsc::Receiver<Outbound>,
        live: Option<LiveGuard>,
    ) {
        metrics::gauge!("tandem_connections").increment(1.0);
        let (sink, stream) = socket.split();
        let (local_tx, local_rx) = mpsc::channel(64);
        let ping = Duration::from_millis(self.state.config.ping_interval_ms);
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
            _ = self.read_loop(stream, local_tx) => {
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
        self.conn.leave().await;
    }

    /// Reads until the socket ends; dropping `local` tells the writer.
    async fn read_loop(
        &mut self,
        mut stream: futures_util::stream::SplitStream<WebSocket>,
        local: Local,
    ) {
        let idle = Duration::from_millis(self.state.config.idle_timeout_ms);
        loop {
            let frame = match tokio::time::timeout(idle, stream.next()).await {
                Err(_) => {
                    debug!("idle timeout");
                    return;
                }
                Ok(None) => return,
                Ok(Some(Err(e))) => {
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
        let cfg = &self.state.config;
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
}

impl Session {
    /// A client's report that its text at `version` does not match the
    /// `check` sent there: counted (once per session) and logged with the
    /// document id only. Nothing else changes; the client reloads. A report
    /// of a version no check is sent for, or of a malformed hash, is
    /// `bad_message`.
    fn mismatch(&mut self, version: u64, hash: &str) -> Option<Outbound> {
        let every = self.state.config.checksum_every;
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

async fn write_loop(
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    mut outbound: mpsc::Receiver<Outbound>,
    mut local: mpsc::Receiver<Outbound>,
    ping_every: Duration,
) {
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
