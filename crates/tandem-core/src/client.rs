//! The client side of the OT protocol as a pure state machine (ot.js / Jupiter
//! style: at most one op in flight, later local edits composed into a buffer).
//!
//! Owns: [`OtClient`]. Used by the test suites, the simulation and the bench
//! tool; the browser's `tandem-client.js` follows the same rules.
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
    /// Seq of the next new op.
    next_seq: u64,
    inflight: Option<(u64, Operation)>,
    buffer: Option<Operation>,
}

impl OtClient {
    /// A client that received `init` with `content` at `version`. `last_seq`
    /// is the highest seq the server has committed for this client id.
    pub fn new(client_id: impl Into<String>, content: &str, version: u64, last_seq: u64) -> Self {
        Self {
            client_id: client_id.into(),
            version,
            text: Rope::from_str(content),
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
        if version != self.version + 1 {
            return Err(ClientError::Version {
                expected: self.version + 1,
                got: version,
            });
        }
        self.version = version;
        self.inflight = None;
        Ok(self.buffer.take().map(|b| self.send_new(b)))
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
}
