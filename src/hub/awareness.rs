//! Awareness: a socket's awareness update (checked by the web layer, bounded
//! here per document), kept for joiners, broadcast, published to the other
//! instances and stored where an instance loading the document finds it;
//! other instances' updates; the presence state shown in `users`. An entry
//! lives as long as its client's presence: it goes when the client leaves
//! or is reaped.
//! An `impl DocTask` file. Imports from the hub: the leaves and `task` only.
//! Must not import: axum, sqlx, redis, the other `impl DocTask` files.

use serde_json::Value;
use tracing::debug;

use super::outbox::BusWrite;
use super::task::DocTask;
use super::types::{error_msg, text, INIT_LIST_MAX};
use crate::bus::BusEvent;
use crate::protocol::{AwarenessInfo, ErrorCode, PresenceState, ServerMessage};

impl DocTask {
    /// A local client's update: `state` is already checked; `presence`
    /// `None` keeps the client's presence state.
    pub(super) fn awareness(&mut self, conn: u64, state: Value, presence: Option<PresenceState>) {
        let Some(c) = self.room.conn(conn) else {
            return;
        };
        let (client, user) = (c.client.clone(), c.user.id.clone());
        let kept = self.room.awareness.get(&client).map(|a| a.presence);
        if kept.is_none() && self.room.awareness.len() >= self.hub.settings.max_clients_per_doc {
            let m = "this document holds as many awareness states as it keeps";
            self.send_to(conn, error_msg(ErrorCode::TooLarge, m, None));
            return;
        }
        let info = AwarenessInfo {
            client,
            user,
            state,
            presence: presence.or(kept).unwrap_or_default(),
        };
        self.broadcast(Some(conn), text(ServerMessage::Awareness(&info)));
        self.outbox.write(BusWrite::AwarenessPut(info.clone()));
        self.outbox.publish(BusEvent::Awareness {
            instance: self.hub.settings.instance_id.clone(),
            info: info.clone(),
        });
        self.room.awareness.insert(info.client.clone(), info);
    }

    /// Another instance's client changed its awareness. Kept only for a
    /// client present here (its join arrives first on the same channel), so
    /// the map never holds more than the document's presence.
    pub(super) fn remote_awareness(&mut self, info: &AwarenessInfo) {
        if !self.room.remote.contains_key(&info.client) {
            debug!(client = %info.client, "awareness of a client not present; dropped");
            return;
        }
        self.broadcast(None, text(ServerMessage::Awareness(info)));
        self.room
            .awareness
            .insert(info.client.clone(), info.clone());
    }

    /// At load: the stored awareness of the other instances' clients.
    pub(super) async fn load_awareness(&mut self) {
        match self.hub.bus.awareness_list(&self.id).await {
            Ok(list) => {
                for info in list {
                    if self.room.remote.contains_key(&info.client) {
                        self.room.awareness.insert(info.client.clone(), info);
                    }
                }
            }
            Err(e) => debug!(error = %e, "awareness unavailable at load"),
        }
    }

    /// What a joiner is shown (bounded like the other init lists).
    pub(super) fn current_awareness(&self) -> Vec<AwarenessInfo> {
        self.room
            .awareness
            .values()
            .take(INIT_LIST_MAX)
            .cloned()
            .collect()
    }

    /// A client is gone (left, dropped or reaped): forget its awareness, and
    /// if it was ours (`stored`), remove it from where instances find it.
    pub(super) fn forget_awareness(&mut self, client: &str, stored: bool) {
        if self.room.awareness.remove(client).is_some() && stored {
            self.outbox
                .write(BusWrite::AwarenessRemove(vec![client.to_owned()]));
        }
    }
}
