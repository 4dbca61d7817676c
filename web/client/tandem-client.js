// tandem-client.js — Tandem's protocol-v1 client as a dependency-free ES module
// (the package's entry point; what it exports is the package's API).
//
// Owns: `TandemClient`: a WebSocket session with resume, jittered reconnect,
// presence, remote cursors, awareness (each client's small JSON state and its
// active/idle/away presence state), content checks (`checksum`: a client whose
// text disagrees with the server's `check` reports it and reloads, keeping its
// pending edits), and optionally pending edits kept in a
// store the caller passes in (`pendingStore`), so they survive a reload. Editor-agnostic: an editor feeds local edits in as
// code-point ops and applies the ops it is handed. Runs in browsers and in Node
// (pass `WebSocket` in options where there is no global one).
//
// Re-exports the rest of the package: `ot.js` (the text-operation algebra over
// Unicode code points, the UTF-16 conversions, `checksum`) and `ot-state.js`
// (`OtState`, the one-op-in-flight client state machine, and `VersionGap`). The
// session's internals are in `session-internals.js`.
//
// Positions count code points; JavaScript strings count UTF-16 units, so the
// editor edge converts with `cpToUtf16` / `utf16ToCp`.

import { isNoop, normalize, transformIndex } from "./ot.js";
import { VersionGap } from "./ot-state.js";
import {
  afterAck,
  committed,
  emitCursors,
  flushAwareness,
  flushCursor,
  flushHistory,
  onAwareness,
  onCheck,
  onCursor,
  onInit,
  persist,
  restore,
  send,
  setStatus,
  socketUrl,
  storeThenSend,
} from "./session-internals.js";

export * from "./ot.js";
export * from "./ot-state.js";

const FATAL_CLOSE = new Set([1008, 1009, 4001]);
const REFUSED_OP = new Set(["bad_op", "too_large", "doc_too_large", "forbidden", "bad_message"]);
const RETRY_OP = new Set(["internal", "storage_unavailable", "rate_limited"]);
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
        .then((got) => got && restore(this, got))
        .catch((e) => this.emit("error", { code: "store", message: String(e && e.message ? e.message : e) }))
        .finally(() => {
          if (!this.closedForGood) this.#open();
        });
      return this;
    }
    this.#open();
    return this;
  }

  /** Stop for good (no reconnect). */
  close() {
    this.closedForGood = true;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.retryTimer);
    clearTimeout(this.cursorTimer);
    clearTimeout(this.awarenessTimer);
    if (this.ws) this.ws.close(1000);
    setStatus(this, "offline");
  }

  /** Drop the connection as if the network failed (tests, "go offline" buttons). */
  disconnect() {
    if (this.ws) this.ws.close(4000, "client disconnect");
  }

  #open() {
    clearTimeout(this.reconnectTimer);
    setStatus(this, "connecting");
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
            setStatus(this, "offline");
            this.emit("closed", { code: 1008, reason: e.message || "" });
          } else this.#scheduleReconnect();
        },
      );
  }

  #openSocket(ticket) {
    let ws;
    try {
      ws = new this.WS(socketUrl(this, ticket));
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
        setStatus(this, "offline");
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
    setStatus(this, "offline");
    if (this.closedForGood) return;
    const { min = 250, max = 10000 } = this.opts.backoff || {};
    const rnd = this.opts.random || Math.random;
    const ceiling = Math.min(max, min * 2 ** this.attempt);
    const delay = immediate ? 0 : ceiling / 2 + (rnd() * ceiling) / 2;
    this.attempt++;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => this.#open(), delay);
  }

  // ---- incoming

  #handle(msg) {
    switch (msg.type) {
      case "init":
        return onInit(this, msg);
      case "ack": {
        const { acked, send: next } = this.state.onAck(msg.seq, msg.version);
        if (acked) committed(this, msg.version, acked);
        if (next) send(this, next);
        afterAck(this, acked);
        return;
      }
      case "op": {
        const r = this.state.onRemote(msg.version, msg.op, msg.client, msg.seq, this.clientId);
        if (r.apply) {
          committed(this, msg.version, msg.op);
          this.emit("remote", { op: r.apply, user: msg.user, client: msg.client });
          emitCursors(this);
        } else if (r.acked) {
          committed(this, msg.version, r.acked);
          if (r.send) send(this, r.send);
          afterAck(this, r.acked);
        }
        return;
      }
      case "cursor":
        return onCursor(this, msg);
      case "user_joined":
        this.users.set(msg.client, { ...msg.user, client: msg.client });
        this.emit("users", this.userList());
        return;
      case "user_left":
        this.users.delete(msg.client);
        this.cursors.delete(msg.client);
        this.emit("users", this.userList());
        emitCursors(this);
        if (this.awareness.delete(msg.client)) this.emit("awareness", this.awareness);
        return;
      case "awareness":
        return onAwareness(this, msg);
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
        return onCheck(this, msg);
      default:
        return;
    }
  }

  /**
   * Reload once no op we sent is unanswered: one on the wire might yet be
   * committed after the fresh init names our last seq, and re-sent as a new
   * edit it would land twice. The fresh init rebases the pending edits
   * (`rebaseOnto`), as after any full init.
   */
  #resyncIfDue() {
    if (!this.resync || !this.ws) return;
    const f = this.state && this.state.inflight;
    if (f && f.seq <= this.sentSeq) return;
    this.checksumReloads++;
    this.#reconnectNow();
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
        if (again) send(this, again);
      }, 300 + Math.random() * 700);
    } else if (msg.code === "version_out_of_range") {
      this.#reconnectNow();
    } else if (REFUSED_OP.has(msg.code)) {
      // The server will never take it: drop our pending edits and reload.
      this.state = null;
      this.pendingEdits = 0;
      persist(this);
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
    storeThenSend(this, out);
    setStatus(this, this.live ? "online" : "offline");
    emitCursors(this);
  }

  /**
   * Our caret/selection in local code points. Sent throttled, and only when no
   * edit is pending (the server reads cursors at a server version).
   */
  setCursor(anchor, head = anchor) {
    this.myCursor = { anchor, head };
    flushCursor(this);
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
    flushAwareness(this);
  }

  /** Our presence state: "active", "idle" or "away" (shown to the others). */
  setPresence(presence) {
    if (!["active", "idle", "away"].includes(presence)) throw new TypeError(`unknown presence state ${presence}`);
    if (presence === this.myPresence) return;
    this.myPresence = presence;
    this.awarenessDirty = true;
    flushAwareness(this);
  }

  /**
   * Ask the server to undo / redo this user's last step (server-side: it is
   * transformed past everyone's later edits and arrives as a remote op). Sent
   * once our own pending edits are committed, so it undoes the latest of them.
   */
  undo() {
    this.queuedHistory.push("undo");
    flushHistory(this);
  }
  redo() {
    this.queuedHistory.push("redo");
    flushHistory(this);
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
  }}
