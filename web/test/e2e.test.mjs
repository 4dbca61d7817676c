// End to end in headless Chromium (Debian's `chromium`, driven by
// playwright-core): two people in two browsers on one document. Bob's browser
// reaches the server through a TCP proxy the test can cut, to go offline.
//
// TANDEM_SCREENSHOTS=<dir> also saves the README's screenshots there.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { startServer, startProxy, register, rest, until, signedInPage } from "./harness.mjs";

let server, proxy, browser, alice, bob, docId, aliceToken;
const SHOTS = process.env.TANDEM_SCREENSHOTS;

before(async () => {
  server = await startServer();
  proxy = await startProxy(server.port);
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium" });
  const page = async (name) => {
    const ctx = await browser.newContext({ viewport: { width: 980, height: 560 }, deviceScaleFactor: 1 });
    const p = await ctx.newPage();
    p.on("pageerror", (e) => console.error(`[${name}] page error:`, e.message));
    return p;
  };
  alice = await page("alice");
  bob = await page("bob");
});

after(async () => {
  if (browser) await browser.close();
  if (proxy) await proxy.stop();
  if (server) await server.stop();
});

const text = (p) => p.evaluate(() => window.tandem.view.state.doc.toString());
const clientText = (p) => p.evaluate(() => window.tandem.client.text);
const status = (p) => p.getAttribute(".status", "data-status");

async function converged() {
  let last;
  await until(async () => {
    const [a, b, sa, sb] = await Promise.all([text(alice), text(bob), status(alice), status(bob)]);
    const d = await rest(server.http, "GET", `/api/documents/${docId}`, undefined, aliceToken);
    last = { a, b, sa, sb, server: d.content };
    return sa === "saved" && sb === "saved" && a === b && a === d.content;
  }, "both browsers and the server to agree").catch((e) => {
    throw new Error(`${e.message}: ${JSON.stringify(last)}`);
  });
  assert.equal(await clientText(alice), last.a);
  assert.equal(await clientText(bob), last.b);
  return last.a;
}

async function clickEnd(p) {
  await p.click(".cm-content");
  await p.keyboard.press("Control+End");
}

test("sign up, create a document, share it, and open it in a second browser", async () => {
  await alice.goto(server.http + "/");
  await alice.click("text=Sign up");
  await alice.fill("input[name=username]", "alice");
  await alice.fill("input[name=name]", "Alice Liddell");
  await alice.fill("input[name=password]", "correct horse battery staple");
  await alice.click("button[type=submit]");
  await alice.waitForSelector("h1:has-text('Documents')");
  aliceToken = await alice.evaluate(() => localStorage.getItem("tandem.token"));

  await alice.fill("input[name=title]", "Trip plan");
  await alice.click("button:has-text('New document')");
  await alice.waitForSelector(".cm-content");
  docId = alice.url().split("/d/")[1];
  assert.match(docId, /^[a-f0-9]{16}$/);
  await until(async () => (await status(alice)) === "saved", "alice online");

  // Share from the document list.
  await register(server.http, "bob", "Bob Builder");
  await alice.click("text=← Documents");
  await alice.click(`tr[data-doc="${docId}"] button:has-text('Share')`);
  await alice.fill("input[aria-label='Username to share with']", "bob");
  await alice.click("tr.sub button.primary:has-text('Share')");
  await alice.waitForSelector("text=Shared with bob");
  await alice.click(`a[href="/d/${docId}"]`);
  await alice.waitForSelector(".cm-content");

  // Bob follows the link (through the proxy), logs in, lands on the document.
  await bob.goto(`${proxy.url}/d/${docId}`);
  await bob.fill("input[name=username]", "bob");
  await bob.fill("input[name=password]", "pw-bob-long-enough");
  await bob.click("button[type=submit]");
  await bob.waitForSelector(".cm-content");
  await until(async () => (await status(bob)) === "saved", "bob online");
  await alice.waitForSelector(".avatar[data-user]:nth-child(2)");
  assert.equal(await alice.locator(".presence .avatar").count(), 2);
});

test("two browsers typing concurrently end with identical text", async () => {
  await clickEnd(alice);
  await clickEnd(bob);
  await Promise.all([
    alice.keyboard.type("Alice writes the itinerary. ", { delay: 15 }),
    bob.keyboard.type("Bob packs the bags! ", { delay: 15 }),
  ]);
  await converged();
  // Then at the two ends of the document at once.
  await alice.keyboard.press("Control+Home");
  await bob.keyboard.press("Control+End");
  await Promise.all([alice.keyboard.type("# Trip\n", { delay: 10 }), bob.keyboard.type("(done)", { delay: 10 })]);
  const t = await converged();
  assert.ok(t.startsWith("# Trip\n"), JSON.stringify(t));
  assert.ok(t.endsWith("(done)"), JSON.stringify(t));
  // Every keystroke made it: the two sentences interleave character by character
  // only where they overlapped, so compare as multisets.
  const typed = "# Trip\nAlice writes the itinerary. Bob packs the bags! (done)";
  assert.deepEqual([...t].sort(), [...typed].sort());
});

test("a remote caret is drawn with the other user's name and colour", async () => {
  await alice.keyboard.press("Control+End");
  await alice.keyboard.type(" Alice was here", { delay: 5 });
  const label = bob.locator(".cm-remote-label", { hasText: "Alice Liddell" });
  await label.waitFor({ timeout: 10000 });
  const color = await label.evaluate((el) => getComputedStyle(el).backgroundColor);
  assert.notEqual(color, "rgba(0, 0, 0, 0)");
  await bob.click(".cm-content");
  await bob.keyboard.press("Control+Home");
  await alice.locator(".cm-remote-label", { hasText: "Bob Builder" }).waitFor({ timeout: 10000 });
  // Bob's caret at the start of the document on Alice's screen.
  await until(
    () =>
      alice.evaluate(() => {
        const c = window.tandem.client.cursorList().find((c) => c.name === "Bob Builder");
        return c && c.head === 0;
      }),
    "Bob's caret to move to the start on Alice's screen",
  );
  // Drawn there: the label sits on the first line.
  const first = await alice.locator(".cm-line").first().locator(".cm-remote-label", { hasText: "Bob Builder" }).count();
  assert.equal(first, 1);
  await converged();
});

test("a browser that goes offline keeps typing and nothing is lost when it returns", async () => {
  await proxy.cut();
  await until(async () => (await status(bob)) === "offline", "bob to show offline");
  await clickEnd(bob);
  await bob.keyboard.type(" [bob offline 1]", { delay: 5 });
  await bob.keyboard.press("Control+Home");
  await bob.keyboard.type("[bob offline 2] ", { delay: 5 });
  const shown = await bob.textContent(".status");
  assert.match(shown, /^offline — \d+ edits? pending$/);
  await clickEnd(alice);
  await alice.keyboard.type(" [alice meanwhile]", { delay: 5 });
  await until(async () => (await status(alice)) === "saved", "alice saved");
  await new Promise((r) => setTimeout(r, 400));
  await proxy.restore();
  const t = await converged();
  for (const s of ["[bob offline 1]", "[bob offline 2]", "[alice meanwhile]"]) {
    assert.equal(t.split(s).length - 1, 1, `${s} exactly once in ${t}`);
  }
});

test("emoji and other astral characters typed in one browser arrive intact in the other", async () => {
  const fancy = " héllo 😀 👍🏽 𝄞 🇫🇷 中文 👩‍👩‍👧";
  await clickEnd(alice);
  await alice.keyboard.type(fancy, { delay: 5 });
  await until(async () => (await text(bob)).includes(fancy), "bob to receive the emoji");
  const t = await converged();
  assert.ok(t.includes(fancy));
  // The server counts code points: its length agrees with the browsers'.
  const d = await rest(server.http, "GET", `/api/documents/${docId}`, undefined, aliceToken);
  assert.equal([...d.content].length, [...t].length);
  if (SHOTS) await screenshots();
});

/** The README's pictures: a tidy document, Alice selecting, Bob's caret. */
async function screenshots() {
  mkdirSync(SHOTS, { recursive: true });
  const content = [
    "# Lisbon trip — shared plan ✈️",
    "",
    "## Day 1",
    "- Land 10:40, taxi to Alfama 🚕",
    "- Lunch at a tasca near Sé",
    "- Sunset at Miradouro da Senhora do Monte 🌅",
    "",
    "## Day 2",
    "- Tram 28 early, before the crowds",
    "- Pastéis de Belém 🥮 (Bob: get a dozen!)",
    "- LX Factory in the afternoon",
    "",
    "## Packing",
    "- Adapters, sunscreen, light bags 🎒",
  ].join("\n");
  await rest(server.http, "PUT", `/api/documents/${docId}`, { title: "Lisbon trip.md", content }, aliceToken);
  await converged();
  const select = (p, from, to) =>
    p.evaluate(
      ([from, to]) => {
        const v = window.tandem.view;
        const doc = v.state.doc.toString();
        const a = doc.indexOf(from);
        const b = to ? doc.indexOf(to) + to.length : a + from.length;
        v.focus();
        v.dispatch({ selection: { anchor: a, head: b } });
      },
      [from, to],
    );
  await select(alice, "Tram 28 early");
  await select(bob, "(Bob: get a dozen!)");
  await bob.evaluate(() => {
    const v = window.tandem.view;
    const at = v.state.doc.toString().indexOf("(Bob: get a dozen!)") + "(Bob: get a dozen!)".length;
    v.dispatch({ selection: { anchor: at } });
  });
  await until(async () => (await alice.locator(".cm-remote-label").count()) === 1 && (await bob.locator(".cm-remote-label").count()) === 1, "carets drawn");
  await new Promise((r) => setTimeout(r, 300));
  await alice.screenshot({ path: join(SHOTS, "editor-alice.png") });
  await bob.screenshot({ path: join(SHOTS, "editor-bob.png") });
}

test("Ctrl-Z undoes only my own edits; history restores a version; tags and titles are live", async () => {
  await clickEnd(bob);
  await bob.keyboard.type(" [bob's line]", { delay: 5 });
  await converged();
  await alice.click(".cm-content");
  await alice.keyboard.press("Control+Home");
  await alice.keyboard.type("[alice typed] ", { delay: 5 });
  const before = await converged();
  await alice.keyboard.press("Control+z");
  await until(async () => !(await text(bob)).includes("[alice typed]"), "Alice's undo to reach Bob");
  let t = await converged();
  assert.equal(t, before.replace("[alice typed] ", ""));
  assert.ok(t.includes("[bob's line]"), "Bob's edit survives Alice's undo");
  await alice.keyboard.press("Control+Shift+z");
  await until(async () => (await text(bob)).includes("[alice typed] "), "Alice's redo to reach Bob");
  assert.equal(await converged(), before);

  // Restore an older version from the history panel; both browsers follow.
  const head = await alice.evaluate(() => window.tandem.client.version);
  const target = head - 3;
  const old = await rest(server.http, "GET", `/api/documents/${docId}/versions/${target}`, undefined, aliceToken);
  await alice.click("button:has-text('History')");
  // Versions are grouped in sessions: open the newest.
  await alice.click(".history-item.session >> nth=0");
  await alice.click(`.history-item[data-version="${target}"]`);
  await alice.waitForSelector("pre.preview");
  // The preview is a diff against now: without what it deletes, it is that version.
  const shown = await alice.evaluate(() => {
    const pre = document.querySelector("pre.preview").cloneNode(true);
    pre.querySelectorAll("del").forEach((d) => d.remove());
    return pre.textContent;
  });
  assert.equal(shown, old.content || "(empty)");
  await alice.click("button:has-text('Restore this version')");
  await until(async () => (await text(bob)) === old.content, "the restore to reach Bob");
  assert.equal(await converged(), old.content);

  // Replicated metadata: a tag and a title reach the other browser live.
  await alice.fill(".tag-input", "travel");
  await alice.press(".tag-input", "Enter");
  await bob.waitForSelector('.tag[data-tag="travel"]');
  await alice.fill(".doc-title", "Lisbon, finally");
  await alice.press(".doc-title", "Enter");
  await alice.click(".cm-content");
  await until(async () => (await bob.inputValue(".doc-title")) === "Lisbon, finally", "the title to reach Bob");
  assert.match(await bob.textContent("#doc-views"), /^\d+ views$/);
  if (SHOTS) {
    await alice.click("button:has-text('Refresh')");
    await alice.waitForSelector(".history-item");
    await alice.screenshot({ path: join(SHOTS, "editor-history.png") });
  }
});

test("a viewer gets a read-only editor, and deletion is explained", async () => {
  const carol = await register(server.http, "carol", "Carol");
  await rest(server.http, "PUT", `/api/documents/${docId}/members/carol`, { role: "viewer" }, aliceToken);
  const page = await signedInPage(browser, carol);
  const ctx = page.context();
  await page.goto(`${server.http}/d/${docId}`);
  await page.waitForSelector(".cm-content");
  await page.waitForSelector("text=You can view this document");
  assert.equal(await page.getAttribute(".cm-content", "contenteditable"), "false");
  assert.equal(await page.evaluate(() => window.tandem.view.state.doc.toString()), await text(alice));

  await rest(server.http, "DELETE", `/api/documents/${docId}`, undefined, aliceToken);
  await page.waitForSelector("text=no longer have access", { timeout: 10000 });
  await bob.waitForSelector("text=no longer have access", { timeout: 10000 });
  assert.equal(await status(bob), "closed");
  await ctx.close();
});
