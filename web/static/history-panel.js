// The history panel: editing sessions newest first ("Alice, Bob — 14:02–14:05,
// +312 −40"), each expandable to its versions, "Load older" paging back to
// version 1 (GET …/history/sessions?before=), a version's preview as a diff
// against the current text (inserted and deleted text highlighted), restore.
import { cpLength, diff } from "./tandem-client.js";

const time = (ms) => new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
const day = (ms) => new Date(ms).toLocaleDateString();

/** Character diff of `a` → `b`: the client's one-splice `diff`, as parts to show. */
export function diffParts(a, b) {
  const A = Array.from(a);
  let pre = 0;
  let del = 0;
  let ins = "";
  for (const c of diff(a, b)) {
    if (typeof c === "string") ins += c;
    else if (c < 0) del -= c;
    else if (del === 0 && ins === "") pre = c; // the common prefix
  }
  return [
    ["same", A.slice(0, pre).join("")],
    ["del", A.slice(pre, pre + del).join("")],
    ["ins", ins],
    ["same", A.slice(pre + del).join("")],
  ].filter(([, t]) => t);
}

/** Returns `load()`, which (re)fills `panel` with the newest sessions. */
export function historyPanel({ panel, api, h, id, client, canEdit, showBanner }) {
  const header = (title, ...extra) => h("div.row", { style: "justify-content: space-between" }, h("h2", { text: title }), ...extra);

  function sessionItem(s) {
    const names = s.authors.map((a) => a.name).join(", ") + (s.more_authors ? ` +${s.more_authors}` : "");
    const span = s.first === s.last ? `v${s.first}` : `v${s.first}–v${s.last}`;
    const versions = h("ol.history-list.versions", { hidden: true, reversed: true });
    const head = h(
      "button.history-item.session",
      { "data-first": s.first, "data-last": s.last, "aria-expanded": "false" },
      h("strong", { text: names }),
      ` — ${time(s.start)}–${time(s.end)} · `,
      h("span.ins", { text: `+${s.inserted}` }),
      " ",
      h("span.del", { text: `−${s.deleted}` }),
      h("div.muted", { text: `${day(s.start)} · ${span}` }),
    );
    head.addEventListener("click", async () => {
      const open = versions.hidden;
      versions.hidden = !open;
      head.setAttribute("aria-expanded", String(open));
      if (!open || versions.childElementCount) return;
      try {
        const n = Math.min(200, s.last - s.first + 1);
        const items = await api("GET", `/api/documents/${id}/history?before=${s.last + 1}&limit=${n}`);
        for (const it of items.reverse()) {
          let ins = 0;
          let del = 0;
          for (const c of it.op) {
            if (typeof c === "string") ins += cpLength(c);
            else if (c < 0) del -= c;
          }
          versions.append(
            h(
              "li",
              {},
              h(
                "button.history-item",
                { "data-version": it.version, onclick: () => preview(it.version) },
                h("strong", { text: `v${it.version}` }),
                ` ${it.name} · ${new Date(it.at).toLocaleTimeString()} · `,
                h("span.ins", { text: `+${ins}` }),
                " ",
                h("span.del", { text: `−${del}` }),
              ),
            ),
          );
        }
        if (s.last - s.first + 1 > n) versions.append(h("li.muted", { text: `… and ${s.last - s.first + 1 - n} older versions` }));
      } catch (ex) {
        versions.append(h("li.error", { text: ex.message }));
      }
    });
    return h("li", {}, head, versions);
  }

  async function load() {
    panel.replaceChildren(header("History"), h("p.muted", { text: "Loading…" }));
    const list = h("ol.history-list.sessions");
    const more = h("button.load-older", { text: "Load older", hidden: true });
    let next = null;
    async function page() {
      more.disabled = true;
      try {
        const q = next ? `?before=${encodeURIComponent(next)}` : "";
        const r = await api("GET", `/api/documents/${id}/history/sessions${q}`);
        for (const s of r.sessions) list.append(sessionItem(s));
        next = r.next;
        more.hidden = !next;
        if (!list.childElementCount) list.replaceWith(h("p.muted", { text: "No edits yet." }));
      } catch (ex) {
        showBanner("bad", ex.message);
      } finally {
        more.disabled = false;
      }
    }
    more.addEventListener("click", page);
    panel.replaceChildren(header("History", h("button", { text: "Refresh", onclick: load })), list, more);
    await page();
  }

  async function preview(n) {
    let v;
    try {
      v = await api("GET", `/api/documents/${id}/versions/${n}`);
    } catch (ex) {
      showBanner("bad", ex.message);
      return;
    }
    // What restoring would change: the current text → that version.
    const parts = diffParts(client.text, v.content);
    const pre = h("pre.preview.diff", { "aria-label": `Version ${n} compared with now` });
    for (const [kind, text] of parts) pre.append(kind === "same" ? text : h(kind === "ins" ? "ins" : "del", { text }));
    if (!parts.length) pre.textContent = "(empty)";
    panel.replaceChildren(
      header(`Version ${n}`, h("button", { text: "Back", onclick: load })),
      h("p.muted", { text: parts.some(([k]) => k !== "same") ? "Compared with now: green is in this version only, red only in the current text." : "Same as the current text." }),
      pre,
      canEdit() &&
        h("button.primary", {
          text: "Restore this version",
          onclick: async () => {
            try {
              await api("POST", `/api/documents/${id}/versions/${n}/restore`);
              load();
            } catch (ex) {
              showBanner("bad", ex.message);
            }
          },
        }),
    );
  }

  return load;
}
