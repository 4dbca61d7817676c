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
  const last = new Map(); // client -> {at}: its last activity
  let timer = null;
  let offlineSince = null;

  function schedule() {
    clearTimeout(timer);
    const now = Date.now();
    let next = Infinity;
    for (const c of last.values()) if (c.at + LABEL_MS > now) next = Math.min(next, c.at + LABEL_MS);
    if (next !== Infinity)
      timer = setTimeout(() => {
        redraw();
        schedule();
      }, next - now + 20);
  }

  // Activity: the remote client moved its caret or typed (not its caret
  // carried along by someone else's edit).
  const touch = ({ client: c }) => {
    if (!c) return;
    last.set(c, { at: Date.now() });
    if (last.size > 1000) last.delete(last.keys().next().value);
    schedule();
    // After the editor applied the op (its handler runs after this one).
    queueMicrotask(redraw);
  };
  client.on("activity", touch);
  client.on("remote", touch);
  client.on("cursors", (cursors) => {
    const here = new Set(cursors.map((c) => c.client));
    for (const k of [...last.keys()]) if (!here.has(k) && Date.now() - last.get(k).at > LABEL_MS) last.delete(k);
  });

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
