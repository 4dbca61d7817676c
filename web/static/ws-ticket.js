// WebSocket sign-in without the token in a URL: before each connection
// attempt the page trades its bearer token (sent in a header) for a
// single-use, short-lived ticket bound to the document
// (POST /api/auth/ws-ticket), which goes in the socket's URL instead.
// A refusal that no retry can fix (signed out, no access, deleted) is fatal.

/** A `getTicket` for TandemClient, using the page's `api` helper. */
export function ticketSource(api) {
  return async (doc) => {
    try {
      const r = await api("POST", "/api/auth/ws-ticket", { document: doc });
      return r.ticket;
    } catch (e) {
      const err = new Error(e.message);
      err.fatal = e.status === 401 || e.status === 403 || e.status === 404;
      throw err;
    }
  };
}
