//! One WebSocket connection to a server, and the frames it reads: each
//! parsed once into the typed [`ServerFrame`] (what clients dispatch on),
//! its JSON text kept for assertions on the contract's exact shape.
//!
//! Must not import: Tandem's code beyond `tandem_core::protocol`.

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tandem_core::protocol::ServerFrame;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error, Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::TIMEOUT;

pub type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The kind of a server frame, to wait for one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Init,
    Ack,
    Op,
    Cursor,
    Awareness,
    UserJoined,
    UserLeft,
    Pong,
    Check,
    Meta,
    Role,
    Error,
}

impl Kind {
    pub fn of(f: &ServerFrame) -> Kind {
        match f {
            ServerFrame::Init { .. } => Kind::Init,
            ServerFrame::Ack { .. } => Kind::Ack,
            ServerFrame::Op { .. } => Kind::Op,
            ServerFrame::Cursor(_) => Kind::Cursor,
            ServerFrame::Awareness(_) => Kind::Awareness,
            ServerFrame::UserJoined { .. } => Kind::UserJoined,
            ServerFrame::UserLeft { .. } => Kind::UserLeft,
            ServerFrame::Pong => Kind::Pong,
            ServerFrame::Check { .. } => Kind::Check,
            ServerFrame::Meta(_) => Kind::Meta,
            ServerFrame::Role { .. } => Kind::Role,
            ServerFrame::Error { .. } => Kind::Error,
        }
    }

    /// Presence, metadata and checksum chatter, which arrives between
    /// anything.
    fn is_chatter(self) -> bool {
        matches!(
            self,
            Kind::UserJoined
                | Kind::UserLeft
                | Kind::Cursor
                | Kind::Awareness
                | Kind::Meta
                | Kind::Check
        )
    }
}

/// One frame the server sent: typed, and as JSON (`frame["field"]`,
/// parsed on first use) for tests that check the wire shape.
#[derive(Clone)]
pub struct Frame {
    pub msg: ServerFrame,
    text: Utf8Bytes,
    json: OnceLock<Value>,
}

impl Frame {
    /// Parse a frame's text; a frame that is not a server message fails
    /// the caller (the server broke the contract).
    pub fn parse(text: Utf8Bytes) -> Frame {
        let msg = ServerFrame::parse(&text)
            .unwrap_or_else(|e| panic!("not a server message ({e}): {}", text.as_str()));
        Frame {
            msg,
            text,
            json: OnceLock::new(),
        }
    }

    pub fn kind(&self) -> Kind {
        Kind::of(&self.msg)
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The frame as JSON.
    pub fn json(&self) -> &Value {
        self.json
            .get_or_init(|| serde_json::from_str(&self.text).expect("JSON frame"))
    }

    /// The fields of an `init` a client starts from; panics on any other
    /// frame.
    pub fn init(&self) -> Init<'_> {
        match &self.msg {
            ServerFrame::Init {
                client,
                content,
                version,
                history,
                seq,
                resumed,
                ..
            } => Init {
                client,
                content: content.as_deref(),
                version: *version,
                history,
                seq: *seq,
                resumed: *resumed,
            },
            _ => panic!("expected init, got {self}"),
        }
    }
}

/// What a client takes from `init`.
#[derive(Clone, Copy, Debug)]
pub struct Init<'a> {
    pub client: &'a str,
    /// `None` on a resumed init.
    pub content: Option<&'a str>,
    pub version: u64,
    /// The history `version` belongs to: resume only with it.
    pub history: &'a str,
    /// The highest seq committed for this client id.
    pub seq: u64,
    /// Present when the client asked to resume.
    pub resumed: Option<bool>,
}

impl std::ops::Index<&str> for Frame {
    type Output = Value;
    fn index(&self, field: &str) -> &Value {
        &self.json()[field]
    }
}

/// The frame's JSON is exactly `v` (a contract-shape check).
impl PartialEq<Value> for Frame {
    fn eq(&self, v: &Value) -> bool {
        self.json() == v
    }
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A raw protocol connection.
pub struct Ws {
    pub ws: Stream,
}

impl Ws {
    /// Open a WebSocket (TCP_NODELAY, as a latency-minded client does).
    pub async fn open(url: &str) -> Result<Ws, Error> {
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
        Ok(Ws { ws })
    }

    /// Open a Tandem session: the first frame must be `init`.
    pub async fn connect(url: &str) -> Result<(Ws, Frame), Error> {
        let mut ws = Ws::open(url).await?;
        let init = ws.recv().await;
        assert_eq!(init.kind(), Kind::Init, "{init}");
        Ok((ws, init))
    }

    /// Open a session with `req` (a URL or a request with headers): the
    /// socket and its first frame, or the HTTP status the upgrade was
    /// refused with.
    pub async fn try_connect(
        req: impl tokio_tungstenite::tungstenite::client::IntoClientRequest + Unpin,
    ) -> Result<(Ws, Frame), u16> {
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => {
                let mut ws = Ws { ws };
                let init = ws.recv().await;
                Ok((ws, init))
            }
            Err(Error::Http(r)) => Err(r.status().as_u16()),
            Err(e) => panic!("{e}"),
        }
    }

    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, s: &str) {
        self.ws.send(Message::Text(s.into())).await.unwrap();
    }

    /// Next text frame as is, however long it takes (control frames
    /// skipped); `Err(close frame)` when the connection ended.
    pub async fn next_text(&mut self) -> Result<Utf8Bytes, Option<CloseFrame>> {
        loop {
            match self.ws.next().await {
                None | Some(Err(_)) => return Err(None),
                Some(Ok(Message::Text(t))) => return Ok(t),
                Some(Ok(Message::Close(f))) => return Err(f),
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Next server message, however long it takes; panics when the
    /// connection ends.
    pub async fn next_frame(&mut self) -> Frame {
        match self.next_text().await {
            Ok(t) => Frame::parse(t),
            Err(f) => panic!("socket ended: {f:?}"),
        }
    }

    /// Next server message (skipping control frames); panics on
    /// close/timeout.
    pub async fn recv(&mut self) -> Frame {
        match self.try_recv(TIMEOUT).await {
            Ok(Some(v)) => v,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Ok(None) on timeout; Err(close frame) when the server closed.
    pub async fn try_recv(&mut self, wait: Duration) -> Result<Option<Frame>, Option<CloseFrame>> {
        match tokio::time::timeout(wait, self.next_text()).await {
            Err(_) => Ok(None),
            Ok(t) => t.map(|t| Some(Frame::parse(t))),
        }
    }

    /// Next message of kind `kind`, skipping presence and cursor chatter.
    pub async fn recv_type(&mut self, kind: Kind) -> Frame {
        loop {
            let v = self.recv().await;
            if v.kind() == kind {
                return v;
            }
            assert!(v.kind().is_chatter(), "expected {kind:?}, got {v}");
        }
    }

    /// The connection is open: a ping is answered.
    pub async fn assert_open(&mut self) {
        self.send(serde_json::json!({"type": "ping"})).await;
        self.recv_type(Kind::Pong).await;
    }

    /// Wait for the server to close; returns the close code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            match self.try_recv(TIMEOUT).await {
                Err(f) => return f.map(|f| u16::from(f.code)),
                Ok(None) => panic!("connection not closed"),
                Ok(Some(_)) => continue,
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
