//! Who is on a document and what they are told: the `Room` (in `state.rs`:
//! local connections, other instances' users, carets), fan-out of committed
//! records, broadcasts, leaves (which take the client's awareness along), the presence heartbeat that keeps the
//! shared presence set fresh and reconciles other instances' users, and
//! access changes (role updates, revocations, deletion).
//! An `impl DocTask` file. Imports from the hub: the leaves and `task` only.
//! Must not import: axum, sqlx, redis, the other `impl DocTask` files.

use std::collections::HashMap;
use std::time::Instant;

use tracing::debug;

use super::outbox::BusWrite;
use super::state::ConnState;
use super::task::DocTask;
use super::types::{close, error_msg, text, Outbound};
use crate::bus::{AccessChange, BusEvent, PresenceEntry};
use crate::doc::Record;
use crate::protocol::{ErrorCode, Presence, Role, ServerMessage, UserInfo};

fn user_of(p: &Presence) -> UserInfo {
    UserInfo {
        id: p.id.clone(),
        name: p.name.clone(),
        color: p.color.clone(),
    }
}

impl DocTask {
    pub(super) fn users(&self) -> Vec<Presence> {
        self.room.users()
    }

    /// Tell every local connection: its own op becomes an ack, others an op.
    pub(super) fn fanout(&mut self, rec: &Record) {
        let span = crate::otel::fanout_span(rec.version, rec.trace.as_deref());
        let _in = span.enter();
        let lag_ms = (self.hub.clock)().saturating_sub(rec.time).max(0);
        metrics::histogram!("tandem_fanout_lag_seconds").record(lag_ms as f64 / 1000.0);
        let op_msg = text(ServerMessage::Op {
            version: rec.version,
            op: &rec.op,
            user: &rec.user,
            client: &rec.client,
            seq: rec.seq,
        });
        let mut slow = Vec::new();
        for c in &self.room.conns {
            let msg = if c.client == rec.client && c.first_sent_seq.is_some_and(|f| rec.seq >= f) {
                text(ServerMessage::Ack {
                    seq: rec.seq,
                    version: rec.version,
                })
            } else {
                op_msg.clone()
            };
            if c.tx.try_send(msg).is_err() {
                slow.push(c.id);
            }
        }
        self.drop_conns(&slow, "slow consumer");
        self.send_check(rec.version);
    }

    /// After the op/ack of `version`, when a check is due: the checksum of
    /// the text at `version` to every local connection, computed once.
    fn send_check(&mut self, version: u64) {
        let every = self.hub.settings.checksum_every;
        if every == 0 || version % every != 0 || self.state.version() != version {
            return;
        }
        let hash = crate::checksum::checksum_rope(self.state.rope());
        self.broadcast(
            None,
            text(ServerMessage::Check {
                version,
                hash: &hash,
            }),
        );
    }

    /// Send to one connection; a full queue disconnects it.
    pub(super) fn send_to(&mut self, conn: u64, msg: Outbound) {
        let Some(c) = self.room.conn(conn) else {
            return;
        };
        if c.tx.try_send(msg).is_err() {
            self.drop_conns(&[conn], "slow consumer");
        }
    }

    /// Send to every connection but `except`.
    pub(super) fn broadcast(&mut self, except: Option<u64>, msg: Outbound) {
        let mut slow = Vec::new();
        for c in self.room.conns.iter().filter(|c| Some(c.id) != except) {
            if c.tx.try_send(msg.clone()).is_err() {
                slow.push(c.id);
            }
        }
        self.drop_conns(&slow, "slow consumer");
    }

    /// Remove connections (dropping their sender closes their socket) and
    /// announce that they left.
    pub(super) fn drop_conns(&mut self, ids: &[u64], why: &str) {
        for &id in ids {
            let Some(pos) = self.room.conns.iter().position(|c| c.id == id) else {
                continue;
            };
            let c = self.room.conns.remove(pos);
            debug!(client = %c.client, why, "connection removed");
            self.leave_presence(&c);
        }
    }

    fn leave_presence(&mut self, c: &ConnState) {
        self.forget_awareness(&c.client, true);
        self.announce_left(&c.user, &c.client);
        self.outbox.write(BusWrite::PresenceRemove(self.entry(c)));
        self.outbox.publish(BusEvent::Left {
            instance: self.hub.settings.instance_id.clone(),
            presence: c.presence(),
        });
        if self.room.conns.is_empty() {
            self.room.idle_since = Some(Instant::now());
        }
    }

    /// A local connection as an entry of the shared presence set.
    pub(super) fn entry(&self, c: &ConnState) -> PresenceEntry {
        PresenceEntry {
            instance: self.hub.settings.instance_id.clone(),
            presence: c.presence(),
        }
    }

    /// Refresh our entries in the shared presence set, reap expired ones
    /// (announcing each once), and reconcile our view of other instances.
    pub(super) async fn heartbeat(&mut self) {
        let entries: Vec<PresenceEntry> = self.room.conns.iter().map(|c| self.entry(c)).collect();
        let now = (self.hub.clock)();
        let lease = self.hub.presence_lease_ms();
        if let Err(e) = self
            .hub
            .bus
            .presence_put(&self.id, &entries, now, lease)
            .await
        {
            debug!(error = %e, "presence heartbeat failed");
            return;
        }
        let (live, reaped) = match self.hub.bus.presence_list(&self.id, now).await {
            Ok(v) => v,
            Err(e) => {
                debug!(error = %e, "presence read failed");
                return;
            }
        };
        if !reaped.is_empty() {
            let clients = reaped.iter().map(|e| e.presence.client.clone()).collect();
            self.outbox.write(BusWrite::AwarenessRemove(clients));
        }
        for e in reaped {
            self.outbox.publish(BusEvent::Left {
                instance: e.instance.clone(),
                presence: e.presence,
            });
        }
        let me = self.hub.settings.instance_id.clone();
        let now_remote: HashMap<String, Presence> = live
            .into_iter()
            .filter(|e| e.instance != me)
            .map(|e| (e.presence.client.clone(), e.presence))
            .collect();
        let gone: Vec<Presence> = self
            .room
            .remote
            .values()
            .filter(|p| !now_remote.contains_key(&p.client))
            .cloned()
            .collect();
        let new: Vec<Presence> = now_remote
            .values()
            .filter(|p| !self.room.remote.contains_key(&p.client))
            .cloned()
            .collect();
        for p in gone {
            self.remote_left(&p);
        }
        for p in new {
            self.remote_joined(p);
        }
    }

    pub(super) fn remote_joined(&mut self, p: Presence) {
        if self.room.remote.contains_key(&p.client) {
            return;
        }
        let user = user_of(&p);
        let msg = text(ServerMessage::UserJoined {
            user: &user,
            client: &p.client,
        });
        self.room.remote.insert(p.client.clone(), p);
        self.broadcast(None, msg);
    }

    pub(super) fn remote_left(&mut self, p: &Presence) {
        if self.room.remote.remove(&p.client).is_none() {
            return;
        }
        self.announce_left(&user_of(p), &p.client);
    }

    /// Someone (here or on another instance) left: forget their caret and
    /// awareness, and tell the local sockets.
    fn announce_left(&mut self, user: &UserInfo, client: &str) {
        self.room.cursors.remove(client);
        self.forget_awareness(client, false);
        self.broadcast(None, text(ServerMessage::UserLeft { user, client }));
    }

    /// Drop connections whose socket is gone.
    pub(super) fn sweep_closed(&mut self) {
        let closed: Vec<u64> = self
            .room
            .conns
            .iter()
            .filter(|c| c.tx.is_closed())
            .map(|c| c.id)
            .collect();
        self.drop_conns(&closed, "socket closed");
    }

    /// Tell, then close, these connections (access revoked, or deleted).
    fn expel(&mut self, ids: &[u64], message: &str, reason: &'static str) {
        for id in ids {
            self.send_to(*id, error_msg(ErrorCode::Forbidden, message, None));
            self.send_to(*id, Outbound::Close(close::POLICY, reason));
        }
        self.drop_conns(ids, reason);
    }

    /// Someone's role changed or was revoked, or the document was deleted
    /// (from the REST API, on any instance).
    pub(super) fn access_changed(&mut self, change: &AccessChange) {
        match change {
            AccessChange::Member {
                user,
                role: Some(role),
            } => {
                let mut told = Vec::new();
                for c in self
                    .room
                    .conns
                    .iter_mut()
                    .filter(|c| &c.user.id == user && c.role != Role::Owner)
                {
                    if c.role != *role {
                        told.push(c.id);
                    }
                    c.role = *role;
                }
                let msg = text(ServerMessage::Role { role: *role });
                for id in told {
                    self.send_to(id, msg.clone());
                }
            }
            AccessChange::Member { user, role: None } => {
                let affected: Vec<u64> = self
                    .room
                    .conns
                    .iter()
                    .filter(|c| &c.user.id == user)
                    .map(|c| c.id)
                    .collect();
                self.expel(
                    &affected,
                    "your access to this document was revoked",
                    "access revoked",
                );
            }
            AccessChange::Deleted => {
                let all: Vec<u64> = self.room.conns.iter().map(|c| c.id).collect();
                self.expel(&all, "this document was deleted", "document deleted");
                self.deleted = true;
            }
        }
    }
}
