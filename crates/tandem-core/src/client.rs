//! The client side of the OT protocol as a pure state machine (ot.js / Jupiter
//! style: at most one op in flight, later local edits composed into a buffer).
//!
//! Owns: [`OtClient`]. Used by the test suites, the simulation and the bench
//! tool; the browser's `OtState` (`web/client/ot-state.js`) follows the same rules.
//! Must not import: tokio, axum, hyper, redis, sqlx, utoipa, metrics
//! (enforced: tandem-core has no such dependency).
//! No I/O: messages in, messages out.

use ropey::Rope;

use crate::ot::{OpError, Operation};

/// An `op` message the client must send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub version: u64,
    pub seq: u64,
    pub op: Operation,
}

/// What a `check` tells a client (see [`OtClient::check`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// Not this client's version (a check it is past or not yet at):
    /// nothing to compare.
    Skipped,
    Agrees,
    /// Its text at the version hashes to `ours`: it drifted. Report it
    /// (`mismatch`) and reload the document, keeping the pending edits.
    Differs {
        ours: String,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClientError {
    #[error("out-of-order message: expected version {expected}, got {got}")]
    Version { expected: u64, got: u64 },
    #[error(transparent)]
    Op(#[from] OpError),
}

/// One editor's view of a document.
#[derive(Clone, Debug)]
pub struct OtClient {
    pub client_id: String,
    /// Last server version this client has seen (acks and remote ops).
    pub version: u64,
    text: Rope,
    /// The server's text at `version` (`text` without the pending edits).
    server: Rope,
    /// Seq of the next new op.
    next_seq: u64,
    inflight: Option<(u64, Operation)>,
    buffer: Option<Operation>,
}

impl OtClient {
    /// A client that received `init` with `content` at `version`. `last_seq`
    /// is the highest seq the server has committed for this client id.
    pub fn new(client_id: impl Into<String>, content: &str, version: u64, last_seq: u64) -> Self {
        let text = Rope::from_str(content);
        Self {
            client_id: client_id.into(),
            version,
            server: text.clone(),
            text,
            next_seq: last_seq + 1,
            inflight: None,
            buffer: None,
        }
    }

    pub fn text(&self) -> String {
        self.text.to_string()
    }
    pub fn len_chars(&self) -> usize {
        self.text.len_chars()
    }
    /// The highest seq this client has handed out (0: none).
    pub fn last_sent_seq(&self) -> u64 {
        self.next_seq - 1
    }

    pub fn inflight_seq(&self) -> Option<u64> {
        self.inflight.as_ref().map(|(s, _)| *s)
    }
    /// Local edits not yet acknowledged (in flight or buffered).
    pub fn has_pending(&self) -> bool {
        self.inflight.is_some() || self.buffer.is_some()
    }

    /// A local edit on the current text. Returns the message to send, if the
    /// client was idle.
    pub fn local_edit(&mut self, op: Operation) -> Result<Option<Outgoing>, OpError> {
        op.apply_rope(&mut self.text)?;
        if op.is_noop() {
            return Ok(None);
        }
        if self.inflight.is_some() {
            self.buffer = Some(match self.buffer.take() {
                Some(b) => b.compose(&op)?,
                None => op,
            });
            return Ok(None);
        }
        Ok(Some(self.send_new(op)))
    }

    fn send_new(&mut self, op: Operation) -> Outgoing {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.inflight = Some((seq, op.clone()));
        Outgoing {
            version: self.version,
            seq,
            op,
        }
    }

    /// What to re-send after a reconnect (same seq: the server dedupes).
    pub fn resend(&self) -> Option<Outgoing> {
        self.inflight.as_ref().map(|(seq, op)| Outgoing {
            version: self.version,
            seq: *seq,
            op: op.clone(),
        })
    }

    /// An `ack`. Acks for a seq not in flight (a duplicate resubmit answered
    /// twice) are ignored. Returns the buffered op to send next, if any.
    pub fn on_ack(&mut self, seq: u64, version: u64) -> Result<Option<Outgoing>, ClientError> {
        if self.inflight_seq() != Some(seq) {
            return Ok(None);
        }
        // An op that changes nothing makes no version: it is acknowledged
        // at the version this client already has.
        let noop = self.inflight.as_ref().is_some_and(|(_, op)| op.is_noop());
        if version != self.version + 1 && !(noop && version == self.version) {
            return Err(ClientError::Version {
                expected: self.version + 1,
                got: version,
            });
        }
        if let Some((_, op)) = self.inflight.take() {
            op.apply_rope(&mut self.server)?;
        }
        self.version = version;
        // Edits that cancelled out (typed, then deleted) are not sent.
        Ok(self
            .buffer
            .take()
            .filter(|b| !b.is_noop())
            .map(|b| self.send_new(b)))
    }

    /// A remote `op`. One carrying this client's own id is the ack of its
    /// in-flight op (seen after a resume).
    pub fn on_remote(
        &mut self,
        version: u64,
        op: &Operation,
        client: &str,
        seq: u64,
    ) -> Result<Option<Outgoing>, ClientError> {
        if client == self.client_id && self.inflight_seq() == Some(seq) {
            return self.on_ack(seq, version);
        }
        if version != self.version + 1 {
            return Err(ClientError::Version {
                expected: self.version + 1,
                got: version,
            });
        }
        op.apply_rope(&mut self.server)?;
        let mut remote = op.clone();
        if let Some((seq, inflight)) = self.inflight.take() {
            let (i2, r2) = inflight.transform(&remote)?;
            self.inflight = Some((seq, i2));
            remote = r2;
        }
        if let Some(buffer) = self.buffer.take() {
            let (b2, r2) = buffer.transform(&remote)?;
            self.buffer = Some(b2);
            remote = r2;
        }
        remote.apply_rope(&mut self.text)?;
        self.version = version;
        Ok(None)
    }

    /// The text at the server's `version` as this client has it: its local
    /// text with the pending edits (in flight and buffered) undone. Undone
    /// from the local text rather than read from the kept server copy, so a
    /// check covers what the user sees: every remote op as transformed and
    /// applied here. An error (the pending op does not fit the text) is
    /// drift too.
    pub fn text_at_version(&self) -> Result<Rope, OpError> {
        let pending = match (&self.inflight, &self.buffer) {
            (Some((_, i)), Some(b)) => i.compose(b)?,
            (Some((_, op)), None) | (None, Some(op)) => op.clone(),
            (None, None) => return Ok(self.text.clone()),
        };
        let mut text = self.text.clone();
        pending.invert(&self.server)?.apply_rope(&mut text)?;
        Ok(text)
    }

    /// A `check` of the server's text at `version` (its hash, see
    /// [`crate::checksum`]). Compared only at this client's own version: the
    /// server sends it right after that version's `op`/`ack`.
    pub fn check(&self, version: u64, hash: &str) -> Check {
        if version != self.version {
            return Check::Skipped;
        }
        let ours = match self.text_at_version() {
            Ok(t) => crate::checksum::checksum_rope(&t),
            Err(_) => {
                let ours = crate::checksum::checksum_rope(&self.text);
                return Check::Differs { ours };
            }
        };
        if ours == hash {
            Check::Agrees
        } else {
            Check::Differs { ours }
        }
    }

    /// Change the local text as a bug would: without recording an edit
    /// (the server never hears of it). For tests of the checksum.
    #[doc(hidden)]
    pub fn drift(&mut self, op: &Operation) -> Result<(), OpError> {
        op.apply_rope(&mut self.text)
    }

    /// A full `init` (`content` at `version`, `last_seq` committed for this
    /// client) after this client had state: the server could not replay
    /// what it missed, e.g. its version belongs to a history the server no
    /// longer has. Start over from `content`, keeping the local edits the
    /// server lacks: everything that changed since our server text is taken
    /// as one diff op, and the pending edits (the in-flight op too, unless
    /// `last_seq` says it was committed) are transformed past it and become
    /// one new op. Returns the message to send, if any. The same rule as
    /// the browser client's reload.
    pub fn reload(
        &mut self,
        content: &str,
        version: u64,
        last_seq: u64,
    ) -> Result<Option<Outgoing>, OpError> {
        let mut base = self.server.clone();
        let mut pending: Option<Operation> = None;
        if let Some((seq, op)) = self.inflight.take() {
            if seq <= last_seq {
                // Committed: `content` has it already.
                op.apply_rope(&mut base)?;
            } else {
                pending = Some(op);
            }
        }
        if let Some(b) = self.buffer.take() {
            pending = Some(match pending {
                Some(p) => p.compose(&b)?,
                None => b,
            });
        }
        let theirs = crate::ot::diff(&base.to_string(), content);
        let id = std::mem::take(&mut self.client_id);
        // Never reuse a seq we sent: the server's `last_seq` may be behind
        // (it lost records, and learns them again later), and a reused seq
        // would be taken for the other edit.
        let used = self.last_sent_seq();
        *self = OtClient::new(id, content, version, last_seq.max(used));
        match pending {
            Some(p) if !p.is_noop() => {
                let (mine, _) = p.transform(&theirs)?;
                self.local_edit(mine)
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ot::splice;

    #[test]
    fn reload_keeps_pending_edits_on_the_new_content() {
        let mut c = OtClient::new("me", "hello", 3, 0);
        let out = c.local_edit(splice(5, 5, 0, "!")).unwrap().unwrap();
        assert_eq!(out.seq, 1);
        c.local_edit(splice(6, 0, 0, ">")).unwrap(); // buffered
                                                     // The server lost our version 3 and went on elsewhere: its text at
                                                     // version 4 is "help", and it never committed our seq 1.
        let out = c.reload("help", 4, 0).unwrap().unwrap();
        assert_eq!(c.text(), ">help!");
        // A new seq: the server may yet learn of seq 1 (never reused).
        assert_eq!((out.version, out.seq), (4, 2));
        assert_eq!(out.op.apply("help").unwrap(), ">help!");
        assert!(c.has_pending());
        c.on_ack(2, 5).unwrap();
        assert_eq!(
            (c.text(), c.version, c.has_pending()),
            (">help!".into(), 5, false)
        );
    }

    #[test]
    fn checks_compare_the_text_at_the_server_version() {
        use crate::checksum::checksum;
        let mut c = OtClient::new("me", "a😀b", 7, 0);
        assert_eq!(c.check(7, &checksum("a😀b")), Check::Agrees);
        assert_eq!(c.check(6, "00000000"), Check::Skipped);
        // Pending edits are undone before hashing: in flight and buffered.
        c.local_edit(splice(3, 3, 0, "!")).unwrap().unwrap();
        c.local_edit(splice(4, 0, 1, "")).unwrap();
        assert_eq!(c.text(), "😀b!");
        assert_eq!(c.check(7, &checksum("a😀b")), Check::Agrees);
        // A remote op transformed past them: still the server's text.
        c.on_remote(8, &splice(3, 1, 0, "\r\n"), "other", 1)
            .unwrap();
        assert_eq!(c.text(), "\r\n😀b!");
        assert_eq!(c.check(8, &checksum("a\r\n😀b")), Check::Agrees);
        // Drift in the local text shows, with or without pending edits.
        c.drift(&splice(5, 2, 1, "x")).unwrap();
        let Check::Differs { ours } = c.check(8, &checksum("a\r\n😀b")) else {
            panic!("drift not seen");
        };
        assert_eq!(ours, checksum("a\r\nxb"));
        let mut idle = OtClient::new("me", "abc", 1, 0);
        idle.drift(&splice(3, 0, 1, "z")).unwrap();
        assert!(matches!(
            idle.check(1, &checksum("abc")),
            Check::Differs { .. }
        ));
        // A reload keeps the pending edits on the server's content.
        let out = c.reload("a\r\n😀b", 8, 0).unwrap().unwrap();
        assert_eq!(c.text(), "\r\n😀b!");
        assert_eq!(out.seq, 2);
        assert_eq!(c.check(8, &checksum("a\r\n😀b")), Check::Agrees);
    }

    #[test]
    fn reload_drops_an_inflight_op_the_server_committed() {
        let mut c = OtClient::new("me", "ab", 1, 4);
        c.on_remote(2, &splice(2, 0, 0, "x"), "other", 1).unwrap();
        c.local_edit(splice(3, 3, 0, "1")).unwrap().unwrap(); // seq 5
        c.local_edit(splice(4, 4, 0, "2")).unwrap(); // buffered
                                                     // Seq 5 committed (as version 3), then someone appended "y".
        let out = c.reload("xab1y", 4, 5).unwrap().unwrap();
        assert_eq!(c.text(), "xab12y");
        assert_eq!(out.seq, 6);
        assert_eq!(out.op.apply("xab1y").unwrap(), "xab12y");
        // Nothing pending: nothing to send.
        let mut idle = OtClient::new("me", "ab", 1, 0);
        assert_eq!(idle.reload("cd", 7, 0).unwrap(), None);
        assert_eq!((idle.text(), idle.version), ("cd".into(), 7));
    }
}
