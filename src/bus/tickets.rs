//! The in-process [`Tickets`] (embedded mode): a map of live tickets with
//! their expiry, swept on every put, capped in entries by the caller's cap.
//! Owns: [`MemoryTickets`].
//! Must not import: axum, sqlx, redis, the hub.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{BusError, Tickets};

/// Live tickets: key → (value, expiry in ms).
#[derive(Default)]
pub struct MemoryTickets {
    live: Mutex<HashMap<String, (String, i64)>>,
}

#[async_trait]
impl Tickets for MemoryTickets {
    async fn put_ticket(
        &self,
        key: &str,
        value: &str,
        expires_ms: i64,
        now_ms: i64,
        cap: usize,
    ) -> Result<bool, BusError> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|_, (_, exp)| *exp > now_ms);
        if live.len() >= cap {
            return Ok(false);
        }
        live.insert(key.to_owned(), (value.to_owned(), expires_ms));
        Ok(true)
    }

    async fn take_ticket(&self, key: &str, now_ms: i64) -> Result<Option<String>, BusError> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        Ok(live
            .remove(key)
            .filter(|(_, exp)| *exp > now_ms)
            .map(|(v, _)| v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tickets_are_single_use_expire_and_are_capped() {
        let t = MemoryTickets::default();
        assert!(t.put_ticket("a", "va", 100, 0, 2).await.unwrap());
        assert!(t.put_ticket("b", "vb", 50, 0, 2).await.unwrap());
        // At the cap while both live; once b expired, it is swept.
        assert!(!t.put_ticket("c", "vc", 100, 10, 2).await.unwrap());
        assert!(t.put_ticket("c", "vc", 100, 60, 2).await.unwrap());
        assert_eq!(t.take_ticket("a", 61).await.unwrap().as_deref(), Some("va"));
        assert_eq!(t.take_ticket("a", 61).await.unwrap(), None);
        assert_eq!(t.take_ticket("c", 100).await.unwrap(), None);
        assert_eq!(t.take_ticket("b", 61).await.unwrap(), None);
    }
}
