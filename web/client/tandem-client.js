// tandem-client.js — Tandem's protocol-v1 client as one dependency-free ES module.
//
// Owns: the text-operation algebra over Unicode code points (the same rules as the
// server's Rust `ot` module, checked against it by shared test vectors), the
// one-op-in-flight client state machine (`OtState`, the twin of `crates/tandem-core/src/client.rs`),
// and `TandemClient`: a WebSocket session with resume, jittered reconnect,
// presence, remote cursors, awareness (each client's small JSON state and its
// active/idle/away presence state), content checks (`checksum`: a client whose
// text disagrees with the server's `check` reports it and reloads, keeping its
// pending edits), and optionally pending edits kept in a
// store the caller passes in (`pendingStore`), so they survive a reload. Editor-agnostic: an editor feeds local edits in as
// code-point ops and applies the ops it is handed. Runs in browsers and in Node
// (pass `WebSocket` in options where there is no global one).
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

// ---------------------------------------------------------------- client state

/**
 * The client side of OT with at most one op in flight (ot.js / Jupiter), as a pure
 * state machine: messages in, messages out. Mirrors `crates/tandem-core/src/client.rs`.
 */
export class OtState {
  constructor(content, version, lastSeq = 0) {
    this.text = content; // with our pending edits
    this.serverText = content; // at `version`
    this.version = version;
    this.nextSeq = lastSeq + 1;
    this.inflight = null; // {seq, op}
    this.buffer = null; // op
  }
  get hasPending() {
    return this.inflight !== null || this.buffer !== null;
  }
  /** A local edit on the current text: returns the `op` message to send, if idle. */
  localEdit(op) {
    this.text = apply(this.text, op);
    if (isNoop(op)) return null;
    if (this.inflight) {
      this.buffer = this.buffer ? compose(this.buffer, op) : op;
      return null;
    }
    return this.#sendNew(op);
  }
  #sendNew(op) {
    const seq = this.nextSeq++;
    this.inflight = { seq, op };
    return { type: "op", version: this.version, seq, op };
  }
  /** The in-flight op again (same seq: the server dedupes). */
  resend() {
    return this.inflight ? { type: "op", version: this.version, seq: this.inflight.seq, op: this.inflight.op } : null;
  }
  /**
   * An ack. One for a seq not in flight (a resend answered twice) is ignored.
   * Returns `{acked, send}`: the committed op (server form), the next message.
   */
  onAck(seq, version) {
    if (!this.inflight || this.inflight.seq !== seq) return { acked: null, send: null };
    // An op that changes nothing makes no version: it is acknowledged at the
    // version we already have.
    const noop = isNoop(this.inflight.op);
    if (version !== this.version + 1 && !(noop && version === this.version)) {
      throw new VersionGap(this.version + 1, version);
    }
    const acked = this.inflight.op;
    this.serverText = apply(this.serverText, acked);
    this.version = version;
    this.inflight = null;
    const b = this.buffer;
    this.buffer = null;
    // Edits that cancelled out (typed, then deleted) are not sent.
    return { acked, send: b && !isNoop(b) ? this.#sendNew(b) : null };
  }
  /**
   * A remote op at `version`. Returns `{apply, ack}`: the op to apply to the local
   * text (null when it was this client's own op seen after a resume).
   */
  onRemote(version, op, client, seq, myClient) {
    if (client === myClient && this.inflight && this.inflight.seq === seq) {
      return { apply: null, ...this.onAck(seq, version) };
    }
    if (version !== this.version + 1) throw new VersionGap(this.version + 1, version);
    this.serverText = apply(this.serverText, op);
    let remote = op;
    if (this.inflight) {
      const [i2, r2] = transform(this.inflight.op, remote);
      this.inflight.op = i2;
      remote = r2;
    }
    if (this.buffer) {
      const [b2, r2] = transform(this.buffer, remote);
      this.buffer = b2;
      remote = r2;
    }
    this.text = apply(this.text, remote);
    this.version = version;
    return { apply: remote, acked: null, send: null };
  }
  /** Local (pending) edits as one op on the last server text. */
  pendingOp() {
    if (this.inflight && this.buffer) return compose(this.inflight.op, this.buffer);
    return this.inflight ? this.inflight.op : this.buffer;
  }
  /**
   * The text at the server's `version` as this client has it: `text` with the
   * pending edits undone (not `serverText`, so a check covers what the editor
   * was handed). Throws when the pending op does not fit the text (drift too).
   */
  textAtVersion() {
    const p = this.pendingOp();
    return p ? apply(this.text, invert(p, this.serverText)) : this.text;
  }
  /**
   * A `check` of the server's text at `version`: "skip" (not our version),
   * "agree", or `{ours}` (our hash: we drifted; report and reload).
   */
  check(version, hash) {
    if (version !== this.version) return "skip";
    let ours;
    try {
      ours = checksum(this.textAtVersion());
    } catch {
      return { ours: checksum(this.text) };
    }
    return ours === hash ? "agree" : { ours };
  }
}

export class VersionGap extends Error {
  constructor(expected, got) {
    super(`out-of-order message: expected version ${expected}, got ${got}`);
    this.expected = expected;
    this.got = got;
  }
}

// ---------------------------------------------------------------- session

const FATAL_CLOSE = new Set([1008, 1009, 4001]);
const REFUSED_OP = new Set(["bad_op", "too_large", "doc_too_large", "forbidden", "bad_message"]);
const RETRY_OP = new Set(["internal", "storage_unavailable", "rate_limited"]);
const HISTORY_KEEP = 256;
const AWARENESS_MAX_BYTES = 1024;

function randomId() {
  const c = globalThis.crypto;
  if (c && c.randomUUID) return "c-" + c.randomUUID().replace(/-/g, "").slice(0, 20);
  return "c-" + Math.random().toString(36).slice(2) + Date.now().toString(36);
}

/**
 * A live session on one document.
 *
 * Options: `url` (ws(s)://host), `document`, and `getTicket` (async, called before
 * every connection attempt: resolves to a single-use ticket from
 * `POST /api/auth/ws-ticket`, so no long-lived token goes in a URL; rejecting with
 * an error whose `fatal` is true stops reconnecting) or `token` (API clients), or
 * `userId` + `name` on an anonymous server; `clientId` (kept across reconnects; made up if absent);
 * `WebSocket` (a constructor, where there is no global one); `cursorThrottleMs` (50);
 * `backoff` {min, max} in ms; `random` (a 0..1 source, for tests);
 * `awarenessThrottleMs` (100); `pendingStore`: where pending edits are kept so a
 * reload (or a closed tab) does not lose them — `{claim(clientId) → Promise<{client,
 * record}>, save(record) → Promise, remove(document, client) → Promise}` (the page's
 * IndexedDB store, `offline-store.js`): `connect()` first claims a client id and the
 * record saved under it, restores its pending edits (a `ready` event before any
 * server contact), then saves the edits before each is sent and whenever they change
 * and removes the record once nothing is pending. The client id and seq are in the
 * record, so a resend after the reload is deduplicated by the server.
 *
 * Events (`on(name, fn)`): `ready` (first init), `reset` {content} (the text was
 * replaced wholesale: set the editor to it), `remote` {op} (apply this code-point op
 * to the editor; `user`, `client`: its author), `activity` {client, user} (that
 * client moved its caret, not carried by edits), `status` {state: "connecting"|"online"|"offline", pending,
 * saved}, `users` [..], `cursors` [..] (in local code points), `role`, `meta`
 * {title, tags, views, language, language_set} (replicated metadata), `awareness`
 * Map(client → {client, user, state, presence}) (the others' awareness; presence
 * is "active", "idle" or "away" and also in each `users` entry's `state`), `error`
 * {code, message}, `closed` {code, reason} (fatal: access revoked, document
 * deleted, replaced by another tab), `mismatch` {version, hash, ours} (our text
 * disagreed with the server's `check` at `version`: reported, and a reload with
 * the pending edits kept follows as a `reset`).
 */
export class TandemClient {
  constructor(opts) {
    this.opts = opts;
    this.clientId = opts.clientId || randomId();
    this.WS = opts.WebSocket || globalThis.WebSocket;
    if (!this.WS) throw new Error("no WebSocket: pass options.WebSocket");
    this.handlers = new Map();
    this.state = null; // OtState after the first init
    this.status = "connecting";
    this.pendingEdits = 0; // local edits not yet acknowledged
    this.users = new Map(); // client -> {id, name, color, client}
    this.cursors = new Map(); // client -> {user, anchor, head} in server coords at state.version
    this.futureCursors = new Map(); // client -> cursor message ahead of us
    this.history = []; // [{version, op}] the last server ops, for old cursors
    this.historyId = null; // init.history: the history our version belongs to
    this.role = null;
    this.user = null;
    this.attempt = 0;
    this.closedForGood = false;
    this.ws = null;
    this.myCursor = null; // {anchor, head} in local code points
    this.cursorTimer = null;
    this.lastCursorSent = 0;
    this.retryTimer = null;
    this.reconnectTimer = null;
    this.queuedHistory = []; // undo/redo waiting for our edits to commit
    this.awareness = new Map(); // client -> {client, user, state, presence} (others)
    this.myAwareness = {}; // our awareness state (sent on every init)
    this.myPresence = "active";
    this.awarenessTimer = null;
    this.lastAwarenessSent = 0;
    this.awarenessDirty = false;
    this.saving = Promise.resolve(); // pendingStore writes, in order
    this.claimed = false;
    this.resync = false; // a check disagreed: hold ops, then reload afresh
    this.sentSeq = 0; // the highest op seq sent on a socket
    this.checksumReloads = 0;
  }

  on(name, fn) {
    if (!this.handlers.has(name)) this.handlers.set(name, []);
    this.handlers.get(name).push(fn);
    return this;
  }
  emit(name, arg) {
    for (const fn of this.handlers.get(name) || []) fn(arg);
  }

  get text() {
    return this.state ? this.state.text : "";
  }
  get version() {
    return this.state ? this.state.version : 0;
  }
  get pending() {
    return this.state ? this.state.hasPending : false;
  }

  connect() {
    this.closedForGood = false;
    const store = this.opts.pendingStore;
    if (store && !this.claimed) {
      // Claim this tab's client id (and what it left pending) before any contact.
      this.claimed = true;
      Promise.resolve()
        .then(() => store.claim(this.clientId))
        .then((got) => got && this.#restore(got))
        .catch((e) => this.emit("error", { code: "store", message: String(e && e.message ? e.message : e) }))
        .finally(() => {
          if (!this.closedForGood) this.#open();
        });
      return this;
    }
    this.#open();
    return this;
  }

  /** Take over a claimed client id and the pending edits saved under it. */
  #restore({ client, record }) {
    if (client) this.clientId = client;
    if (!record || this.state) return;
    const s = new OtState(record.serverText, record.version, 0);
    s.nextSeq = record.nextSeq;
    s.inflight = record.inflight;
    s.buffer = record.buffer;
    let text = record.serverText;
    if (s.inflight) text = apply(text, s.inflight.op);
    if (s.buffer) text = apply(text, s.buffer);
    s.text = text;
    this.state = s;
    this.historyId = record.history || null;
    this.pendingEdits = Math.max(1, record.pendingEdits || 0);
    this.emit("ready", { content: text, version: s.version, role: null, user: null, restored: true });
    this.#setStatus("offline");
  }

  /** The pending edits as a record for `pendingStore` (null when none). */
  #record() {
    const s = this.state;
    if (!s || !s.hasPending) return null;
    return {
      document: this.opts.document,
      client: this.clientId,
      user: this.user ? this.user.id : null,
      history: this.historyId,
      version: s.version,
      serverText: s.serverText,
      nextSeq: s.nextSeq,
      inflight: s.inflight,
      buffer: s.buffer,
      pendingEdits: this.pendingEdits,
      savedAt: Date.now(),
    };
  }

  /**
   * Send `out` (an op message, or null) once the pending edits are stored: a
   * reload from then on still has it. Sent as it then is (a remote op may have
   * transformed it meanwhile), unless a reconnect took it over.
   */
  #storeThenSend(out) {
    if (!this.opts.pendingStore) {
      if (out) this.#send(out);
      return;
    }
    const seq = out && out.seq;
    this.#persist().then(() => {
      const f = this.state && this.state.inflight;
      if (out && f && f.seq === seq) this.#send(this.state.resend());
    });
  }

  /** Save (or, with nothing pending, remove) the pending edits; resolves when stored. */
  #persist() {
    const store = this.opts.pendingStore;
    if (!store) return Promise.resolve();
    const rec = this.#record();
    const doc = this.opts.document;
    const client = this.clientId;
    const write = () => (rec ? store.save(rec) : store.remove(doc, client));
    this.saving = this.saving.then(write).catch((e) => this.emit("error", { code: "store", message: String(e && e.message ? e.message : e) }));
    return this.saving;
  }

  /** Stop for good (no reconnect). */
  close() {
    this.closedForGood = true;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.retryTimer);
    clearTimeout(this.cursorTimer);
    clearTimeout(this.awarenessTimer);
    if (this.ws) this.ws.close(1000);
    this.#setStatus("offline");
  }

  /** Drop the connection as if the network failed (tests, "go offline" buttons). */
  disconnect() {
    if (this.ws) this.ws.close(4000, "client disconnect");
  }

  #url(ticket) {
    const o = this.opts;
    const q = new URLSearchParams();
    q.set("client", this.clientId);
    if (ticket) q.set("ticket", ticket);
    else if (o.token) q.set("token", o.token);
    if (o.userId) q.set("user_id", o.userId);
    if (o.name) q.set("name", o.name);
    // After a failed check: a fresh init (the full content), not a resume.
    if (this.state && !this.resync) {
      q.set("version", String(this.state.version));
      // The version means something only on the history it came from; the
      // server replays only if this is still the document's history.
      if (this.historyId) q.set("history", this.historyId);
    }
    const base = o.url.replace(/\/$/, "");
    return `${base}/ws/${encodeURIComponent(o.document)}?${q}`;
  }

  #open() {
    clearTimeout(this.reconnectTimer);
    this.#setStatus("connecting");
    if (!this.opts.getTicket) return this.#openSocket(null);
    // A fresh ticket for every attempt (each is good once, for seconds).
    const attempt = (this.openAttempt = (this.openAttempt || 0) + 1);
    Promise.resolve()
      .then(() => this.opts.getTicket(this.opts.document))
      .then(
        (ticket) => {
          if (attempt === this.openAttempt && !this.closedForGood) this.#openSocket(ticket);
        },
        (e) => {
          if (attempt !== this.openAttempt || this.closedForGood) return;
          if (e && e.fatal) {
            this.closedForGood = true;
            this.#setStatus("offline");
            this.emit("closed", { code: 1008, reason: e.message || "" });
          } else this.#scheduleReconnect();
        },
      );
  }

  #openSocket(ticket) {
    let ws;
    try {
      ws = new this.WS(this.#url(ticket));
    } catch (e) {
      this.#scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      let msg;
      try {
        msg = JSON.parse(typeof ev.data === "string" ? ev.data : String(ev.data));
      } catch {
        return;
      }
      try {
        this.#handle(msg);
        this.#resyncIfDue();
      } catch (e) {
        if (e instanceof VersionGap) this.#reconnectNow();
        else throw e;
      }
    };
    const lost = (code, reason) => {
      clearTimeout(handshake);
      if (this.ws !== ws) return;
      this.ws = null;
      this.live = false;
      clearTimeout(this.retryTimer);
      if (FATAL_CLOSE.has(code)) {
        this.closedForGood = true;
        this.#setStatus("offline");
        this.emit("closed", { code, reason: reason || this.lastError || "" });
        return;
      }
      if (!this.closedForGood) this.#scheduleReconnect();
    };
    // A handshake that hangs is given up and retried.
    const handshake = setTimeout(() => {
      if (ws.readyState !== 1) {
        lost(1006, "handshake timed out");
        try {
          ws.close();
        } catch {}
      }
    }, this.opts.connectTimeoutMs ?? 10000);
    ws.onopen = () => clearTimeout(handshake);
    ws.onclose = (ev) => lost(ev.code, ev.reason);
    // Some WebSocket implementations (Node 20's) report a refused connection
    // with an error and no close event.
    ws.onerror = () => {
      if (ws.readyState !== 1) lost(1006, "");
    };
  }

  #reconnectNow() {
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      this.live = false;
      ws.close(4000, "resync");
    }
    this.#scheduleReconnect(true);
  }

  #scheduleReconnect(immediate = false) {
    this.#setStatus("offline");
    if (this.closedForGood) return;
    const { min = 250, max = 10000 } = this.opts.backoff || {};
    const rnd = this.opts.random || Math.random;
    const ceiling = Math.min(max, min * 2 ** this.attempt);
    const delay = immediate ? 0 : ceiling / 2 + (rnd() * ceiling) / 2;
    this.attempt++;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => this.#open(), delay);
  }

  #send(msg) {
    // Held until the reload, then sent under a new seq.
    if (msg.type === "op" && this.resync) return false;
    if (this.ws && this.live && this.ws.readyState === 1) {
      if (msg.type === "op") this.sentSeq = Math.max(this.sentSeq, msg.seq);
      this.ws.send(JSON.stringify(msg));
      return true;
    }
    return false;
  }

  #setStatus(state) {
    this.status = state;
    this.emit("status", { state, pending: this.pendingEdits, saved: !this.pending });
  }

  // ---- incoming

  #handle(msg) {
    switch (msg.type) {
      case "init":
        return this.#onInit(msg);
      case "ack": {
        const { acked, send } = this.state.onAck(msg.seq, msg.version);
        if (acked) this.#committed(msg.version, acked);
        if (send) this.#send(send);
        this.#afterAck(acked);
        return;
      }
      case "op": {
        const r = this.state.onRemote(msg.version, msg.op, msg.client, msg.seq, this.clientId);
        if (r.apply) {
          this.#committed(msg.version, msg.op);
          this.emit("remote", { op: r.apply, user: msg.user, client: msg.client });
          this.#emitCursors();
        } else if (r.acked) {
          this.#committed(msg.version, r.acked);
          if (r.send) this.#send(r.send);
          this.#afterAck(r.acked);
        }
        return;
      }
      case "cursor":
        return this.#onCursor(msg);
      case "user_joined":
        this.users.set(msg.client, { ...msg.user, client: msg.client });
        this.emit("users", this.userList());
        return;
      case "user_left":
        this.users.delete(msg.client);
        this.cursors.delete(msg.client);
        this.emit("users", this.userList());
        this.#emitCursors();
        if (this.awareness.delete(msg.client)) this.emit("awareness", this.awareness);
        return;
      case "awareness":
        return this.#onAwareness(msg);
      case "meta": {
        // Every field the server sends (title, tags, views, language, …).
        const { type: _type, ...meta } = msg;
        this.meta = meta;
        this.emit("meta", meta);
        return;
      }
      case "role":
        this.role = msg.role;
        this.emit("role", msg.role);
        return;
      case "error":
        return this.#onError(msg);
      case "check":
        return this.#onCheck(msg);
      default:
        return;
    }
  }

  /** A `check`: on disagreement, report it (`mismatch`) and reload. */
  #onCheck(msg) {
    if (!this.state || this.resync) return;
    const r = this.state.check(msg.version, msg.hash);
    if (r === "skip" || r === "agree") return;
    this.#send({ type: "mismatch", version: msg.version, hash: r.ours });
    this.resync = true;
    this.emit("mismatch", { version: msg.version, hash: msg.hash, ours: r.ours });
  }

  /**
   * Reload once no op we sent is unanswered: one on the wire might yet be
   * committed after the fresh init names our last seq, and re-sent as a new
   * edit it would land twice. The fresh init rebases the pending edits
   * (`#rebaseOnto`), as after any full init.
   */
  #resyncIfDue() {
    if (!this.resync || !this.ws) return;
    const f = this.state && this.state.inflight;
    if (f && f.seq <= this.sentSeq) return;
    this.checksumReloads++;
    this.#reconnectNow();
  }

  #onInit(msg) {
    this.live = true;
    this.resync = false;
    this.attempt = 0;
    this.user = msg.user;
    // The server scopes client ids to their user: ours is the one it names.
    if (msg.client) this.clientId = msg.client;
    this.role = msg.role;
    this.emit("role", msg.role);
    if (msg.meta) {
      this.meta = msg.meta;
      this.emit("meta", msg.meta);
    }
    if (msg.history) this.historyId = msg.history;
    this.users = new Map(msg.users.map((u) => [u.client, u]));
    this.cursors.clear();
    this.futureCursors.clear();
    const first = this.state === null;
    if (msg.resumed) {
      // The ops after our version follow; then re-send what is in flight.
      const again = this.state.resend();
      if (again) this.#send(again);
    } else if (first) {
      this.state = new OtState(msg.content, msg.version, msg.seq || 0);
      this.history = [];
      this.emit("ready", { content: msg.content, version: msg.version, role: msg.role, user: msg.user });
    } else {
      this.#rebaseOnto(msg);
    }
    for (const c of msg.cursors || []) this.#onCursor({ type: "cursor", ...c });
    this.awareness = new Map();
    for (const a of msg.awareness || []) if (a.client !== this.clientId) this.awareness.set(a.client, a);
    this.emit("awareness", this.awareness);
    // The server forgets a connection's awareness when it goes: tell it again.
    if (Object.keys(this.myAwareness).length || this.myPresence !== "active") {
      this.awarenessDirty = true;
      this.lastAwarenessSent = 0;
      this.#flushAwareness();
    }
    this.emit("users", this.userList());
    this.#setStatus("online");
    this.#emitCursors();
    this.#flushCursor();
    this.#flushHistory();
  }

  /**
   * A full init after we had state (the server could not replay the ops we
   * missed). Our unacknowledged edits are kept: the others' changes since our
   * version are taken as one diff op, and our pending op is transformed past it.
   */
  #rebaseOnto(msg) {
    const old = this.state;
    let base = old.serverText;
    let pending = old.pendingOp();
    if (old.inflight && (msg.seq || 0) >= old.inflight.seq) {
      // Our in-flight op was committed: it is in msg.content already.
      base = apply(base, old.inflight.op);
      pending = old.buffer;
    }
    const theirs = diff(base, msg.content);
    // Numbered past every seq already sent: the server's seq may be behind
    // what it committed (it lost records it learns again later), and a
    // reused seq would be taken for the other edit.
    const next = new OtState(msg.content, msg.version, Math.max(msg.seq || 0, old.nextSeq - 1));
    this.history = [];
    let local = msg.content;
    if (pending && !isNoop(pending)) {
      const [mine] = transform(pending, theirs);
      local = apply(msg.content, mine);
      this.state = next;
      this.pendingEdits = Math.max(1, this.pendingEdits);
      this.emit("reset", { content: local });
      this.#storeThenSend(next.localEdit(mine));
      return;
    }
    this.state = next;
    this.pendingEdits = 0;
    this.#persist();
    this.emit("reset", { content: local });
  }

  #committed(version, op) {
    this.history.push({ version, op });
    if (this.history.length > HISTORY_KEEP) this.history.shift();
    for (const [client, c] of this.cursors) {
      this.cursors.set(client, { ...c, anchor: transformIndex(op, c.anchor), head: transformIndex(op, c.head) });
    }
    for (const [client, c] of this.futureCursors) {
      if (c.version === version) {
        this.futureCursors.delete(client);
        this.cursors.set(client, { user: c.user, anchor: c.anchor, head: c.head });
      }
    }
  }

  #afterAck(acked) {
    if (!acked) return;
    if (!this.pending) this.pendingEdits = 0;
    this.#persist();
    this.#setStatus("online");
    this.#emitCursors();
    this.#flushCursor();
    this.#flushHistory();
  }

  #onCursor(msg) {
    if (msg.client === this.clientId) return;
    if (msg.anchor === null || msg.anchor === undefined) {
      this.cursors.delete(msg.client);
      this.futureCursors.delete(msg.client);
      this.#emitCursors();
      return;
    }
    const v = this.state.version;
    if (msg.version > v) {
      this.futureCursors.set(msg.client, msg);
      return;
    }
    let { anchor, head } = msg;
    if (msg.version < v) {
      const later = this.history.filter((h) => h.version > msg.version);
      if (later.length !== v - msg.version) return; // too old to place
      for (const h of later) {
        anchor = transformIndex(h.op, anchor);
        head = transformIndex(h.op, head);
      }
    }
    const was = this.cursors.get(msg.client);
    this.cursors.set(msg.client, { user: msg.user, anchor, head });
    // A caret that moved (not one re-sent where edits carried it).
    if (!was || was.anchor !== anchor || was.head !== head) this.emit("activity", { client: msg.client, user: msg.user });
    this.#emitCursors();
  }

  #onAwareness(msg) {
    if (msg.client === this.clientId) return;
    this.awareness.set(msg.client, { client: msg.client, user: msg.user, state: msg.state, presence: msg.presence });
    const u = this.users.get(msg.client);
    if (u && u.state !== msg.presence) {
      this.users.set(msg.client, { ...u, state: msg.presence });
      this.emit("users", this.userList());
    }
    this.emit("awareness", this.awareness);
  }

  #onError(msg) {
    this.lastError = msg.message;
    this.emit("error", { code: msg.code, message: msg.message, seq: msg.seq });
    const inflight = this.state && this.state.inflight;
    if (msg.seq === undefined || msg.seq === null || !inflight || msg.seq !== inflight.seq) return;
    if (RETRY_OP.has(msg.code)) {
      // Keep it and send the same seq again later.
      clearTimeout(this.retryTimer);
      this.retryTimer = setTimeout(() => {
        const again = this.state.resend();
        if (again) this.#send(again);
      }, 300 + Math.random() * 700);
    } else if (msg.code === "version_out_of_range") {
      this.#reconnectNow();
    } else if (REFUSED_OP.has(msg.code)) {
      // The server will never take it: drop our pending edits and reload.
      this.state = null;
      this.pendingEdits = 0;
      this.#persist();
      this.#reconnectNow();
    }
  }

  // ---- outgoing

  /** Apply a local edit (a code-point op on `text`) and send it when its turn comes. */
  edit(op) {
    if (!this.state) throw new Error("not ready");
    if (isNoop(op)) return;
    const out = this.state.localEdit(normalize(op));
    this.pendingEdits++;
    if (this.myCursor) {
      this.myCursor = { anchor: transformIndex(op, this.myCursor.anchor), head: transformIndex(op, this.myCursor.head) };
    }
    this.#storeThenSend(out);
    this.#setStatus(this.live ? "online" : "offline");
    this.#emitCursors();
  }

  /**
   * Our caret/selection in local code points. Sent throttled, and only when no
   * edit is pending (the server reads cursors at a server version).
   */
  setCursor(anchor, head = anchor) {
    this.myCursor = { anchor, head };
    this.#flushCursor();
  }

  #flushCursor() {
    if (!this.myCursor || !this.state || this.pending || !this.live) return;
    if (this.role === "viewer") return;
    if (!this.#due("cursorTimer", this.lastCursorSent, this.opts.cursorThrottleMs ?? 50, () => this.#flushCursor())) return;
    const c = this.myCursor;
    if (this.sentCursor && this.sentCursor.anchor === c.anchor && this.sentCursor.head === c.head && this.sentCursor.version === this.state.version) return;
    const msg = { type: "cursor", version: this.state.version, anchor: c.anchor, head: c.head };
    if (this.#send(msg)) {
      this.lastCursorSent = Date.now();
      this.sentCursor = msg;
    }
  }

  /**
   * Throttling: whether `every` ms have passed since `last` (then send now);
   * else `flush` is scheduled for then (once: the timer is kept in `this[timer]`).
   */
  #due(timer, last, every, flush) {
    const wait = every - (Date.now() - last);
    if (wait <= 0) return true;
    if (!this[timer]) {
      this[timer] = setTimeout(() => {
        this[timer] = null;
        flush();
      }, wait);
    }
    return false;
  }

  /**
   * Our awareness state: a JSON object of at most 1 KB (serialised), 4 levels and
   * 64 keys and items (the server refuses more with `bad_message`). Replaces the
   * previous one; sent throttled (`awarenessThrottleMs`), the latest wins, and
   * again after every reconnect.
   */
  setAwareness(state) {
    if (state === null || typeof state !== "object" || Array.isArray(state)) throw new TypeError("awareness state must be an object");
    const bytes = new TextEncoder().encode(JSON.stringify(state)).length;
    if (bytes > AWARENESS_MAX_BYTES) throw new RangeError(`awareness state is ${bytes} bytes; at most ${AWARENESS_MAX_BYTES}`);
    this.myAwareness = state;
    this.awarenessDirty = true;
    this.#flushAwareness();
  }

  /** Our presence state: "active", "idle" or "away" (shown to the others). */
  setPresence(presence) {
    if (!["active", "idle", "away"].includes(presence)) throw new TypeError(`unknown presence state ${presence}`);
    if (presence === this.myPresence) return;
    this.myPresence = presence;
    this.awarenessDirty = true;
    this.#flushAwareness();
  }

  #flushAwareness() {
    if (!this.awarenessDirty || !this.live) return;
    if (!this.#due("awarenessTimer", this.lastAwarenessSent, this.opts.awarenessThrottleMs ?? 100, () => this.#flushAwareness())) return;
    if (this.#send({ type: "awareness", state: this.myAwareness, presence: this.myPresence })) {
      this.lastAwarenessSent = Date.now();
      this.awarenessDirty = false;
    }
  }

  /**
   * Ask the server to undo / redo this user's last step (server-side: it is
   * transformed past everyone's later edits and arrives as a remote op). Sent
   * once our own pending edits are committed, so it undoes the latest of them.
   */
  undo() {
    this.queuedHistory.push("undo");
    this.#flushHistory();
  }
  redo() {
    this.queuedHistory.push("redo");
    this.#flushHistory();
  }

  #flushHistory() {
    if (!this.live || this.pending) return;
    while (this.queuedHistory.length) this.#send({ type: this.queuedHistory.shift() });
  }

  // ---- views

  userList() {
    return [...this.users.values()];
  }

  /** Remote cursors in local code points (past our pending edits). */
  cursorList() {
    const pend = this.state ? this.state.pendingOp() : null;
    const out = [];
    for (const [client, c] of this.cursors) {
      const u = this.users.get(client);
      let { anchor, head } = c;
      if (pend) {
        anchor = transformIndex(pend, anchor);
        head = transformIndex(pend, head);
      }
      out.push({ client, user: c.user, name: u ? u.name : c.user, color: u ? u.color : "#888", anchor, head });
    }
    return out;
  }

  #emitCursors() {
    this.emit("cursors", this.cursorList());
  }
}
