//! Text operations in the ot.js form, over Unicode code points.
//!
//! Owns: the [`Operation`] type, its JSON codec and validation, `apply` (to a
//! rope or a string), `compose`, `transform` (ot.js tie-break: the op being
//! rebased inserts first), `invert`, and cursor-index transform.
//!
//! Must not import: tokio, axum, hyper, redis, sqlx, utoipa, metrics, or
//! anything that does I/O (enforced: tandem-core has no such dependency).
//! This module is pure and deterministic; every function here is
//! property-tested.

use std::fmt;

use ropey::Rope;
use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};
use serde_json::Value;

/// Largest retain/delete count accepted on the wire (2^53 - 1: what a
/// JavaScript peer can represent exactly).
pub const MAX_COUNT: u64 = (1 << 53) - 1;

/// One component of an operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Component {
    /// Skip over `n` code points (n > 0).
    Retain(usize),
    /// Insert a non-empty string.
    Insert(String),
    /// Delete `n` code points (n > 0).
    Delete(usize),
}

/// Why an operation was refused. Messages are safe to show to clients.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    #[error("operation must be a JSON array of components")]
    NotArray,
    #[error("component {index}: {reason}")]
    BadComponent { index: usize, reason: &'static str },
    #[error("operation has {count} components, more than the limit of {limit}")]
    TooManyComponents { count: usize, limit: usize },
    #[error("operation spans {op} characters but the document has {doc}")]
    BaseLength { op: usize, doc: usize },
    #[error("cannot compose: first op produces {first} characters, second expects {second}")]
    ComposeLength { first: usize, second: usize },
    #[error("cannot transform: ops are based on documents of {a} and {b} characters")]
    TransformLength { a: usize, b: usize },
}

/// A text operation: a normalised sequence of components with its input
/// (`base_len`) and output (`target_len`) lengths in code points.
///
/// Normal form (kept by the builder methods): no empty components, no two
/// adjacent components of one kind, and an insert never directly follows a
/// delete (ot.js puts the insert first), so equal edits compare equal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Operation {
    ops: Vec<Component>,
    base_len: usize,
    target_len: usize,
}

/// Number of Unicode scalar values in `s`.
#[inline]
pub fn char_len(s: &str) -> usize {
    s.chars().count()
}

/// Byte offset of the `n`th char of `s` (or `s.len()` past the end).
#[inline]
fn byte_offset(s: &str, n: usize) -> usize {
    s.char_indices().nth(n).map_or(s.len(), |(i, _)| i)
}

impl Operation {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn components(&self) -> &[Component] {
        &self.ops
    }
    pub fn base_len(&self) -> usize {
        self.base_len
    }
    pub fn target_len(&self) -> usize {
        self.target_len
    }
    /// Roughly the bytes the op takes on the wire: for byte caps on queues
    /// and batches, never for validation.
    pub fn size_hint(&self) -> usize {
        self.ops
            .iter()
            .map(|c| match c {
                Component::Insert(s) => s.len() + 4,
                Component::Retain(_) | Component::Delete(_) => 8,
            })
            .sum()
    }
    /// True when applying the op changes nothing.
    pub fn is_noop(&self) -> bool {
        self.ops.iter().all(|c| matches!(c, Component::Retain(_)))
    }

    pub fn retain(&mut self, n: usize) -> &mut Self {
        if n == 0 {
            return self;
        }
        self.base_len += n;
        self.target_len += n;
        if let Some(Component::Retain(last)) = self.ops.last_mut() {
            *last += n;
        } else {
            self.ops.push(Component::Retain(n));
        }
        self
    }

    pub fn insert(&mut self, s: &str) -> &mut Self {
        if s.is_empty() {
            return self;
        }
        self.target_len += char_len(s);
        let len = self.ops.len();
        match self.ops.as_mut_slice() {
            [.., Component::Insert(last)] => last.push_str(s),
            [.., Component::Insert(prev), Component::Delete(_)] => prev.push_str(s),
            [.., Component::Delete(_)] => {
                // Keep inserts before deletes: swap into place.
                self.ops.insert(len - 1, Component::Insert(s.to_owned()));
            }
            _ => self.ops.push(Component::Insert(s.to_owned())),
        }
        self
    }

    pub fn delete(&mut self, n: usize) -> &mut Self {
        if n == 0 {
            return self;
        }
        self.base_len += n;
        if let Some(Component::Delete(last)) = self.ops.last_mut() {
            *last += n;
        } else {
            self.ops.push(Component::Delete(n));
        }
        self
    }

    /// Decode and validate the wire form (a JSON array). Refuses zero, floats,
    /// empty strings, non-integers, counts above [`MAX_COUNT`] and more than
    /// `max_components` components. The result is normalised.
    pub fn from_json(v: &Value, max_components: usize) -> Result<Self, OpError> {
        let arr = v.as_array().ok_or(OpError::NotArray)?;
        if arr.len() > max_components {
            return Err(OpError::TooManyComponents {
                count: arr.len(),
                limit: max_components,
            });
        }
        let mut op = Operation::new();
        for (index, c) in arr.iter().enumerate() {
            let bad = |reason| OpError::BadComponent { index, reason };
            match c {
                Value::String(s) if s.is_empty() => return Err(bad("empty insert string")),
                Value::String(s) => {
                    op.insert(s);
                }
                Value::Number(n) => {
                    if let Some(u) = n.as_u64() {
                        if u == 0 {
                            return Err(bad("zero is not a component"));
                        }
                        if u > MAX_COUNT {
                            return Err(bad("retain count too large"));
                        }
                        op.retain(u as usize);
                    } else if let Some(i) = n.as_i64().filter(|i| *i != 0) {
                        let d = i.unsigned_abs();
                        if d > MAX_COUNT {
                            return Err(bad("delete count too large"));
                        }
                        op.delete(d as usize);
                    } else {
                        return Err(bad("numbers must be integers"));
                    }
                }
                _ => return Err(bad("expected an integer or a non-empty string")),
            }
            if op.base_len as u64 > MAX_COUNT {
                return Err(bad("operation length too large"));
            }
        }
        Ok(op)
    }

    /// The wire form as a JSON value.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    fn check_base(&self, doc_len: usize) -> Result<(), OpError> {
        if self.base_len != doc_len {
            return Err(OpError::BaseLength {
                op: self.base_len,
                doc: doc_len,
            });
        }
        Ok(())
    }

    /// Apply to a rope in O(components · log n).
    pub fn apply_rope(&self, rope: &mut Rope) -> Result<(), OpError> {
        self.check_base(rope.len_chars())?;
        let mut pos = 0;
        for c in &self.ops {
            match c {
                Component::Retain(n) => pos += n,
                Component::Insert(s) => {
                    rope.insert(pos, s);
                    pos += char_len(s);
                }
                Component::Delete(n) => rope.remove(pos..pos + n),
            }
        }
        Ok(())
    }

    /// Apply to a string (used by clients, tests and small documents).
    pub fn apply(&self, s: &str) -> Result<String, OpError> {
        self.check_base(char_len(s))?;
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        for c in &self.ops {
            match c {
                Component::Retain(n) => {
                    let b = byte_offset(rest, *n);
                    out.push_str(&rest[..b]);
                    rest = &rest[b..];
                }
                Component::Insert(ins) => out.push_str(ins),
                Component::Delete(n) => rest = &rest[byte_offset(rest, *n)..],
            }
        }
        Ok(out)
    }

    /// The op that undoes `self` when applied after it; `doc` is the text
    /// `self` was applied to.
    pub fn invert(&self, doc: &Rope) -> Result<Operation, OpError> {
        self.check_base(doc.len_chars())?;
        let mut inv = Operation::new();
        let mut pos = 0;
        for c in &self.ops {
            match c {
                Component::Retain(n) => {
                    inv.retain(*n);
                    pos += n;
                }
                Component::Insert(s) => {
                    inv.delete(char_len(s));
                }
                Component::Delete(n) => {
                    inv.insert(&doc.slice(pos..pos + n).to_string());
                    pos += n;
                }
            }
        }
        Ok(inv)
    }

    /// `a.compose(b)`: one op with the effect of `a` then `b`.
    pub fn compose(&self, other: &Operation) -> Result<Operation, OpError> {
        if self.target_len != other.base_len {
            return Err(OpError::ComposeLength {
                first: self.target_len,
                second: other.base_len,
            });
        }
        let mut out = Operation::new();
        let mut it1 = Pieces::new(&self.ops);
        let mut it2 = Pieces::new(&other.ops);
        loop {
            match (it1.peek(), it2.peek()) {
                (None, None) => break,
                (Some(Piece::Delete(n)), _) => {
                    out.delete(n);
                    it1.take(n);
                }
                (_, Some(Piece::Insert(s))) => {
                    out.insert(s);
                    it2.take(char_len(s));
                }
                (Some(p1), Some(p2)) => {
                    let n = p1.len().min(p2.len());
                    match (p1, p2) {
                        (Piece::Retain(_), Piece::Retain(_)) => {
                            out.retain(n);
                        }
                        (Piece::Insert(s), Piece::Retain(_)) => {
                            out.insert(&s[..byte_offset(s, n)]);
                        }
                        (Piece::Retain(_), Piece::Delete(_)) => {
                            out.delete(n);
                        }
                        // insert then delete: cancels out.
                        (Piece::Insert(_), Piece::Delete(_)) => {}
                        (Piece::Delete(_), _) | (_, Piece::Insert(_)) => unreachable!(),
                    }
                    it1.take(n);
                    it2.take(n);
                }
                // Lengths were checked above, so neither side can run out early.
                _ => unreachable!("compose: lengths checked"),
            }
        }
        Ok(out)
    }

    /// ot.js `transform(a, b)` with `a = self`: returns `(a', b')` such that
    /// `b.compose(a') == a.compose(b')`. When both insert at one position,
    /// `a`'s text goes first.
    pub fn transform(&self, other: &Operation) -> Result<(Operation, Operation), OpError> {
        if self.base_len != other.base_len {
            return Err(OpError::TransformLength {
                a: self.base_len,
                b: other.base_len,
            });
        }
        let mut a2 = Operation::new();
        let mut b2 = Operation::new();
        let mut it1 = Pieces::new(&self.ops);
        let mut it2 = Pieces::new(&other.ops);
        loop {
            match (it1.peek(), it2.peek()) {
                (None, None) => break,
                (Some(Piece::Insert(s)), _) => {
                    let n = char_len(s);
                    a2.insert(s);
                    b2.retain(n);
                    it1.take(n);
                }
                (_, Some(Piece::Insert(s))) => {
                    let n = char_len(s);
                    a2.retain(n);
                    b2.insert(s);
                    it2.take(n);
                }
                (Some(p1), Some(p2)) => {
                    let n = p1.len().min(p2.len());
                    match (p1, p2) {
                        (Piece::Retain(_), Piece::Retain(_)) => {
                            a2.retain(n);
                            b2.retain(n);
                        }
                        (Piece::Delete(_), Piece::Delete(_)) => {}
                        (Piece::Delete(_), Piece::Retain(_)) => {
                            a2.delete(n);
                        }
                        (Piece::Retain(_), Piece::Delete(_)) => {
                            b2.delete(n);
                        }
                        (Piece::Insert(_), _) | (_, Piece::Insert(_)) => unreachable!(),
                    }
                    it1.take(n);
                    it2.take(n);
                }
                _ => unreachable!("transform: lengths checked"),
            }
        }
        Ok((a2, b2))
    }

    /// Where a caret at `index` (before this op) lands after it. An insert at
    /// exactly the caret pushes the caret right (ot.js `transformIndex`).
    pub fn transform_index(&self, index: usize) -> usize {
        let mut remaining = index as i64;
        let mut new_index = index as i64;
        for c in &self.ops {
            match c {
                Component::Retain(n) => remaining -= *n as i64,
                Component::Insert(s) => new_index += char_len(s) as i64,
                Component::Delete(n) => {
                    new_index -= remaining.min(*n as i64).max(0);
                    remaining -= *n as i64;
                }
            }
            if remaining < 0 {
                break;
            }
        }
        new_index.max(0) as usize
    }
}

/// A view of one component, possibly partly consumed.
#[derive(Clone, Copy)]
enum Piece<'a> {
    Retain(usize),
    Insert(&'a str),
    Delete(usize),
}

impl Piece<'_> {
    fn len(&self) -> usize {
        match self {
            Piece::Retain(n) | Piece::Delete(n) => *n,
            Piece::Insert(s) => char_len(s),
        }
    }
}

/// Walks components, handing out partial pieces without allocating.
struct Pieces<'a> {
    ops: &'a [Component],
    idx: usize,
    /// Code points of `ops[idx]` already consumed.
    used: usize,
    /// Byte offset matching `used` when `ops[idx]` is an insert.
    used_bytes: usize,
}

impl<'a> Pieces<'a> {
    fn new(ops: &'a [Component]) -> Self {
        Self {
            ops,
            idx: 0,
            used: 0,
            used_bytes: 0,
        }
    }

    fn peek(&self) -> Option<Piece<'a>> {
        Some(match self.ops.get(self.idx)? {
            Component::Retain(n) => Piece::Retain(n - self.used),
            Component::Delete(n) => Piece::Delete(n - self.used),
            Component::Insert(s) => Piece::Insert(&s[self.used_bytes..]),
        })
    }

    fn take(&mut self, n: usize) {
        let Some(c) = self.ops.get(self.idx) else {
            return;
        };
        let total = match c {
            Component::Retain(m) | Component::Delete(m) => *m,
            Component::Insert(s) => {
                let rest = &s[self.used_bytes..];
                self.used_bytes += byte_offset(rest, n);
                self.used + char_len(rest)
            }
        };
        self.used += n;
        if self.used >= total {
            self.idx += 1;
            self.used = 0;
            self.used_bytes = 0;
        }
    }
}

impl Serialize for Operation {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut seq = ser.serialize_seq(Some(self.ops.len()))?;
        for c in &self.ops {
            match c {
                Component::Retain(n) => seq.serialize_element(&(*n as u64))?,
                Component::Insert(s) => seq.serialize_element(s)?,
                Component::Delete(n) => seq.serialize_element(&-(*n as i64))?,
            }
        }
        seq.end()
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&serde_json::to_string(self).map_err(|_| fmt::Error)?)
    }
}

/// Build an op from a single splice `(pos, del, ins)` on a document of
/// `doc_len` code points. Used by trace replay, HTTP content replace and tests.
pub fn splice(doc_len: usize, pos: usize, del: usize, ins: &str) -> Operation {
    let mut op = Operation::new();
    op.retain(pos)
        .delete(del)
        .insert(ins)
        .retain(doc_len.saturating_sub(pos + del));
    op
}

/// The smallest single-splice op turning `old` into `new` (common prefix and
/// suffix kept), so replacing content through OT disturbs as little as possible.
pub fn diff(old: &str, new: &str) -> Operation {
    let a: Vec<char> = old.chars().collect();
    let b: Vec<char> = new.chars().collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let max_suffix = a.len().min(b.len()) - prefix;
    let suffix = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take(max_suffix)
        .take_while(|(x, y)| x == y)
        .count();
    let ins: String = b[prefix..b.len() - suffix].iter().collect();
    splice(a.len(), prefix, a.len() - prefix - suffix, &ins)
}

#[cfg(test)]
mod tests;
