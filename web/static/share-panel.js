// The share panel of a document row (owner only): who has access (owner
// first), each member's role changeable in place and revocable, and a form
// to share with one more username. A username nobody has is said so plainly.

const ROLES = [
  ["editor", "can edit"],
  ["viewer", "can view"],
];

/** Fill `box` with the share panel of document `d`; `close()` hides it. */
export function sharePanel({ d, api, h, box, close }) {
  const note = h("p.share-note", { role: "status" });
  const list = h("ul.members", { "aria-label": "People with access" });
  const path = (u) => `/api/documents/${d.id}/members/${encodeURIComponent(u)}`;
  const say = (text, bad = false) => {
    note.textContent = text;
    note.classList.toggle("bad", bad);
  };
  const roleSelect = (value) =>
    h("select", { "aria-label": "Role" }, ...ROLES.map(([v, t]) => h("option", { value: v, text: t, selected: v === value })));

  // The list comes a page at a time; "Show more" asks for the next.
  const more = h("button.more", { type: "button", hidden: true });
  let next = null;
  async function load(after = null) {
    let page;
    try {
      const q = after ? `?after=${encodeURIComponent(after)}` : "";
      page = await api("GET", `/api/documents/${d.id}/members${q}`);
    } catch (ex) {
      return say(ex.message, true);
    }
    next = page.next || null;
    const shown = (after ? list.children.length : 0) + page.items.length;
    more.hidden = !next;
    more.textContent = `Show more (${page.total - shown} more)`;
    list[after ? "append" : "replaceChildren"](
      ...page.items.map((m) => {
        const who = h("span.member-name", {}, h("strong", { text: m.name }), h("span.muted", { text: ` @${m.username}` }));
        if (m.role === "owner") return h("li", { "data-member": m.username }, who, h("span.role", { text: "owner" }));
        const sel = roleSelect(m.role);
        sel.addEventListener("change", async () => {
          try {
            await api("PUT", path(m.username), { role: sel.value });
            say(`${m.name} ${sel.value === "editor" ? "can edit" : "can view"} now.`);
          } catch (ex) {
            say(ex.message, true);
            sel.value = m.role;
          }
        });
        const revoke = h("button.danger", {
          text: "Remove",
          title: `Remove ${m.username}'s access`,
          onclick: async () => {
            try {
              await api("DELETE", path(m.username));
              say(`${m.name} no longer has access.`);
              load();
            } catch (ex) {
              say(ex.message, true);
            }
          },
        });
        return h("li", { "data-member": m.username }, who, sel, revoke);
      }),
    );
  }

  const who = h("input", { placeholder: "username", "aria-label": "Username to share with", autocomplete: "off" });
  const role = roleSelect("editor");
  const form = h(
    "form.row",
    {
      onsubmit: async (e) => {
        e.preventDefault();
        const u = who.value.trim();
        if (!u) return;
        try {
          await api("PUT", path(u), { role: role.value });
          say(`Shared with ${u}. Send them the link: ${location.origin}/d/${d.id}`);
          who.value = "";
          load();
        } catch (ex) {
          say(ex.status === 404 ? `No account is called “${u}” yet: ask them to sign up, then share again.` : ex.message, true);
        }
      },
    },
    who,
    role,
    h("button.primary", { type: "submit", text: "Share" }),
    h("button", { type: "button", text: "Close", onclick: close }),
  );
  more.addEventListener("click", () => next && load(next));
  box.replaceChildren(h("div.share-panel", {}, h("h3", { text: "People with access" }), list, more, form, note));
  load();
  who.focus();
}
