// Content checks from Node against the real server (CHECKSUM_EVERY small):
// clean clients typing concurrently always agree with the server's `check`;
// a client whose text drifts on purpose reports the mismatch (the server
// counts it), reloads, and keeps every pending edit, each landing once.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { TandemClient, splice, cpLength } from "../client/tandem-client.js";
import { startServer, rest, register, until } from "./harness.mjs";

let server;
// Every client made here, closed at the end even when a test fails (a
// client left open reconnects forever and keeps the run alive).
const made = [];

before(async () => {
  server = await startServer({ REGISTRATIONS_PER_HOUR: "1000", CHECKSUM_EVERY: "3" });
});
after(async () => {
  for (const c of made) c.close();
  await server.stop();
});

function client(doc, token) {
  const c = new TandemClient({ url: server.ws, document: doc, token, backoff: { min: 50, max: 400 } });
  made.push(c);
  return c;
}

function connect(doc, token) {
  const c = client(doc, token);
  const ready = new Promise((r) => c.on("ready", r));
  c.connect();
  return ready.then(() => c);
}

async function settled(clients, doc, token) {
  let d;
  await until(async () => {
    d = await rest(server.http, "GET", `/api/documents/${doc}`, undefined, token);
    return clients.every((c) => !c.pending && c.live && c.version === d.version) ? d : null;
  }, "clients to settle");
  return d;
}

async function mismatches() {
  const text = await (await fetch(`${server.http}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith("tandem_checksum_mismatches_total "));
  return line ? Number(line.split(" ")[1]) : 0;
}

const pause = (ms) => new Promise((r) => setTimeout(r, ms));
const append = (c, s) => c.edit(splice(cpLength(c.text), cpLength(c.text), cpLength(c.text), s));
const prepend = (c, s) => c.edit(splice(cpLength(c.text), 0, 0, s));

/** Count the `check` frames a client's socket receives. */
function countChecks(c) {
  const seen = { checks: 0 };
  const WS = globalThis.WebSocket;
  c.WS = class extends WS {
    constructor(url) {
      super(url);
      this.addEventListener("message", (ev) => {
        if (String(ev.data).startsWith('{"type":"check"')) seen.checks++;
      });
    }
  };
  return seen;
}

test("clean clients typing concurrently never disagree with a check", async () => {
  const { token } = await register(server.http, "clean", "Clean");
  const doc = (await rest(server.http, "POST", "/api/documents", { title: "clean" }, token)).id;
  const clients = [];
  const seen = [];
  for (let i = 0; i < 2; i++) {
    const c = client(doc, token);
    seen.push(countChecks(c));
    const ready = new Promise((r) => c.on("ready", r));
    c.connect();
    await ready;
    clients.push(c);
  }
  const reported = [];
  for (const c of clients) c.on("mismatch", (m) => reported.push(m));
  await Promise.all(
    clients.map(async (c, i) => {
      for (let n = 0; n < 40; n++) {
        (n % 2 ? append : prepend)(c, i ? `<b${n}😀>` : `[a${n}\r\n]`);
        await pause(n % 3);
      }
    }),
  );
  const d = await settled(clients, doc, token);
  for (const c of clients) assert.equal(c.text, d.content);
  assert.deepEqual(reported, []);
  for (const c of clients) assert.equal(c.checksumReloads, 0);
  for (const s of seen) assert.ok(s.checks >= 5, `only ${s.checks} checks arrived`);
  assert.equal(await mismatches(), 0);
  for (const c of clients) c.close();
});

test("a drifted client reports, reloads and keeps its pending edits", async () => {
  const { token } = await register(server.http, "drift", "Drift");
  const doc = (await rest(server.http, "POST", "/api/documents", { title: "drift" }, token)).id;
  const a = await connect(doc, token);
  const b = await connect(doc, token);
  append(a, "hello world");
  await settled([a, b], doc, token);
  const before = await mismatches();
  const seen = [];
  b.on("mismatch", (m) => seen.push({ ...m, pending: b.pending }));
  const resets = [];
  b.on("reset", (r) => resets.push(r.content));
  // The bug: b's text changes without an edit (same length, so ops still apply).
  b.state.text = "#" + b.state.text.slice(1);
  const tokens = [];
  for (let n = 0; n < 12; n++) {
    tokens.push(`[a${n}]`, `<b${n}😀>`);
    prepend(a, `[a${n}]`);
    // b types in bursts: edits wait in its buffer while one is in flight.
    append(b, `<b${n}😀>`);
    await pause(n % 4 === 0 ? 15 : 1);
  }
  const d = await settled([a, b], doc, token);
  assert.ok(seen.length >= 1, "the drift was not noticed");
  assert.ok(b.checksumReloads >= 1 && resets.length >= 1, "no reload");
  assert.equal(a.checksumReloads, 0);
  assert.equal(b.text, d.content);
  assert.equal(a.text, d.content);
  assert.ok(!d.content.includes("#"), "the drift reached the server");
  for (const t of tokens) assert.equal(d.content.split(t).length - 1, 1, `${t} in ${d.content}`);
  assert.ok((await mismatches()) >= before + 1, "the server did not count the mismatch");
  a.close();
  b.close();
});
