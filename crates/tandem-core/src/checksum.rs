//! The content checksum of the `check` message (protocol extension, see
//! `docs/protocol.md`): FNV-1a, 32 bits, over the UTF-8 bytes of the text,
//! written as 8 lowercase hex digits. Chosen to be trivially the same in
//! Rust and browser JavaScript (`checksum` in `web/client/ot.js`) and cheap
//! (one pass, no allocation); it detects drift, it is no defence against
//! an adversary.
//!
//! Owns: [`fnv1a`], [`checksum`], [`checksum_rope`], [`valid_hash`].
//! Must not import: tokio, axum, hyper, redis, sqlx, utoipa, metrics
//! (enforced: tandem-core has no such dependency). Pure.

use ropey::Rope;

/// FNV-1a's 32-bit offset basis: the hash of no bytes.
pub const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

/// Continue the FNV-1a hash `h` over `bytes` (start from [`FNV_OFFSET`]).
pub fn fnv1a(mut h: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

fn hex(h: u32) -> String {
    format!("{h:08x}")
}

/// The checksum of `text`: FNV-1a 32 over its UTF-8 bytes, 8 lowercase hex
/// digits.
pub fn checksum(text: &str) -> String {
    hex(fnv1a(FNV_OFFSET, text.as_bytes()))
}

/// [`checksum`] of a rope's text, chunk by chunk (no copy of the text).
pub fn checksum_rope(text: &Rope) -> String {
    hex(text
        .chunks()
        .fold(FNV_OFFSET, |h, c| fnv1a(h, c.as_bytes())))
}

/// Whether `s` is written as a checksum is: exactly 8 lowercase hex digits.
pub fn valid_hash(s: &str) -> bool {
    s.len() == 8 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fixed vectors; `web/test/ot.test.mjs` checks the JavaScript
    /// implementation against the same values (and against the generated
    /// `checksum` vectors in `web/test/vectors.json`).
    const VECTORS: &[(&str, &str)] = &[
        ("", "811c9dc5"),
        ("a", "e40c292c"),
        ("foobar", "bf9cf968"),
        ("a😀b", "88a361a9"),
        ("line\r\nnext\n", "cdebeb6d"),
        ("é中𝄞👍🏽🇫🇷", "8209f9ff"),
    ];

    #[test]
    fn known_vectors() {
        for (text, want) in VECTORS {
            assert_eq!(checksum(text), *want, "{text:?}");
            assert!(valid_hash(want));
        }
    }

    #[test]
    fn a_rope_hashes_as_its_text() {
        // Large enough for several chunks, with astral characters
        // straddling chunk boundaries.
        let text: String = (0..5000).map(|i| ["a", "😀", "é", "\r\n"][i % 4]).collect();
        let rope = Rope::from_str(&text);
        assert!(rope.chunks().count() > 1);
        assert_eq!(checksum_rope(&rope), checksum(&text));
        assert_eq!(checksum_rope(&Rope::new()), checksum(""));
    }

    #[test]
    fn any_change_shows() {
        assert_ne!(checksum("ab"), checksum("ba"));
        assert_ne!(checksum("a"), checksum("a "));
        assert_ne!(checksum("\n"), checksum("\r\n"));
    }

    #[test]
    fn hash_syntax() {
        for bad in [
            "",
            "811c9dc",
            "811c9dc55",
            "811C9DC5",
            "811c9dcg",
            " 811c9dc",
        ] {
            assert!(!valid_hash(bad), "{bad:?}");
        }
    }
}
