// Types of tandem-client.js and of ot.js and ot-state.js, which it re-exports
// (hand-written; web/test/types.test.mjs checks that every export of the
// module is declared here, and type-checks a usage file against these
// declarations with `tsc --noEmit`).
//
// Positions count Unicode code points; JavaScript strings count UTF-16 units:
// editors convert at their edge with `cpToUtf16` / `utf16ToCp` or, for whole
// change sets, `fromUtf16Changes` / `toUtf16Changes`.

// ---------------------------------------------------------------- operations

/**
 * One component of an operation: a positive number retains that many code
 * points, a negative number deletes that many, a string inserts itself.
 */
export type Component = number | string;
/** A text operation spanning the whole document it applies to. */
export type Op = Component[];

/** Number of code points in `s`. */
export function cpLength(s: string): number;
/** UTF-16 offset in `s` of code point index `cp` (clamped to the end), counting from UTF-16 offset `from16`. */
export function cpToUtf16(s: string, cp: number, from16?: number): number;
/** Code point index of UTF-16 offset `u` in `s` (an offset inside a pair counts as after it). */
export function utf16ToCp(s: string, u: number): number;

/** Builds normalised ops: adjacent components merged, inserts before deletes. */
export class OpBuilder {
  ops: Op;
  constructor();
  retain(n: number): this;
  insert(s: string): this;
  delete(n: number): this;
  build(): Op;
}

/** Input length of `op` (code points it spans in the document it applies to). */
export function baseLen(op: Op): number;
/** Output length of `op`. */
export function targetLen(op: Op): number;
/** True when `op` changes nothing. */
export function isNoop(op: Op): boolean;
/** Re-normalise any valid op (e.g. one received from the server). */
export function normalize(op: Op): Op;
/** Apply `op` to `doc`; throws if the lengths disagree. */
export function apply(doc: string, op: Op): string;
/** One op with the effect of `a` then `b`. */
export function compose(a: Op, b: Op): Op;
/** `[a', b']` with `compose(b, a') == compose(a, b')`; on a tie `a`'s insert goes first. */
export function transform(a: Op, b: Op): [Op, Op];
/** Where a caret at `index` lands after `op`; an insert at the caret pushes it right. */
export function transformIndex(op: Op, index: number): number;
/** The op undoing `op`, given the document `doc` it applied to. */
export function invert(op: Op, doc: string): Op;
/** The single-splice op turning `a` into `b` (common prefix and suffix kept). */
export function diff(a: string, b: string): Op;
/** An op replacing code points `[from, to)` of a `len`-long document with `text`. */
export function splice(len: number, from: number, to: number, text: string): Op;

// ---------------------------------------------------------------- UTF-16 editors

/** A change in UTF-16 offsets of the text it applies to. */
export interface Utf16Change {
  from: number;
  to: number;
  insert: string;
}
/** An editor's changes to `old` (ascending, not overlapping) as one code-point op on `old`. */
export function fromUtf16Changes(old: string, changes: Iterable<Utf16Change>): Op;
/** A code-point op on `doc` as UTF-16 changes in `doc`'s coordinates, ascending, to apply as one batch. */
export function toUtf16Changes(doc: string, op: Op): Utf16Change[];

// ---------------------------------------------------------------- client state

/** The `op` message a client sends. */
export interface OpMessage {
  type: "op";
  version: number;
  seq: number;
  op: Op;
}

/** FNV-1a (32 bits) over the UTF-8 bytes of `text`, as 8 lowercase hex digits: the `check` message's hash. */
export function checksum(text: string): string;

/** The client side of OT with at most one op in flight, as a pure state machine. */
export class OtState {
  /** The text with this client's pending edits. */
  text: string;
  /** The text at `version`. */
  serverText: string;
  version: number;
  nextSeq: number;
  inflight: { seq: number; op: Op } | null;
  buffer: Op | null;
  constructor(content: string, version: number, lastSeq?: number);
  readonly hasPending: boolean;
  /** A local edit on the current text: the message to send, if idle. */
  localEdit(op: Op): OpMessage | null;
  /** The in-flight op again (same seq: the server dedupes). */
  resend(): OpMessage | null;
  /** An ack: the committed op (null for an ack not in flight) and the next message. */
  onAck(seq: number, version: number): { acked: Op | null; send: OpMessage | null };
  /** A remote op at `version`: the op to apply to the local text (null when it was this client's own). */
  onRemote(
    version: number,
    op: Op,
    client: string,
    seq: number,
    myClient: string,
  ): { apply: Op | null; acked: Op | null; send: OpMessage | null };
  /** Local (pending) edits as one op on the last server text. */
  pendingOp(): Op | null;
  /** `text` with the pending edits undone: the text at the server's `version`. */
  textAtVersion(): string;
  /** A `check` at `version`: skipped (not our version), agreed, or our differing hash. */
  check(version: number, hash: string): "skip" | "agree" | { ours: string };
}

/** A message arrived out of order (the session resynchronises). */
export class VersionGap extends Error {
  expected: number;
  got: number;
  constructor(expected: number, got: number);
}

// ---------------------------------------------------------------- session

export type Role = "owner" | "editor" | "viewer";
export type ConnectionState = "connecting" | "online" | "offline";
export type ErrorCode =
  | "bad_message"
  | "bad_op"
  | "version_out_of_range"
  | "too_large"
  | "doc_too_large"
  | "rate_limited"
  | "forbidden"
  | "unauthorized"
  | "internal";

/** A user as the server names them. */
export interface UserInfo {
  id: string;
  name: string;
  /** `#rrggbb`, derived from the user id. */
  color: string;
}
/** One connection on the document (a user may have several). */
export interface Presence extends UserInfo {
  client: string;
  /** Its presence state (absent from servers that predate it: active). */
  state?: PresenceState;
}
/** Set by each page from focus and input (`setPresence`). */
export type PresenceState = "active" | "idle" | "away";
/** A JSON object of at most 1 KB serialised, 4 levels, 64 keys and items. */
export type AwarenessState = { [key: string]: unknown };
/** Another client's awareness. */
export interface Awareness {
  client: string;
  /** The user id. */
  user: string;
  state: AwarenessState | null;
  presence: PresenceState;
}
/** What a `pendingStore` keeps per client: its pending edits, client id and seq. */
export interface PendingRecord {
  document: string;
  client: string;
  user: string | null;
  history: string | null;
  version: number;
  serverText: string;
  nextSeq: number;
  inflight: unknown;
  buffer: unknown;
  pendingEdits: number;
  savedAt: number;
}
/** Where pending edits are kept across reloads (the page's is IndexedDB: `offline-store.js`). */
export interface PendingStore {
  /** A client id to use and the record saved under it, if any. */
  claim(clientId: string): Promise<{ client: string; record: PendingRecord | null }>;
  save(record: PendingRecord): Promise<void>;
  remove(document: string, client: string): Promise<void>;
}
/** A remote caret or selection, in local code points. */
export interface RemoteCursor {
  client: string;
  /** The user id. */
  user: string;
  name: string;
  color: string;
  anchor: number;
  head: number;
}
/** The document's replicated metadata (`init.meta` and `meta` messages). */
export interface DocMeta {
  title: string;
  tags: string[];
  views: number;
  /** The effective language id (set, or guessed from the title's extension; "plaintext" when nothing matches). */
  language?: string;
  /** True when someone chose the language, false when it is guessed from the title. */
  language_set?: boolean;
  [field: string]: unknown;
}

export interface TandemClientOptions {
  /** `ws://host` or `wss://host` (the `/ws/{document}` path is added). */
  url: string;
  /** The document id. */
  document: string;
  /**
   * Called before every connection attempt: resolves to a single-use ticket
   * (`POST /api/auth/ws-ticket`), so no long-lived token goes in a URL.
   * Rejecting with an error whose `fatal` is true stops reconnecting.
   */
  getTicket?: (document: string) => Promise<string>;
  /** A bearer token (JWT) for the user (API clients; browsers use `getTicket`). */
  token?: string;
  /** On a server with anonymous access: the user id and display name. */
  userId?: string;
  name?: string;
  /** Kept across reconnects; made up when absent. */
  clientId?: string;
  /** A WebSocket constructor, where there is no global one. */
  WebSocket?: new (url: string) => WebSocket;
  /** Minimum time between two cursor messages (50 ms). */
  cursorThrottleMs?: number;
  /** Reconnect backoff bounds in ms ({min: 250, max: 10000}). */
  backoff?: { min?: number; max?: number };
  /** A 0..1 random source (tests). */
  random?: () => number;
  /** Minimum time between two awareness messages (100 ms). */
  awarenessThrottleMs?: number;
  /**
   * Keeps pending edits (with the client id and seq) so a reload or a closed
   * tab does not lose them; `connect()` claims a client id and restores its
   * record first.
   */
  pendingStore?: PendingStore;
  /** Give up a handshake that hangs after this many ms (10000). */
  connectTimeoutMs?: number;
}

/** Each event's argument. */
export interface TandemClientEvents {
  /** The first init: set the editor to `content`. */
  /** `restored`: set from a `pendingStore` record, before any server contact (role and user null). */
  ready: { content: string; version: number; role: Role | null; user: UserInfo | null; restored?: boolean };
  /** The text was replaced wholesale (a resync): set the editor to it. */
  reset: { content: string };
  /** Apply this code-point op to the editor. */
  remote: { op: Op; user: string; client: string };
  /** That client moved its caret (not one carried along by edits). */
  activity: { client: string; user: string };
  status: { state: ConnectionState; pending: number; saved: boolean };
  users: Presence[];
  cursors: RemoteCursor[];
  role: Role;
  meta: DocMeta;
  error: { code: ErrorCode; message: string; seq?: number | null };
  /** The others' awareness, by client id (every change). */
  awareness: Map<string, Awareness>;
  /** Fatal: access revoked, document deleted, replaced by another tab (4001). */
  closed: { code: number; reason: string };
  /** Our text disagreed with the server's `check` at `version`: reported; a reload (a `reset`) follows. */
  mismatch: { version: number; hash: string; ours: string };
}

/** A live session on one document. */
export class TandemClient {
  constructor(opts: TandemClientOptions);
  readonly opts: TandemClientOptions;
  /** This connection's client id (the server may scope it to the user). */
  clientId: string;
  /** OT state after the first init. */
  state: OtState | null;
  status: ConnectionState;
  /** Local edits not yet acknowledged. */
  pendingEdits: number;
  role: Role | null;
  user: UserInfo | null;
  meta?: DocMeta;
  /** The identity of the history `version` belongs to. */
  historyId: string | null;
  /** Reloads after a `check` this client's text disagreed with. */
  checksumReloads: number;
  users: Map<string, Presence>;

  on<K extends keyof TandemClientEvents>(name: K, fn: (arg: TandemClientEvents[K]) => void): this;
  emit<K extends keyof TandemClientEvents>(name: K, arg: TandemClientEvents[K]): void;

  /** The text with this client's pending edits. */
  readonly text: string;
  readonly version: number;
  /** True while edits wait for the server. */
  readonly pending: boolean;

  connect(): this;
  /** Stop for good (no reconnect). */
  close(): void;
  /** Drop the connection as if the network failed (it reconnects). */
  disconnect(): void;
  /** A local edit: a code-point op on `text`. */
  edit(op: Op): void;
  /** This client's caret/selection in local code points. */
  setCursor(anchor: number, head?: number): void;
  /** Undo this user's last step on the server (arrives as a `remote` op). */
  undo(): void;
  /** Redo this user's last undone step on the server. */
  redo(): void;
  /**
   * Our awareness state (replaces the previous one; sent throttled and again
   * after every reconnect). Throws on a non-object or one over 1 KB.
   */
  setAwareness(state: AwarenessState): void;
  /** Our presence state, shown to the others. */
  setPresence(state: PresenceState): void;
  /** The others' awareness, by client id. */
  awareness: Map<string, Awareness>;
  userList(): Presence[];
  /** Remote cursors in local code points (past this client's pending edits). */
  cursorList(): RemoteCursor[];
}
