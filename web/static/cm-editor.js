// The CodeMirror 6 adapter of the editor page (editor.js holds the page).
// Converts between CodeMirror's UTF-16 offsets and the protocol's code points
// at this edge, draws remote carets and selections in each user's colour with
// a name label, highlights the document's language (its parser loaded lazily
// from vendor/cm/), and routes undo/redo to the server.
//
// Highlighting uses @lezer/highlight's stable `tok-*` classes, coloured in
// style.css for light and dark (`prefers-color-scheme`), so the theme follows
// the system setting live without any code here.
import {
  EditorState,
  EditorView,
  StateField,
  StateEffect,
  Annotation,
  Transaction,
  Compartment,
  Decoration,
  WidgetType,
  keymap,
  lineNumbers,
  highlightActiveLine,
  highlightActiveLineGutter,
  drawSelection,
  placeholder,
  defaultKeymap,
  indentWithTab,
  toggleComment,
  syntaxHighlighting,
  classHighlighter,
  bracketMatching,
  indentOnInput,
  foldGutter,
  foldKeymap,
  search,
  searchKeymap,
  highlightSelectionMatches,
  loadLanguage,
} from "./vendor/codemirror.js";
import { cpLength, cpToUtf16, fromUtf16Changes, toUtf16Changes } from "./tandem-client.js";

const remote = Annotation.define();
const setCursors = StateEffect.define();

class CaretWidget extends WidgetType {
  constructor(name, color, active) {
    super();
    this.name = name;
    this.color = color;
    this.active = active;
  }
  eq(o) {
    return o.name === this.name && o.color === this.color && o.active === this.active;
  }
  toDOM() {
    const el = document.createElement("span");
    el.className = this.active ? "cm-remote-caret active" : "cm-remote-caret";
    el.title = this.name;
    el.style.setProperty("--c", this.color);
    const label = document.createElement("span");
    label.className = "cm-remote-label";
    label.textContent = this.name;
    el.append(label);
    return el;
  }
  ignoreEvent() {
    return true;
  }
}

// Remote carets, in UTF-16 offsets of the current document.
const cursorField = StateField.define({
  create: () => Decoration.none,
  update(deco, tr) {
    deco = deco.map(tr.changes);
    for (const e of tr.effects) if (e.is(setCursors)) deco = e.value;
    return deco;
  },
  provide: (f) => EditorView.decorations.from(f),
});

function cursorDecorations(doc, cursors, active) {
  const ranges = [];
  const len = doc.length;
  for (const c of cursors) {
    const a = Math.min(len, cpToUtf16(doc, c.anchor));
    const hd = Math.min(len, cpToUtf16(doc, c.head));
    const from = Math.min(a, hd);
    const to = Math.max(a, hd);
    if (from < to) {
      ranges.push(Decoration.mark({ attributes: { style: `background-color: ${c.color}33`, "data-remote-selection": c.user } }).range(from, to));
    }
    ranges.push(Decoration.widget({ widget: new CaretWidget(c.name, c.color, active(c.client)), side: 1 }).range(hd));
  }
  return Decoration.set(ranges, true);
}

/**
 * The editor, created on `host` with `content`. `hooks`: `edit(op)` (a local
 * edit as a code-point op), `cursor(anchor, head)` (code points), `undo()`,
 * `redo()`. Returns the adapter editor.js drives.
 */
export function createEditor(host, { content, readOnly, language }, hooks) {
  const editable = new Compartment();
  const lang = new Compartment();
  let applyingRemote = false;
  let wanted = null; // the language id asked for last
  let current = "plaintext"; // the language id in effect

  // Ctrl/Cmd-Z: undo; Ctrl/Cmd-Shift-Z and Ctrl/Cmd-Y: redo — on the server.
  function onHistoryKey(e) {
    if (!(e.ctrlKey || e.metaKey) || e.altKey) return false;
    const k = e.key.toLowerCase();
    if (k !== "z" && k !== "y") return false;
    e.preventDefault();
    if (k === "y" || e.shiftKey) hooks.redo();
    else hooks.undo();
    return true;
  }

  // The browser's own undo (menus, gestures) goes to the server too.
  function onHistoryInput(e) {
    if (e.inputType !== "historyUndo" && e.inputType !== "historyRedo") return false;
    e.preventDefault();
    e.inputType === "historyUndo" ? hooks.undo() : hooks.redo();
    return true;
  }

  function onUpdate(u) {
    if (applyingRemote) return;
    if (u.docChanged) {
      for (const tr of u.transactions) {
        if (!tr.docChanged || tr.annotation(remote)) continue;
        const changes = [];
        tr.changes.iterChanges((from, to, _b, _c, ins) => changes.push({ from, to, insert: ins.toString() }));
        hooks.edit(fromUtf16Changes(tr.startState.doc.toString(), changes));
      }
    }
    if (u.selectionSet || u.docChanged) {
      const sel = u.state.selection.main;
      const doc = u.state.doc;
      const cp = (pos) => cpLength(doc.sliceString(0, pos));
      hooks.cursor(cp(sel.anchor), cp(sel.head));
    }
  }

  const editableExt = (ro) => [EditorState.readOnly.of(ro), EditorView.editable.of(!ro)];

  const view = new EditorView({
    parent: host,
    state: EditorState.create({
      doc: content,
      extensions: [
        // Only "\n" breaks lines: a "\r" stays a character of the text, so
        // the editor's text is the server's exactly (CodeMirror would
        // otherwise turn "\r\n" into "\n" and the lengths would differ).
        EditorState.lineSeparator.of("\n"),
        lineNumbers(),
        foldGutter(),
        highlightActiveLineGutter(),
        highlightActiveLine(),
        drawSelection(),
        EditorView.lineWrapping,
        placeholder("Start typing…"),
        syntaxHighlighting(classHighlighter),
        bracketMatching(),
        indentOnInput(),
        search({ top: true }),
        highlightSelectionMatches(),
        // Undo/redo are the server's: per user, past everyone's later edits.
        EditorView.domEventHandlers({ keydown: onHistoryKey, beforeinput: onHistoryInput }),
        keymap.of([{ key: "Mod-/", run: toggleComment }, ...searchKeymap, ...foldKeymap, ...defaultKeymap, indentWithTab]),
        cursorField,
        lang.of([]),
        editable.of(editableExt(readOnly)),
        EditorView.updateListener.of(onUpdate),
      ],
    }),
  });

  function dispatchRemote(spec) {
    applyingRemote = true;
    try {
      view.dispatch({ ...spec, annotations: [remote.of(true), Transaction.addToHistory.of(false)] });
    } finally {
      applyingRemote = false;
    }
  }

  const editor = {
    kind: "codemirror",
    view,
    get language() {
      return current;
    },
    text: () => view.state.doc.toString(),
    focus: () => view.focus(),
    reset(text) {
      dispatchRemote({ changes: { from: 0, to: view.state.doc.length, insert: text } });
    },
    applyRemote(op) {
      dispatchRemote({ changes: toUtf16Changes(view.state.doc.toString(), op) });
    },
    setCursors(list, active = () => true) {
      view.dispatch({ effects: setCursors.of(cursorDecorations(view.state.doc.toString(), list, active)) });
    },
    setReadOnly(ro) {
      view.dispatch({ effects: editable.reconfigure(editableExt(ro)) });
    },
    /** Switch the highlighting to language `id` (its parser fetched first). */
    async setLanguage(id) {
      wanted = id;
      let support = null;
      try {
        support = await loadLanguage(id);
      } catch (e) {
        console.error(`language ${id} failed to load`, e);
      }
      if (wanted !== id || destroyed) return; // another choice came meanwhile
      view.dispatch({ effects: lang.reconfigure(support || []) });
      current = support ? id : "plaintext";
      host.dataset.language = current;
    },
    destroy() {
      destroyed = true;
      view.destroy();
    },
  };
  let destroyed = false;
  editor.setLanguage(language || "plaintext");
  return editor;
}
