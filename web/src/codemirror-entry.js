// The parts of CodeMirror 6 the editor page uses, bundled into
// static/vendor/codemirror.js by `npm run build` (see build.mjs). The language
// parsers are imported lazily (`loadLanguage`): esbuild splits them into
// static/vendor/cm/*.js chunks, fetched only when a document needs one.
export { EditorState, StateField, StateEffect, Annotation, Transaction, Compartment } from "@codemirror/state";
export {
  EditorView,
  Decoration,
  WidgetType,
  keymap,
  lineNumbers,
  highlightActiveLine,
  highlightActiveLineGutter,
  drawSelection,
  placeholder,
} from "@codemirror/view";
export { defaultKeymap, indentWithTab, toggleComment } from "@codemirror/commands";
export {
  HighlightStyle,
  syntaxHighlighting,
  bracketMatching,
  indentOnInput,
  foldGutter,
  foldKeymap,
  indentUnit,
} from "@codemirror/language";
export { search, searchKeymap, highlightSelectionMatches } from "@codemirror/search";
export { tags, classHighlighter } from "@lezer/highlight";

/** The language support for a Tandem language id (a promise), or null for plain text / unknown ids. */
const loaders = {
  markdown: () => import("@codemirror/lang-markdown").then((m) => m.markdown()),
  javascript: () => import("@codemirror/lang-javascript").then((m) => m.javascript({ jsx: true })),
  typescript: () => import("@codemirror/lang-javascript").then((m) => m.javascript({ typescript: true, jsx: true })),
  python: () => import("@codemirror/lang-python").then((m) => m.python()),
  rust: () => import("@codemirror/lang-rust").then((m) => m.rust()),
  go: () => import("@codemirror/lang-go").then((m) => m.go()),
  java: () => import("@codemirror/lang-java").then((m) => m.java()),
  c: () => import("@codemirror/lang-cpp").then((m) => m.cpp()),
  cpp: () => import("@codemirror/lang-cpp").then((m) => m.cpp()),
  json: () => import("@codemirror/lang-json").then((m) => m.json()),
  html: () => import("@codemirror/lang-html").then((m) => m.html()),
  css: () => import("@codemirror/lang-css").then((m) => m.css()),
  sql: () => import("@codemirror/lang-sql").then((m) => m.sql()),
  yaml: () => import("@codemirror/lang-yaml").then((m) => m.yaml()),
};

export function loadLanguage(id) {
  const load = Object.prototype.hasOwnProperty.call(loaders, id) ? loaders[id] : null;
  return load ? load() : Promise.resolve(null);
}
