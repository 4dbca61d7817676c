// The tandem-client package (web/client): its hand-written declarations
// cover every export of the module, and an app's usage of it type-checks
// against them (`tsc --noEmit`, TypeScript pinned in package.json), while the
// misuses marked `@ts-expect-error` are rejected.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import * as client from "../client/tandem-client.js";

const dts = readFileSync(new URL("../client/tandem-client.d.ts", import.meta.url), "utf8");

test("every export of tandem-client.js is declared in tandem-client.d.ts, and nothing more", () => {
  const declared = new Set([...dts.matchAll(/^export (?:declare )?(?:function|class|const) (\w+)/gm)].map((m) => m[1]));
  assert.deepEqual([...declared].sort(), Object.keys(client).sort());
});

test("the package's exports point at the module and its types", async () => {
  const pkg = JSON.parse(readFileSync(new URL("../client/package.json", import.meta.url), "utf8"));
  assert.equal(pkg.name, "tandem-client");
  assert.equal(pkg.type, "module");
  const exp = pkg.exports["."];
  assert.deepEqual(Object.keys(exp), ["types", "default"], "types must come first");
  for (const f of [exp.types, exp.default]) assert.ok(pkg.files.includes(f.replace(/^\.\//, "")), `${f} in files`);
  // The modules the entry point imports (and theirs) ship with it.
  const seen = new Set();
  const shipped = (f) => {
    if (seen.has(f)) return;
    seen.add(f);
    assert.ok(pkg.files.includes(f), `${f} (imported) in files`);
    const src = readFileSync(new URL(`../client/${f}`, import.meta.url), "utf8");
    for (const m of src.matchAll(/from "\.\/([^"]+)"/g)) shipped(m[1]);
  };
  shipped(exp.default.replace(/^\.\//, ""));
  assert.ok(seen.size > 1, "the entry point's imports were followed");
  // Node resolves the package by its name from inside it (self-reference).
  const viaName = await import(new URL("../client/test/self.mjs", import.meta.url));
  assert.equal(viaName.TandemClient, client.TandemClient);
});

test("a TypeScript app using the package type-checks, and misuses do not", () => {
  const tsc = new URL("../node_modules/.bin/tsc", import.meta.url).pathname;
  const project = new URL("../client/test/tsconfig.json", import.meta.url).pathname;
  try {
    execFileSync(tsc, ["--noEmit", "-p", project], { encoding: "utf8", stdio: "pipe" });
  } catch (e) {
    assert.fail(`tsc reported errors:\n${e.stdout}${e.stderr}`);
  }
});
