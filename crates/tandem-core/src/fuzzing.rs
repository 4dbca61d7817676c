//! Entry points shared by the fuzz targets (`fuzz/`, cargo-fuzz) and the
//! corpus replay test (`tests/it/fuzz_corpus.rs`), so that every input a fuzzer
//! ever saved runs in `cargo test` through the same code.
//!
//! Owns: nothing stateful.
//! Must not import: tokio, axum, hyper, redis, sqlx, utoipa, metrics
//! (enforced: tandem-core has no such dependency).

use ropey::Rope;

use crate::ot::{char_len, Operation};
use crate::protocol::{parse_client, ClientMessage};

/// The document a decoded op is tried against.
const DOC: &str = "héllo wörld 🌍 ok";

/// A client frame as the socket reader handles it: parse the message; for
/// an op, decode and validate it and apply it. Nothing may panic, and what
/// is accepted must keep the document consistent with the op's lengths.
pub fn client_frame(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(msg) = parse_client(text) else {
        return;
    };
    if let ClientMessage::Op { op, .. } = msg {
        if let Ok(op) = Operation::from_json(&op, 10_000) {
            if let Ok(out) = op.apply(DOC) {
                assert_eq!(op.base_len(), char_len(DOC));
                assert_eq!(char_len(&out), op.target_len());
                // What the server stores and publishes decodes to the same op.
                let again = Operation::from_json(&op.to_json(), 10_000).expect("round trip");
                assert_eq!(again, op);
            }
        }
    }
}

const ALPHABET: [&str; 8] = ["a", "b", " ", "é", "🌍", "\n", "字", "👩‍👩‍👧"];

/// Bytes → (document, op A, op B), both ops valid on the document.
fn ops_from(data: &[u8]) -> Option<(String, Operation, Operation)> {
    let (&first, rest) = data.split_first()?;
    let mut bytes = rest.iter().copied();
    let doc: String = (0..first % 24)
        .map(|_| ALPHABET[usize::from(bytes.next().unwrap_or(0)) % ALPHABET.len()])
        .collect();
    let len = char_len(&doc);
    let build = |bytes: &mut dyn Iterator<Item = u8>| {
        let mut op = Operation::new();
        let mut left = len;
        while let (Some(kind), Some(n)) = (bytes.next(), bytes.next()) {
            let n = usize::from(n % 6) + 1;
            match kind % 4 {
                0 => {
                    let n = n.min(left);
                    op.retain(n);
                    left -= n;
                }
                1 => {
                    let n = n.min(left);
                    op.delete(n);
                    left -= n;
                }
                2 => {
                    let s: String = (0..n)
                        .map(|i| ALPHABET[(usize::from(kind) + i) % ALPHABET.len()])
                        .collect();
                    op.insert(&s);
                }
                _ => break,
            }
        }
        op.retain(left);
        op
    };
    let a = build(&mut bytes);
    let b = build(&mut bytes);
    Some((doc, a, b))
}

/// The OT algebra on arbitrary valid ops: transform converges (TP1),
/// compose agrees with applying in sequence, invert undoes, and indexes
/// transform within bounds.
pub fn op_algebra(data: &[u8]) {
    let Some((doc, a, b)) = ops_from(data) else {
        return;
    };
    let after_a = a.apply(&doc).expect("a applies");
    let after_b = b.apply(&doc).expect("b applies");
    let (a2, b2) = a.transform(&b).expect("transform");
    let left = b2.apply(&after_a).expect("b' applies after a");
    let right = a2.apply(&after_b).expect("a' applies after b");
    assert_eq!(left, right, "TP1");
    let ab = a.compose(&b2).expect("compose");
    assert_eq!(ab.apply(&doc).expect("composed applies"), left, "compose");
    let inv = a.invert(&Rope::from_str(&doc)).expect("invert");
    assert_eq!(inv.apply(&after_a).expect("inverse applies"), doc, "invert");
    for i in 0..=char_len(&doc) {
        assert!(a.transform_index(i) <= char_len(&after_a));
    }
}
