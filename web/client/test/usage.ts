// Type-checked by web/test/types.test.mjs (`tsc --noEmit`): how an app uses
// the package, through its package name and `exports`. Each
// `@ts-expect-error` line is a misuse the declarations must reject.
import {
  TandemClient,
  OpBuilder,
  OtState,
  VersionGap,
  apply,
  compose,
  transform,
  transformIndex,
  invert,
  diff,
  splice,
  normalize,
  isNoop,
  baseLen,
  targetLen,
  cpLength,
  cpToUtf16,
  utf16ToCp,
  fromUtf16Changes,
  toUtf16Changes,
  type Op,
  type RemoteCursor,
  type DocMeta,
} from "tandem-client";

const client = new TandemClient({ url: "ws://localhost:8080", document: "notes", token: "jwt", cursorThrottleMs: 30 });
client
  .on("ready", ({ content, version, role }) => {
    const n: number = version + cpLength(content);
    // Null only on a ready restored from a pendingStore, before the server answered.
    const r: "owner" | "editor" | "viewer" | null = role;
    void n, r;
  })
  .on("remote", ({ op }) => {
    const changes = toUtf16Changes(client.text, op);
    for (const c of changes) console.log(c.from, c.to, c.insert);
  })
  .on("cursors", (list: RemoteCursor[]) => list.map((c) => `${c.name}@${c.head}`))
  .on("meta", (m: DocMeta) => console.log(m.title, m.language, m.language_set, m.tags.length))
  .on("status", ({ state, pending, saved }) => console.log(state === "online", pending + 1, saved))
  .on("closed", ({ code, reason }) => console.log(code, reason.length))
  .on("activity", ({ client: who, user }) => console.log(who, user))
  .on("error", ({ code }) => console.log(code === "rate_limited"));
client.connect();
client.edit(splice(cpLength(client.text), 0, 0, "héllo 😀"));
client.setCursor(1);
client.undo();
client.redo();
client.disconnect();
client.close();
const me: string = client.clientId;
const browserClient = new TandemClient({
  url: "wss://tandem.example",
  document: "notes",
  getTicket: async (doc) => {
    const r = await fetch("/api/auth/ws-ticket", { method: "POST", body: JSON.stringify({ document: doc }) });
    return ((await r.json()) as { ticket: string }).ticket;
  },
});
void browserClient;
const users = client.userList().map((u) => u.client + u.color);

const op: Op = new OpBuilder().retain(2).insert("x").delete(1).build();
const doc = apply("abc", op);
const [a2, b2] = transform(op, diff("abc", "abd"));
const both: Op = compose(op, normalize([1, "y", 2]));
const back: Op = invert(op, "abc");
const len: number = baseLen(op) + targetLen(op) + transformIndex(op, 1) + cpToUtf16("😀a", 1) + utf16ToCp("😀a", 2);
const fromEditor: Op = fromUtf16Changes("abc", [{ from: 1, to: 2, insert: "Z" }]);
const state = new OtState("abc", 3);
const out = state.localEdit(op);
if (out) console.log(out.type, out.seq, out.version);
const gap = new VersionGap(4, 6);
console.log(me, users, doc, a2, b2, both, back, len, fromEditor, isNoop(op), gap.expected, state.pendingOp());

// @ts-expect-error: the document id is required
new TandemClient({ url: "ws://x" });
// @ts-expect-error: no such event
client.on("typing", () => {});
// @ts-expect-error: a `remote` event carries an op, not text
client.on("remote", ({ text }) => text);
// @ts-expect-error: ops are arrays of numbers and strings
apply("abc", [true]);
