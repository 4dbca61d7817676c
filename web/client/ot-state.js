// ot-state.js — the client side of OT as a pure state machine: `OtState` (one
// op in flight, the twin of `crates/tandem-core/src/client.rs`) and the
// `VersionGap` it throws on an out-of-order message. Part of the
// tandem-client package; `tandem-client.js` re-exports both.

import { apply, compose, transform, isNoop, invert, checksum } from "./ot.js";

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
