//! Wire messages of protocol v1 (see `docs/protocol.md`): what clients send,
//! what the server sends, error codes, and user colours.
//!
//! Owns: serde types for WebSocket frames and the [`ErrorCode`] table.
//! Must not import: tokio, axum, redis, sqlx. Pure: parsing is a function
//! from text to a message or an error, nothing else.

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Presence {
    pub id: String,
    pub name: String,
    pub color: String,
    pub client: String,
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
    Undo {},
    Redo {},
    Ping {},
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
        meta: crate::meta::MetaView,
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
    UserJoined {
        user: &'a UserInfo,
        client: &'a str,
    },
    UserLeft {
        user: &'a UserInfo,
        client: &'a str,
    },
    Pong,
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
    let mut h: u32 = 0x811c_9dc5;
    for b in user_id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
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

/// Display names: 1–100 characters, not all blank, no control characters.
pub fn valid_name(n: &str) -> bool {
    !n.trim().is_empty() && n.chars().count() <= 100 && !n.chars().any(char::is_control)
}

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
            parse_client(r#"{"type":"undo"}"#),
            Ok(ClientMessage::Undo {})
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
    fn server_messages_have_contract_shape() {
        let v: Value =
            serde_json::from_str(&ServerMessage::Ack { seq: 2, version: 9 }.to_text()).unwrap();
        assert_eq!(v, serde_json::json!({"type":"ack","seq":2,"version":9}));
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
