//! The Redis [`Tickets`]: `tickets.lua` on one hash of live tickets and a
//! sorted set of their expiries, `<prefix>:{tickets}:live|exp` (one slot),
//! so a ticket minted on one instance is redeemed on any, once.
//! Must not import: axum, sqlx, the hub.

use async_trait::async_trait;

use super::{unavailable, RedisBackend};
use crate::bus::{BusError, Tickets};

impl RedisBackend {
    fn ticket_keys(&self) -> [String; 2] {
        [
            format!("{}:{{tickets}}:live", self.prefix),
            format!("{}:{{tickets}}:exp", self.prefix),
        ]
    }
}

#[async_trait]
impl Tickets for RedisBackend {
    async fn put_ticket(
        &self,
        key: &str,
        value: &str,
        expires_ms: i64,
        now_ms: i64,
        cap: usize,
    ) -> Result<bool, BusError> {
        let [live, exp] = self.ticket_keys();
        let kept: i64 = self
            .scripts
            .tickets
            .key(live)
            .key(exp)
            .arg("put")
            .arg(key)
            .arg(now_ms)
            .arg(value)
            .arg(expires_ms)
            .arg(cap)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(kept == 1)
    }

    async fn take_ticket(&self, key: &str, now_ms: i64) -> Result<Option<String>, BusError> {
        let [live, exp] = self.ticket_keys();
        self.scripts
            .tickets
            .key(live)
            .key(exp)
            .arg("take")
            .arg(key)
            .arg(now_ms)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)
    }
}
