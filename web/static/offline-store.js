// offline-store.js — the page's `pendingStore` for TandemClient: pending edits kept
// in IndexedDB so a tab reloaded or closed while offline sends them when it is back.
//
// Owns: the IndexedDB database `tandem` (object store `pending`, one record per
// document, client id and base version: `[document, client, version]`, the newer
// replacing the older in one transaction), and which client id a tab uses.
//
// Client ids: each tab has its own (two tabs on one document must never replay the
// same edits). A tab keeps its id across reloads in sessionStorage and holds a Web
// Lock named after it while it lives; a tab opening a document first claims its own
// id, and if that has nothing saved, adopts the saved edits of a tab that is gone
// (a record whose lock nobody holds) — a closed tab's edits are sent once, by the
// next tab that opens the document. A duplicated tab (sessionStorage copied) finds
// its id's lock taken and makes a new one.

const DB = "tandem";
const STORE = "pending";

let dbPromise = null;

function openDb() {
  if (!dbPromise) {
    dbPromise = new Promise((resolve, reject) => {
      const req = indexedDB.open(DB, 1);
      req.onupgradeneeded = () => req.result.createObjectStore(STORE, { keyPath: ["document", "client", "version"] });
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
  }
  return dbPromise;
}

/** Run `fn(store)` in a transaction; resolves when it has committed. */
async function tx(mode, fn) {
  const db = await openDb();
  return new Promise((resolve, reject) => {
    const t = db.transaction(STORE, mode);
    let out;
    Promise.resolve(fn(t.objectStore(STORE))).then((v) => (out = v));
    t.oncomplete = () => resolve(out);
    t.onerror = () => reject(t.error);
    t.onabort = () => reject(t.error || new Error("transaction aborted"));
  });
}

const req = (r) => new Promise((resolve, reject) => ((r.onsuccess = () => resolve(r.result)), (r.onerror = () => reject(r.error))));

/** Every record of `doc`'s client `client` (any base version), or of every client. */
const range = (doc, client) => (client === undefined ? IDBKeyRange.bound([doc], [doc, []]) : IDBKeyRange.bound([doc, client], [doc, client, []]));

/** The part of a client id the page chose (the server appends `@<user tag>`). */
const baseId = (client) => client.split("@")[0];

/** Hold the lock named after `client` for as long as the page lives; false if taken
 * (without Web Locks: true, and the caller adopts no other tab's edits). */
function lock(doc, client) {
  if (!navigator.locks) return Promise.resolve(true);
  return new Promise((resolve) => {
    navigator.locks
      .request(`tandem:${doc}:${baseId(client)}`, { ifAvailable: true }, (l) => {
        resolve(l !== null);
        // Held until the page goes.
        return l ? new Promise(() => {}) : undefined;
      })
      .catch(() => resolve(false));
  });
}

function newId() {
  const rnd = crypto.getRandomValues(new Uint8Array(9));
  return "w-" + Array.from(rnd, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * The store for document `doc`, as user `userId` (records of other users are
 * never adopted: their edits are not this user's to send).
 */
export function offlineStore(doc, userId) {
  const key = `tandem.client.${doc}`;
  return {
    /** This tab's client id and the record saved under it (or adopted from a gone tab). */
    async claim() {
      let saved = [];
      try {
        saved = await tx("readonly", (s) => req(s.getAll(range(doc))));
      } catch {
        saved = []; // no IndexedDB (private mode): edits live in memory only
      }
      const mine = saved.filter((r) => !userId || !r.user || r.user === userId);
      const latest = new Map();
      for (const r of mine) if (!latest.has(r.client) || latest.get(r.client).version < r.version) latest.set(r.client, r);
      let id = sessionStorage.getItem(key);
      // On a reload the page before may still hold it for a moment.
      let held = false;
      for (let i = 0; id && !held && i < 10; i++) {
        held = await lock(doc, id);
        if (!held) await new Promise((r) => setTimeout(r, 50));
      }
      if (!held) id = null;
      const own = id && [...latest.values()].find((r) => baseId(r.client) === baseId(id));
      if (own) return { client: own.client, record: own };
      // Without Web Locks nothing tells a gone tab from a live one: adopt nothing.
      for (const r of navigator.locks ? latest.values() : []) {
        if (id && baseId(r.client) === baseId(id)) continue;
        if (await lock(doc, r.client)) {
          sessionStorage.setItem(key, baseId(r.client));
          return { client: r.client, record: r };
        }
      }
      if (!id) {
        do id = newId();
        while (!(await lock(doc, id)));
        sessionStorage.setItem(key, id);
      }
      return { client: id, record: null };
    },
    /** Keep `rec` as the client's only record (older base versions go). */
    save(rec) {
      return tx("readwrite", (s) => {
        s.delete(IDBKeyRange.bound([rec.document, rec.client], [rec.document, rec.client, rec.version], false, true));
        s.delete(IDBKeyRange.bound([rec.document, rec.client, rec.version], [rec.document, rec.client, []], true, false));
        s.put(rec);
      });
    },
    /** Nothing pending any more. */
    remove(document, client) {
      return tx("readwrite", (s) => s.delete(range(document, client)));
    },
  };
}

/** Every saved record (tests, debugging). */
export async function savedRecords() {
  return tx("readonly", (s) => req(s.getAll()));
}
