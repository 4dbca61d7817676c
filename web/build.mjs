// Rebuilds static/vendor/codemirror.js, the one vendored bundle the editor page
// imports. Run `npm ci && npm run build` in web/ after changing package.json;
// commit the bundle: the server embeds static/ and needs no npm step to run.
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
