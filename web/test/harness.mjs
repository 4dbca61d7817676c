// Test harness for the node suites: a throwaway tandem server (the binary from
// TANDEM_BIN, as `cargo test` passes it), a TCP proxy that can cut a client off
// the network and let it back, and small REST helpers.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import net from "node:net";
import { createInterface } from "node:readline";

export const JWT_SECRET = "node-suite-secret-0123456789abcdef-0123456789";

function binary() {
  const bin = process.env.TANDEM_BIN || new URL("../../target/debug/tandem", import.meta.url).pathname;
  if (!existsSync(bin)) throw new Error(`no server binary at ${bin}: run these through \`cargo test --test it web_client\` or set TANDEM_BIN`);
  return bin;
}

/** Start `tandem` on a free port with a fresh data directory; `stop()` kills it. */
export async function startServer(env = {}) {
  const dir = mkdtempSync(join(tmpdir(), "tandem-node-"));
  const child = spawn(binary(), [], {
    env: {
      PATH: process.env.PATH,
      HOST: "127.0.0.1",
      PORT: "0",
      DATA_DIR: dir,
      JWT_SECRET,
      RUST_LOG: "error",
      SNAPSHOT_INTERVAL_MS: "200",
      ...env,
    },
    cwd: dir,
    stdio: ["ignore", "pipe", "inherit"],
  });
  const addr = await new Promise((resolve, reject) => {
    const rl = createInterface({ input: child.stdout });
    rl.on("line", (l) => {
      const m = l.match(/^listening on http:\/\/(\S+)/);
      if (m) resolve(m[1]);
    });
    child.on("exit", (code) => reject(new Error(`tandem exited (${code}) before listening`)));
  });
  return {
    addr,
    http: `http://${addr}`,
    ws: `ws://${addr}`,
    port: Number(addr.split(":").pop()),
    async stop() {
      if (child.exitCode === null) {
        child.kill("SIGKILL");
        await new Promise((r) => child.once("exit", r));
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A TCP proxy to `port`: `cut()` drops every connection and refuses new ones; `restore()` lets them in. */
export async function startProxy(port) {
  const sockets = new Set();
  let server = null;
  let listenPort = 0;
  const open = () =>
    new Promise((resolve) => {
      server = net.createServer((c) => {
        const up = net.connect(port, "127.0.0.1");
        sockets.add(c);
        sockets.add(up);
        c.pipe(up);
        up.pipe(c);
        const end = () => {
          c.destroy();
          up.destroy();
          sockets.delete(c);
          sockets.delete(up);
        };
        c.on("error", end).on("close", end);
        up.on("error", end).on("close", end);
      });
      server.listen(listenPort, "127.0.0.1", () => {
        listenPort = server.address().port;
        resolve();
      });
    });
  await open();
  return {
    get port() {
      return listenPort;
    },
    get url() {
      return `http://127.0.0.1:${listenPort}`;
    },
    async cut() {
      await new Promise((r) => {
        server.close(() => r());
        for (const s of sockets) s.destroy();
        sockets.clear();
      });
    },
    async restore() {
      await open();
    },
    async stop() {
      await this.cut();
    },
  };
}

export async function rest(base, method, path, body, token) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  const data = text ? JSON.parse(text) : null;
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return data;
}

export async function register(base, username, name) {
  return rest(base, "POST", "/api/auth/register", { username, password: `pw-${username}-long-enough`, name });
}

/** Poll `fn` until it returns truthy (or throw with `what` after `ms`). */
export async function until(fn, what, ms = 15000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A small seeded PRNG (mulberry32), so randomized tests replay. */
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A page in a new browser context of `browser`, signed in as `account` (what
 * `register` returned: its token and user are put in localStorage before any
 * script runs). `opts` are the context's options (viewport, colour scheme…).
 */
export async function signedInPage(browser, account, opts = {}) {
  const ctx = await browser.newContext(opts);
  await ctx.addInitScript(
    ([token, user]) => {
      localStorage.setItem("tandem.token", token);
      localStorage.setItem("tandem.user", user);
    },
    [account.token, JSON.stringify(account.user)],
  );
  const page = await ctx.newPage();
  page.on("pageerror", (e) => console.error(`[${account.user.username}] page error:`, e.message));
  return page;
}
