// Rebuilds the vendored files the pages use. Run `npm ci && npm run build`
// in web/ after changing package.json; commit the output: the server embeds
// static/ and needs no npm step to run.
//
// - static/vendor/codemirror.js: CodeMirror (the editor page's default
//   editor), with each language parser split into a lazily imported chunk
//   under static/vendor/cm/.
// - static/vendor/monaco/: Monaco (`/d/{id}?editor=monaco`), loaded only on
//   that page: monaco.js + monaco.css + codicon.ttf, the editor worker, and
//   one chunk per language tokenizer.
// - static/vendor/swagger-ui/: the API reference page's files (/docs),
//   copied as the swagger-ui-dist package ships them.
//
// Every output file is registered in src/web/assets.rs: this script rewrites
// the block between its `vendor files` markers (a Rust test checks that every
// file under web/static is registered).
import { build } from "esbuild";
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";

const common = {
  bundle: true,
  format: "esm",
  minify: true,
  target: "es2020",
  legalComments: "eof",
  logLevel: "warning",
};

rmSync("static/vendor", { recursive: true, force: true });

await build({
  ...common,
  entryPoints: { codemirror: "src/codemirror-entry.js" },
  splitting: true,
  outdir: "static/vendor",
  chunkNames: "cm/[name]-[hash]",
});

await build({
  ...common,
  entryPoints: {
    monaco: "src/monaco-entry.js",
    "editor.worker": "monaco-editor/editor/editor.worker.js",
  },
  splitting: true,
  target: "es2022",
  outdir: "static/vendor/monaco",
  chunkNames: "chunks/[name]-[hash]",
  assetNames: "[name]",
  loader: { ".ttf": "file" },
});

// A lazily imported language chunk gets a copy of the core's CSS that nothing
// loads (monaco.css, linked by the page, already holds it): drop the copies.
for (const f of readdirSync("static/vendor/monaco/chunks")) {
  if (f.endsWith(".css")) rmSync(join("static/vendor/monaco/chunks", f));
}

mkdirSync("static/vendor/swagger-ui", { recursive: true });
for (const f of ["swagger-ui-bundle.js", "swagger-ui.css", "LICENSE"]) {
  copyFileSync(`node_modules/swagger-ui-dist/${f}`, `static/vendor/swagger-ui/${f}`);
}

// ---- register the outputs in src/web/assets.rs

const MIME = {
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".ttf": "font/ttf",
};

function walk(dir) {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

const files = walk("static/vendor")
  .map((p) => relative("static", p))
  .sort();
const lines = files.map((f) => {
  const mime = f.endsWith("/LICENSE") ? "text/plain; charset=utf-8" : MIME[f.slice(f.lastIndexOf("."))];
  if (!mime) throw new Error(`no MIME type for ${f}`);
  return `        "${f}" => "${mime}",`;
});
const rs = "../src/web/assets.rs";
const src = readFileSync(rs, "utf8");
const begin = "        // vendor files: written by web/build.mjs\n";
const end = "        // end of vendor files\n";
const a = src.indexOf(begin);
const b = src.indexOf(end);
if (a < 0 || b < a) throw new Error(`${rs}: vendor file markers not found`);
writeFileSync(rs, src.slice(0, a + begin.length) + lines.join("\n") + "\n" + src.slice(b));

for (const f of files) console.log(`${String(statSync(join("static", f)).size).padStart(9)}  static/${f}`);
const total = files.reduce((n, f) => n + statSync(join("static", f)).size, 0);
console.log(`${String(total).padStart(9)}  total, ${files.length} files`);
