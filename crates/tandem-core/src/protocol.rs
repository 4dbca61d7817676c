//! Wire messages of protocol v1 (see `docs/protocol.md`): what clients send,
//! what the server sends, error codes, and user colours.
//!
//! Owns: serde types for WebSocket frames and the [`ErrorCode`] table.
//! Must not import: tokio, axum, hyper, redis, sqlx, utoipa, metrics
//! (enforced: tandem-core has no such dependency).
//! Pure: parsing is a function from text to a message or an error, nothing
//! else. The OpenAPI schemas of [`Presence`] and [`Role`] are described in
//! the server's `web` layer.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::awareness::{AwarenessInfo, PresenceState};
use crate::ot::Operation;

/// A user as shown to other users.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub id: String,
    pub name: String,
    pub color: String,
}

impl UserInfo {
    pub fn new(id: impl Into<String>, name: impl Into<String>) -> Self {
        let id = id.into();
        let color = color_for(&id);
        Self {
            id,
            name: name.into(),
            color,
        }
    }
}

/// A presence entry in `init.users`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub id: String,
    pub name: String,
    pub color: String,
    pub client: String,
    /// Extension: the client's presence state (`active` when it never set
    /// one). The server fills it in where it sends presence; absent from
    /// the entries instances share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<PresenceState>,
}

/// A caret/selection, in `init.cursors` and `cursor` messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorInfo {
    pub client: String,
    pub user: String,
    pub version: u64,
    pub anchor: Option<u64>,
    pub head: Option<u64>,
}

/// Access level of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Editor,
    Viewer,
}

impl Role {
    pub fn can_edit(self) -> bool {
        !matches!(self, Role::Viewer)
    }
}

/// Messages a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    Op {
        version: u64,
        seq: u64,
        /// Decoded separately so a bad op is `bad_op`, not `bad_message`.
        op: Value,
    },
    Cursor {
        version: u64,
        anchor: Option<u64>,
        head: Option<u64>,
    },
    /// Extension: this client's awareness state (a JSON object, see
    /// [`crate::awareness::check_state`]) and, optionally, its presence
    /// state (absent: unchanged).
    Awareness {
        state: Value,
        #[serde(default)]
        presence: Option<PresenceState>,
    },
    Undo {},
    Redo {},
    Ping {},
    /// Extension: this client's text at `version` does not have the hash a
    /// `check` named (`hash`: the client's own, 8 lowercase hex digits). The
    /// server counts it; the client reloads.
    Mismatch {
        version: u64,
        hash: String,
    },
}

/// Messages the server sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    Init {
        document: &'a str,
        client: &'a str,
        user: &'a UserInfo,
        version: u64,
        /// Extension: the identity of the history `version` belongs to.
        /// Resume only with it (`?history=`): version numbers of another
        /// history (after the server lost data) name different content.
        history: &'a str,
        /// `None` on a resumed init.
        content: Option<String>,
        users: Vec<Presence>,
        cursors: Vec<CursorInfo>,
        role: Role,
        /// Present (true/false) only when the client asked to resume.
        #[serde(skip_serializing_if = "Option::is_none")]
        resumed: Option<bool>,
        /// Extension: highest seq committed for this client id (0 if none);
        /// a client reusing its id continues from `seq + 1`.
        seq: u64,
        /// Extension: the document's title, tags and view count.
        meta: &'a crate::meta::MetaView,
        /// Extension: the awareness state of every client that set one.
        awareness: &'a [AwarenessInfo],
    },
    Ack {
        seq: u64,
        version: u64,
    },
    Op {
        version: u64,
        op: &'a Operation,
        user: &'a str,
        client: &'a str,
        seq: u64,
    },
    Cursor(&'a CursorInfo),
    /// Extension: a client's awareness or presence state changed.
    Awareness(&'a AwarenessInfo),
    UserJoined {
        user: &'a UserInfo,
        client: &'a str,
    },
    UserLeft {
        user: &'a UserInfo,
        client: &'a str,
    },
    Pong,
    /// Extension: the checksum ([`crate::checksum`]) of the document's text
    /// at `version`, sent right after the `op`/`ack` of that version.
    Check {
        version: u64,
        hash: &'a str,
    },
    /// Extension: the document's title, tags or view count changed.
    Meta(&'a crate::meta::MetaView),
    /// Extension: this connection's role changed (the owner shared or
    /// unshared); a viewer's `op` is refused from now on.
    Role {
        role: Role,
    },
    Error {
        code: ErrorCode,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
}

impl ServerMessage<'_> {
    /// Serialise to the text of one frame.
    pub fn to_text(&self) -> String {
        // Serialising these types cannot fail: no maps with non-string keys.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A server message as a client reads it: the owned, deserialisable twin of
/// [`ServerMessage`] (every frame the server sends parses into one), so Rust
/// clients — tests, the bench — match on types instead of `v["type"]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Init {
        document: String,
        client: String,
        user: UserInfo,
        version: u64,
        /// Empty from a server that predates history identities.
        #[serde(default)]
        history: String,
        content: Option<String>,
        users: Vec<Presence>,
        cursors: Vec<CursorInfo>,
        role: Role,
        #[serde(default)]
        resumed: Option<bool>,
        seq: u64,
        /// Boxed: the other frames are far smaller.
        meta: Box<crate::meta::MetaView>,
        #[serde(default)]
        awareness: Vec<AwarenessInfo>,
    },
    Ack {
        seq: u64,
        version: u64,
    },
    Op {
        version: u64,
        #[serde(deserialize_with = "operation_any_size")]
        op: Operation,
        user: String,
        client: String,
        seq: u64,
    },
    Cursor(CursorInfo),
    Awareness(AwarenessInfo),
    UserJoined {
        user: UserInfo,
        client: String,
    },
    UserLeft {
        user: UserInfo,
        client: String,
    },
    Pong,
    Check {
        version: u64,
        hash: String,
    },
    Meta(crate::meta::MetaView),
    Role {
        role: Role,
    },
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default)]
        seq: Option<u64>,
    },
}

impl ServerFrame {
    /// Parse one frame's text.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// A client trusts the server's ops: validated, but not capped in size.
fn operation_any_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Operation, D::Error> {
    let v = Value::deserialize(d)?;
    Operation::from_json(&v, usize::MAX).map_err(|e| serde::de::Error::custom(format!("{e:?}")))
}

/// Protocol error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadMessage,
    BadOp,
    VersionOutOfRange,
    TooLarge,
    DocTooLarge,
    RateLimited,
    Forbidden,
    Unauthorized,
    /// Storage refused the write (disk full, Redis out of memory, a store
    /// unreachable): nothing was committed; keep the edit and resend it.
    StorageUnavailable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::BadOp => "bad_op",
            ErrorCode::VersionOutOfRange => "version_out_of_range",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::DocTooLarge => "doc_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::StorageUnavailable => "storage_unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// Parse one text frame. The error text is safe to send back.
pub fn parse_client(text: &str) -> Result<ClientMessage, String> {
    serde_json::from_str(text).map_err(|e| {
        // serde's messages name fields and types, never server internals.
        let mut m = e.to_string();
        m.truncate(200);
        m
    })
}

/// A colour derived deterministically from the user id (FNV-1a → hue).
pub fn color_for(user_id: &str) -> String {
    let h = crate::checksum::fnv1a(crate::checksum::FNV_OFFSET, user_id.as_bytes());
    let hue = f64::from(h % 360);
    let (s, l) = (0.65, 0.45);
    // HSL → RGB
    let c = (1.0 - (2.0 * l - 1.0_f64).abs()) * s;
    let x = c * (1.0 - ((hue / 60.0) % 2.0 - 1.0).abs());
    let m = l - c / 2.0;
    let (r, g, b) = match (hue / 60.0) as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let to = |v: f64| ((v + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    format!("#{:02x}{:02x}{:02x}", to(r), to(g), to(b))
}

pub use crate::names::{is_hidden_control, shows, valid_name};

/// Ids (document, client, user) on the wire: 1–64 chars of `[A-Za-z0-9_.:@-]`.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'@'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_contract_messages() {
        assert!(matches!(
            parse_client(r#"{"type":"op","version":3,"seq":1,"op":[1,"a"]}"#),
            Ok(ClientMessage::Op {
                version: 3,
                seq: 1,
                ..
            })
        ));
        assert!(matches!(
            parse_client(r#"{"type":"cursor","version":0,"anchor":null,"head":null}"#),
            Ok(ClientMessage::Cursor { anchor: None, .. })
        ));
        assert!(matches!(
            parse_client(r#"{"type":"ping"}"#),
            Ok(ClientMessage::Ping {})
        ));
        assert!(matches!(
            parse_client(r#"{"type":"awareness","state":{"a":1}}"#),
            Ok(ClientMessage::Awareness { presence: None, .. })
        ));
        assert!(matches!(
            parse_client(r#"{"type":"awareness","state":{},"presence":"idle"}"#),
            Ok(ClientMessage::Awareness {
                presence: Some(PresenceState::Idle),
                ..
            })
        ));
        assert!(matches!(
            parse_client(r#"{"type":"undo"}"#),
            Ok(ClientMessage::Undo {})
        ));
        assert!(matches!(
            parse_client(r#"{"type":"mismatch","version":64,"hash":"811c9dc5"}"#),
            Ok(ClientMessage::Mismatch { version: 64, hash }) if hash == "811c9dc5"
        ));
        for bad in [
            "not json",
            "{}",
            r#"{"type":"nope"}"#,
            r#"{"type":"op","version":1,"op":[1]}"#,
            r#"{"type":"op","version":-1,"seq":1,"op":[1]}"#,
            r#"{"type":"op","version":1.5,"seq":1,"op":[1]}"#,
            r#"{"type":"op","version":"1","seq":1,"op":[1]}"#,
            r#"{"type":"op","version":1,"seq":1,"op":["\ud800"]}"#,
            r#"{"type":"awareness"}"#,
            r#"{"type":"awareness","state":{},"presence":"asleep"}"#,
            r#"{"type":"mismatch","version":64}"#,
            r#"{"type":"mismatch","version":-1,"hash":"811c9dc5"}"#,
            r#"{"type":"mismatch","version":64,"hash":5}"#,
            "[1,2]",
        ] {
            assert!(parse_client(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn colours_are_deterministic_hex() {
        assert_eq!(color_for("alice"), color_for("alice"));
        assert_ne!(color_for("alice"), color_for("bob"));
        assert_eq!(color_for("x").len(), 7);
    }

    #[test]
    fn every_server_message_parses_back_as_a_frame() {
        let user = UserInfo::new("u1", "Ann");
        let op = Operation::from_json(&serde_json::json!([1, "é🌍", -1]), 16).unwrap();
        let cursor = CursorInfo {
            client: "c1".into(),
            user: "u1".into(),
            version: 3,
            anchor: Some(1),
            head: None,
        };
        let meta = crate::meta::MetaView::default();
        let presence = Presence {
            id: "u1".into(),
            name: "Ann".into(),
            color: user.color.clone(),
            client: "c1".into(),
            state: Some(PresenceState::Idle),
        };
        let aware = AwarenessInfo {
            client: "c1".into(),
            user: "u1".into(),
            state: serde_json::json!({"typing": 5}),
            presence: PresenceState::Away,
        };
        let msgs = [
            ServerMessage::Init {
                document: "d",
                client: "c1",
                user: &user,
                version: 3,
                history: "h1",
                content: Some("abc".into()),
                users: vec![presence.clone()],
                cursors: vec![cursor.clone()],
                role: Role::Editor,
                resumed: None,
                seq: 0,
                meta: &meta,
                awareness: std::slice::from_ref(&aware),
            },
            ServerMessage::Ack { seq: 2, version: 9 },
            ServerMessage::Op {
                version: 4,
                op: &op,
                user: "u1",
                client: "c1",
                seq: 7,
            },
            ServerMessage::Cursor(&cursor),
            ServerMessage::UserJoined {
                user: &user,
                client: "c1",
            },
            ServerMessage::UserLeft {
                user: &user,
                client: "c1",
            },
            ServerMessage::Pong,
            ServerMessage::Meta(&meta),
            ServerMessage::Role { role: Role::Viewer },
            ServerMessage::Error {
                code: ErrorCode::BadOp,
                message: "m",
                seq: Some(1),
            },
            ServerMessage::Awareness(&aware),
            ServerMessage::Check {
                version: 64,
                hash: "811c9dc5",
            },
        ];
        let frames: Vec<ServerFrame> = msgs
            .iter()
            .map(|m| ServerFrame::parse(&m.to_text()).unwrap())
            .collect();
        assert!(
            matches!(&frames[0], ServerFrame::Init { version: 3, history: h, content: Some(c), resumed: None, users, awareness, .. } if h == "h1" && c == "abc" && users == &vec![presence.clone()] && awareness == &vec![aware.clone()])
        );
        assert_eq!(frames[1], ServerFrame::Ack { seq: 2, version: 9 });
        assert!(matches!(&frames[2], ServerFrame::Op { op: o, seq: 7, .. } if *o == op));
        assert_eq!(frames[3], ServerFrame::Cursor(cursor));
        assert!(matches!(&frames[4], ServerFrame::UserJoined { user: u, .. } if *u == user));
        assert!(matches!(&frames[5], ServerFrame::UserLeft { client, .. } if client == "c1"));
        assert_eq!(frames[6], ServerFrame::Pong);
        assert_eq!(frames[7], ServerFrame::Meta(meta));
        assert_eq!(frames[8], ServerFrame::Role { role: Role::Viewer });
        assert_eq!(
            frames[9],
            ServerFrame::Error {
                code: ErrorCode::BadOp,
                message: "m".into(),
                seq: Some(1)
            }
        );
        assert_eq!(frames[10], ServerFrame::Awareness(aware.clone()));
        assert_eq!(
            frames[11],
            ServerFrame::Check {
                version: 64,
                hash: "811c9dc5".into()
            }
        );
        let v: Value = serde_json::from_str(&ServerMessage::Awareness(&aware).to_text()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"awareness","client":"c1","user":"u1","state":{"typing":5},"presence":"away"})
        );
        assert!(ServerFrame::parse(
            r#"{"type":"op","version":1,"op":["\ud800"],"user":"u","client":"c","seq":1}"#
        )
        .is_err());
    }

    #[test]
    fn server_messages_have_contract_shape() {
        let v: Value =
            serde_json::from_str(&ServerMessage::Ack { seq: 2, version: 9 }.to_text()).unwrap();
        assert_eq!(v, serde_json::json!({"type":"ack","seq":2,"version":9}));
        let check = ServerMessage::Check {
            version: 64,
            hash: "811c9dc5",
        };
        assert_eq!(
            check.to_text(),
            r#"{"type":"check","version":64,"hash":"811c9dc5"}"#
        );
        let v: Value = serde_json::from_str(&ServerMessage::Pong.to_text()).unwrap();
        assert_eq!(v, serde_json::json!({"type":"pong"}));
        let e = ServerMessage::Error {
            code: ErrorCode::BadOp,
            message: "m",
            seq: None,
        };
        let v: Value = serde_json::from_str(&e.to_text()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"error","code":"bad_op","message":"m"})
        );
    }
}
