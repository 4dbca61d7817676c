// The Monaco adapter of the editor page (`/d/{id}?editor=monaco`; editor.js
// holds the page). Monaco is vendored in vendor/monaco/ (built by
// web/build.mjs) and loaded only here. Like cm-editor.js: local edits become
// code-point ops, remote ops become edits (both through tandem-client.js's
// UTF-16 conversions), remote carets and selections are drawn with name
// labels, viewers get a read-only editor, and Ctrl/Cmd-Z, Ctrl/Cmd-Shift-Z
// and Ctrl/Cmd-Y go to the server's undo, not Monaco's own.
import * as monaco from "./vendor/monaco/monaco.js";
import { cpLength, cpToUtf16, fromUtf16Changes, toUtf16Changes } from "./tandem-client.js";

// Monaco's editor worker, for the features that want one, from this origin
// as a module worker (the page's CSP allows workers from 'self' only).
self.MonacoEnvironment = {
  getWorker: () => new Worker(new URL("./vendor/monaco/editor.worker.js", import.meta.url), { type: "module", name: "monaco-editor" }),
};

// Its stylesheet, once per page.
if (!document.querySelector("link[data-monaco]")) {
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = new URL("./vendor/monaco/monaco.css", import.meta.url).href;
  link.dataset.monaco = "";
  document.head.append(link);
}

// Tandem's language ids → Monaco's basic (Monarch) languages. JSON has no
// basic tokenizer in Monaco (only its worker-based service): JavaScript's
// colours it well enough.
const MONACO_LANGUAGE = {
  plaintext: "plaintext",
  markdown: "markdown",
  javascript: "javascript",
  typescript: "typescript",
  python: "python",
  rust: "rust",
  go: "go",
  java: "java",
  c: "c",
  cpp: "cpp",
  json: "javascript",
  html: "html",
  css: "css",
  sql: "sql",
  yaml: "yaml",
};

// The system's light or dark setting, followed live.
const dark = window.matchMedia("(prefers-color-scheme: dark)");
const applyTheme = () => monaco.editor.setTheme(dark.matches ? "vs-dark" : "vs");
dark.addEventListener("change", applyTheme);

// One CSS class per remote user's colour (selection tint, caret, label).
const colourClasses = new Map();
let colourSheet = null;
function colourClass(color) {
  if (!/^#[0-9a-fA-F]{3,8}$/.test(color)) color = "#888888";
  let cls = colourClasses.get(color);
  if (!cls) {
    cls = `tandem-c${colourClasses.size}`;
    colourClasses.set(color, cls);
    if (!colourSheet) {
      colourSheet = document.createElement("style");
      document.head.append(colourSheet);
    }
    colourSheet.append(`.${cls}-sel { background-color: ${color}44; }\n`);
  }
  return cls;
}

// Monaco's model has one line ending for all its lines and turns any "\r"
// into it, which would make its text differ from the server's. So a "\r"
// is held in the model as "␍" (one UTF-16 unit and one code point, like
// "\r": offsets stay the same) and shown as that, and turned back into "\r"
// on the way out.
const CR_SHOWN = "\u240d";
const toModel = (s) => (s.includes("\r") ? s.replaceAll("\r", CR_SHOWN) : s);
const fromModel = (s) => (s.includes(CR_SHOWN) ? s.replaceAll(CR_SHOWN, "\r") : s);

/** See cm-editor.js: the same interface. */
export function createEditor(host, { content, readOnly, language }, hooks) {
  const model = monaco.editor.createModel(toModel(content), "plaintext");
  model.setEOL(monaco.editor.EndOfLineSequence.LF);
  let text = model.getValue(); // the model's text before each change event
  let applyingRemote = false;
  let current = "plaintext";
  applyTheme();
  const ed = monaco.editor.create(host, {
    model,
    automaticLayout: true,
    readOnly,
    domReadOnly: readOnly,
    readOnlyMessage: { value: "You can view this document. Only its owner and editors can change it." },
    minimap: { enabled: false },
    wordWrap: "on",
    fontSize: 15,
    scrollBeyondLastLine: false,
    placeholder: "Start typing…",
  });

  // Undo/redo on the server (these bindings win over Monaco's own).
  const { KeyMod, KeyCode } = monaco;
  ed.addCommand(KeyMod.CtrlCmd | KeyCode.KeyZ, () => hooks.undo());
  ed.addCommand(KeyMod.CtrlCmd | KeyMod.Shift | KeyCode.KeyZ, () => hooks.redo());
  ed.addCommand(KeyMod.CtrlCmd | KeyCode.KeyY, () => hooks.redo());
  // The browser's own undo (menus, gestures) too.
  const onBeforeInput = (e) => {
    if (e.inputType !== "historyUndo" && e.inputType !== "historyRedo") return;
    e.preventDefault();
    e.stopPropagation();
    e.inputType === "historyUndo" ? hooks.undo() : hooks.redo();
  };
  host.addEventListener("beforeinput", onBeforeInput, true);

  model.onDidChangeContent((e) => {
    const old = text;
    text = model.getValue();
    if (applyingRemote) return;
    const changes = e.changes
      .map((c) => ({ from: c.rangeOffset, to: c.rangeOffset + c.rangeLength, insert: fromModel(c.text) }))
      .sort((a, b) => a.from - b.from);
    hooks.edit(fromUtf16Changes(old, changes));
    sendCursor();
  });

  function sendCursor() {
    const sel = ed.getSelection();
    if (!sel) return;
    const cp = (pos) => cpLength(text.slice(0, model.getOffsetAt(pos)));
    hooks.cursor(cp(sel.getSelectionStart()), cp(sel.getPosition()));
  }
  ed.onDidChangeCursorSelection(() => {
    if (!applyingRemote) sendCursor();
  });

  function applyChanges(changes) {
    applyingRemote = true;
    try {
      model.applyEdits(
        changes.map(({ from, to, insert }) => ({
          range: monaco.Range.fromPositions(model.getPositionAt(from), model.getPositionAt(to)),
          text: toModel(insert),
        })),
      );
    } finally {
      applyingRemote = false;
    }
  }

  // Remote carets: a content widget each (caret + name), selections as decorations.
  const widgets = new Map(); // client -> {widget, node, position}
  const selections = ed.createDecorationsCollection();
  function setCursors(list, active = () => true) {
    const seen = new Set();
    const decos = [];
    for (const c of list) {
      seen.add(c.client);
      const a = model.getPositionAt(cpToUtf16(text, c.anchor));
      const hd = model.getPositionAt(cpToUtf16(text, c.head));
      const cls = colourClass(c.color);
      if (c.anchor !== c.head) {
        decos.push({ range: monaco.Range.fromPositions(a, hd), options: { className: `${cls}-sel`, stickiness: 1 } });
      }
      let w = widgets.get(c.client);
      if (!w) {
        const node = document.createElement("div");
        node.className = "monaco-remote-caret";
        const label = document.createElement("span");
        label.className = "monaco-remote-label";
        node.append(label);
        w = {
          node,
          label,
          position: hd,
          widget: {
            getId: () => `tandem.caret.${c.client}`,
            getDomNode: () => node,
            getPosition: () => ({ position: w.position, preference: [monaco.editor.ContentWidgetPositionPreference.EXACT] }),
          },
        };
        widgets.set(c.client, w);
        ed.addContentWidget(w.widget);
      }
      w.node.style.setProperty("--c", /^#[0-9a-fA-F]{3,8}$/.test(c.color) ? c.color : "#888");
      w.node.style.height = `${ed.getOption(monaco.editor.EditorOption.lineHeight)}px`;
      w.label.textContent = c.name;
      w.node.title = c.name;
      w.node.classList.toggle("active", active(c.client));
      w.position = hd;
      ed.layoutContentWidget(w.widget);
    }
    for (const [client, w] of widgets) {
      if (!seen.has(client)) {
        ed.removeContentWidget(w.widget);
        widgets.delete(client);
      }
    }
    selections.set(decos);
  }

  return {
    kind: "monaco",
    monaco,
    editor: ed,
    get language() {
      return current;
    },
    text: () => fromModel(model.getValue()),
    focus: () => ed.focus(),
    reset(next) {
      applyChanges([{ from: 0, to: text.length, insert: next }]);
    },
    applyRemote(op) {
      applyChanges(toUtf16Changes(text, op));
    },
    setCursors,
    setReadOnly(ro) {
      ed.updateOptions({ readOnly: ro, domReadOnly: ro });
    },
    setLanguage(id) {
      current = Object.prototype.hasOwnProperty.call(MONACO_LANGUAGE, id) ? id : "plaintext";
      monaco.editor.setModelLanguage(model, MONACO_LANGUAGE[current]);
      host.dataset.language = current;
    },
    destroy() {
      host.removeEventListener("beforeinput", onBeforeInput, true);
      for (const w of widgets.values()) ed.removeContentWidget(w.widget);
      ed.dispose();
      model.dispose();
    },
  };
}
