//! Awareness: each client's small live state beyond the caret (who is
//! typing, a viewport, an app's own fields) and its presence state
//! (`active` / `idle` / `away`), as the wire carries them, and the bounds an
//! awareness object must keep before the server stores or relays it.
//!
//! Owns: [`PresenceState`], [`AwarenessInfo`], [`check_state`] and the
//! limits ([`MAX_BYTES`], [`MAX_DEPTH`], [`MAX_ENTRIES`]).
//! Must not import: tokio, axum, hyper, redis, sqlx, utoipa, metrics
//! (enforced: tandem-core has no such dependency).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Most bytes of an awareness object, serialised as compact JSON.
pub const MAX_BYTES: usize = 1024;
/// Deepest nesting of objects and arrays (the state object itself is 1;
/// scalars add no level).
pub const MAX_DEPTH: usize = 4;
/// Most keys and array items, counted over the whole object.
pub const MAX_ENTRIES: usize = 64;

/// A user's attention as their client reports it. A client that never says
/// is `active`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceState {
    /// Input or focus recently.
    #[default]
    Active,
    /// Visible, but no input for a while (the page: 60 s).
    Idle,
    /// The tab is hidden or the window has lost focus.
    Away,
}

/// One client's awareness, in `init.awareness` and `awareness` messages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AwarenessInfo {
    pub client: String,
    /// The user id.
    pub user: String,
    /// A JSON object (checked by [`check_state`]).
    pub state: Value,
    pub presence: PresenceState,
}

/// Whether `state` is an awareness object within the bounds: a JSON object,
/// at most [`MAX_DEPTH`] levels deep, [`MAX_ENTRIES`] keys and items in all,
/// and [`MAX_BYTES`] serialised. The error text is safe to send back.
pub fn check_state(state: &Value) -> Result<(), String> {
    if !state.is_object() {
        return Err("awareness state must be a JSON object".into());
    }
    let mut entries = 0usize;
    walk(state, 1, &mut entries)?;
    let bytes = serde_json::to_string(state).map_or(usize::MAX, |s| s.len());
    if bytes > MAX_BYTES {
        return Err(format!(
            "awareness state is {bytes} bytes; at most {MAX_BYTES}"
        ));
    }
    Ok(())
}

fn walk(v: &Value, depth: usize, entries: &mut usize) -> Result<(), String> {
    let children: Box<dyn Iterator<Item = &Value>> = match v {
        Value::Object(m) => Box::new(m.values()),
        Value::Array(a) => Box::new(a.iter()),
        _ => return Ok(()),
    };
    if depth > MAX_DEPTH {
        return Err(format!(
            "awareness state is nested deeper than {MAX_DEPTH} levels"
        ));
    }
    for child in children {
        *entries += 1;
        if *entries > MAX_ENTRIES {
            return Err(format!(
                "awareness state has more than {MAX_ENTRIES} keys and items"
            ));
        }
        walk(child, depth + 1, entries)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_within_bounds_pass() {
        for ok in [
            json!({}),
            json!({"typing": 1700000000000_i64, "viewport": [0, 40], "follow": null}),
            json!({"a": {"b": {"c": [1, 2, 3]}}}),
            json!({"s": "é".repeat(400)}),
        ] {
            assert_eq!(check_state(&ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn non_objects_are_refused() {
        for bad in [json!(null), json!(1), json!("x"), json!([1]), json!(true)] {
            let e = check_state(&bad).unwrap_err();
            assert!(e.contains("object"), "{bad}: {e}");
        }
    }

    #[test]
    fn size_depth_and_entry_bounds_hold() {
        // Exactly at the byte limit passes; one more byte does not.
        let pad = MAX_BYTES - r#"{"s":""}"#.len();
        assert_eq!(check_state(&json!({ "s": "x".repeat(pad) })), Ok(()));
        let e = check_state(&json!({ "s": "x".repeat(pad + 1) })).unwrap_err();
        assert!(e.contains("bytes"), "{e}");
        // Multi-byte characters count as their UTF-8 bytes.
        assert!(check_state(&json!({ "s": "é".repeat(pad / 2 + 1) })).is_err());
        // Depth: the object is level 1; four levels of objects and arrays
        // pass, five do not.
        assert_eq!(check_state(&json!({"a": {"b": {"c": {"d": 1}}}})), Ok(()));
        assert_eq!(check_state(&json!({"a": {"b": [[1]]}})), Ok(()));
        let e = check_state(&json!({"a": {"b": {"c": {"d": {}}}}})).unwrap_err();
        assert!(e.contains("deeper"), "{e}");
        assert!(check_state(&json!({"a": [[[[1]]]]})).is_err());
        // Entries: keys and items over the whole tree.
        let many: serde_json::Map<String, Value> = (0..MAX_ENTRIES)
            .map(|i| (i.to_string(), json!(0)))
            .collect();
        assert_eq!(check_state(&Value::Object(many.clone())), Ok(()));
        let mut more = many;
        more.insert("x".into(), json!(0));
        let e = check_state(&Value::Object(more)).unwrap_err();
        assert!(e.contains("keys"), "{e}");
        let items: Vec<Value> = (0..MAX_ENTRIES).map(|_| json!(0)).collect();
        assert!(
            check_state(&json!({ "a": items })).is_err(),
            "key + 64 items"
        );
    }

    #[test]
    fn presence_states_spell_as_the_protocol_says() {
        let v = serde_json::to_value([
            PresenceState::Active,
            PresenceState::Idle,
            PresenceState::Away,
        ])
        .unwrap();
        assert_eq!(v, json!(["active", "idle", "away"]));
        assert!(serde_json::from_value::<PresenceState>(json!("asleep")).is_err());
    }
}
