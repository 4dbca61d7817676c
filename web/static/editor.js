// The editor page, whichever editor it shows: the top bar (title, language,
// presence, the connection state, the editor switch, History), the history
// panel, tags, banners, and the TandemClient session. The text editor itself
// is an adapter module loaded for the page — cm-editor.js (CodeMirror, the
// default) or monaco-editor.js (`?editor=monaco`) — with one interface:
//
//   createEditor(host, {content, readOnly, language}, hooks) → editor
//   hooks:  edit(op), cursor(anchor, head), undo(), redo()  (code points)
//   editor: reset(text), applyRemote(op), setCursors(list, active(client)),
//           setReadOnly(bool),
//           setLanguage(id), text(), focus(), destroy(), language, kind
import { TandemClient } from "./tandem-client.js";
import { ticketSource } from "./ws-ticket.js";
import { presenceLabels } from "./presence-labels.js";
import { historyPanel } from "./history-panel.js";
import { offlineStore } from "./offline-store.js";
import { mountAwareness, userPresence } from "./awareness.js";
import { downloadDocument } from "./files.js";

export const EDITORS = {
  codemirror: { label: "CodeMirror", module: "./cm-editor.js" },
  monaco: { label: "Monaco", module: "./monaco-editor.js" },
};

/** The editor `?editor=` names (CodeMirror unless it says monaco). */
export function editorKind(search) {
  const k = new URLSearchParams(search).get("editor");
  return Object.prototype.hasOwnProperty.call(EDITORS, k) ? k : "codemirror";
}

function initials(name) {
  const parts = String(name || "?").trim().split(/\s+/);
  const chars = parts.length > 1 ? [parts[0], parts[parts.length - 1]] : [parts[0]];
  return chars.map((p) => Array.from(p)[0] || "").join("").toUpperCase().slice(0, 4);
}

export function openEditor({ main, topSlot, id, h, api, session }) {
  const kind = editorKind(location.search);
  const other = kind === "monaco" ? "codemirror" : "monaco";
  const status = h("span.status.saving", { "data-status": "connecting", text: "connecting…", role: "status" });
  const presence = h("div.presence", { "aria-label": "People here" });
  const title = h("input.doc-title", { value: "", "aria-label": "Document title", maxlength: 200, dir: "auto" });
  const back = h("a.back", { href: "/", "data-nav": true, text: "← Documents", title: "All documents" });
  const language = h("select.lang-select", { "aria-label": "Language", disabled: true });
  const switcher = h("a.editor-switch", {
    href: `/d/${id}${other === "codemirror" ? "" : `?editor=${other}`}`,
    "data-nav": true,
    "data-editor": other,
    text: EDITORS[other].label,
    title: `Open this document in ${EDITORS[other].label}`,
  });
  const historyBtn = h("button.history-btn", { text: "History", "aria-expanded": "false" });
  // An icon: the top bar keeps its room for the title.
  const downloadBtn = h("button.download-btn", { text: "⤓", title: "Download as a file", "aria-label": "Download", "data-download": true });
  downloadBtn.addEventListener("click", () => downloadDocument(id, session.token).catch((e) => showBanner("bad", e.message)));
  topSlot.append(
    h("div.top-doc", {}, back, title),
    h("div.top-tools", {}, language, switcher, presence, status, historyBtn, downloadBtn),
  );
  const banner = h("div.banner", { hidden: true, role: "alert" });
  const host = h("div.editor-host", { "data-editor": kind });
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

  let adapter = null; // the editor module
  let editor = null; // its editor, once the document is loaded
  let closed = false;
  let torn = false;
  let lastUsers = [];
  let languages = []; // [{id, name, extensions}] from /api/languages
  let meta = null;

  const client = new TandemClient({
    url: location.origin.replace(/^http/, "ws"),
    document: id,
    getTicket: ticketSource(api),
    clientId: tabClientId(id),
    // Pending edits survive a reload or a closed tab (IndexedDB).
    pendingStore: offlineStore(id, session.user && session.user.id),
  });
  const labels = presenceLabels(client, { presence, host, redraw: () => drawCursors() });
  // Tests shorten the idle time (TANDEM_IDLE_MS).
  const aware = mountAwareness(client, { h, idleMs: globalThis.TANDEM_IDLE_MS });
  banner.after(aware.hint);

  function showBanner(kind, text) {
    banner.className = `banner ${kind}`;
    banner.textContent = text;
    banner.hidden = !text;
  }

  const readOnly = () => client.role === "viewer" || closed;

  const hooks = {
    edit: (op) => {
      client.edit(op);
      aware.typed();
    },
    cursor: (anchor, head) => {
      if (!readOnly()) client.setCursor(anchor, head);
    },
    undo: () => {
      if (!readOnly()) client.undo();
    },
    redo: () => {
      if (!readOnly()) client.redo();
    },
  };

  function setContent(content) {
    if (!editor) {
      editor = adapter.createEditor(host, { content, readOnly: readOnly(), language: meta ? meta.language : "plaintext" }, hooks);
      editor.focus();
    } else {
      editor.reset(content);
    }
    drawCursors();
  }

  function drawCursors() {
    if (editor) editor.setCursors(client.cursorList(), labels.active);
  }

  // ---- language

  function renderLanguage() {
    const set = meta && meta.language_set;
    const effective = (meta && meta.language) || "plaintext";
    const name = (lid) => (languages.find((l) => l.id === lid) || { name: lid }).name;
    if (language.options.length !== languages.length + 1) {
      language.replaceChildren(h("option", { value: "" }), ...languages.map((l) => h("option", { value: l.id, text: l.name })));
    }
    language.options[0].textContent = `Auto (from title)${set ? "" : `: ${name(effective)}`}`;
    language.value = set ? effective : "";
    language.dataset.language = effective;
    language.disabled = readOnly() || languages.length === 0;
    if (editor && editor.language !== effective) editor.setLanguage(effective);
  }

  language.addEventListener("change", async () => {
    try {
      await api("PUT", `/api/documents/${id}`, { language: language.value });
    } catch (e) {
      showBanner("bad", e.message);
      renderLanguage();
    }
  });

  api("GET", "/api/languages")
    .then((list) => {
      languages = list;
      renderLanguage();
    })
    .catch((e) => showBanner("bad", `The list of languages did not load: ${e.message}`));

  let storagePaused = false;
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
    if (storagePaused && cls === "saved") {
      storagePaused = false;
      showBanner("info", "");
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

  const loadHistory = historyPanel({ panel, api, h, id, client, canEdit: () => client.role !== "viewer" && !closed, showBanner });

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
      if (!editor) return;
      showVersion();
      editor.applyRemote(op);
    })
    .on("cursors", () => drawCursors())
    .on("users", renderUsers)
    .on("meta", (m) => {
      meta = m;
      renderMeta(m);
      renderLanguage();
    })
    .on("status", renderStatus)
    .on("role", (role) => {
      if (editor) editor.setReadOnly(readOnly());
      title.readOnly = role === "viewer";
      renderLanguage();
    })
    .on("error", ({ code, message }) => {
      if (code === "rate_limited" || code === "internal") return; // retried by the client
      if (code === "storage_unavailable") {
        // Retried by the client too; say why "saving…" lasts.
        storagePaused = true;
        showBanner("info", "The server cannot store edits right now. Yours are kept here and sent again until it can.");
        return;
      }
      showBanner("bad", `The server refused a change (${code}): ${message}`);
    })
    .on("closed", ({ code, reason }) => {
      closed = true;
      if (editor) editor.setReadOnly(true);
      renderLanguage();
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
  // The editor module first, then the session: the editor is made from the
  // first init.
  import(EDITORS[kind].module)
    .then((mod) => {
      if (torn) return;
      adapter = mod;
      client.connect();
    })
    .catch((e) => showBanner("bad", `The editor did not load: ${e.message}`));
  // For tests and debugging.
  window.tandem = {
    client,
    kind,
    get editor() {
      return editor;
    },
    get view() {
      return editor && editor.view;
    },
    get users() {
      return lastUsers;
    },
  };

  return () => {
    torn = true;
    window.removeEventListener("beforeunload", beforeUnload);
    aware.stop();
    client.close();
    if (editor) editor.destroy();
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
