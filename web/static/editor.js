// The editor page: CodeMirror 6 bound to a TandemClient. Converts between
// CodeMirror's UTF-16 offsets and the protocol's code points at this edge, draws
// remote carets and selections in each user's colour with a name label, shows
// who is here and the connection state ("saved", "saving…", "offline — N edits
// pending"), and turns read-only for viewers.
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
} from "./vendor/codemirror.js";
import { TandemClient, OpBuilder, cpLength, cpToUtf16 } from "./tandem-client.js";
import { offlineStore } from "./offline-store.js";
import { mountAwareness, userPresence } from "./awareness.js";
import { downloadDocument } from "./files.js";

const remote = Annotation.define();
const setCursors = StateEffect.define();

class CaretWidget extends WidgetType {
  constructor(name, color) {
    super();
    this.name = name;
    this.color = color;
  }
  eq(o) {
    return o.name === this.name && o.color === this.color;
  }
  toDOM() {
    const el = document.createElement("span");
    el.className = "cm-remote-caret";
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

function cursorDecorations(doc, cursors) {
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
    ranges.push(Decoration.widget({ widget: new CaretWidget(c.name, c.color), side: 1 }).range(hd));
  }
  return Decoration.set(ranges, true);
}

/** A CodeMirror transaction's changes as one code-point op on its start document. */
function toOp(tr) {
  const old = tr.startState.doc.toString();
  const op = new OpBuilder();
  let u = 0; // UTF-16 position in old
  tr.changes.iterChanges((fromA, toA, _fromB, _toB, inserted) => {
    op.retain(cpLength(old.slice(u, fromA)))
      .delete(cpLength(old.slice(fromA, toA)))
      .insert(inserted.toString());
    u = toA;
  });
  return op.retain(cpLength(old.slice(u))).build();
}

/** A code-point op as CodeMirror changes on `doc` (all in `doc`'s coordinates). */
function toChanges(doc, op) {
  const changes = [];
  let u = 0;
  for (const c of op) {
    if (typeof c === "string") changes.push({ from: u, insert: c });
    else if (c > 0) u = cpToUtf16(doc, c, u);
    else {
      const to = cpToUtf16(doc, -c, u);
      changes.push({ from: u, to });
      u = to;
    }
  }
  return changes;
}

function initials(name) {
  const parts = String(name || "?").trim().split(/\s+/);
  const chars = parts.length > 1 ? [parts[0], parts[parts.length - 1]] : [parts[0]];
  return chars.map((p) => Array.from(p)[0] || "").join("").toUpperCase().slice(0, 4);
}

export function openEditor({ main, topSlot, id, h, api, session, go }) {
  const status = h("span.status.saving", { "data-status": "connecting", text: "connecting…", role: "status" });
  const presence = h("div.presence", { "aria-label": "People here" });
  const title = h("input.doc-title", { value: "", "aria-label": "Document title", maxlength: 200 });
  const back = h("a", { href: "/", "data-nav": true, text: "← Documents" });
  const historyBtn = h("button", { text: "History", "aria-expanded": "false" });
  const downloadBtn = h("button", { text: "Download", title: "Download as a file", "data-download": true });
  downloadBtn.addEventListener("click", () => downloadDocument(id, session.token).catch((e) => showBanner("bad", e.message)));
  topSlot.append(back, title, presence, status, historyBtn, downloadBtn);
  const banner = h("div.banner", { hidden: true, role: "alert" });
  const host = h("div.editor-host");
  const tags = h("div.tags", { "aria-label": "Tags" });
  const views = h("span.muted", { id: "doc-views" });
  const foot = h("div.foot", {}, h("span", {}, h("span", { id: "doc-info" }), " · ", views), tags, h("span.muted", { text: "Ctrl/Cmd-Z undoes your own edits only." }));
  const panel = h("aside.history", { hidden: true, "aria-label": "Version history" });
  main.append(h("section.editor-page", {}, banner, h("div.editor-row", {}, host, panel), foot));
  historyBtn.addEventListener("click", () => {
    panel.hidden = !panel.hidden;
    historyBtn.setAttribute("aria-expanded", String(!panel.hidden));
    if (!panel.hidden) loadHistory();
  });

  const editable = new Compartment();
  let view = null;
  let applyingRemote = false;
  let closed = false;
  let lastUsers = [];

  const client = new TandemClient({
    url: location.origin.replace(/^http/, "ws"),
    document: id,
    token: session.token,
    clientId: tabClientId(id),
    // Pending edits survive a reload or a closed tab (IndexedDB).
    pendingStore: offlineStore(id, session.user && session.user.id),
  });
  // Tests shorten the idle time (TANDEM_IDLE_MS).
  const aware = mountAwareness(client, { h, idleMs: globalThis.TANDEM_IDLE_MS });
  banner.after(aware.hint);

  function showBanner(kind, text) {
    banner.className = `banner ${kind}`;
    banner.textContent = text;
    banner.hidden = !text;
  }

  function setContent(content) {
    if (!view) {
      view = new EditorView({
        parent: host,
        state: EditorState.create({
          doc: content,
          extensions: [
            lineNumbers(),
            highlightActiveLineGutter(),
            highlightActiveLine(),
            drawSelection(),
            EditorView.lineWrapping,
            placeholder("Start typing…"),
            // Undo/redo are the server's: per user, past everyone's later edits.
            EditorView.domEventHandlers({ keydown: onHistoryKey, beforeinput: onHistoryInput }),
            keymap.of([...defaultKeymap, indentWithTab]),
            cursorField,
            editable.of(editableExt(client.role)),
            EditorView.updateListener.of(onUpdate),
          ],
        }),
      });
      view.focus();
    } else {
      applyingRemote = true;
      view.dispatch({
        changes: { from: 0, to: view.state.doc.length, insert: content },
        annotations: [remote.of(true), Transaction.addToHistory.of(false)],
      });
      applyingRemote = false;
    }
    drawCursors();
  }

  // Ctrl/Cmd-Z: undo; Ctrl/Cmd-Shift-Z and Ctrl/Cmd-Y: redo.
  function onHistoryKey(e) {
    if (!(e.ctrlKey || e.metaKey) || e.altKey) return false;
    const k = e.key.toLowerCase();
    if (k !== "z" && k !== "y") return false;
    e.preventDefault();
    if (client.role === "viewer" || closed) return true;
    if (k === "y" || e.shiftKey) client.redo();
    else client.undo();
    return true;
  }

  // The browser's own undo (menus, gestures) goes to the server too.
  function onHistoryInput(e) {
    if (e.inputType !== "historyUndo" && e.inputType !== "historyRedo") return false;
    e.preventDefault();
    if (client.role !== "viewer" && !closed) e.inputType === "historyUndo" ? client.undo() : client.redo();
    return true;
  }

  function onUpdate(u) {
    if (u.docChanged && !applyingRemote) {
      for (const tr of u.transactions) {
        if (!tr.docChanged || tr.annotation(remote)) continue;
        client.edit(toOp(tr));
        aware.typed();
      }
    }
    if ((u.selectionSet || u.docChanged) && !applyingRemote && client.role !== "viewer") {
      const sel = u.state.selection.main;
      const doc = u.state.doc;
      const cp = (pos) => cpLength(doc.sliceString(0, pos));
      client.setCursor(cp(sel.anchor), cp(sel.head));
    }
  }

  function drawCursors() {
    if (!view) return;
    const doc = view.state.doc.toString();
    view.dispatch({ effects: setCursors.of(cursorDecorations(doc, client.cursorList())) });
  }

  function editableExt(role) {
    const ro = role === "viewer" || closed;
    return [EditorState.readOnly.of(ro), EditorView.editable.of(!ro)];
  }

  function renderStatus({ state }) {
    let cls;
    let text;
    const n = client.pendingEdits;
    if (closed) {
      cls = "closed";
      text = "disconnected";
    } else if (state === "online") {
      cls = client.pending ? "saving" : "saved";
      text = client.pending ? "saving…" : "saved";
    } else if (state === "connecting" && !client.state) {
      cls = "saving";
      text = "connecting…";
    } else {
      cls = "offline";
      text = n > 0 ? `offline — ${n} edit${n === 1 ? "" : "s"} pending` : "offline — reconnecting";
    }
    status.className = `status ${cls}`;
    status.textContent = text;
    status.dataset.status = cls;
    status.dataset.pending = String(n);
    showVersion();
  }

  function showVersion() {
    if (client.state) document.getElementById("doc-info").textContent = `version ${client.version}`;
  }

  function renderMeta(m) {
    if (document.activeElement !== title) title.value = m.title;
    document.title = `${m.title || "Untitled"} — Tandem`;
    views.textContent = `${m.views} view${m.views === 1 ? "" : "s"}`;
    const canEdit = client.role !== "viewer" && !closed;
    const input = h("input.tag-input", { placeholder: "+ tag", maxlength: 32, "aria-label": "Add a tag", hidden: !canEdit });
    input.addEventListener("keydown", async (e) => {
      if (e.key !== "Enter" || !input.value.trim()) return;
      try {
        await api("POST", `/api/documents/${id}/tags`, { tag: input.value.trim() });
      } catch (ex) {
        showBanner("bad", ex.message);
      }
    });
    tags.replaceChildren(
      ...m.tags.map((t) =>
        h(
          "span.tag",
          { "data-tag": t },
          t,
          canEdit &&
            h("button.tag-x", {
              text: "×",
              title: `Remove ${t}`,
              onclick: () => api("DELETE", `/api/documents/${id}/tags/${encodeURIComponent(t)}`).catch((ex) => showBanner("bad", ex.message)),
            }),
        ),
      ),
      input,
    );
  }

  async function loadHistory() {
    panel.replaceChildren(h("h2", { text: "History" }), h("p.muted", { text: "Loading…" }));
    let items;
    try {
      const since = Math.max(0, client.version - 60);
      items = await api("GET", `/api/documents/${id}/history?since=${since}&limit=60`);
    } catch (ex) {
      panel.replaceChildren(h("h2", { text: "History" }), h("p.error", { text: ex.message }));
      return;
    }
    const list = h("ol.history-list", { reversed: true });
    for (const it of items.reverse()) {
      let ins = 0;
      let del = 0;
      for (const c of it.op) {
        if (typeof c === "string") ins += cpLength(c);
        else if (c < 0) del -= c;
      }
      const when = new Date(it.at).toLocaleTimeString();
      list.append(
        h(
          "li",
          {},
          h("button.history-item", { "data-version": it.version, onclick: () => preview(it.version) },
            h("strong", { text: `v${it.version}` }), ` ${it.name} · ${when} · `,
            h("span.ins", { text: `+${ins}` }), " ", h("span.del", { text: `−${del}` })),
        ),
      );
    }
    panel.replaceChildren(
      h("div.row", { style: "justify-content: space-between" }, h("h2", { text: "History" }), h("button", { text: "Refresh", onclick: loadHistory })),
      items.length ? list : h("p.muted", { text: "No edits yet." }),
    );
  }

  async function preview(n) {
    let v;
    try {
      v = await api("GET", `/api/documents/${id}/versions/${n}`);
    } catch (ex) {
      showBanner("bad", ex.message);
      return;
    }
    const canEdit = client.role !== "viewer" && !closed;
    panel.replaceChildren(
      h("div.row", { style: "justify-content: space-between" }, h("h2", { text: `Version ${n}` }), h("button", { text: "Back", onclick: loadHistory })),
      h("pre.preview", { text: v.content || "(empty)" }),
      canEdit &&
        h("button.primary", {
          text: "Restore this version",
          onclick: async () => {
            try {
              await api("POST", `/api/documents/${id}/versions/${n}/restore`);
              loadHistory();
            } catch (ex) {
              showBanner("bad", ex.message);
            }
          },
        }),
    );
  }

  function renderUsers(users) {
    lastUsers = users;
    const me = client.user && client.user.id;
    const seen = new Map();
    for (const u of users) if (!seen.has(u.id)) seen.set(u.id, u);
    presence.replaceChildren(
      ...[...seen.values()].map((u) => {
        const state = userPresence(users, u.id);
        return h(`span.avatar.${state}`, {
          style: `background:${u.color}`,
          title: (u.id === me ? `${u.name} (you)` : u.name) + (state === "active" ? "" : ` — ${state}`),
          "data-user": u.id,
          "data-presence": state,
          text: initials(u.name),
        });
      }),
    );
  }

  client
    .on("ready", ({ content }) => {
      setContent(content);
      showBanner(client.role === "viewer" ? "info" : "", client.role === "viewer" ? "You can view this document. Only its owner and editors can change it." : "");
    })
    .on("reset", ({ content }) => setContent(content))
    .on("remote", ({ op }) => {
      if (!view) return;
      showVersion();
      applyingRemote = true;
      view.dispatch({
        changes: toChanges(view.state.doc.toString(), op),
        annotations: [remote.of(true), Transaction.addToHistory.of(false)],
      });
      applyingRemote = false;
    })
    .on("cursors", () => drawCursors())
    .on("users", renderUsers)
    .on("meta", renderMeta)
    .on("status", renderStatus)
    .on("role", (role) => {
      if (view) view.dispatch({ effects: editable.reconfigure(editableExt(role)) });
      title.readOnly = role === "viewer";
    })
    .on("error", ({ code, message }) => {
      if (code === "rate_limited" || code === "internal") return; // retried by the client
      showBanner("bad", `The server refused a change (${code}): ${message}`);
    })
    .on("closed", ({ code, reason }) => {
      closed = true;
      if (view) view.dispatch({ effects: editable.reconfigure(editableExt("viewer")) });
      const why =
        code === 4001
          ? "This document was opened in another tab with the same session; this tab stopped syncing."
          : `You no longer have access to this document${reason ? ` (${reason})` : ""}. It may have been deleted or unshared.`;
      showBanner("bad", why);
      renderStatus({ state: "offline" });
    });

  api("GET", `/api/documents/${id}`)
    .then((d) => {
      title.value = d.title;
      document.title = `${d.title} — Tandem`;
      title.readOnly = d.role === "viewer";
    })
    .catch((e) => {
      if (e.status === 404 || e.status === 403) {
        closed = true;
        showBanner("bad", e.status === 404 ? "This document does not exist (or was deleted)." : "You do not have access to this document. Ask its owner to share it with you.");
        client.close();
        renderStatus({ state: "offline" });
      }
    });

  title.addEventListener("change", async () => {
    try {
      const d = await api("PUT", `/api/documents/${id}`, { title: title.value.trim() || "Untitled document" });
      title.value = d.title;
      document.title = `${d.title} — Tandem`;
    } catch (e) {
      showBanner("bad", e.message);
    }
  });

  const beforeUnload = (e) => {
    if (client.pending) {
      e.preventDefault();
      e.returnValue = "";
    }
  };
  window.addEventListener("beforeunload", beforeUnload);
  client.connect();
  // For tests and debugging.
  window.tandem = { client, get view() { return view; }, get users() { return lastUsers; } };

  return () => {
    window.removeEventListener("beforeunload", beforeUnload);
    aware.stop();
    client.close();
    if (view) view.destroy();
  };
}

/** One client id per tab and document, kept across reloads of that tab. */
function tabClientId(doc) {
  const key = `tandem.client.${doc}`;
  let id = sessionStorage.getItem(key);
  if (!id) {
    const rnd = crypto.getRandomValues(new Uint8Array(9));
    id = "w-" + Array.from(rnd, (b) => b.toString(16).padStart(2, "0")).join("");
    sessionStorage.setItem(key, id);
  }
  return id;
}
