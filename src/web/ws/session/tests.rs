//! The session driven over channels instead of a socket (as in axum's
//! testing-websockets example): a real hub built by [`crate::build`] on
//! the memory sequencer/bus and SQLite in a temporary directory; the test
//! plays the client, writing frames (or read errors) into the session's
//! stream and reading what the session writes to its sink.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use futures_channel::mpsc;
use futures_util::StreamExt;
use tokio::task::JoinHandle;

use super::{run_session, Joined};
use crate::config::Config;
use crate::protocol::{ErrorCode, Role, ServerFrame, UserInfo};
use crate::web::AppState;

const DOC: &str = "doc";

/// The server as production builds it, in a temporary directory.
struct Env {
    state: AppState,
    _dir: tempfile::TempDir,
}

async fn env_with(tune: impl FnOnce(&mut Config)) -> Env {
    let (state, dir) = crate::test_state(tune).await;
    state.hub.ensure_document(DOC).await.unwrap();
    Env { state, _dir: dir }
}

async fn env() -> Env {
    env_with(|_| {}).await
}

/// What the socket would read: a frame, or why it could not read one.
type Read = Result<Message, axum::Error>;

/// The client's end of one session.
struct Client {
    /// Into the session's stream; dropping it ends the stream.
    to_server: Option<mpsc::UnboundedSender<Read>>,
    /// What the session wrote to its sink.
    from_server: mpsc::UnboundedReceiver<Message>,
    session: JoinHandle<()>,
}

impl Client {
    /// Joins `user` to the document (as the upgrade does) and runs the
    /// session over channels.
    async fn open(env: &Env, user: &str, live: Option<crate::web::tokens::LiveGuard>) -> Self {
        let (conn, outbound) = env
            .state
            .hub
            .join(
                DOC,
                UserInfo::new(user, user.to_uppercase()),
                format!("{user}-client"),
                Role::Editor,
                None,
            )
            .await
            .unwrap();
        let (to_server, stream) = mpsc::unbounded();
        let (sink, from_server) = mpsc::unbounded();
        let joined = Joined {
            conn,
            outbound,
            doc: DOC.to_owned(),
            live,
        };
        let config = env.state.config.clone();
        let session = tokio::spawn(run_session(sink, stream, config, joined));
        let mut client = Self {
            to_server: Some(to_server),
            from_server,
            session,
        };
        assert!(matches!(client.frame().await, ServerFrame::Init { .. }));
        client
    }

    fn read(&self, r: Read) {
        self.to_server.as_ref().unwrap().unbounded_send(r).unwrap();
    }

    fn text(&self, t: &str) {
        self.read(Ok(Message::Text(t.into())));
    }

    /// The next frame the session wrote (fails after a second).
    async fn next(&mut self) -> Message {
        tokio::time::timeout(Duration::from_secs(1), self.from_server.next())
            .await
            .expect("a frame within a second")
            .expect("the sink is open")
    }

    /// The next frame, which must be a text frame the protocol knows.
    async fn frame(&mut self) -> ServerFrame {
        match self.next().await {
            Message::Text(t) => ServerFrame::parse(&t).unwrap(),
            m => panic!("not a text frame: {m:?}"),
        }
    }

    /// The next frame, which must be an error; its code and seq.
    async fn error(&mut self) -> (ErrorCode, Option<u64>) {
        match self.frame().await {
            ServerFrame::Error { code, seq, .. } => (code, seq),
            f => panic!("not an error: {f:?}"),
        }
    }

    /// The next frame, which must be a close; its code and reason.
    async fn close(&mut self) -> (u16, String) {
        match self.next().await {
            Message::Close(Some(CloseFrame { code, reason })) => (code, reason.to_string()),
            m => panic!("not a close: {m:?}"),
        }
    }

    /// The session answers a protocol ping: it is still reading.
    async fn alive(&mut self) {
        self.text(r#"{"type":"ping"}"#);
        assert_eq!(self.frame().await, ServerFrame::Pong);
        assert!(!self.session.is_finished());
    }

    /// The session task has finished (within a second) and has left the
    /// document.
    async fn ended(self, env: &Env) {
        tokio::time::timeout(Duration::from_secs(1), self.session)
            .await
            .expect("the session ends within a second")
            .unwrap();
        assert_eq!(env.state.hub.users(DOC).await.unwrap(), vec![]);
    }
}

#[tokio::test]
async fn a_ping_gets_a_pong() {
    let env = env().await;
    let mut c = Client::open(&env, "alice", None).await;
    c.text(r#"{"type":"ping"}"#);
    assert_eq!(c.frame().await, ServerFrame::Pong);
}

#[tokio::test]
async fn a_malformed_frame_is_a_bad_message_and_the_session_stays_up() {
    let env = env().await;
    let mut c = Client::open(&env, "alice", None).await;
    c.text("{not json");
    assert_eq!(c.error().await, (ErrorCode::BadMessage, None));
    c.text(r#"{"type":"no_such_type"}"#);
    assert_eq!(c.error().await, (ErrorCode::BadMessage, None));
    c.alive().await;
}

#[tokio::test]
async fn a_binary_frame_is_refused_and_the_session_stays_up() {
    let env = env().await;
    let mut c = Client::open(&env, "alice", None).await;
    c.read(Ok(Message::Binary(vec![1, 2, 3].into())));
    assert_eq!(c.error().await, (ErrorCode::BadMessage, None));
    c.alive().await;
}

#[tokio::test]
async fn a_frame_over_the_limit_is_too_large_and_the_session_stays_up() {
    let env = env_with(|c| c.max_frame_bytes = 100).await;
    let mut c = Client::open(&env, "alice", None).await;
    let big = format!(
        r#"{{"type":"op","version":0,"seq":1,"op":["{}"]}}"#,
        "x".repeat(100)
    );
    c.text(&big);
    assert_eq!(c.error().await, (ErrorCode::TooLarge, None));
    c.alive().await;
    assert_eq!(env.state.hub.view(DOC).await.unwrap().content, "");
}

/// A frame the socket could not read (as axum reports it) is refused with
/// `code`, the socket closed with `close`, and the session leaves.
async fn read_error_closes(e: tungstenite::Error, code: ErrorCode, close: (u16, &str)) {
    let env = env().await;
    let mut c = Client::open(&env, "alice", None).await;
    c.read(Err(axum::Error::new(e)));
    assert_eq!(c.error().await, (code, None));
    assert_eq!(c.close().await, (close.0, close.1.to_owned()));
    c.ended(&env).await;
}

#[tokio::test]
async fn a_frame_over_the_hard_limit_closes_1009_and_leaves() {
    let too_long = tungstenite::error::CapacityError::MessageTooLong {
        size: 1 << 30,
        max_size: 1 << 20,
    };
    let e = tungstenite::Error::Capacity(too_long);
    read_error_closes(e, ErrorCode::TooLarge, (1009, "frame too large")).await;
}

#[tokio::test]
async fn text_that_is_not_utf8_closes_1007() {
    let e = tungstenite::Error::Utf8("invalid utf-8 sequence".into());
    let why = "text frames must be UTF-8";
    read_error_closes(e, ErrorCode::BadMessage, (1007, why)).await;
}

#[tokio::test]
async fn an_op_is_acked_and_committed() {
    let env = env().await;
    let mut c = Client::open(&env, "alice", None).await;
    c.text(r#"{"type":"op","version":0,"seq":1,"op":["hello"]}"#);
    assert_eq!(c.frame().await, ServerFrame::Ack { seq: 1, version: 1 });
    assert_eq!(env.state.hub.view(DOC).await.unwrap().content, "hello");
    // An op that does not apply is refused with its seq.
    c.text(r#"{"type":"op","version":1,"seq":2,"op":[0]}"#);
    assert_eq!(c.error().await, (ErrorCode::BadOp, Some(2)));
    c.alive().await;
}

#[tokio::test]
async fn ops_over_the_rate_are_refused_with_their_seq() {
    let env = env_with(|c| {
        c.op_rate_per_sec = 1;
        c.op_rate_burst = 1;
    })
    .await;
    let mut c = Client::open(&env, "alice", None).await;
    c.text(r#"{"type":"op","version":0,"seq":1,"op":["a"]}"#);
    assert_eq!(c.frame().await, ServerFrame::Ack { seq: 1, version: 1 });
    c.text(r#"{"type":"op","version":1,"seq":2,"op":[1,"b"]}"#);
    assert_eq!(c.error().await, (ErrorCode::RateLimited, Some(2)));
    assert_eq!(env.state.hub.view(DOC).await.unwrap().content, "a");
}

#[tokio::test]
async fn the_session_ends_with_its_stream_and_leaves_the_document() {
    let env = env().await;
    let mut c = Client::open(&env, "alice", None).await;
    assert_eq!(env.state.hub.users(DOC).await.unwrap().len(), 1);
    c.to_server = None;
    // The writer stops without a close frame: the socket is gone.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), c.from_server.next())
            .await
            .unwrap()
            .is_none()
    );
    c.ended(&env).await;
}

#[tokio::test]
async fn a_close_frame_ends_the_session() {
    let env = env().await;
    let c = Client::open(&env, "alice", None).await;
    c.read(Ok(Message::Close(None)));
    c.ended(&env).await;
}

#[tokio::test]
async fn an_idle_session_times_out() {
    let env = env_with(|c| c.idle_timeout_ms = 100).await;
    let c = Client::open(&env, "alice", None).await;
    c.ended(&env).await;
}

#[tokio::test]
async fn the_writer_pings() {
    let env = env_with(|c| c.ping_interval_ms = 50).await;
    let mut c = Client::open(&env, "alice", None).await;
    assert!(matches!(c.next().await, Message::Ping(_)));
}

#[tokio::test]
async fn a_revoked_token_closes_1008() {
    let env = env().await;
    let claims = crate::auth::Claims {
        sub: "alice".into(),
        name: "Alice".into(),
        username: "alice".into(),
        iat: 0,
        exp: i64::MAX,
        iss: String::new(),
        aud: String::new(),
        jti: Some("t1".into()),
        iat_ms: None,
    };
    let live = env.state.tokens.track(&claims);
    let mut c = Client::open(&env, "alice", Some(live)).await;
    c.alive().await;
    let other = crate::bus::Revocation::Token {
        user: "alice".into(),
        jti: "t2".into(),
    };
    env.state.tokens.apply(&other);
    c.alive().await;
    let this = crate::bus::Revocation::Token {
        user: "alice".into(),
        jti: "t1".into(),
    };
    env.state.tokens.apply(&this);
    assert_eq!(c.close().await, (1008, "token revoked".into()));
    c.ended(&env).await;
}
