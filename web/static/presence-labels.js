// Presence that tells the truth: a remote caret's name label shows when that
// user moves or types and fades after a few seconds (hovering the caret
// shows it again); while we are offline, others' carets and avatars are
// dimmed and marked stale ("offline — last seen …") until we resync.

export const LABEL_MS = 3000;

/**
 * Track `client`'s remote cursors: `active(clientId)` says whether that
 * caret's label shows now; `redraw()` is called when one fades. `presence`
 * (the avatars) and `host` (the editor) get the stale marks while offline.
 */
export function presenceLabels(client, { presence, host, redraw }) {
  const last = new Map(); // client -> {anchor, head, at}
  let timer = null;
  let offlineSince = null;

  function schedule() {
    clearTimeout(timer);
    const now = Date.now();
    let next = Infinity;
    for (const c of last.values()) if (c.at + LABEL_MS > now) next = Math.min(next, c.at + LABEL_MS);
    if (next !== Infinity) timer = setTimeout(() => redraw(), next - now + 20);
  }

  client.on("cursors", (cursors) => {
    const now = Date.now();
    const seen = new Set();
    for (const c of cursors) {
      seen.add(c.client);
      const p = last.get(c.client);
      if (!p || p.anchor !== c.anchor || p.head !== c.head) last.set(c.client, { anchor: c.anchor, head: c.head, at: now });
    }
    for (const k of [...last.keys()]) if (!seen.has(k)) last.delete(k);
    schedule();
  });
  // Typing moves the caret with the text: a remote op counts as activity of
  // its author's caret when the next cursor update comes (above).

  function markStale(on) {
    const title = on ? `offline — last seen ${new Date(offlineSince).toLocaleTimeString()}` : null;
    host.classList.toggle("stale", on);
    presence.classList.toggle("stale", on);
    for (const el of [host, ...presence.querySelectorAll(".avatar")]) {
      if (on) {
        if (!el.dataset.liveTitle && el.title) el.dataset.liveTitle = el.title;
        el.title = el === host ? title : `${el.dataset.liveTitle || ""} (${title})`;
      } else if (el.dataset.liveTitle !== undefined) {
        el.title = el.dataset.liveTitle;
        delete el.dataset.liveTitle;
      } else if (el === host) el.removeAttribute("title");
    }
  }

  client.on("status", ({ state }) => {
    if (state === "online") {
      offlineSince = null;
      markStale(false);
    } else if (client.state && offlineSince === null) {
      offlineSince = Date.now();
      markStale(true);
    }
  });
  client.on("users", () => {
    if (offlineSince !== null) markStale(true);
  });

  return {
    active(clientId) {
      const c = last.get(clientId);
      return !!c && Date.now() - c.at < LABEL_MS;
    },
  };
}
