//! The Redis [`Bus`]: publish, subscribe (one pub/sub connection per
//! process, with a reconnect loop that tells every subscriber to resync),
//! and the presence sorted set; and [`Revocations`] on the instance-wide
//! channel `<prefix>:revocations` (subscribed like a document's channel).
//! Must not import: axum, sqlx, the hub.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{unavailable, Ctl, RedisBackend, Subs};
use crate::bus::{
    AccessChange, Bus, BusError, BusEvent, PresenceEntry, Revocation, Revocations, Subscription,
};
use crate::doc::{Record, RecordWire};
use crate::protocol::{AwarenessInfo, CursorInfo, Presence};

/// Presence, cursor and record events as they travel on a channel.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum EventWire {
    Joined {
        instance: String,
        presence: Presence,
    },
    Left {
        instance: String,
        presence: Presence,
    },
    Cursor {
        instance: String,
        cursor: CursorInfo,
    },
    Awareness {
        instance: String,
        info: AwarenessInfo,
    },
    Access {
        access: AccessChange,
    },
    Meta {
        instance: String,
        state: Box<crate::meta::DocMeta>,
    },
    Revoked {
        revocation: Revocation,
    },
    Leader {
        token: String,
        #[serde(default)]
        term: u64,
    },
    Fwd {
        from: String,
        to: String,
        edits: Vec<super::forwards::ForwardedWire>,
    },
    Verdicts {
        to: String,
        items: Vec<super::forwards::VerdictItem>,
    },
}

/// Decode a channel payload: a committed record (the commit script publishes
/// records as they are in the log) or a presence/cursor event.
fn decode_event(payload: &str) -> Result<BusEvent, BusError> {
    if payload.starts_with("[{\"version\":") {
        let wires: Vec<RecordWire> =
            serde_json::from_str(payload).map_err(|e| BusError::Corrupt(e.to_string()))?;
        return wires
            .into_iter()
            .map(|w| {
                Record::from_wire(w)
                    .map(Arc::new)
                    .map_err(|e| BusError::Corrupt(e.to_string()))
            })
            .collect::<Result<_, _>>()
            .map(BusEvent::Committed);
    }
    let wire: EventWire =
        serde_json::from_str(payload).map_err(|e| BusError::Corrupt(e.to_string()))?;
    Ok(match wire {
        EventWire::Joined { instance, presence } => BusEvent::Joined { instance, presence },
        EventWire::Left { instance, presence } => BusEvent::Left { instance, presence },
        EventWire::Cursor { instance, cursor } => BusEvent::Cursor { instance, cursor },
        EventWire::Awareness { instance, info } => BusEvent::Awareness { instance, info },
        EventWire::Access { access } => BusEvent::Access(access),
        EventWire::Meta { instance, state } => BusEvent::Meta { instance, state },
        EventWire::Revoked { revocation } => BusEvent::Revoked(revocation),
        EventWire::Leader { token, .. } => BusEvent::Leader { token },
        EventWire::Fwd { from, to, edits } => BusEvent::Forward {
            from,
            to,
            edits: super::forwards::edits_from_wire(edits)?,
        },
        EventWire::Verdicts { to, items } => BusEvent::Verdicts {
            to,
            items: super::forwards::verdicts_from_wire(items),
        },
    })
}

fn encode_event(event: &BusEvent) -> Option<String> {
    let wire = match event.clone() {
        BusEvent::Committed(recs) => {
            let wires: Vec<RecordWire> = recs.iter().map(|r| r.to_wire()).collect();
            return serde_json::to_string(&wires).ok();
        }
        BusEvent::Resync => return None,
        BusEvent::Joined { instance, presence } => EventWire::Joined { instance, presence },
        BusEvent::Left { instance, presence } => EventWire::Left { instance, presence },
        BusEvent::Cursor { instance, cursor } => EventWire::Cursor { instance, cursor },
        BusEvent::Awareness { instance, info } => EventWire::Awareness { instance, info },
        BusEvent::Access(access) => EventWire::Access { access },
        BusEvent::Meta { instance, state } => EventWire::Meta { instance, state },
        BusEvent::Revoked(revocation) => EventWire::Revoked { revocation },
        BusEvent::Leader { token } => EventWire::Leader {
            token: token.clone(),
            term: 0,
        },
        BusEvent::Forward { from, to, edits } => EventWire::Fwd {
            from,
            to,
            edits: super::forwards::edits_to_wire(&edits),
        },
        BusEvent::Verdicts { to, items } => EventWire::Verdicts {
            to,
            items: super::forwards::verdicts_to_wire(&items),
        },
    };
    serde_json::to_string(&wire).ok()
}

/// Unsubscribes when the last local subscriber of a channel goes.
struct Unsubscribe {
    backend: Weak<RedisBackend>,
    channel: String,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        let Some(b) = self.backend.upgrade() else {
            return;
        };
        let mut subs = b.subs.lock().unwrap_or_else(|e| e.into_inner());
        if subs
            .get(&self.channel)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            subs.remove(&self.channel);
            let _ = b.ctl.send(Ctl::Unsubscribe(self.channel.clone()));
        }
    }
}

#[async_trait]
impl Bus for RedisBackend {
    async fn publish(&self, doc: &str, event: BusEvent) -> Result<(), BusError> {
        let Some(payload) = encode_event(&event) else {
            return Ok(());
        };
        let _: i64 = redis::cmd(self.doc_publish())
            .arg(self.key(doc, "ch"))
            .arg(payload)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn subscribe(&self, doc: &str) -> Result<Subscription, BusError> {
        self.subscribe_channel(self.key(doc, "ch")).await
    }

    async fn ping(&self) -> Result<(), BusError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn presence_put(
        &self,
        doc: &str,
        entries: &[PresenceEntry],
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<(), BusError> {
        if entries.is_empty() {
            return Ok(());
        }
        let key = self.key(doc, "presence");
        let mut pipe = redis::pipe();
        for e in entries {
            let member = serde_json::to_string(e).map_err(|e| BusError::Corrupt(e.to_string()))?;
            pipe.cmd("ZADD")
                .arg(&key)
                .arg(now_ms + ttl_ms)
                .arg(member)
                .ignore();
        }
        pipe.cmd("PEXPIRE").arg(&key).arg(ttl_ms * 4).ignore();
        let () = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn presence_remove(&self, doc: &str, entry: &PresenceEntry) -> Result<(), BusError> {
        let member = serde_json::to_string(entry).map_err(|e| BusError::Corrupt(e.to_string()))?;
        let _: i64 = redis::cmd("ZREM")
            .arg(self.key(doc, "presence"))
            .arg(member)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn presence_list(
        &self,
        doc: &str,
        now_ms: i64,
    ) -> Result<(Vec<PresenceEntry>, Vec<PresenceEntry>), BusError> {
        let out: Vec<String> = self
            .scripts
            .presence
            .key(self.key(doc, "presence"))
            .arg(now_ms)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let mut parts = out.split(|s| s == "--");
        let decode = |v: &[String]| -> Vec<PresenceEntry> {
            v.iter()
                .filter_map(|s| serde_json::from_str(s).ok())
                .collect()
        };
        let live = decode(parts.next().unwrap_or_default());
        let reaped = decode(parts.next().unwrap_or_default());
        Ok((live, reaped))
    }

    /// A hash (`aware`) of client id → awareness JSON; its fields go when
    /// their client leaves or is reaped, the key a while after the last
    /// write (as the presence set's).
    async fn awareness_put(
        &self,
        doc: &str,
        info: &AwarenessInfo,
        ttl_ms: i64,
    ) -> Result<(), BusError> {
        let key = self.key(doc, "aware");
        let value = serde_json::to_string(info).map_err(|e| BusError::Corrupt(e.to_string()))?;
        let () = redis::pipe()
            .cmd("HSET")
            .arg(&key)
            .arg(&info.client)
            .arg(value)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl_ms * 4)
            .ignore()
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn awareness_remove(&self, doc: &str, clients: &[String]) -> Result<(), BusError> {
        if clients.is_empty() {
            return Ok(());
        }
        let _: i64 = redis::cmd("HDEL")
            .arg(self.key(doc, "aware"))
            .arg(clients)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn awareness_list(&self, doc: &str) -> Result<Vec<AwarenessInfo>, BusError> {
        let values: Vec<String> = redis::cmd("HVALS")
            .arg(self.key(doc, "aware"))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(values
            .iter()
            .filter_map(|s| serde_json::from_str(s).ok())
            .collect())
    }
}

impl RedisBackend {
    /// Subscribe to `channel` (a document's, or the instance-wide one):
    /// shared by the local subscribers, confirmed by Redis before this
    /// returns.
    async fn subscribe_channel(&self, channel: String) -> Result<Subscription, BusError> {
        let (rx, new) = {
            let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
            match subs.get(&channel) {
                Some(tx) => (tx.subscribe(), false),
                None => {
                    let (tx, rx) = broadcast::channel(crate::bus::SUBSCRIBER_CAPACITY);
                    subs.insert(channel.clone(), tx);
                    (rx, true)
                }
            }
        };
        let guard = Unsubscribe {
            backend: self.me.clone(),
            channel: channel.clone(),
        };
        let sub = Subscription::new(rx, Some(Box::new(guard)));
        if new {
            // Wait until Redis confirms, so nothing published after this
            // returns can be missed.
            let (tx, confirmed) = oneshot::channel();
            let _ = self.ctl.send(Ctl::Subscribe(channel, tx));
            match tokio::time::timeout(Duration::from_secs(5), confirmed).await {
                Ok(Ok(true)) => {}
                _ => return Err(BusError::Unavailable("subscribe not confirmed".into())),
            }
        }
        Ok(sub)
    }
}

/// The instance-wide channel: every instance subscribes to it.
#[async_trait]
impl Revocations for RedisBackend {
    async fn publish_revocation(&self, revocation: &Revocation) -> Result<(), BusError> {
        let payload = encode_event(&BusEvent::Revoked(revocation.clone()))
            .ok_or_else(|| BusError::Corrupt("unencodable revocation".into()))?;
        let _: i64 = redis::cmd("PUBLISH")
            .arg(self.revocations_channel())
            .arg(payload)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn subscribe_revocations(&self) -> Result<Subscription, BusError> {
        self.subscribe_channel(self.revocations_channel()).await
    }
}

/// Hand a channel's message to its local subscribers.
pub(super) fn deliver(subs: &Subs, channel: &str, payload: &str) {
    let tx = subs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(channel)
        .cloned();
    let Some(tx) = tx else { return };
    match decode_event(payload) {
        Ok(ev) => {
            let _ = tx.send(Arc::new(ev));
        }
        Err(e) => warn!(error = %e, "undecodable bus message"),
    }
}

/// Tell the subscribers of `channel` (every channel: `None`) that they
/// may have missed messages.
pub(super) fn resync(subs: &Subs, channel: Option<&str>) {
    let senders: Vec<_> = {
        let subs = subs.lock().unwrap_or_else(|e| e.into_inner());
        match channel {
            Some(ch) => subs.get(ch).cloned().into_iter().collect(),
            None => subs.values().cloned().collect(),
        }
    };
    for tx in senders {
        let _ = tx.send(Arc::new(BusEvent::Resync));
    }
}

/// Every channel with local subscribers.
fn all_wanted(subs: &Subs) -> Vec<String> {
    subs.lock()
        .unwrap_or_else(|e| e.into_inner())
        .keys()
        .cloned()
        .collect()
}

/// Wait `backoff` before the next connection attempt and double it (at
/// most 1 s, so a re-seed after a Redis restart lands well inside the
/// settle window); false on shutdown.
pub(super) async fn back_off(cancel: &CancellationToken, backoff: &mut Duration) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => return false,
        _ = tokio::time::sleep(*backoff) => {}
    }
    *backoff = (*backoff * 2).min(Duration::from_secs(1));
    true
}

/// The pub/sub connection (one server): (re)connect, (re)subscribe every channel with
/// local subscribers, tell them to resync, then deliver messages until the
/// connection drops or the server shuts down.
pub(super) async fn pubsub_loop(
    client: redis::Client,
    subs: Subs,
    mut ctl: mpsc::UnboundedReceiver<Ctl>,
    cancel: CancellationToken,
) {
    let mut backoff = Duration::from_millis(50);
    let mut connected_before = false;
    loop {
        let ps = tokio::select! {
            _ = cancel.cancelled() => return,
            ps = client.get_async_pubsub() => ps,
        };
        let (mut sink, mut stream) = match ps {
            Ok(ps) => ps.split(),
            Err(e) => {
                debug!(error = %e, "pub/sub connect failed");
                if !back_off(&cancel, &mut backoff).await {
                    return;
                }
                continue;
            }
        };
        let channels = all_wanted(&subs);
        if !channels.is_empty() && sink.subscribe(&channels).await.is_err() {
            continue;
        }
        backoff = Duration::from_millis(50);
        if connected_before {
            info!(channels = channels.len(), "pub/sub reconnected; resyncing");
            metrics::counter!("tandem_pubsub_reconnects_total").increment(1);
            resync(&subs, None);
        }
        connected_before = true;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                c = ctl.recv() => match c {
                    None => return,
                    Some(Ctl::Subscribe(ch, reply)) => {
                        let ok = sink.subscribe(&ch).await.is_ok();
                        let _ = reply.send(ok);
                        if !ok {
                            break;
                        }
                    }
                    Some(Ctl::Unsubscribe(ch)) => {
                        // Resubscribed meanwhile? Then keep it.
                        let wanted = subs.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&ch);
                        if !wanted && sink.unsubscribe(&ch).await.is_err() {
                            break;
                        }
                    }
                },
                m = stream.next() => {
                    let Some(msg) = m else {
                        warn!("pub/sub connection lost; reconnecting");
                        break;
                    };
                    let channel = msg.get_channel_name().to_owned();
                    let payload: String = match msg.get_payload() {
                        Ok(p) => p,
                        Err(_) => continue,
                    };
                    deliver(&subs, &channel, &payload);
                }
            }
        }
    }
}
