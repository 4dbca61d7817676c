// ot.js — the pure half of the tandem-client package: the text-operation
// algebra over Unicode code points (the same rules as the server's Rust `ot`
// module, checked against it by shared test vectors), the conversions for
// editors that count UTF-16 units, and the `checksum` of `check` messages.
// No state, no I/O; `tandem-client.js` re-exports all of it.
//
// Positions count code points; JavaScript strings count UTF-16 units, so the
// editor edge converts with `cpToUtf16` / `utf16ToCp`.

// ---------------------------------------------------------------- code points

/** Number of code points in `s`. */
export function cpLength(s) {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) i++;
    }
    n++;
  }
  return n;
}

/** UTF-16 offset in `s` of code point index `cp` (clamped to the end). */
export function cpToUtf16(s, cp, from16 = 0) {
  let i = from16;
  while (cp > 0 && i < s.length) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) i++;
    }
    i++;
    cp--;
  }
  return i;
}

/** Code point index of UTF-16 offset `u` in `s` (an offset inside a pair counts as after it). */
export function utf16ToCp(s, u) {
  return cpLength(s.slice(0, u));
}

function cpSlice(s, from, to) {
  const a = cpToUtf16(s, from);
  return to === undefined ? s.slice(a) : s.slice(a, cpToUtf16(s, to - from, a));
}

// ---------------------------------------------------------------- operations

const isRetain = (c) => typeof c === "number" && c > 0;
const isDelete = (c) => typeof c === "number" && c < 0;
const isInsert = (c) => typeof c === "string";

/** Builds normalised ops: adjacent components merged, inserts before deletes. */
export class OpBuilder {
  constructor() {
    this.ops = [];
  }
  retain(n) {
    if (n <= 0) return this;
    const last = this.ops.length - 1;
    if (last >= 0 && isRetain(this.ops[last])) this.ops[last] += n;
    else this.ops.push(n);
    return this;
  }
  insert(s) {
    if (s === "") return this;
    const o = this.ops;
    const n = o.length;
    if (n > 0 && isInsert(o[n - 1])) o[n - 1] += s;
    else if (n > 1 && isDelete(o[n - 1]) && isInsert(o[n - 2])) o[n - 2] += s;
    else if (n > 0 && isDelete(o[n - 1])) o.splice(n - 1, 0, s);
    else o.push(s);
    return this;
  }
  delete(n) {
    if (n <= 0) return this;
    const last = this.ops.length - 1;
    if (last >= 0 && isDelete(this.ops[last])) this.ops[last] -= n;
    else this.ops.push(-n);
    return this;
  }
  build() {
    return this.ops;
  }
}

/** Input length of `op` (code points it spans in the document it applies to). */
export function baseLen(op) {
  let n = 0;
  for (const c of op) if (typeof c === "number") n += Math.abs(c);
  return n;
}

/** Output length of `op`. */
export function targetLen(op) {
  let n = 0;
  for (const c of op) n += isRetain(c) ? c : isInsert(c) ? cpLength(c) : 0;
  return n;
}

/** True when `op` changes nothing. */
export function isNoop(op) {
  return op.every(isRetain);
}

/** Re-normalise any valid op (e.g. one received from the server). */
export function normalize(op) {
  const b = new OpBuilder();
  for (const c of op) {
    if (isRetain(c)) b.retain(c);
    else if (isDelete(c)) b.delete(-c);
    else b.insert(c);
  }
  return b.build();
}

/** Apply `op` to `doc`; throws if the lengths disagree. */
export function apply(doc, op) {
  const docLen = cpLength(doc);
  if (baseLen(op) !== docLen) {
    throw new Error(`op base length ${baseLen(op)} != document length ${docLen}`);
  }
  const out = [];
  let u = 0; // UTF-16 position in doc
  for (const c of op) {
    if (isRetain(c)) {
      const next = cpToUtf16(doc, c, u);
      out.push(doc.slice(u, next));
      u = next;
    } else if (isInsert(c)) {
      out.push(c);
    } else {
      u = cpToUtf16(doc, -c, u);
    }
  }
  return out.join("");
}

// Walks an op piece by piece, consuming parts of components.
class Pieces {
  constructor(op) {
    this.op = op;
    this.i = 0;
    this.offset = 0; // code points of op[i] already taken
  }
  peek() {
    if (this.i >= this.op.length) return null;
    const c = this.op[this.i];
    if (isInsert(c)) return this.offset ? cpSlice(c, this.offset) : c;
    if (isRetain(c)) return c - this.offset;
    return c + this.offset;
  }
  take(n) {
    const c = this.op[this.i];
    const len = isInsert(c) ? cpLength(c) : Math.abs(c);
    if (this.offset + n >= len) {
      this.i++;
      this.offset = 0;
    } else this.offset += n;
  }
}

const pieceLen = (p) => (isInsert(p) ? cpLength(p) : Math.abs(p));

/** One op with the effect of `a` then `b`. */
export function compose(a, b) {
  if (targetLen(a) !== baseLen(b)) {
    throw new Error(`compose: first op's target length ${targetLen(a)} != second op's base length ${baseLen(b)}`);
  }
  const out = new OpBuilder();
  const p1 = new Pieces(a);
  const p2 = new Pieces(b);
  for (;;) {
    const x = p1.peek();
    const y = p2.peek();
    if (x === null && y === null) break;
    if (x !== null && isDelete(x)) {
      out.delete(-x);
      p1.take(-x);
      continue;
    }
    if (y !== null && isInsert(y)) {
      out.insert(y);
      p2.take(cpLength(y));
      continue;
    }
    if (x === null || y === null) throw new Error("compose: ops have different lengths");
    const n = Math.min(pieceLen(x), pieceLen(y));
    if (isRetain(x) && isRetain(y)) out.retain(n);
    else if (isInsert(x) && isRetain(y)) out.insert(cpSlice(x, 0, n));
    else if (isRetain(x) && isDelete(y)) out.delete(n);
    // insert then delete: cancels out.
    p1.take(n);
    p2.take(n);
  }
  return out.build();
}

/**
 * ot.js `transform(a, b)`: returns `[a', b']` with `compose(b, a') == compose(a, b')`.
 * When both insert at one position, `a`'s text goes first (the server's rule).
 */
export function transform(a, b) {
  if (baseLen(a) !== baseLen(b)) {
    throw new Error(`transform: base lengths differ (${baseLen(a)} vs ${baseLen(b)})`);
  }
  const a2 = new OpBuilder();
  const b2 = new OpBuilder();
  const p1 = new Pieces(a);
  const p2 = new Pieces(b);
  for (;;) {
    const x = p1.peek();
    const y = p2.peek();
    if (x === null && y === null) break;
    if (x !== null && isInsert(x)) {
      const n = cpLength(x);
      a2.insert(x);
      b2.retain(n);
      p1.take(n);
      continue;
    }
    if (y !== null && isInsert(y)) {
      const n = cpLength(y);
      a2.retain(n);
      b2.insert(y);
      p2.take(n);
      continue;
    }
    if (x === null || y === null) throw new Error("transform: ops have different lengths");
    const n = Math.min(pieceLen(x), pieceLen(y));
    if (isRetain(x) && isRetain(y)) {
      a2.retain(n);
      b2.retain(n);
    } else if (isDelete(x) && isRetain(y)) a2.delete(n);
    else if (isRetain(x) && isDelete(y)) b2.delete(n);
    p1.take(n);
    p2.take(n);
  }
  return [a2.build(), b2.build()];
}

/** Where a caret at `index` lands after `op`; an insert at the caret pushes it right. */
export function transformIndex(op, index) {
  let remaining = index;
  let out = index;
  for (const c of op) {
    if (isRetain(c)) remaining -= c;
    else if (isInsert(c)) out += cpLength(c);
    else {
      out -= Math.max(0, Math.min(remaining, -c));
      remaining += c;
    }
    if (remaining < 0) break;
  }
  return Math.max(0, out);
}

/** The op undoing `op`, given the document `doc` it applied to. */
export function invert(op, doc) {
  const out = new OpBuilder();
  let u = 0;
  for (const c of op) {
    if (isRetain(c)) {
      out.retain(c);
      u = cpToUtf16(doc, c, u);
    } else if (isInsert(c)) out.delete(cpLength(c));
    else {
      const next = cpToUtf16(doc, -c, u);
      out.insert(doc.slice(u, next));
      u = next;
    }
  }
  return out.build();
}

/** The single-splice op turning `a` into `b` (common prefix and suffix kept). */
export function diff(a, b) {
  const x = Array.from(a);
  const y = Array.from(b);
  let pre = 0;
  while (pre < x.length && pre < y.length && x[pre] === y[pre]) pre++;
  let suf = 0;
  while (suf < x.length - pre && suf < y.length - pre && x[x.length - 1 - suf] === y[y.length - 1 - suf]) suf++;
  return new OpBuilder()
    .retain(pre)
    .delete(x.length - pre - suf)
    .insert(y.slice(pre, y.length - suf).join(""))
    .retain(suf)
    .build();
}

/** An op replacing code points `[from, to)` of a `len`-long document with `text`. */
export function splice(len, from, to, text) {
  return new OpBuilder().retain(from).delete(to - from).insert(text).retain(len - to).build();
}

// ---------------------------------------------------------------- UTF-16 editors

/**
 * An editor's changes to `old` — `{from, to, insert}` in UTF-16 offsets of
 * `old`, ascending and not overlapping (CodeMirror's and Monaco's change
 * events, once sorted) — as one code-point op on `old`.
 */
export function fromUtf16Changes(old, changes) {
  const op = new OpBuilder();
  let u = 0; // UTF-16 position in old
  for (const { from, to, insert } of changes) {
    op.retain(cpLength(old.slice(u, from)))
      .delete(cpLength(old.slice(from, to)))
      .insert(insert);
    u = to;
  }
  return op.retain(cpLength(old.slice(u))).build();
}

/**
 * A code-point op on `doc` as `{from, to, insert}` changes in UTF-16 offsets,
 * all in `doc`'s coordinates, ascending and not touching (an insert followed
 * by a delete at its position is one replacement), to apply to an editor as
 * one batch.
 */
export function toUtf16Changes(doc, op) {
  const changes = [];
  const push = (from, to, insert) => {
    const last = changes[changes.length - 1];
    // An insert and the delete right after it: one replacement.
    if (last && last.to === from) {
      last.to = to;
      last.insert += insert;
    } else changes.push({ from, to, insert });
  };
  let u = 0;
  for (const c of op) {
    if (typeof c === "string") push(u, u, c);
    else if (c > 0) u = cpToUtf16(doc, c, u);
    else {
      const to = cpToUtf16(doc, -c, u);
      push(u, to, "");
      u = to;
    }
  }
  return changes;
}

// ---------------------------------------------------------------- checksum

/**
 * The checksum of `check` messages: FNV-1a (32 bits) over the UTF-8 bytes of
 * `text`, as 8 lowercase hex digits. The same as `crates/tandem-core/src/checksum.rs`.
 */
export function checksum(text) {
  let h = 0x811c9dc5;
  const byte = (b) => {
    h = Math.imul(h ^ b, 0x01000193) >>> 0;
  };
  for (const ch of text) {
    const c = ch.codePointAt(0);
    if (c < 0x80) byte(c);
    else if (c < 0x800) {
      byte(0xc0 | (c >> 6));
      byte(0x80 | (c & 0x3f));
    } else if (c < 0x10000) {
      byte(0xe0 | (c >> 12));
      byte(0x80 | ((c >> 6) & 0x3f));
      byte(0x80 | (c & 0x3f));
    } else {
      byte(0xf0 | (c >> 18));
      byte(0x80 | ((c >> 12) & 0x3f));
      byte(0x80 | ((c >> 6) & 0x3f));
      byte(0x80 | (c & 0x3f));
    }
  }
  return h.toString(16).padStart(8, "0");
}
