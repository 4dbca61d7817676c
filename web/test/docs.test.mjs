// The API reference pages in headless Chromium: /docs (Swagger UI from the
// vendored bundle) renders the whole API under the page's strict CSP with no
// request leaving the server, "Authorize" with a real token and "Try it out"
// on GET /api/documents returns the caller's documents, and /docs/protocol
// renders the WebSocket protocol.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { startServer, register, rest } from "./harness.mjs";

let server, browser, page;
const SHOTS = process.env.TANDEM_SCREENSHOTS;
const violations = [];
const foreign = [];
const errors = [];

before(async () => {
  server = await startServer();
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium" });
  const ctx = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  page = await ctx.newPage();
  // A CSP refusal is reported as an event in the page; collect them all.
  await page.addInitScript(() => {
    window.__csp = [];
    document.addEventListener("securitypolicyviolation", (e) =>
      window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  page.on("request", (r) => {
    if (!r.url().startsWith(server.http) && !r.url().startsWith("data:")) foreign.push(r.url());
  });
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(m.text());
  });
});

after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
});

test("/docs: every route, the WebSocket section, and try-it with a bearer token", async () => {
  const { token } = await register(server.http, "reader", "Reader");
  await rest(server.http, "POST", "/api/documents", { title: "From the docs page.py" }, token);

  await page.goto(`${server.http}/docs`);
  await page.waitForSelector(".swagger-ui .info .title", { timeout: 15000 });
  assert.match(await page.textContent(".swagger-ui .info .title"), /Tandem/);
  const spec = await rest(server.http, "GET", "/api/openapi.json");
  const routes = Object.entries(spec.paths).flatMap(([p, item]) => Object.keys(item).map((m) => `${m} ${p}`));
  // Every operation of the spec is on the page, the WebSocket's included.
  const shown = await page.$$eval(".opblock-summary", (els) => els.map((e) => {
    const method = e.querySelector(".opblock-summary-method")?.textContent.trim().toLowerCase();
    const path = e.querySelector(".opblock-summary-path")?.getAttribute("data-path");
    return `${method} ${path}`;
  }));
  for (const r of routes) assert.ok(shown.includes(r), `${r} not shown; shown: ${shown.join(", ")}`);
  assert.ok(shown.includes("get /ws/{id}"));
  assert.ok(await page.$('a[href="/docs/protocol"]'), "a link to the protocol page");

  // Authorize with the token, then try GET /api/documents.
  await page.click("button.authorize");
  await page.fill(".auth-container input", token);
  await page.click(".auth-btn-wrapper button.authorize");
  await page.click(".btn-done");
  const op = page.locator(".opblock-get", { has: page.locator('[data-path="/api/documents"]') }).first();
  await op.locator(".opblock-summary").click();
  await op.locator("button.try-out__btn").click();
  await op.locator("button.execute").click();
  const status = op.locator(".live-responses-table tbody .response-col_status").first();
  await status.waitFor({ timeout: 10000 });
  assert.equal((await status.textContent()).trim(), "200");
  assert.match(await op.locator(".live-responses-table tbody .response-col_description").first().textContent(),
    /From the docs page\.py/);
  if (SHOTS) {
    await op.screenshot({ path: join(SHOTS, "api-docs-try.png") });
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: join(SHOTS, "api-docs.png") });
  }

  const csp = await page.evaluate(() => window.__csp);
  assert.deepEqual(csp, [], "no CSP violation");
  assert.deepEqual(foreign, [], "no request left the server");
  assert.deepEqual(errors, [], "no error in the console");
});

test("/docs/protocol: the WebSocket protocol, rendered, same CSP", async () => {
  const res = await page.goto(`${server.http}/docs/protocol`);
  assert.match(res.headers()["content-security-policy"], /script-src 'self'/);
  assert.match(await page.textContent("h1"), /Tandem protocol v1/);
  const headings = await page.$$eval("h2", (hs) => hs.map((h) => h.textContent));
  assert.ok(headings.includes("Connecting"), headings.join(", "));
  assert.ok((await page.$$("table")).length >= 3, "its tables render");
  assert.deepEqual(await page.evaluate(() => window.__csp), []);
  assert.deepEqual(foreign, []);
});
