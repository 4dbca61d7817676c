// awareness.js — the page's side of awareness, for any editor: sets this tab's
// presence state from visibility, focus and input (active; idle after a minute
// without input; away while the tab is hidden), says "typing" in its awareness
// state while the user types, and shows who else is typing ("Bob is typing…").
// Avatars read each user's presence state with `userPresence`.
//
// Owns: the presence-state timers and listeners, the typing hint element.
// Must not import: an editor (it talks to TandemClient only).

/** After this long without input a visible tab is idle. */
export const IDLE_MS = 60_000;
/** A user who typed within this long is shown as typing. */
export const TYPING_MS = 3_000;
/** At most one "typing" awareness update per this long. */
const TYPING_EVERY_MS = 1_000;

const RANK = { active: 0, idle: 1, away: 2 };

/** The most present state among a user's clients (a user with one active tab is active). */
export function userPresence(users, userId) {
  let best = null;
  for (const u of users) {
    if (u.id !== userId) continue;
    const s = u.state || "active";
    if (best === null || RANK[s] < RANK[best]) best = s;
  }
  return best || "active";
}

/**
 * Wire `client` (a TandemClient) to the page: presence from the document's
 * visibility and input, typing state, and a hint element (returned, to place in
 * the page). `idleMs` / `typingMs` for tests. Returns `{hint, typed(), stop()}`:
 * call `typed()` on every local edit.
 */
export function mountAwareness(client, { h, idleMs = IDLE_MS, typingMs = TYPING_MS } = {}) {
  const hint = h("span.typing", { "aria-live": "polite", "data-typing": "" });
  let idleTimer = null;
  let lastTypedSent = 0;
  const seen = new Map(); // client -> {typing: the value we last saw, at: when we saw it change}
  let hintTimer = null;

  const presence = () => {
    if (document.visibilityState === "hidden") return "away";
    return idleTimer === null ? "idle" : "active";
  };
  const update = () => client.setPresence(presence());
  const input = () => {
    clearTimeout(idleTimer);
    idleTimer = setTimeout(() => {
      idleTimer = null;
      update();
    }, idleMs);
    update();
  };
  const events = ["keydown", "pointerdown", "pointermove", "wheel", "focus"];
  for (const e of events) window.addEventListener(e, input, { passive: true, capture: true });
  document.addEventListener("visibilitychange", update);
  input();

  function typed() {
    const now = Date.now();
    if (now - lastTypedSent < TYPING_EVERY_MS) return;
    lastTypedSent = now;
    client.setAwareness({ ...client.myAwareness, typing: now });
  }

  function render() {
    clearTimeout(hintTimer);
    const now = Date.now();
    const names = [];
    let next = Infinity;
    for (const [c, s] of seen) {
      const left = s.at + typingMs - now;
      if (left <= 0) continue;
      next = Math.min(next, left);
      const u = client.users.get(c);
      const name = u ? u.name : client.awareness.get(c)?.user || "someone";
      if (!names.includes(name)) names.push(name);
    }
    hint.textContent = names.length === 0 ? "" : names.length === 1 ? `${names[0]} is typing…` : `${names.join(", ")} are typing…`;
    hint.dataset.typing = names.join(",");
    if (next !== Infinity) hintTimer = setTimeout(render, next + 10);
  }

  client.on("awareness", (all) => {
    for (const c of seen.keys()) if (!all.has(c)) seen.delete(c);
    for (const [c, a] of all) {
      const t = a.state && typeof a.state.typing === "number" ? a.state.typing : null;
      const prev = seen.get(c);
      // Timed by when the change arrived here: the sender's clock may differ.
      if (t !== null && (!prev || prev.typing !== t)) seen.set(c, { typing: t, at: Date.now() });
    }
    render();
  });

  return {
    hint,
    typed,
    stop() {
      clearTimeout(idleTimer);
      clearTimeout(hintTimer);
      for (const e of events) window.removeEventListener(e, input, { capture: true });
      document.removeEventListener("visibilitychange", update);
    },
  };
}
