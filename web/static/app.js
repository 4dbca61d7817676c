// The single-page app: sign up / log in, the document list (create, open,
// rename, delete, share) and the editor page (editor.js). Talks to the REST API
// with the token kept in localStorage; renders with plain DOM calls.
import { openEditor } from "./editor.js";
import { sharePanel } from "./share-panel.js";
import { passwordRules, showFieldError } from "./signup-form.js";
import { dropTarget, importFile } from "./files.js";

const main = document.getElementById("main");
const topSlot = document.getElementById("top-slot");
const account = document.getElementById("account");

// ---- tiny DOM helper: h("tag.class", {attrs, on*: handlers}, children...)
export function h(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const el = document.createElement(tag || "div");
  if (classes.length) el.className = classes.join(" ");
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else if (k === "style") el.style.cssText = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

// ---- session

export const session = {
  get token() {
    return localStorage.getItem("tandem.token");
  },
  get user() {
    try {
      return JSON.parse(localStorage.getItem("tandem.user"));
    } catch {
      return null;
    }
  },
  set(token, user) {
    localStorage.setItem("tandem.token", token);
    localStorage.setItem("tandem.user", JSON.stringify(user));
  },
  clear() {
    localStorage.removeItem("tandem.token");
    localStorage.removeItem("tandem.user");
  },
};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export async function api(method, path, body) {
  const headers = {};
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, "network", "The server cannot be reached. Check your connection and try again.");
  }
  if (res.status === 204) return null;
  const data = await res.json().catch(() => null);
  if (!res.ok) {
    const e = (data && data.error) || {};
    if (res.status === 401 && session.token) {
      session.clear();
      go("/login?next=" + encodeURIComponent(location.pathname));
    }
    throw new ApiError(res.status, e.code || "error", e.message || `${res.status} ${res.statusText}`);
  }
  return data;
}

// ---- routing

export function go(path) {
  history.pushState(null, "", path);
  route();
}

window.addEventListener("popstate", () => route());
document.addEventListener("click", (e) => {
  const a = e.target.closest && e.target.closest("a[data-nav]");
  if (!a || e.metaKey || e.ctrlKey || e.shiftKey || e.button !== 0) return;
  e.preventDefault();
  go(a.getAttribute("href"));
});

let teardown = null;

function route() {
  if (teardown) {
    teardown();
    teardown = null;
  }
  topSlot.replaceChildren();
  main.replaceChildren();
  renderAccount();
  const path = location.pathname;
  const m = path.match(/^\/d\/([A-Za-z0-9_.:@-]{1,64})$/);
  if (!session.token) {
    const next = path === "/" || path === "/login" ? null : path;
    const fromQuery = new URLSearchParams(location.search).get("next");
    return renderAuth(next || fromQuery);
  }
  if (path === "/login") {
    const next = new URLSearchParams(location.search).get("next");
    history.replaceState(null, "", next && next.startsWith("/") ? next : "/");
    return route();
  }
  if (m) {
    document.title = "Tandem";
    teardown = openEditor({ main, topSlot, id: m[1], h, api, session, go });
    return;
  }
  document.title = "Documents — Tandem";
  renderDocs();
}

function renderAccount() {
  account.replaceChildren();
  const u = session.user;
  if (!u || !session.token) return;
  account.append(
    h("span.muted", { text: u.name || u.username, title: `@${u.username}` }),
    h("button", {
      text: "Log out",
      onclick: async () => {
        // Revoke the token on the server (its sockets close everywhere);
        // signed out here whatever the answer.
        try {
          await api("POST", "/api/auth/logout");
        } catch {}
        session.clear();
        go("/");
      },
    }),
  );
}

// ---- sign up / log in

function renderAuth(next) {
  document.title = "Sign in — Tandem";
  let mode = "login";
  const err = h("p.error", { role: "alert" });
  const username = h("input", { name: "username", autocomplete: "username", required: true, maxlength: 32 });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const name = h("input", { name: "name", autocomplete: "name", maxlength: 64 });
  const nameRow = h("label", {}, "Display name (optional)", name);
  const submit = h("button.primary", { type: "submit", text: "Log in" });
  const tabs = h("div.tabs");
  const rules = passwordRules(h, username, password);
  const fieldErr = { username: h("small.field-error", { role: "alert" }), password: h("small.field-error", { role: "alert" }), name: h("small.field-error", { role: "alert" }) };
  const form = h(
    "form.stack",
    { onsubmit: onSubmit },
    h("label", {}, "Username", username, rules.userHint, fieldErr.username),
    nameRow,
    h("label", {}, "Password", password, rules.passHint, fieldErr.password),
    submit,
    err,
  );
  nameRow.append(fieldErr.name);
  function setMode(m) {
    mode = m;
    nameRow.hidden = m === "login";
    submit.textContent = m === "login" ? "Log in" : "Create account";
    password.setAttribute("autocomplete", m === "login" ? "current-password" : "new-password");
    rules.show(m === "signup");
    for (const el of Object.values(fieldErr)) el.textContent = "";
    tabs.replaceChildren(
      h("button", { type: "button", class: m === "login" ? "on" : "", text: "Log in", onclick: () => setMode("login") }),
      h("button", { type: "button", class: m === "signup" ? "on" : "", text: "Sign up", onclick: () => setMode("signup") }),
    );
    err.textContent = "";
  }
  async function onSubmit(e) {
    e.preventDefault();
    err.textContent = "";
    submit.disabled = true;
    try {
      const body = { username: username.value.trim(), password: password.value };
      if (mode === "signup" && name.value.trim()) body.name = name.value.trim();
      const r = await api("POST", mode === "login" ? "/api/auth/login" : "/api/auth/register", body);
      session.set(r.token, r.user);
      go(next && next.startsWith("/") ? next : "/");
    } catch (ex) {
      if (mode === "signup") showFieldError(ex, fieldErr, err);
      else err.textContent = ex.message;
    } finally {
      submit.disabled = false;
    }
  }
  setMode("login");
  main.append(
    h(
      "section.card.auth",
      {},
      h("h1", { text: "Write together, live" }),
      h("p.muted", { text: next ? "Sign in to open the shared document." : "Sign in or create an account to start a document." }),
      tabs,
      form,
    ),
  );
  username.focus();
}

// ---- documents

async function renderDocs() {
  const err = h("p.error", { role: "alert" });
  const title = h("input", { name: "title", placeholder: "Untitled document", maxlength: 200, "aria-label": "New document title" });
  const create = h(
    "form.row",
    {
      onsubmit: async (e) => {
        e.preventDefault();
        try {
          const d = await api("POST", "/api/documents", { title: title.value.trim() || "Untitled document" });
          go(`/d/${d.id}`);
        } catch (ex) {
          err.textContent = ex.message;
        }
      },
    },
    title,
    h("button.primary", { type: "submit", text: "New document" }),
  );
  const body = h("tbody");
  const table = h("table", {}, h("thead", {}, h("tr", {}, h("th", { text: "Title" }), h("th", { text: "Your role" }), h("th.updated", { text: "Updated" }), h("th"))), body);
  // Import: a file input, or a file dropped anywhere on the list.
  const opened = (d) => go(`/d/${d.id}`);
  const failed = (m) => (err.textContent = m);
  const file = h("input", { type: "file", hidden: true, "aria-label": "Import file", "data-import": true });
  file.addEventListener("change", () => file.files[0] && importFile(file.files[0], session.token).then(opened, (ex) => failed(ex.message)));
  const importBtn = h("button", { type: "button", text: "Import file", title: "Create a document from a text file (or drop one on the list)", onclick: () => file.click() });
  const section = h("section.card.docs", {}, h("div.row", { style: "justify-content: space-between" }, h("h1", { text: "Documents" }), h("div.row", {}, create, importBtn, file)), err, table);
  dropTarget(section, session.token, opened, failed);
  main.append(section);

  async function load() {
    let docs;
    try {
      docs = await api("GET", "/api/documents?limit=100");
    } catch (ex) {
      err.textContent = ex.message;
      return;
    }
    body.replaceChildren();
    if (docs.length === 0) {
      body.append(h("tr", {}, h("td.empty", { colspan: 4, text: "No documents yet. Create one, then share its link." })));
    }
    for (const d of docs) body.append(...docRow(d, load, err));
  }
  await load();
}

function docRow(d, reload, err) {
  const row = h("tr", { "data-doc": d.id });
  const sub = h("tr.sub", { hidden: true });
  const owner = d.role === "owner";
  const canEdit = d.role !== "viewer";
  const when = d.updated_at ? new Date(d.updated_at).toLocaleString() : "";
  const titleCell = h(
    "td.title",
    {},
    h("a", { href: `/d/${d.id}`, "data-nav": true, text: d.title || "Untitled document", title: d.title, dir: "auto" }),
    d.owner && !owner && h("span.owner.muted", { "data-owner": d.owner, text: ` · by @${d.owner}` }),
  );
  function panel(...children) {
    sub.replaceChildren(h("td", { colspan: 4 }, h("div.row", {}, ...children)));
    sub.hidden = false;
  }
  const actions = h("td.actions");
  if (canEdit) {
    actions.append(
      h("button", {
        text: "Rename",
        onclick: () => {
          const input = h("input", { value: d.title, maxlength: 200, "aria-label": "New title" });
          panel(
            input,
            h("button.primary", {
              text: "Save",
              onclick: async () => {
                try {
                  await api("PUT", `/api/documents/${d.id}`, { title: input.value.trim() || "Untitled document" });
                  reload();
                } catch (ex) {
                  err.textContent = ex.message;
                }
              },
            }),
            h("button", { text: "Cancel", onclick: () => (sub.hidden = true) }),
          );
          input.focus();
        },
      }),
    );
  }
  if (owner) {
    actions.append(
      " ",
      h("button", {
        text: "Share",
        onclick: () => {
          const box = h("div");
          panel(box);
          sharePanel({ d, api, h, box, close: () => (sub.hidden = true) });
        },
      }),
      " ",
      h("button.danger", {
        text: "Delete",
        onclick: () => {
          panel(
            h("span", { text: `Delete “${d.title}” for everyone? This cannot be undone.` }),
            h("button.danger", {
              text: "Delete",
              onclick: async () => {
                try {
                  await api("DELETE", `/api/documents/${d.id}`);
                  reload();
                } catch (ex) {
                  err.textContent = ex.message;
                }
              },
            }),
            h("button", { text: "Cancel", onclick: () => (sub.hidden = true) }),
          );
        },
      }),
    );
  }
  row.append(titleCell, h("td", {}, h("span.role", { text: d.role })), h("td.updated.muted", { text: when }), actions);
  return [row, sub];
}

route();
