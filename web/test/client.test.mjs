// tandem-client.js from Node against the real server: concurrent typing
// converges, a client cut off the network keeps its edits and resumes (a
// replay on its own history) with each applied exactly once, and revoked
// access closes the session.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { TandemClient, splice, cpLength } from "../client/tandem-client.js";
import { startServer, startProxy, rest, register, until, rng } from "./harness.mjs";

const ALPHABET = ["a", "b", "c", " ", "\n", "é", "中", "😀", "👍🏽", "𝄞", "🇫🇷"];
let server;

before(async () => {
  server = await startServer({ REGISTRATIONS_PER_HOUR: "1000" });
});
after(async () => {
  await server.stop();
});

function connect(url, doc, token, extra = {}) {
  const c = new TandemClient({ url, document: doc, token, backoff: { min: 50, max: 400 }, ...extra });
  const ready = new Promise((r) => c.on("ready", r));
  c.connect();
  return ready.then(() => c);
}

const idle = (clients, v) => clients.every((c) => !c.pending && c.live && c.version === v);

async function settled(clients, doc, token) {
  let d;
  await until(async () => {
    d = await rest(server.http, "GET", `/api/documents/${doc}`, undefined, token);
    return idle(clients, d.version) ? d : null;
  }, "clients to settle").catch((e) => {
    const st = clients.map((c) => ({ v: c.version, live: c.live, status: c.status, inflight: c.state.inflight, buffer: c.state.buffer }));
    throw new Error(`${e.message}: server at ${d.version}, clients ${JSON.stringify(st)}`);
  });
  return d;
}

test("three clients typing emoji concurrently converge with the server", async () => {
  const { token } = await register(server.http, "typist", "Typist");
  const doc = (await rest(server.http, "POST", "/api/documents", { title: "race" }, token)).id;
  const clients = await Promise.all([0, 1, 2].map(() => connect(server.ws, doc, token)));
  await Promise.all(
    clients.map(async (c, i) => {
      const r = rng(1000 + i);
      for (let n = 0; n < 60; n++) {
        const len = cpLength(c.text);
        const pos = Math.floor(r() * (len + 1));
        const del = len > pos && r() < 0.3 ? 1 + Math.floor(r() * Math.min(3, len - pos)) : 0;
        const ins = Array.from({ length: 1 + Math.floor(r() * 3) }, () => ALPHABET[Math.floor(r() * ALPHABET.length)]).join("");
        c.edit(splice(len, pos, pos + del, ins));
        await new Promise((res) => setTimeout(res, r() * 8));
      }
    }),
  );
  const d = await settled(clients, doc, token);
  assert.ok(d.version >= 60, `only ${d.version} commits for 180 edits`);
  assert.ok([...d.content].some((ch) => ch.codePointAt(0) > 0xffff), "no astral characters survived");
  for (const c of clients) assert.equal(c.text, d.content);
  for (const c of clients) c.close();
});

test("a client cut off the network keeps its edits and each lands exactly once", async () => {
  const { token } = await register(server.http, "offline", "Offline");
  const doc = (await rest(server.http, "POST", "/api/documents", { title: "offline" }, token)).id;
  const proxy = await startProxy(server.port);
  const a = await connect(server.ws, doc, token);
  const b = await connect(`ws://127.0.0.1:${proxy.port}`, doc, token);
  const statuses = [];
  b.on("status", (s) => statuses.push(s));
  const resets = [];
  b.on("reset", (r) => resets.push(r.content));
  const type = (c, tok) => c.edit(splice(cpLength(c.text), cpLength(c.text), cpLength(c.text), tok));
  const tokens = [];
  for (let i = 0; i < 5; i++) {
    tokens.push(`<a${i}>`, `<b${i}😀>`);
    type(a, `<a${i}>`);
    type(b, `<b${i}😀>`);
    await new Promise((r) => setTimeout(r, 5));
  }
  await proxy.cut();
  await until(() => b.status === "offline", "b to notice it is offline");
  for (let i = 5; i < 15; i++) {
    tokens.push(`<a${i}>`, `<b${i}😀>`);
    type(a, `<a${i}>`);
    type(b, `<b${i}😀>`);
  }
  await until(() => !a.pending, "a's edits to be acknowledged");
  assert.ok(b.pending, "b's offline edits are pending");
  const offline = statuses.filter((s) => s.state === "offline").pop();
  assert.ok(b.pendingEdits >= 10 && offline, `b shows its pending edits (${b.pendingEdits})`);
  await new Promise((r) => setTimeout(r, 300)); // a few failed reconnects
  await proxy.restore();
  const d = await settled([a, b], doc, token);
  for (const t of tokens) {
    assert.equal(d.content.split(t).length - 1, 1, `${t} appears exactly once in ${d.content}`);
  }
  assert.equal(a.text, d.content);
  assert.equal(b.text, d.content);
  assert.equal(b.pendingEdits, 0);
  // b named its history when it resumed, so the server replayed what it missed.
  assert.equal(resets.length, 0, "b was reset by a full init instead of a replay");
  a.close();
  b.close();
  await proxy.stop();
});

test("revoking access closes a live session with a reason", async () => {
  const owner = await register(server.http, "owner1", "Owner");
  const guest = await register(server.http, "guest1", "Guest");
  const doc = (await rest(server.http, "POST", "/api/documents", { title: "shared", content: "hi" }, owner.token)).id;
  await rest(server.http, "PUT", `/api/documents/${doc}/members/guest1`, { role: "editor" }, owner.token);
  const g = await connect(server.ws, doc, guest.token);
  assert.equal(g.text, "hi");
  assert.equal(g.role, "editor");
  const closed = new Promise((r) => g.on("closed", r));
  await rest(server.http, "PUT", `/api/documents/${doc}/members/guest1`, { role: "viewer" }, owner.token);
  await until(() => g.role === "viewer", "the role change to reach the client");
  await rest(server.http, "DELETE", `/api/documents/${doc}/members/guest1`, undefined, owner.token);
  const ev = await closed;
  assert.equal(ev.code, 1008);
  assert.equal(g.status, "offline");
});

test("a client too far behind to replay gets a full init and keeps its offline edits", async () => {
  // The smallest outbound queue (128) caps the replay a resume may send at 64 ops.
  const small = await startServer({ OUTBOUND_QUEUE: "128" });
  try {
    const { token } = await register(small.http, "behind", "Behind");
    const doc = (await rest(small.http, "POST", "/api/documents", { title: "far", content: "start|end" }, token)).id;
    const proxy = await startProxy(small.port);
    const a = await connect(small.ws, doc, token);
    const b = await connect(`ws://127.0.0.1:${proxy.port}`, doc, token);
    const resets = [];
    b.on("reset", (r) => resets.push(r.content));
    await proxy.cut();
    await until(() => b.status === "offline", "b offline");
    // b edits in the middle; a commits far more ops than one replay holds.
    b.edit(splice(9, 5, 5, "[b1]"));
    b.edit(splice(13, 9, 9, "[b2]"));
    for (let i = 0; i < 80; i++) {
      a.edit(splice(cpLength(a.text), 0, 0, `${i % 10}`));
      await until(() => !a.pending, "a's ack");
    }
    await proxy.restore();
    let d;
    await until(async () => {
      d = await rest(small.http, "GET", `/api/documents/${doc}`, undefined, token);
      return idle([a, b], d.version) ? d : null;
    }, "convergence after a full init");
    assert.equal(resets.length, 1, "b was reset by a full init, not a replay");
    assert.equal(a.text, d.content);
    assert.equal(b.text, d.content);
    assert.ok(d.content.includes("start[b1][b2]|end"), d.content);
    assert.equal(d.content.length, "start[b1][b2]|end".length + 80);
    a.close();
    b.close();
    await proxy.stop();
  } finally {
    await small.stop();
  }
});

/** A `pendingStore` in memory: what IndexedDB keeps for the page (offline-store.js). */
function memoryStore() {
  const records = new Map();
  return {
    records,
    saves: [],
    async claim(preferred) {
      const saved = [...records.values()][0];
      return saved ? { client: saved.client, record: structuredClone(saved) } : { client: preferred, record: null };
    },
    async save(rec) {
      this.saves.push(structuredClone(rec));
      records.set(rec.client, structuredClone(rec));
    },
    async remove(_doc, client) {
      records.delete(client);
    },
  };
}

test("pending edits kept in a pendingStore survive a restart of the client and land exactly once", async () => {
  const { token } = await register(server.http, "reloader", "Reloader");
  const doc = (await rest(server.http, "POST", "/api/documents", { title: "reload", content: "base" }, token)).id;
  const proxy = await startProxy(server.port);
  const store = memoryStore();
  const a = await connect(`ws://127.0.0.1:${proxy.port}`, doc, token, { pendingStore: store });
  const type = (c, tok) => c.edit(splice(cpLength(c.text), cpLength(c.text), cpLength(c.text), tok));
  // Stored before it is sent; removed once acknowledged.
  type(a, "<1>");
  await until(() => store.saves.length === 1, "the edit stored");
  const early = store.saves[0];
  assert.equal(early.inflight.seq, 1);
  await until(() => !a.pending && store.records.size === 0, "<1> acknowledged and its record removed");
  await proxy.cut();
  for (let i = 2; i <= 6; i++) type(a, `<${i}>`);
  await until(() => a.status === "offline", "offline");
  await new Promise((r) => setTimeout(r, 100));
  const saved = [...store.records.values()][0];
  assert.equal(saved.client, a.clientId);
  assert.equal(saved.inflight.seq, 2);
  a.close(); // the tab goes away with its edits pending

  // A new client on the same store takes over the id and sends them.
  await proxy.restore();
  const restart = async (s) => {
    const c = new TandemClient({ url: server.ws, document: doc, token, clientId: "other", pendingStore: s, backoff: { min: 50, max: 400 } });
    const ready = new Promise((r) => c.on("ready", r));
    c.connect();
    return [c, await ready];
  };
  const [b, first] = await restart(store);
  assert.equal(first.restored, true);
  assert.equal(first.content, "base<1><2><3><4><5><6>");
  assert.equal(b.clientId, saved.client, "the saved client id is taken over");
  const d = await settled([b], doc, token);
  for (let i = 1; i <= 6; i++) assert.equal(d.content.split(`<${i}>`).length - 1, 1, `<${i}> once in ${d.content}`);
  await until(() => store.records.size === 0, "the record removed once acknowledged");
  b.close();

  // A stale record whose op was committed long ago (seq 1): the server
  // recognises the seq, nothing is applied twice.
  const old = memoryStore();
  old.records.set(early.client, early);
  const [c, again] = await restart(old);
  assert.equal(again.content, "base<1>");
  const d2 = await settled([c], doc, token);
  assert.equal(d2.content, d.content);
  assert.equal(c.text, d.content);
  assert.equal(old.records.size, 0);
  c.close();
  await proxy.stop();
});

test("awareness and presence state reach the other clients and leave with their client", async () => {
  const { token } = await register(server.http, "aware", "Aware");
  const doc = (await rest(server.http, "POST", "/api/documents", { title: "aware" }, token)).id;
  const a = await connect(server.ws, doc, token, { awarenessThrottleMs: 20 });
  const b = await connect(server.ws, doc, token);
  const seen = [];
  b.on("awareness", (m) => seen.push(new Map(m)));
  a.setAwareness({ typing: 1, where: [0, 3] });
  await until(() => b.awareness.get(a.clientId)?.state.typing === 1, "b to see a's awareness");
  a.setPresence("away");
  await until(() => b.awareness.get(a.clientId)?.presence === "away", "b to see a away");
  assert.equal(b.users.get(a.clientId).state, "away");
  assert.deepEqual(b.awareness.get(a.clientId).state, { typing: 1, where: [0, 3] });
  assert.throws(() => a.setAwareness([1]), TypeError);
  assert.throws(() => a.setAwareness({ s: "x".repeat(1100) }), RangeError);
  // A late joiner gets it in init; a reconnecting client sends it again.
  const c = await connect(server.ws, doc, token);
  assert.equal(c.awareness.get(a.clientId).presence, "away");
  a.disconnect();
  await until(() => b.awareness.size === 0, "a's awareness gone when it left");
  await until(() => b.awareness.get(a.clientId)?.presence === "away", "a's awareness back after its reconnect");
  a.close();
  await until(() => !b.awareness.has(a.clientId) && !c.awareness.has(a.clientId), "gone when a left for good");
  b.close();
  c.close();
});
