//! OpenAPI descriptions of the core types that REST bodies carry. The core
//! crate has no utoipa, so each such type gets a schema-only mirror here,
//! with the same name, doc comment and serde shape as the type it describes;
//! `api.rs` names the mirror wherever the OpenAPI document needs the type.
//! The tests check every mirror against the serde output of its original.
//!
//! Owns: the mirrors of [`protocol::Presence`] (and its `PresenceState`), [`protocol::Role`] and
//! [`meta::MetaView`]. Must not import: sqlx, redis.
//!
//! [`protocol::Presence`]: crate::protocol::Presence
//! [`protocol::Role`]: crate::protocol::Role
//! [`meta::MetaView`]: crate::meta::MetaView
#![expect(dead_code, reason = "schema-only mirrors: described, never built")]

use utoipa::ToSchema;

/// A presence entry in `init.users`.
#[derive(ToSchema)]
pub struct Presence {
    id: String,
    name: String,
    color: String,
    client: String,
    /// The client's presence state (`active` when it never set one).
    state: Option<PresenceState>,
}

/// A user's attention as their client reports it.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum PresenceState {
    Active,
    Idle,
    Away,
}

/// Access level of a connection.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Editor,
    Viewer,
}

/// What clients see.
#[derive(ToSchema)]
pub struct MetaView {
    title: String,
    /// The language to show the document in: the one chosen, or the guess
    /// from the title's extension (`plaintext` when there is none). One of
    /// the ids of `GET /api/languages`.
    language: String,
    /// Whether `language` was chosen (true) or guessed from the title.
    language_set: bool,
    tags: Vec<String>,
    views: u64,
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};
    use utoipa::PartialSchema;

    use crate::{meta, protocol};

    /// The schema of `T` as JSON.
    fn schema<T: PartialSchema>() -> Value {
        serde_json::to_value(T::schema()).unwrap()
    }

    /// The property names of an object schema, sorted.
    fn properties(schema: &Value) -> Vec<String> {
        let mut names: Vec<String> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// The keys of a serialised value, sorted.
    fn keys(value: impl serde::Serialize) -> Vec<String> {
        let mut names: Vec<String> = serde_json::to_value(value)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    #[test]
    fn mirrors_have_the_serde_shape_of_the_core_types() {
        let presence = protocol::Presence {
            id: "u".into(),
            name: "n".into(),
            color: "#000".into(),
            client: "c".into(),
            state: Some(protocol::PresenceState::Idle),
        };
        assert_eq!(properties(&schema::<super::Presence>()), keys(presence));
        assert_eq!(
            properties(&schema::<super::MetaView>()),
            keys(meta::MetaView::default())
        );
        let roles = [
            protocol::Role::Owner,
            protocol::Role::Editor,
            protocol::Role::Viewer,
        ];
        assert_eq!(schema::<super::Role>()["enum"], json!(roles));
        let states = [
            protocol::PresenceState::Active,
            protocol::PresenceState::Idle,
            protocol::PresenceState::Away,
        ];
        assert_eq!(schema::<super::PresenceState>()["enum"], json!(states));
    }
}
