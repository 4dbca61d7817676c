//! Pub/sub on a Redis Cluster: one RESP3 cluster connection whose pushes
//! come through a bounded queue. Document channels are sharded
//! (`SSUBSCRIBE`, served by the shard that owns the document's slot);
//! the instance-wide revocations channel is a plain `SUBSCRIBE`.
//!
//! Whenever a channel may have missed messages its subscribers get
//! `Resync` (and refill from the op log): a second subscribe confirmation
//! for it (the client resubscribed after a reconnect or a slot-map
//! change), a disconnection, a full push queue, or the server's own
//! `SUNSUBSCRIBE` when the slot moved to another shard, after which the
//! channel is subscribed again on its new owner (retried every tick until
//! it takes).
//! Must not import: axum, sqlx, the hub.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{AsyncPushSender, SendError};
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::bus::{back_off, deliver, resync};
use super::conn::Topology;
use super::{Ctl, Subs};

/// Pushes held between the connection and this loop; past it the loop
/// drops them and resyncs every channel.
const PUSH_QUEUE: usize = 8192;

/// The connection's push sender: never blocks the connection; a full queue
/// raises `overflow`.
struct PushQueue {
    tx: mpsc::Sender<PushInfo>,
    overflow: Arc<AtomicBool>,
    wake: Arc<Notify>,
}

impl AsyncPushSender for PushQueue {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        match self.tx.try_send(info) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflow.store(true, Ordering::Relaxed);
                self.wake.notify_one();
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError),
        }
    }
}

/// Documents' channels end in `}:ch` (hash-tagged, sharded); any other is
/// instance-wide.
pub(super) fn is_document_channel(channel: &str) -> bool {
    channel.ends_with("}:ch")
}

async fn subscribe(conn: &mut ClusterConnection, channel: &str) -> bool {
    let r = if is_document_channel(channel) {
        conn.ssubscribe(channel).await
    } else {
        conn.subscribe(channel).await
    };
    if let Err(e) = &r {
        debug!(error = %e, channel, "subscribe failed");
    }
    r.is_ok()
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn wanted(subs: &Subs, channel: &str) -> bool {
    subs.lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains_key(channel)
}

/// The cluster pub/sub task: connect (retrying), then serve subscribe
/// requests and deliver pushes until shutdown.
pub(super) async fn cluster_pubsub_loop(
    nodes: Vec<String>,
    subs: Subs,
    mut ctl: mpsc::UnboundedReceiver<Ctl>,
    cancel: CancellationToken,
) {
    let (tx, mut rx) = mpsc::channel(PUSH_QUEUE);
    let overflow = Arc::new(AtomicBool::new(false));
    let wake = Arc::new(Notify::new());
    let queue = PushQueue {
        tx,
        overflow: overflow.clone(),
        wake: wake.clone(),
    };
    let client = match Topology::cluster_builder(&nodes)
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(queue)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "cluster pub/sub client");
            return;
        }
    };
    let mut backoff = Duration::from_millis(50);
    let mut conn = loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            c = client.get_async_connection() => match c {
                Ok(c) => break c,
                Err(e) => debug!(error = %e, "cluster pub/sub connect failed"),
            },
        }
        if !back_off(&cancel, &mut backoff).await {
            return;
        }
    };
    // Channels with a confirmed subscription, and those the server dropped
    // (slot moved) that we still want.
    let mut confirmed: HashSet<String> = HashSet::new();
    let mut lost: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            c = ctl.recv() => match c {
                None => return,
                Some(Ctl::Subscribe(ch, reply)) => {
                    let ok = subscribe(&mut conn, &ch).await;
                    let _ = reply.send(ok);
                }
                Some(Ctl::Unsubscribe(ch)) => {
                    if !wanted(&subs, &ch) {
                        confirmed.remove(&ch);
                        lost.remove(&ch);
                        let _ = if is_document_channel(&ch) {
                            conn.sunsubscribe(&ch).await
                        } else {
                            conn.unsubscribe(&ch).await
                        };
                    }
                }
            },
            p = rx.recv() => {
                let Some(push) = p else { return };
                let channel = text(push.data.first());
                match (push.kind, channel) {
                    (PushKind::Message | PushKind::SMessage, Some(ch)) => {
                        if let Some(payload) = text(push.data.get(1)) {
                            deliver(&subs, &ch, &payload);
                        }
                    }
                    // A second confirmation: resubscribed after a reconnect
                    // or a slot-map change.
                    (PushKind::Subscribe | PushKind::SSubscribe, Some(ch))
                        if !confirmed.insert(ch.clone()) =>
                    {
                        debug!(channel = %ch, "resubscribed; resyncing");
                        resync(&subs, Some(&ch));
                    }
                    (PushKind::SUnsubscribe | PushKind::Unsubscribe, Some(ch)) => {
                        confirmed.remove(&ch);
                        if wanted(&subs, &ch) {
                            info!(channel = %ch, "channel left its shard; subscribing on its new owner");
                            lost.insert(ch);
                        }
                    }
                    (PushKind::Disconnection, _) => {
                        metrics::counter!("tandem_pubsub_reconnects_total").increment(1);
                        resync(&subs, None);
                    }
                    _ => {}
                }
            }
            _ = wake.notified() => {}
            _ = tick.tick() => {
                let retry: Vec<String> = lost.iter().cloned().collect();
                for ch in retry {
                    if !wanted(&subs, &ch) {
                        lost.remove(&ch);
                    } else if subscribe(&mut conn, &ch).await {
                        lost.remove(&ch);
                        resync(&subs, Some(&ch));
                    }
                }
            }
        }
        if overflow.swap(false, Ordering::Relaxed) {
            warn!("pub/sub push queue overflowed; resyncing every channel");
            resync(&subs, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_document_channel;

    #[test]
    fn document_channels_are_sharded_and_revocations_are_not() {
        assert!(is_document_channel("tandem:{doc:a-b}:ch"));
        assert!(!is_document_channel("tandem:revocations"));
    }
}
