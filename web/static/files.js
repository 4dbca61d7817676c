// files.js — documents as files in the page: download a document
// (`GET /api/documents/{id}/export`, saved under the name the server gives) and
// create one from a file (`POST /api/documents/import?filename=…`, the file's
// bytes as the body), from a file input or a file dropped onto a target.
//
// Owns: the download and the import requests, the drop target's listeners.
// Must not import: an editor.

/** The file name in a Content-Disposition header (`filename*` first). */
export function dispositionName(header) {
  if (!header) return null;
  const star = header.match(/filename\*=UTF-8''([^;]+)/i);
  if (star) {
    try {
      return decodeURIComponent(star[1]);
    } catch {}
  }
  const plain = header.match(/filename="([^"]*)"/i);
  return plain ? plain[1] : null;
}

/** Download document `id` as a file. Throws an Error with the server's message. */
export async function downloadDocument(id, token) {
  const res = await fetch(`/api/documents/${encodeURIComponent(id)}/export`, {
    headers: token ? { Authorization: `Bearer ${token}` } : {},
  });
  if (!res.ok) {
    const data = await res.json().catch(() => null);
    throw new Error((data && data.error && data.error.message) || `${res.status} ${res.statusText}`);
  }
  const name = dispositionName(res.headers.get("Content-Disposition")) || "document.txt";
  const url = URL.createObjectURL(await res.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
  return name;
}

/** Create a document from `file` (a File); resolves to the new document. */
export async function importFile(file, token) {
  let res;
  try {
    res = await fetch(`/api/documents/import?filename=${encodeURIComponent(file.name)}`, {
      method: "POST",
      headers: { ...(token ? { Authorization: `Bearer ${token}` } : {}), "Content-Type": "application/octet-stream" },
      body: file,
    });
  } catch {
    throw new Error("The server cannot be reached. Check your connection and try again.");
  }
  const data = await res.json().catch(() => null);
  if (!res.ok) {
    const msg = (data && data.error && data.error.message) || `${res.status} ${res.statusText}`;
    throw new Error(`${file.name}: ${msg}`);
  }
  return data;
}

/**
 * Files dropped onto `target` are imported (the first one; `onImported(doc)` is
 * called with the new document, `onError(message)` when refused). The target has
 * the class `drop-over` while a file is dragged over it.
 */
export function dropTarget(target, token, onImported, onError) {
  const hasFiles = (e) => e.dataTransfer && [...e.dataTransfer.types].includes("Files");
  target.addEventListener("dragover", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = "copy";
    target.classList.add("drop-over");
  });
  target.addEventListener("dragleave", () => target.classList.remove("drop-over"));
  target.addEventListener("drop", async (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    target.classList.remove("drop-over");
    const file = e.dataTransfer.files[0];
    if (!file) return;
    try {
      onImported(await importFile(file, token));
    } catch (ex) {
      onError(ex.message);
    }
  });
}
