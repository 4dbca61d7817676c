// The parts of CodeMirror 6 the editor page uses, bundled into
// static/vendor/codemirror.js by `npm run build` (see build.mjs).
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
export { defaultKeymap, indentWithTab } from "@codemirror/commands";
