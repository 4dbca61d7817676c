//! Unit and property tests for the OT core (TP1, compose/apply, invert,
//! length bookkeeping, cursor transform), with astral characters in the alphabet.

use super::*;
use proptest::prelude::*;
use serde_json::json;

fn op(v: Value) -> Operation {
    Operation::from_json(&v, 10_000).unwrap()
}

#[test]
fn contract_examples() {
    assert_eq!(
        op(json!([5, " there", 6])).apply("hello world").unwrap(),
        "hello there world"
    );
    assert_eq!(op(json!([6, -5])).apply("hello world").unwrap(), "hello ");
    // Lengths count code points, not bytes or UTF-16 units.
    assert_eq!(op(json!([1, "x", 2])).apply("a😀b").unwrap(), "ax😀b");
    assert_eq!(op(json!([1, -1, 1])).apply("a😀b").unwrap(), "ab");
}

#[test]
fn decode_refuses_with_precise_errors() {
    let e = |v: Value| Operation::from_json(&v, 4).unwrap_err();
    assert_eq!(e(json!({"a": 1})), OpError::NotArray);
    assert_eq!(e(json!("abc")), OpError::NotArray);
    assert!(matches!(
        e(json!([0])),
        OpError::BadComponent { index: 0, .. }
    ));
    assert!(matches!(
        e(json!([1, ""])),
        OpError::BadComponent { index: 1, .. }
    ));
    assert!(matches!(
        e(json!([1.5])),
        OpError::BadComponent { index: 0, .. }
    ));
    assert!(matches!(
        e(json!([null])),
        OpError::BadComponent { index: 0, .. }
    ));
    assert!(matches!(
        e(json!([[1]])),
        OpError::BadComponent { index: 0, .. }
    ));
    assert!(matches!(
        e(json!([true])),
        OpError::BadComponent { index: 0, .. }
    ));
    assert!(matches!(
        e(json!([u64::MAX])),
        OpError::BadComponent { index: 0, .. }
    ));
    assert!(matches!(
        e(json!([i64::MIN])),
        OpError::BadComponent { index: 0, .. }
    ));
    assert!(matches!(
        e(json!([1, 2, 3, 4, 5])),
        OpError::TooManyComponents { count: 5, limit: 4 }
    ));
    // Base length is checked against the document.
    assert_eq!(
        op(json!([3])).apply("ab").unwrap_err(),
        OpError::BaseLength { op: 3, doc: 2 }
    );
}

#[test]
fn normalises_and_round_trips() {
    let o = op(json!([1, 2, "a", "b", -1, -2, "c", 3]));
    // adjacent kinds merged, insert moved before delete
    assert_eq!(serde_json::to_value(&o).unwrap(), json!([3, "abc", -3, 3]));
    assert_eq!(o.base_len(), 9);
    assert_eq!(o.target_len(), 9);
    assert_eq!(Operation::from_json(&o.to_json(), 100).unwrap(), o);
}

#[test]
fn tie_break_rebased_op_inserts_first() {
    let a = op(json!(["A", 3]));
    let b = op(json!(["B", 3]));
    let (a2, b2) = a.transform(&b).unwrap();
    let via_b = a2.apply(&b.apply("xyz").unwrap()).unwrap();
    let via_a = b2.apply(&a.apply("xyz").unwrap()).unwrap();
    assert_eq!(via_a, "ABxyz");
    assert_eq!(via_b, via_a);
}

#[test]
fn transform_index_rules() {
    let o = op(json!([2, "XY", -2, 3]));
    assert_eq!(o.transform_index(0), 0);
    assert_eq!(o.transform_index(2), 4); // insert at the caret pushes it right
    assert_eq!(o.transform_index(3), 4); // inside the deleted range
    assert_eq!(o.transform_index(4), 4);
    assert_eq!(o.transform_index(7), 7);
}

#[test]
fn diff_is_minimal_splice() {
    let d = diff("hello world", "hello there world");
    assert_eq!(serde_json::to_value(&d).unwrap(), json!([6, "there ", 5]));
    assert_eq!(d.apply("hello world").unwrap(), "hello there world");
    assert!(diff("same", "same").is_noop());
    assert_eq!(diff("a😀😀b", "a😀b").apply("a😀😀b").unwrap(), "a😀b");
}

// ---------- property tests ----------

const ALPHABET: &[char] = &['a', 'b', ' ', '\n', 'é', '中', '😀', '👍', '𝄞'];

fn text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(ALPHABET), 0..max)
        .prop_map(|v| v.into_iter().collect())
}

/// A random valid operation on a document of `len` code points.
fn op_on(len: usize) -> impl Strategy<Value = Operation> {
    prop::collection::vec((0u8..3, 1usize..6, text(4)), 0..8).prop_map(move |steps| {
        let mut o = Operation::new();
        let mut left = len;
        for (kind, n, s) in steps {
            match kind {
                0 if left > 0 => {
                    let k = n.min(left);
                    o.retain(k);
                    left -= k;
                }
                1 if left > 0 => {
                    let k = n.min(left);
                    o.delete(k);
                    left -= k;
                }
                _ => {
                    o.insert(if s.is_empty() { "q" } else { &s });
                }
            }
        }
        o.retain(left);
        o
    })
}

fn doc_and_op() -> impl Strategy<Value = (String, Operation)> {
    text(24).prop_flat_map(|d| {
        let n = char_len(&d);
        (Just(d), op_on(n))
    })
}

fn doc_and_two_ops() -> impl Strategy<Value = (String, Operation, Operation)> {
    text(24).prop_flat_map(|d| {
        let n = char_len(&d);
        (Just(d), op_on(n), op_on(n))
    })
}

/// A document, an op on it, and an op on the result.
fn doc_op_then_op() -> impl Strategy<Value = (String, Operation, Operation)> {
    doc_and_op().prop_flat_map(|(d, a)| {
        let n = a.target_len();
        (Just(d), Just(a), op_on(n))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn lengths_are_bookkept((d, o) in doc_and_op()) {
        prop_assert_eq!(o.base_len(), char_len(&d));
        let out = o.apply(&d).unwrap();
        prop_assert_eq!(char_len(&out), o.target_len());
    }

    #[test]
    fn rope_and_string_apply_agree((d, o) in doc_and_op()) {
        let mut r = Rope::from_str(&d);
        o.apply_rope(&mut r).unwrap();
        prop_assert_eq!(r.to_string(), o.apply(&d).unwrap());
    }

    #[test]
    fn wire_round_trip((_d, o) in doc_and_op()) {
        prop_assert_eq!(Operation::from_json(&o.to_json(), 1000).unwrap(), o);
    }

    #[test]
    fn tp1_convergence((d, a, b) in doc_and_two_ops()) {
        let (a2, b2) = a.transform(&b).unwrap();
        let left = a2.apply(&b.apply(&d).unwrap()).unwrap();
        let right = b2.apply(&a.apply(&d).unwrap()).unwrap();
        prop_assert_eq!(&left, &right);
        // and as operations: b·a' == a·b'
        prop_assert_eq!(b.compose(&a2).unwrap().apply(&d).unwrap(), left);
        prop_assert_eq!(a.compose(&b2).unwrap(), b.compose(&a2).unwrap());
    }

    #[test]
    fn compose_agrees_with_sequential_apply((d, a, b) in doc_op_then_op()) {
        let mid = a.apply(&d).unwrap();
        let ab = a.compose(&b).unwrap();
        prop_assert_eq!(ab.apply(&d).unwrap(), b.apply(&mid).unwrap());
        prop_assert_eq!(ab.base_len(), a.base_len());
        prop_assert_eq!(ab.target_len(), b.target_len());
    }

    #[test]
    fn invert_undoes((d, o) in doc_and_op()) {
        let inv = o.invert(&Rope::from_str(&d)).unwrap();
        let after = o.apply(&d).unwrap();
        prop_assert_eq!(inv.apply(&after).unwrap(), d.clone());
        prop_assert_eq!(o.compose(&inv).unwrap().apply(&d).unwrap(), d.clone());
        prop_assert_eq!(inv.base_len(), o.target_len());
    }

    #[test]
    fn cursor_stays_in_bounds_and_keeps_order((d, o) in doc_and_op(), i in 0usize..30, j in 0usize..30) {
        let n = char_len(&d);
        let (i, j) = (i.min(n), j.min(n));
        let (ti, tj) = (o.transform_index(i), o.transform_index(j));
        prop_assert!(ti <= o.target_len() && tj <= o.target_len());
        if i <= j { prop_assert!(ti <= tj); }
    }

    #[test]
    fn diff_applies(a in text(20), b in text(20)) {
        prop_assert_eq!(diff(&a, &b).apply(&a).unwrap(), b);
    }
}
