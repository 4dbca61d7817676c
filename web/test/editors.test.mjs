// The code editor end to end in headless Chromium: a Monaco user and a
// CodeMirror user on one document (concurrent typing with emoji, carets,
// undo through the server), a viewer in Monaco, languages (the menu, live
// changes, guessing from the title, highlighting, `}` de-indenting in Rust),
// the light and dark themes, and both pages at phone width (390 x 844).
//
// TANDEM_SCREENSHOTS=<dir> also saves the README's pictures there.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { startServer, register, rest, until, signedInPage } from "./harness.mjs";

const SHOTS = process.env.TANDEM_SCREENSHOTS;
let server, browser, alice, bob, docId;
const users = {};

const pageFor = async (account, opts = {}) =>
  watch(await signedInPage(browser, account, { viewport: { width: 980, height: 620 }, deviceScaleFactor: 1, ...opts }));

// Everything the pages ask for and complain about: no request may leave the
// server, and the page's CSP must not block anything (Monaco's worker, font
// and styles included).
const offsite = [];
const violations = [];
const workers = [];
function watch(p) {
  p.on("request", (r) => {
    if (!r.url().startsWith(server.http) && !r.url().startsWith("ws://" + server.addr) && !r.url().startsWith("data:") && !r.url().startsWith("blob:")) offsite.push(r.url());
  });
  p.on("console", (m) => {
    if (/Content Security Policy|Refused to/i.test(m.text())) violations.push(m.text());
  });
  p.on("worker", (w) => workers.push(w.url()));
  return p;
}

before(async () => {
  server = await startServer();
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium" });
  for (const [name, full] of [
    ["alice", "Alice Liddell"],
    ["bob", "Bob Builder"],
    ["carol", "Carol"],
  ]) {
    users[name] = await register(server.http, name, full);
  }
  const d = await rest(server.http, "POST", "/api/documents", { title: "Shared notes" }, users.alice.token);
  docId = d.id;
  await rest(server.http, "PUT", `/api/documents/${docId}/members/bob`, { role: "editor" }, users.alice.token);
  await rest(server.http, "PUT", `/api/documents/${docId}/members/carol`, { role: "viewer" }, users.alice.token);
  alice = await pageFor(users.alice);
  bob = await pageFor(users.bob);
});

after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
});

const text = (p) => p.evaluate(() => window.tandem.editor.text());
const status = (p) => p.getAttribute(".status", "data-status");
const serverDoc = (id = docId) => rest(server.http, "GET", `/api/documents/${id}`, undefined, users.alice.token);

async function converged(pages) {
  let last;
  await until(async () => {
    const shown = await Promise.all(pages.map(text));
    const states = await Promise.all(pages.map(status));
    const d = await serverDoc();
    last = { shown, states, server: d.content };
    return states.every((s) => s === "saved") && shown.every((t) => t === d.content);
  }, "every editor and the server to agree").catch((e) => {
    throw new Error(`${e.message}: ${JSON.stringify(last)}`);
  });
  for (const p of pages) assert.equal(await p.evaluate(() => window.tandem.client.text), last.server);
  return last.server;
}

async function open(p, editor) {
  await p.goto(`${server.http}/d/${docId}${editor === "monaco" ? "?editor=monaco" : ""}`);
  await p.waitForSelector(editor === "monaco" ? ".monaco-editor .view-lines" : ".cm-content");
  await until(async () => (await status(p)) === "saved", "online");
}

test("a Monaco user and a CodeMirror user typing at once, emoji included, converge", async () => {
  await open(alice, "monaco");
  await open(bob, "codemirror");
  assert.equal(await alice.evaluate(() => window.tandem.editor.kind), "monaco");
  assert.equal(await bob.evaluate(() => window.tandem.editor.kind), "codemirror");
  await alice.waitForSelector(".presence .avatar:nth-child(2)");

  await alice.click(".monaco-editor .view-lines");
  await bob.click(".cm-content");
  await Promise.all([
    alice.keyboard.type("Monaco says hi 😀 👍🏽 and 中文. ", { delay: 12 }),
    bob.keyboard.type("CodeMirror waves 🇫🇷 𝄞 back! ", { delay: 12 }),
  ]);
  let t = await converged([alice, bob]);
  // Monaco's worker is served from the binary and starts under the page's
  // CSP (the editor spawns it only for features that need one).
  const url = `${server.http}/assets/vendor/monaco/editor.worker.js`;
  const started = await alice.evaluate(
    (url) =>
      new Promise((resolve) => {
        const w = new Worker(url, { type: "module" });
        w.onerror = (e) => resolve(`error: ${e.message}`);
        setTimeout(() => resolve("running"), 1500);
      }),
    url,
  );
  assert.equal(started, "running");
  assert.ok(workers.includes(url), JSON.stringify(workers));
  assert.deepEqual(violations, []);
  assert.deepEqual(offsite, []);
  const typed = "Monaco says hi 😀 👍🏽 and 中文. CodeMirror waves 🇫🇷 𝄞 back! ";
  assert.deepEqual([...t].sort(), [...typed].sort(), "every keystroke arrived once");

  // Then at the two ends at once, on several lines.
  await alice.keyboard.press("Control+Home");
  await bob.keyboard.press("Control+End");
  await Promise.all([
    alice.keyboard.type("# top 👩‍👩‍👧\n", { delay: 8 }),
    bob.keyboard.type("\nlast line ✈️", { delay: 8 }),
  ]);
  t = await converged([alice, bob]);
  assert.ok(t.startsWith("# top 👩‍👩‍👧\n"), JSON.stringify(t));
  assert.ok(t.endsWith("\nlast line ✈️"), JSON.stringify(t));
  // The server counts code points; the editors agree with it.
  assert.equal([...(await serverDoc()).content].length, [...t].length);
});

test("remote carets show in Monaco and in CodeMirror with the other user's name", async () => {
  await bob.keyboard.press("Control+Home");
  await alice.locator(".monaco-remote-label", { hasText: "Bob Builder" }).waitFor({ timeout: 10000 });
  const color = await alice.locator(".monaco-remote-caret").first().evaluate((el) => getComputedStyle(el).borderLeftColor);
  assert.notEqual(color, "rgba(0, 0, 0, 0)");
  await alice.keyboard.press("Control+End");
  await alice.keyboard.type("!", { delay: 5 });
  await bob.locator(".cm-remote-label", { hasText: "Alice Liddell" }).waitFor({ timeout: 10000 });
  // A selection in Monaco reaches CodeMirror as a tinted range.
  await alice.evaluate(() => {
    const ed = window.tandem.editor.editor;
    ed.setSelection({ startLineNumber: 1, startColumn: 1, endLineNumber: 1, endColumn: 6 });
  });
  await bob.waitForSelector("[data-remote-selection]");
  await converged([alice, bob]);
});

test("Ctrl-Z in Monaco is the server's undo: only Alice's own edit goes", async () => {
  const before = await converged([alice, bob]);
  await bob.click(".cm-content");
  await bob.keyboard.press("Control+End");
  await bob.keyboard.type(" [bob]", { delay: 5 });
  await converged([alice, bob]);
  await alice.click(".monaco-editor .view-lines");
  await alice.keyboard.press("Control+Home");
  await alice.keyboard.type("[alice] ", { delay: 5 });
  const typed = await converged([alice, bob]);
  assert.ok(typed.startsWith("[alice] ") && typed.endsWith(" [bob]"));
  await alice.keyboard.press("Control+z");
  await until(async () => !(await text(bob)).includes("[alice]"), "the undo to reach Bob");
  assert.equal(await converged([alice, bob]), before + " [bob]");
  await alice.keyboard.press("Control+Shift+z");
  await until(async () => (await text(bob)).includes("[alice]"), "the redo to reach Bob");
  assert.equal(await converged([alice, bob]), typed);
  await alice.keyboard.press("Control+z");
  await alice.keyboard.press("Control+y");
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(await converged([alice, bob]), typed);
});

test("a viewer in Monaco cannot type and sees the language menu disabled", async () => {
  const carol = await pageFor(users.carol);
  await carol.goto(`${server.http}/d/${docId}?editor=monaco`);
  await carol.waitForSelector(".monaco-editor .view-lines");
  await carol.waitForSelector("text=You can view this document");
  const before = await serverDoc();
  assert.equal(await text(carol), before.content);
  assert.equal(await carol.evaluate(() => window.tandem.editor.editor.getOption(window.tandem.editor.monaco.editor.EditorOption.readOnly)), true);
  await carol.click(".monaco-editor .view-lines");
  await carol.keyboard.type("viewer typing", { delay: 5 });
  await carol.keyboard.press("Control+z");
  await new Promise((r) => setTimeout(r, 400));
  assert.equal(await text(carol), before.content);
  assert.equal((await serverDoc()).content, before.content);
  assert.equal(await carol.isDisabled(".lang-select"), true);
  await carol.context().close();
});

/** The colour a `tok-keyword` span is drawn in, or null when there is none. */
const keywordColor = (p) =>
  p.evaluate(() => {
    const el = document.querySelector(".cm-content .tok-keyword");
    return el ? getComputedStyle(el).color : null;
  });

test("a language chosen in one editor reaches the other live, and CodeMirror highlights it", async () => {
  const code = "def greet(name):\n    return f\"hi {name}\"  # 👋\n";
  await rest(server.http, "PUT", `/api/documents/${docId}`, { title: "Shared notes", content: code }, users.alice.token);
  await until(async () => (await text(bob)) === code && (await text(alice)) === code, "the new content in both editors");
  assert.equal(await bob.inputValue(".lang-select"), "");
  assert.equal(await keywordColor(bob), null, "plain text has no highlighting");

  await alice.selectOption(".lang-select", "python");
  await until(async () => (await bob.inputValue(".lang-select")) === "python", "Bob's menu to show Python");
  await until(async () => (await keywordColor(bob)) !== null, "Python keywords highlighted in Bob's CodeMirror");
  assert.equal(await bob.evaluate(() => window.tandem.editor.language), "python");
  await until(
    () => alice.evaluate(() => window.tandem.editor.editor.getModel().getLanguageId() === "python"),
    "Monaco's model in Python",
  );
  assert.equal((await serverDoc()).language, "python");

  // Back to automatic: a title ending in .rs makes it Rust, on both screens.
  await bob.selectOption(".lang-select", "");
  await rest(server.http, "PUT", `/api/documents/${docId}`, { title: "main.rs", content: "" }, users.alice.token);
  await until(async () => (await bob.getAttribute(".lang-select", "data-language")) === "rust", "Bob's menu to guess Rust");
  assert.match(await bob.locator(".lang-select option").first().textContent(), /^Auto \(from title\): Rust$/);
  assert.equal(await bob.inputValue(".lang-select"), "");
  await until(() => alice.evaluate(() => window.tandem.editor.editor.getModel().getLanguageId() === "rust"), "Monaco's model in Rust");
});

test("CodeMirror indents Rust: a typed `}` de-indents, brackets match", async () => {
  await until(async () => (await text(bob)) === "", "an empty document");
  await until(async () => (await bob.evaluate(() => window.tandem.editor.language)) === "rust", "Rust in CodeMirror");
  await bob.click(".cm-content");
  await bob.keyboard.type("fn main() {", { delay: 5 });
  await bob.keyboard.press("Enter");
  await bob.keyboard.type("let x = 1;", { delay: 5 });
  await bob.keyboard.press("Enter");
  await bob.keyboard.type("}", { delay: 5 });
  const t = await converged([alice, bob]);
  const lines = t.split("\n");
  assert.equal(lines.length, 3, JSON.stringify(t));
  assert.equal(lines[0], "fn main() {");
  assert.match(lines[1], /^\s+let x = 1;$/, "the body is indented");
  assert.equal(lines[2], "}", "the closing brace went back to column 0");
  // The caret sits after `}`: its bracket and the `{` are marked.
  await bob.waitForSelector(".cm-matchingBracket");
  assert.notEqual(await keywordColor(bob), null);
});

test("the highlighting follows the system's light or dark setting, live", async () => {
  await rest(server.http, "PUT", `/api/documents/${docId}`, { title: "main.rs", content: RUST }, users.alice.token);
  await until(async () => (await text(bob)) === RUST && (await text(alice)) === RUST, "the Rust sample in both editors");
  await bob.emulateMedia({ colorScheme: "light" });
  await alice.emulateMedia({ colorScheme: "light" });
  const light = await keywordColor(bob);
  const lightBg = await bob.evaluate(() => getComputedStyle(document.querySelector(".cm-editor")).backgroundColor);
  const monacoLight = await alice.evaluate(() => getComputedStyle(document.querySelector(".monaco-editor")).backgroundColor);
  if (SHOTS) await shots("light");
  await bob.emulateMedia({ colorScheme: "dark" });
  await alice.emulateMedia({ colorScheme: "dark" });
  await until(async () => (await keywordColor(bob)) !== light, "CodeMirror's keywords to change colour");
  const darkBg = await bob.evaluate(() => getComputedStyle(document.querySelector(".cm-editor")).backgroundColor);
  assert.notEqual(darkBg, lightBg);
  await until(
    async () => (await alice.evaluate(() => document.querySelector(".monaco-editor").classList.contains("vs-dark"))) === true,
    "Monaco's dark theme",
  );
  assert.notEqual(await alice.evaluate(() => getComputedStyle(document.querySelector(".monaco-editor")).backgroundColor), monacoLight);
  if (SHOTS) await shots("dark");
  await bob.emulateMedia({ colorScheme: "light" });
  await alice.emulateMedia({ colorScheme: "light" });
});

test("the editor switch moves between CodeMirror and Monaco on the same document", async () => {
  // On a 980 px screen the title keeps room beside the tools.
  assert.ok((await bob.evaluate(() => document.querySelector(".doc-title").clientWidth)) >= 150, "the title has room");
  await bob.click("a.editor-switch");
  await bob.waitForSelector(".monaco-editor .view-lines");
  assert.match(bob.url(), /\?editor=monaco$/);
  await until(async () => (await status(bob)) === "saved", "Bob online in Monaco");
  assert.equal(await text(bob), (await serverDoc()).content);
  assert.equal(await bob.textContent("a.editor-switch"), "CodeMirror");
  await bob.click("a.editor-switch");
  await bob.waitForSelector(".cm-content");
  assert.doesNotMatch(bob.url(), /editor=/);
  await until(async () => (await status(bob)) === "saved", "Bob online in CodeMirror");
  await converged([alice, bob]);
});

// ---- phones

/** Nothing wider than the screen; `sel` inside the viewport and on top (clickable). */
async function fitsAndReachable(p, sels) {
  const width = await p.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 390, `the page is ${width}px wide`);
  for (const sel of sels) {
    const r = await p.evaluate((sel) => {
      const el = document.querySelector(sel);
      if (!el) return null;
      const b = el.getBoundingClientRect();
      const top = document.elementFromPoint(b.left + b.width / 2, b.top + b.height / 2);
      return { left: b.left, right: b.right, top: b.top, bottom: b.bottom, onTop: !!top && (top === el || el.contains(top)) };
    }, sel);
    assert.ok(r, `${sel} is on the page`);
    assert.ok(r.left >= 0 && r.right <= 390 && r.top >= 0 && r.bottom <= 844, `${sel} is on screen: ${JSON.stringify(r)}`);
    assert.ok(r.onTop, `${sel} is not covered by anything`);
  }
}

const overlap = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;

test("at 390 px the document list fits: titles cut with an ellipsis, Delete reachable", async () => {
  const long = "A very long document title that would never fit on a phone screen at all.md";
  const other = await rest(server.http, "POST", "/api/documents", { title: long }, users.alice.token);
  const phone = await pageFor(users.alice, { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  await phone.goto(`${server.http}/`);
  await phone.waitForSelector(`tr[data-doc="${other.id}"]`);
  const row = `tr[data-doc="${other.id}"]`;
  await fitsAndReachable(phone, [`${row} td.title a`, `${row} button.danger`, `${row} td.actions button:nth-of-type(2)`, "button.primary"]);
  const t = await phone.evaluate((row) => {
    const a = document.querySelector(`${row} td.title a`);
    const rect = (el) => el.getBoundingClientRect().toJSON();
    return {
      cut: a.scrollWidth > a.clientWidth,
      ellipsis: getComputedStyle(a).textOverflow,
      title: rect(a),
      role: rect(document.querySelector(`${row} .role`)),
      buttons: [...document.querySelectorAll(`${row} button`)].map(rect),
    };
  }, row);
  assert.ok(t.cut, "the long title is cut");
  assert.equal(t.ellipsis, "ellipsis");
  for (const b of [t.role, ...t.buttons]) assert.ok(!overlap(t.title, b), `the title overlaps ${JSON.stringify(b)}`);
  if (SHOTS) {
    mkdirSync(SHOTS, { recursive: true });
    await phone.screenshot({ path: join(SHOTS, "phone-list.png") });
  }
  // Delete, reached and used.
  await phone.click(`${row} button.danger`);
  await phone.click("tr.sub button.danger");
  await phone.waitForSelector(row, { state: "detached" });
  await fitsAndReachable(phone, [`tr[data-doc="${docId}"] button.danger`]);
  await phone.context().close();
});

for (const editor of ["codemirror", "monaco"]) {
  test(`at 390 px the ${editor} page fits: title, connection state and History reachable`, async () => {
    await rest(server.http, "PUT", `/api/documents/${docId}`, { title: "A rather long title for the phone screen.rs" }, users.alice.token);
    const phone = await pageFor(users.alice, { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
    await phone.goto(`${server.http}/d/${docId}${editor === "monaco" ? "?editor=monaco" : ""}`);
    await phone.waitForSelector(editor === "monaco" ? ".monaco-editor .view-lines" : ".cm-content");
    await until(async () => (await status(phone)) === "saved", "online on the phone");
    await fitsAndReachable(phone, [".status", ".history-btn", ".doc-title", ".lang-select", "a.editor-switch"]);
    const r = await phone.evaluate(() => {
      const rect = (s) => document.querySelector(s).getBoundingClientRect().toJSON();
      return { title: rect(".doc-title"), status: rect(".status"), history: rect(".history-btn"), lang: rect(".lang-select"), sw: rect("a.editor-switch") };
    });
    for (const k of ["status", "history", "lang", "sw"]) assert.ok(!overlap(r.title, r[k]), `the title overlaps ${k}`);
    assert.equal(await phone.evaluate(() => getComputedStyle(document.querySelector(".doc-title")).textOverflow), "ellipsis");
    if (SHOTS && editor === "codemirror") await phone.screenshot({ path: join(SHOTS, "phone-editor.png") });
    await phone.click(".history-btn");
    await phone.waitForSelector("aside.history:not([hidden]) h2");
    assert.ok((await phone.evaluate(() => document.documentElement.scrollWidth)) <= 390);
    await phone.context().close();
  });
}

test("CodeMirror and Monaco keep a document with \\r\\n line ends exactly: what they show and send is the server's text", async () => {
  await rest(server.http, "PUT", `/api/documents/${docId}`, { content: "one\r\ntwo\r\n", language: "" }, users.alice.token);
  await open(bob, "codemirror");
  await until(async () => (await text(bob)) === "one\r\ntwo\r\n", "the \\r\\n text in CodeMirror");
  await bob.click(".cm-content");
  await bob.keyboard.press("Control+End");
  await bob.keyboard.type("three", { delay: 5 });
  assert.equal(await converged([bob]), "one\r\ntwo\r\nthree");
  // Monaco holds each "\r" as a visible "␍": same offsets, same text out.
  await open(alice, "monaco");
  await until(async () => (await text(alice)) === "one\r\ntwo\r\nthree", "the \\r\\n text in Monaco");
  await alice.click(".monaco-editor .view-lines");
  await alice.keyboard.press("Control+End");
  await alice.keyboard.type("!", { delay: 5 });
  await bob.keyboard.type("?", { delay: 5 });
  const t = await converged([alice, bob]);
  assert.match(t, /^one\r\ntwo\r\nthree[!?]{2}$/, JSON.stringify(t));
});

test("no page asked anything of another origin, and the CSP blocked nothing", () => {
  assert.deepEqual(offsite, []);
  assert.deepEqual(violations, []);
});

const RUST = `// A tiny shared counter, edited by two people at once.
use std::collections::HashMap;

#[derive(Debug, Default)]
struct Tally {
    counts: HashMap<String, u64>,
}

impl Tally {
    fn add(&mut self, word: &str) -> u64 {
        let n = self.counts.entry(word.to_owned()).or_insert(0);
        *n += 1;
        *n
    }
}

fn main() {
    let mut t = Tally::default();
    for w in "to be or not to be".split_whitespace() {
        t.add(w);
    }
    println!("{:?} 🎉", t.counts.get("be"));
}
`;

/** The README's pictures of the code editor, in `scheme`. */
async function shots(scheme) {
  mkdirSync(SHOTS, { recursive: true });
  await bob.evaluate(() => {
    const v = window.tandem.view;
    const at = v.state.doc.toString().indexOf("fn add");
    v.focus();
    v.dispatch({ selection: { anchor: at + 3, head: at + 6 } });
  });
  await alice.evaluate(() => {
    const ed = window.tandem.editor.editor;
    ed.focus();
    ed.setPosition({ lineNumber: 18, column: 5 });
  });
  await until(async () => (await bob.locator(".cm-remote-label").count()) === 1, "Alice's caret on Bob's screen");
  await until(async () => (await alice.locator(".monaco-remote-label").count()) === 1, "Bob's caret on Alice's screen");
  await new Promise((r) => setTimeout(r, 300));
  await bob.screenshot({ path: join(SHOTS, `editor-rust-${scheme}.png`) });
  if (scheme === "light") await alice.screenshot({ path: join(SHOTS, "editor-monaco.png") });
}
