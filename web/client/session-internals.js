// session-internals.js — what `TandemClient` (tandem-client.js) does inside,
// as functions of the session (the client object, whose fields they read and
// write): sending and the throttled flushes of cursor, awareness and
// undo/redo, the status event, the pending edits kept in a `pendingStore`, the
// socket's URL, and what each server message does to the session's state.
// The connection's life (open, reconnect, dispatch) stays in the class. Not
// exported by the package.

import { apply, diff, isNoop, transform, transformIndex } from "./ot.js";
import { OtState } from "./ot-state.js";

const HISTORY_KEEP = 256;

// ---------------------------------------------------------------- sending

export function send(session, msg) {
  // Held until the reload, then sent under a new seq.
  if (msg.type === "op" && session.resync) return false;
  if (session.ws && session.live && session.ws.readyState === 1) {
    if (msg.type === "op") session.sentSeq = Math.max(session.sentSeq, msg.seq);
    session.ws.send(JSON.stringify(msg));
    return true;
  }
  return false;
}

export function setStatus(session, state) {
  session.status = state;
  session.emit("status", { state, pending: session.pendingEdits, saved: !session.pending });
}

export function emitCursors(session) {
  session.emit("cursors", session.cursorList());
}

export function flushCursor(session) {
  if (!session.myCursor || !session.state || session.pending || !session.live) return;
  if (session.role === "viewer") return;
  if (!due(session, "cursorTimer", session.lastCursorSent, session.opts.cursorThrottleMs ?? 50, () => flushCursor(session))) return;
  const c = session.myCursor;
  if (session.sentCursor && session.sentCursor.anchor === c.anchor && session.sentCursor.head === c.head && session.sentCursor.version === session.state.version) return;
  const msg = { type: "cursor", version: session.state.version, anchor: c.anchor, head: c.head };
  if (send(session, msg)) {
    session.lastCursorSent = Date.now();
    session.sentCursor = msg;
  }
}

/**
 * Throttling: whether `every` ms have passed since `last` (then send now);
 * else `flush` is scheduled for then (once: the timer is kept in `session[timer]`).
 */
function due(session, timer, last, every, flush) {
  const wait = every - (Date.now() - last);
  if (wait <= 0) return true;
  if (!session[timer]) {
    session[timer] = setTimeout(() => {
      session[timer] = null;
      flush();
    }, wait);
  }
  return false;
}

export function flushAwareness(session) {
  if (!session.awarenessDirty || !session.live) return;
  if (!due(session, "awarenessTimer", session.lastAwarenessSent, session.opts.awarenessThrottleMs ?? 100, () => flushAwareness(session))) return;
  if (send(session, { type: "awareness", state: session.myAwareness, presence: session.myPresence })) {
    session.lastAwarenessSent = Date.now();
    session.awarenessDirty = false;
  }
}

export function flushHistory(session) {
  if (!session.live || session.pending) return;
  while (session.queuedHistory.length) send(session, { type: session.queuedHistory.shift() });
}

// ---------------------------------------------------------------- pending edits kept, the socket's URL

/** Take over a claimed client id and the pending edits saved under it. */
export function restore(session, { client, record }) {
  if (client) session.clientId = client;
  if (!record || session.state) return;
  const s = new OtState(record.serverText, record.version, 0);
  s.nextSeq = record.nextSeq;
  s.inflight = record.inflight;
  s.buffer = record.buffer;
  let text = record.serverText;
  if (s.inflight) text = apply(text, s.inflight.op);
  if (s.buffer) text = apply(text, s.buffer);
  s.text = text;
  session.state = s;
  session.historyId = record.history || null;
  session.pendingEdits = Math.max(1, record.pendingEdits || 0);
  session.emit("ready", { content: text, version: s.version, role: null, user: null, restored: true });
  setStatus(session, "offline");
}

/** The pending edits as a record for `pendingStore` (null when none). */
function record(session) {
  const s = session.state;
  if (!s || !s.hasPending) return null;
  return {
    document: session.opts.document,
    client: session.clientId,
    user: session.user ? session.user.id : null,
    history: session.historyId,
    version: s.version,
    serverText: s.serverText,
    nextSeq: s.nextSeq,
    inflight: s.inflight,
    buffer: s.buffer,
    pendingEdits: session.pendingEdits,
    savedAt: Date.now(),
  };
}

/**
 * Send `out` (an op message, or null) once the pending edits are stored: a
 * reload from then on still has it. Sent as it then is (a remote op may have
 * transformed it meanwhile), unless a reconnect took it over.
 */
export function storeThenSend(session, out) {
  if (!session.opts.pendingStore) {
    if (out) send(session, out);
    return;
  }
  const seq = out && out.seq;
  persist(session).then(() => {
    const f = session.state && session.state.inflight;
    if (out && f && f.seq === seq) send(session, session.state.resend());
  });
}

/** Save (or, with nothing pending, remove) the pending edits; resolves when stored. */
export function persist(session) {
  const store = session.opts.pendingStore;
  if (!store) return Promise.resolve();
  const rec = record(session);
  const doc = session.opts.document;
  const client = session.clientId;
  const write = () => (rec ? store.save(rec) : store.remove(doc, client));
  session.saving = session.saving.then(write).catch((e) => session.emit("error", { code: "store", message: String(e && e.message ? e.message : e) }));
  return session.saving;
}

export function socketUrl(session, ticket) {
  const o = session.opts;
  const q = new URLSearchParams();
  q.set("client", session.clientId);
  if (ticket) q.set("ticket", ticket);
  else if (o.token) q.set("token", o.token);
  if (o.userId) q.set("user_id", o.userId);
  if (o.name) q.set("name", o.name);
  // After a failed check: a fresh init (the full content), not a resume.
  if (session.state && !session.resync) {
    q.set("version", String(session.state.version));
    // The version means something only on the history it came from; the
    // server replays only if this is still the document's history.
    if (session.historyId) q.set("history", session.historyId);
  }
  const base = o.url.replace(/\/$/, "");
  return `${base}/ws/${encodeURIComponent(o.document)}?${q}`;
}

// ---------------------------------------------------------------- incoming (what server messages do to the session)

/** A `check`: on disagreement, report it (`mismatch`) and reload. */
export function onCheck(session, msg) {
  if (!session.state || session.resync) return;
  const r = session.state.check(msg.version, msg.hash);
  if (r === "skip" || r === "agree") return;
  send(session, { type: "mismatch", version: msg.version, hash: r.ours });
  session.resync = true;
  session.emit("mismatch", { version: msg.version, hash: msg.hash, ours: r.ours });
}

export function onInit(session, msg) {
  session.live = true;
  session.resync = false;
  session.attempt = 0;
  session.user = msg.user;
  // The server scopes client ids to their user: ours is the one it names.
  if (msg.client) session.clientId = msg.client;
  session.role = msg.role;
  session.emit("role", msg.role);
  if (msg.meta) {
    session.meta = msg.meta;
    session.emit("meta", msg.meta);
  }
  if (msg.history) session.historyId = msg.history;
  session.users = new Map(msg.users.map((u) => [u.client, u]));
  session.cursors.clear();
  session.futureCursors.clear();
  const first = session.state === null;
  if (msg.resumed) {
    // The ops after our version follow; then re-send what is in flight.
    const again = session.state.resend();
    if (again) send(session, again);
  } else if (first) {
    session.state = new OtState(msg.content, msg.version, msg.seq || 0);
    session.history = [];
    session.emit("ready", { content: msg.content, version: msg.version, role: msg.role, user: msg.user });
  } else {
    rebaseOnto(session, msg);
  }
  for (const c of msg.cursors || []) onCursor(session, { type: "cursor", ...c });
  session.awareness = new Map();
  for (const a of msg.awareness || []) if (a.client !== session.clientId) session.awareness.set(a.client, a);
  session.emit("awareness", session.awareness);
  // The server forgets a connection's awareness when it goes: tell it again.
  if (Object.keys(session.myAwareness).length || session.myPresence !== "active") {
    session.awarenessDirty = true;
    session.lastAwarenessSent = 0;
    flushAwareness(session);
  }
  session.emit("users", session.userList());
  setStatus(session, "online");
  emitCursors(session);
  flushCursor(session);
  flushHistory(session);
}

/**
 * A full init after we had state (the server could not replay the ops we
 * missed). Our unacknowledged edits are kept: the others' changes since our
 * version are taken as one diff op, and our pending op is transformed past it.
 */
function rebaseOnto(session, msg) {
  const old = session.state;
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
  session.history = [];
  let local = msg.content;
  if (pending && !isNoop(pending)) {
    const [mine] = transform(pending, theirs);
    local = apply(msg.content, mine);
    session.state = next;
    session.pendingEdits = Math.max(1, session.pendingEdits);
    session.emit("reset", { content: local });
    storeThenSend(session, next.localEdit(mine));
    return;
  }
  session.state = next;
  session.pendingEdits = 0;
  persist(session);
  session.emit("reset", { content: local });
}

export function committed(session, version, op) {
  session.history.push({ version, op });
  if (session.history.length > HISTORY_KEEP) session.history.shift();
  for (const [client, c] of session.cursors) {
    session.cursors.set(client, { ...c, anchor: transformIndex(op, c.anchor), head: transformIndex(op, c.head) });
  }
  for (const [client, c] of session.futureCursors) {
    if (c.version === version) {
      session.futureCursors.delete(client);
      session.cursors.set(client, { user: c.user, anchor: c.anchor, head: c.head });
    }
  }
}

export function afterAck(session, acked) {
  if (!acked) return;
  if (!session.pending) session.pendingEdits = 0;
  persist(session);
  setStatus(session, "online");
  emitCursors(session);
  flushCursor(session);
  flushHistory(session);
}

export function onCursor(session, msg) {
  if (msg.client === session.clientId) return;
  if (msg.anchor === null || msg.anchor === undefined) {
    session.cursors.delete(msg.client);
    session.futureCursors.delete(msg.client);
    emitCursors(session);
    return;
  }
  const v = session.state.version;
  if (msg.version > v) {
    session.futureCursors.set(msg.client, msg);
    return;
  }
  let { anchor, head } = msg;
  if (msg.version < v) {
    const later = session.history.filter((h) => h.version > msg.version);
    if (later.length !== v - msg.version) return; // too old to place
    for (const h of later) {
      anchor = transformIndex(h.op, anchor);
      head = transformIndex(h.op, head);
    }
  }
  const was = session.cursors.get(msg.client);
  session.cursors.set(msg.client, { user: msg.user, anchor, head });
  // A caret that moved (not one re-sent where edits carried it).
  if (!was || was.anchor !== anchor || was.head !== head) session.emit("activity", { client: msg.client, user: msg.user });
  emitCursors(session);
}

export function onAwareness(session, msg) {
  if (msg.client === session.clientId) return;
  session.awareness.set(msg.client, { client: msg.client, user: msg.user, state: msg.state, presence: msg.presence });
  const u = session.users.get(msg.client);
  if (u && u.state !== msg.presence) {
    session.users.set(msg.client, { ...u, state: msg.presence });
    session.emit("users", session.userList());
  }
  session.emit("awareness", session.awareness);
}
