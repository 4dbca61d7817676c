// Rebuilds the vendored files the pages use: static/vendor/codemirror.js
// (bundled by esbuild) and static/vendor/swagger-ui/ (the API reference
// page's files, copied as the swagger-ui-dist package ships them). Run
// `npm ci && npm run build` in web/ after changing package.json; commit the
// results: the server embeds static/ and needs no npm step to run.
import { copyFileSync, mkdirSync } from "node:fs";
import { build } from "esbuild";

await build({
  entryPoints: ["src/codemirror-entry.js"],
  bundle: true,
  format: "esm",
  minify: true,
  target: "es2020",
  legalComments: "eof",
  outfile: "static/vendor/codemirror.js",
});
console.log("wrote static/vendor/codemirror.js");

mkdirSync("static/vendor/swagger-ui", { recursive: true });
for (const f of ["swagger-ui-bundle.js", "swagger-ui.css", "LICENSE"]) {
  copyFileSync(`node_modules/swagger-ui-dist/${f}`, `static/vendor/swagger-ui/${f}`);
}
console.log("wrote static/vendor/swagger-ui/");
