// In headless Chromium against the real server: pending edits that survive a
// reload or a closed tab (IndexedDB), one client id per tab, awareness on the page
// (idle / away avatars, the typing hint), and documents as files (import from the
// list by button and by drop, download from the editor).
//
// A page goes offline by having its WebSockets refused (`page.routeWebSocket`):
// HTTP still works, so the page can be reloaded while its socket cannot connect.
//
// TANDEM_SCREENSHOTS=<dir> also saves docs/screenshots/awareness.png there.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { startServer, register, rest, until } from "./harness.mjs";

let server, browser, ann, bob, carol;
const SHOTS = process.env.TANDEM_SCREENSHOTS;

before(async () => {
  server = await startServer();
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium" });
  ann = await register(server.http, "ann", "Ann Archer");
  bob = await register(server.http, "bob", "Bob Baker");
  carol = await register(server.http, "carol", "Carol Cook");
});

after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
});

/** A browser context signed in as `who` (register's answer); `init` runs before the page's scripts. */
async function contextFor(who, init = "") {
  const ctx = await browser.newContext({ viewport: { width: 1060, height: 420 }, deviceScaleFactor: 1 });
  await ctx.addInitScript(
    ([token, user, init]) => {
      localStorage.setItem("tandem.token", token);
      localStorage.setItem("tandem.user", user);
      if (init) new Function(init)();
    },
    [who.token, JSON.stringify(who.user), init],
  );
  return ctx;
}

/** A page whose WebSockets can be refused: `page.offline = true`. */
async function gatedPage(ctx, name) {
  const p = await ctx.newPage();
  p.offline = false;
  p.on("pageerror", (e) => console.error(`[${name}] page error:`, e.message));
  await p.routeWebSocket(/\/ws\//, (ws) => {
    if (p.offline) ws.close({ code: 4000, reason: "offline (test)" });
    else ws.connectToServer();
  });
  return p;
}

const text = (p) => p.evaluate(() => window.tandem.view.state.doc.toString());
const status = (p) => p.getAttribute(".status", "data-status");
const clientId = (p) => p.evaluate(() => window.tandem.client.clientId);
const records = (p) => p.evaluate(async () => (await import("/assets/offline-store.js")).savedRecords());
const content = async (id) => (await rest(server.http, "GET", `/api/documents/${id}`, undefined, ann.token)).content;
const once = (t, s) => t.split(s).length - 1;

async function open(p, id) {
  await p.goto(`${server.http}/d/${id}`);
  await p.waitForSelector(".cm-content");
}

async function newDoc(title, body) {
  const d = await rest(server.http, "POST", "/api/documents", { title, content: body }, ann.token);
  await rest(server.http, "PUT", `/api/documents/${d.id}/members/bob`, { role: "editor" }, ann.token);
  await rest(server.http, "PUT", `/api/documents/${d.id}/members/carol`, { role: "editor" }, ann.token);
  return d.id;
}

async function goOffline(p) {
  p.offline = true;
  await p.evaluate(() => window.tandem.client.disconnect());
  await until(async () => (await status(p)) === "offline", "the page to show offline");
}

test("edits typed offline survive a reload and arrive exactly once", async () => {
  const id = await newDoc("Offline", "start");
  const actx = await contextFor(ann);
  const bctx = await contextFor(bob);
  const a = await gatedPage(actx, "ann");
  const b = await gatedPage(bctx, "bob");
  await open(a, id);
  await open(b, id);
  await until(async () => (await status(a)) === "saved" && (await status(b)) === "saved", "both online");
  const before = await clientId(a);

  await goOffline(a);
  await a.click(".cm-content");
  await a.keyboard.press("Control+End");
  await a.keyboard.type(" [one]", { delay: 5 });
  await a.keyboard.press("Control+Home");
  await a.keyboard.type("[two] ", { delay: 5 });
  await a.keyboard.press("Control+End");
  await a.keyboard.type(" [three 😀]", { delay: 5 });
  const typed = await text(a);
  await a.evaluate(() => window.tandem.client.saving);
  await until(async () => {
    const r = await records(a);
    return r.length === 1 && r[0].client === before && r[0].inflight;
  }, "the pending edits in IndexedDB");
  // Bob meanwhile edits too, online.
  await b.click(".cm-content");
  await b.keyboard.press("Control+End");
  await b.keyboard.type(" [bob]", { delay: 5 });
  await until(async () => (await status(b)) === "saved", "bob saved");

  // Reload while offline: the edits are back, still pending, under the same id.
  await a.reload();
  await a.waitForSelector(".cm-content");
  assert.equal(await text(a), typed);
  assert.equal(await status(a), "offline");
  assert.match(await a.textContent(".status"), /^offline — \d+ edits? pending$/);
  assert.equal(await clientId(a), before);
  assert.ok(!(await content(id)).includes("[one]"), "nothing reached the server yet");

  a.offline = false;
  await until(async () => (await status(a)) === "saved", "ann back online and saved", 30000);
  const t = await content(id);
  for (const s of ["[one]", "[two]", "[three 😀]", "[bob]"]) assert.equal(once(t, s), 1, `${s} exactly once in ${t}`);
  await until(async () => (await text(b)) === t && (await text(a)) === t, "both editors to show the server's content");
  await until(async () => (await records(a)).length === 0, "the record removed once acknowledged");
  await actx.close();
  await bctx.close();
});

test("each tab has its own client id; a tab closed offline hands its edits to the next tab, once", async () => {
  const id = await newDoc("Tabs", "tabs");
  const ctx = await contextFor(ann);
  const t1 = await gatedPage(ctx, "tab1");
  const t2 = await gatedPage(ctx, "tab2");
  await open(t1, id);
  await open(t2, id);
  await until(async () => (await status(t1)) === "saved" && (await status(t2)) === "saved", "both tabs online");
  const [id1, id2] = [await clientId(t1), await clientId(t2)];
  assert.notEqual(id1, id2, "two tabs, two client ids");

  await goOffline(t1);
  await t1.click(".cm-content");
  await t1.keyboard.press("Control+End");
  await t1.keyboard.type(" [closed tab]", { delay: 5 });
  // Every keystroke's write has landed (IndexedDB writes are asynchronous:
  // a tab closed within milliseconds of a keystroke can lose that one).
  await t1.evaluate(() => window.tandem.client.saving);
  await until(async () => (await records(t1)).some((r) => r.client === id1), "tab 1's edits stored");
  await t1.close();
  // Gone: the browser lets go of its client id's lock (a moment after the close).
  const base = id1.split("@")[0];
  await until(async () => (await t2.evaluate(async () => (await navigator.locks.query()).held.map((l) => l.name))).every((n) => !n.endsWith(`:${base}`)), "tab 1's lock released");
  // The open tab keeps its own id and does not send tab 1's edits.
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(await clientId(t2), id2);
  assert.ok(!(await content(id)).includes("[closed tab]"));

  // Two new tabs at once: exactly one adopts tab 1's edits (its id), both sync.
  const [t3, t4] = [await gatedPage(ctx, "tab3"), await gatedPage(ctx, "tab4")];
  await Promise.all([open(t3, id), open(t4, id)]);
  await until(async () => once(await content(id), "[closed tab]") === 1, "tab 1's edit on the server").catch(async (e) => {
    const st = { id1, records: await records(t3), t3: [await clientId(t3), await status(t3)], t4: [await clientId(t4), await status(t4)], errors: [await t3.evaluate(() => window.tandem.client.lastError), await t4.evaluate(() => window.tandem.client.lastError)], text4: await text(t4), server: await content(id), locks: await t3.evaluate(async () => (await navigator.locks.query()).held.map((l) => l.name)) };
    throw new Error(`${e.message}: ${JSON.stringify(st)}`);
  });
  await until(async () => (await status(t3)) === "saved" && (await status(t4)) === "saved", "new tabs saved");
  const ids = [await clientId(t3), await clientId(t4)];
  assert.equal(ids.filter((c) => c === id1).length, 1, `one tab took over ${id1}: ${ids}`);
  assert.equal(new Set([...ids, id2]).size, 3, `${ids} ${id2}`);
  await new Promise((r) => setTimeout(r, 500));
  const t = await content(id);
  assert.equal(once(t, "[closed tab]"), 1, t);
  for (const p of [t2, t3, t4]) await until(async () => (await text(p)) === t, "every tab converged");
  assert.equal((await records(t2)).filter((r) => r.document === id).length, 0);
  await ctx.close();
});

test("documents are imported from the list (button and drop) and downloaded from the editor", async () => {
  const ctx = await contextFor(carol);
  const p = await gatedPage(ctx, "carol");
  await p.goto(`${server.http}/`);
  await p.waitForSelector("h1:has-text('Documents')");
  const md = "# Notes\n\nCafé ☕ and 😀\n";
  await p.setInputFiles("input[data-import]", { name: "Meeting notes.md", mimeType: "text/markdown", buffer: Buffer.from(md) });
  await p.waitForSelector(".cm-content");
  const id = p.url().split("/d/")[1];
  assert.equal(await text(p), md);
  const d = await rest(server.http, "GET", `/api/documents/${id}`, undefined, carol.token);
  assert.equal(d.title, "Meeting notes");
  await until(async () => (await p.inputValue(".doc-title")) === "Meeting notes", "the title shown");

  // Download: the server's content under the title's name.
  await p.click(".cm-content");
  await p.keyboard.press("Control+End");
  await p.keyboard.type("more ✓", { delay: 5 });
  await until(async () => (await status(p)) === "saved", "saved");
  const [dl] = await Promise.all([p.waitForEvent("download"), p.click("button[data-download]")]);
  assert.equal(dl.suggestedFilename(), "Meeting notes.md");
  assert.equal(readFileSync(await dl.path(), "utf8"), md + "more ✓");

  // Drop a file on the list: a new document opens with its content.
  await p.click("text=← Documents");
  await p.waitForSelector("h1:has-text('Documents')");
  const drop = (name, bytes) =>
    p.evaluate(
      ([name, bytes]) => {
        const dt = new DataTransfer();
        dt.items.add(new File([new Uint8Array(bytes)], name, { type: "text/plain" }));
        const el = document.querySelector("section.docs");
        el.dispatchEvent(new DragEvent("dragover", { dataTransfer: dt, bubbles: true, cancelable: true }));
        el.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
      },
      [name, [...bytes]],
    );
  // Not UTF-8: refused, explained, nothing opened.
  await drop("photo.jpg", Buffer.from([0xff, 0xd8, 0xff, 0xe0]));
  await p.waitForSelector("p.error:has-text('UTF-8')");
  assert.ok(p.url().endsWith("/"));
  await drop("dropped.txt", Buffer.from("dropped ✓ 🎉"));
  await p.waitForURL(/\/d\//);
  await p.waitForSelector(".cm-content");
  assert.equal(await text(p), "dropped ✓ 🎉");
  const docs = await rest(server.http, "GET", "/api/documents", undefined, carol.token);
  const owned = docs.filter((x) => x.role === "owner").map((x) => x.title);
  assert.deepEqual(owned.sort(), ["Meeting notes", "dropped"], "nothing created by the refused drop");
  await ctx.close();
});

test("avatars show idle and away, and a typing hint names who types", async () => {
  const id = await newDoc("Awareness", "Plans for the week\n");
  // Carol's page goes idle after 1.5 s without input (60 s normally).
  const ctxs = [await contextFor(ann), await contextFor(bob), await contextFor(carol, "window.TANDEM_IDLE_MS = 1500;")];
  const [a, b, c] = await Promise.all(ctxs.map((x, i) => gatedPage(x, ["ann", "bob", "carol"][i])));
  for (const p of [a, b, c]) await open(p, id);
  const avatar = (user) => a.locator(`.presence .avatar[data-user="${user}"]`);
  await until(async () => (await a.locator(".presence .avatar").count()) === 3, "three avatars");
  assert.equal(await avatar(bob.user.id).getAttribute("data-presence"), "active");

  // Carol stops: idle, dimmed, said in the title.
  await until(async () => (await avatar(carol.user.id).getAttribute("data-presence")) === "idle", "carol idle", 10000);
  assert.match(await avatar(carol.user.id).getAttribute("title"), /Carol Cook — idle/);
  assert.ok(Number(await avatar(carol.user.id).evaluate((e) => getComputedStyle(e).opacity)) < 1);

  // Bob types: Ann sees "Bob Baker is typing…"; then his tab is hidden: away.
  await b.click(".cm-content");
  await b.keyboard.press("Control+End");
  await b.keyboard.type("- call the venue", { delay: 20 });
  await a.waitForSelector(".typing:has-text('Bob Baker is typing…')");
  await b.evaluate(() => {
    Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" });
    document.dispatchEvent(new Event("visibilitychange"));
  });
  await until(async () => (await avatar(bob.user.id).getAttribute("data-presence")) === "away", "bob away");
  assert.match(await avatar(bob.user.id).getAttribute("title"), /— away/);
  if (SHOTS) {
    mkdirSync(SHOTS, { recursive: true });
    await a.screenshot({ path: join(SHOTS, "awareness.png") });
  }
  // The hint ends a few seconds after the last keystroke.
  await until(async () => (await a.textContent(".typing")) === "", "the typing hint to end", 8000);
  // Carol comes back: active again.
  await c.mouse.move(50, 50);
  await c.mouse.move(80, 90);
  await until(async () => (await avatar(carol.user.id).getAttribute("data-presence")) === "active", "carol active");
  for (const x of ctxs) await x.close();
});
