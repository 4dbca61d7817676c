//! History identity ("epoch"): a short random id naming one history of a
//! document. Version numbers are only meaningful within one history: when a
//! sequencer loses records it had handed out (Redis restarted empty, the
//! store behind it), the same numbers are handed out again for different
//! content under a new epoch. A client may resume from a version only on
//! the history it got that version from (`init.history`, `?history=`).
//!
//! Owns: minting epochs and the reading of stored ones (a row from before
//! epochs existed holds `''`, read as [`LEGACY`]).
//! Must not import: axum, sqlx, redis, the hub.

/// The epoch of a document stored before epochs existed. Stable, so such
/// documents keep one identity until their sequencer mints a new one.
pub const LEGACY: &str = "0";

/// A fresh epoch: 16 hex characters (64 random bits of a v4 uuid).
pub fn fresh() -> String {
    let mut id = uuid::Uuid::new_v4().simple().to_string();
    id.truncate(16);
    id
}

/// A stored epoch as the hub uses it: empty (a legacy row) is [`LEGACY`].
pub fn from_stored(stored: String) -> String {
    if stored.is_empty() {
        LEGACY.to_owned()
    } else {
        stored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_epochs_are_short_hex_ids_and_differ() {
        let (a, b) = (fresh(), fresh());
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(crate::protocol::valid_id(&a));
        assert_ne!(a, b);
    }

    #[test]
    fn legacy_rows_read_as_a_stable_epoch() {
        assert_eq!(from_stored(String::new()), LEGACY);
        assert_eq!(from_stored("abc".into()), "abc");
    }
}
