//! The Redis [`SharedRates`]: `rate.lua` on one key per limit,
//! `<prefix>:{rate:<key>}` (its own slot in a cluster).
//! Must not import: axum, sqlx, the hub.

use std::time::Duration;

use async_trait::async_trait;

use super::{unavailable, RedisBackend};
use crate::bus::{BusError, SharedRates};

#[async_trait]
impl SharedRates for RedisBackend {
    async fn take(&self, key: &str, per: Duration, burst: u32) -> Result<bool, BusError> {
        let per_ms = u64::try_from(per.as_millis()).unwrap_or(u64::MAX).max(1);
        let taken: i64 = self
            .scripts
            .rate
            .key(format!("{}:{{rate:{key}}}", self.prefix))
            .arg(per_ms)
            .arg(burst.max(1))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(taken == 1)
    }
}
