//! Token revocation as the web layer sees it.
//!
//! Owns: [`Tokens`]: whether a verified token is still honoured (the
//! store's revocation state: the user exists, the token was issued after
//! the user's `tokens_valid_after`, its `jti` is not revoked), cached per
//! user and token for `TOKEN_CHECK_CACHE_MS`; the live WebSocket sessions
//! by user and token ([`LiveGuard`]), closed with 1008 when their token is
//! revoked; and [`Tokens::run`], the task applying revocations announced by
//! every instance (the bus's [`Revocations`] channel).
//!
//! A revocation is written to the store first, then applied here at once
//! (cache dropped, sockets closed) and published; every other instance
//! applies it when the event arrives. An instance that may have missed
//! events (pub/sub reconnect, lag) drops its cache and checks every live
//! session against the store again. A check that started before a
//! revocation never caches its answer (the cache's generation moved).
//! Must not import: sqlx, redis.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::error::ApiError;
use crate::auth::Claims;
use crate::bus::{BusEvent, BusRecv, Revocation, Revocations, Subscription};
use crate::store::Store;

/// Cached verdicts kept at most (all users): past it the cache starts over.
const MAX_CACHED: usize = 100_000;

/// Verdicts of tokens found valid, per user and token.
#[derive(Default)]
struct Cache {
    /// user → jti (`""`: a token without one) → when it was found valid.
    users: HashMap<String, HashMap<String, Instant>>,
    entries: usize,
    /// Moves on every revocation (and resync): an answer computed across
    /// one is not cached.
    generation: u64,
}

/// A live WebSocket session authenticated by a token.
struct LiveSocket {
    jti: Option<String>,
    issued_ms: i64,
    close: CancellationToken,
}

#[derive(Default)]
struct Live {
    next: u64,
    /// user → session id → its token.
    users: HashMap<String, HashMap<u64, LiveSocket>>,
}

/// Revocation checks and the sessions to close; one per process.
pub struct Tokens {
    me: Weak<Tokens>,
    store: Arc<dyn Store>,
    bus: Arc<dyn Revocations>,
    cache_ttl: Duration,
    cache: Mutex<Cache>,
    live: Mutex<Live>,
}

/// A session's place among the live ones: `closed` fires when its token is
/// revoked; dropping it removes the session.
pub struct LiveGuard {
    tokens: Weak<Tokens>,
    user: String,
    id: u64,
    pub closed: CancellationToken,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let Some(t) = self.tokens.upgrade() else {
            return;
        };
        let mut live = t.lock_live();
        if let Some(socks) = live.users.get_mut(&self.user) {
            socks.remove(&self.id);
            if socks.is_empty() {
                live.users.remove(&self.user);
            }
        }
    }
}

impl Tokens {
    pub fn new(store: Arc<dyn Store>, bus: Arc<dyn Revocations>, cache_ttl: Duration) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            store,
            bus,
            cache_ttl,
            cache: Mutex::default(),
            live: Mutex::default(),
        })
    }

    fn lock_cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves whenever a revocation is applied here.
    pub fn generation(&self) -> u64 {
        self.lock_cache().generation
    }

    /// Whether the store still honours this (verified) token: refused when
    /// the user is gone, the token was issued before the user's last
    /// password change, or its jti was revoked.
    pub async fn check(&self, c: &Claims) -> Result<(), ApiError> {
        let key = c.jti.clone().unwrap_or_default();
        let generation = {
            let cache = self.lock_cache();
            let fresh = cache
                .users
                .get(&c.sub)
                .and_then(|m| m.get(&key))
                .is_some_and(|at| at.elapsed() < self.cache_ttl);
            if fresh {
                return Ok(());
            }
            cache.generation
        };
        let state = self.store.token_state(&c.sub, c.jti.as_deref()).await?;
        let ok = state.is_some_and(|s| !s.revoked && c.issued_ms() >= s.valid_after_ms);
        if !ok {
            return Err(ApiError::Unauthorized("this token was revoked"));
        }
        if !self.cache_ttl.is_zero() {
            let mut cache = self.lock_cache();
            if cache.generation == generation {
                if cache.entries >= MAX_CACHED {
                    cache.users.clear();
                    cache.entries = 0;
                }
                let added = cache
                    .users
                    .entry(c.sub.clone())
                    .or_default()
                    .insert(key, Instant::now())
                    .is_none();
                cache.entries += usize::from(added);
            }
        }
        Ok(())
    }

    /// Register a session authenticated by `c`, to be closed when its
    /// token is revoked.
    pub fn track(&self, c: &Claims) -> LiveGuard {
        let closed = CancellationToken::new();
        let mut live = self.lock_live();
        let id = live.next;
        live.next += 1;
        live.users.entry(c.sub.clone()).or_default().insert(
            id,
            LiveSocket {
                jti: c.jti.clone(),
                issued_ms: c.issued_ms(),
                close: closed.clone(),
            },
        );
        LiveGuard {
            tokens: self.me.clone(),
            user: c.sub.clone(),
            id,
            closed,
        }
    }

    /// Apply a revocation on this instance: forget the user's cached
    /// verdicts, close the sessions of the revoked tokens.
    pub fn apply(&self, r: &Revocation) {
        {
            let mut cache = self.lock_cache();
            cache.generation += 1;
            if let Some(m) = cache.users.remove(r.user()) {
                cache.entries -= m.len();
            }
        }
        let live = self.lock_live();
        let Some(socks) = live.users.get(r.user()) else {
            return;
        };
        for s in socks.values() {
            if r.covers(r.user(), s.jti.as_deref(), s.issued_ms) && !s.close.is_cancelled() {
                s.close.cancel();
                metrics::counter!("tandem_sessions_revoked_total").increment(1);
            }
        }
    }

    /// Apply `r` here at once, then tell every other instance. The store
    /// already refuses the tokens: a publish that fails is logged (other
    /// instances then refuse them once their cache expires, and close the
    /// sessions at their next pub/sub resync).
    pub async fn revoke(&self, r: Revocation) {
        self.apply(&r);
        if let Err(e) = self.bus.publish_revocation(&r).await {
            warn!(error = %e, "could not announce a token revocation");
        }
    }

    /// Revocations may have been missed: drop every cached verdict and
    /// check each live session's token against the store again.
    async fn resync(&self) {
        {
            let mut cache = self.lock_cache();
            cache.generation += 1;
            cache.users.clear();
            cache.entries = 0;
        }
        let tokens: Vec<(String, Option<String>, i64)> = {
            let live = self.lock_live();
            let mut v: Vec<_> = live
                .users
                .iter()
                .flat_map(|(u, socks)| {
                    socks
                        .values()
                        .map(move |s| (u.clone(), s.jti.clone(), s.issued_ms))
                })
                .collect();
            v.sort();
            v.dedup();
            v
        };
        for (user, jti, issued_ms) in tokens {
            let state = match self.store.token_state(&user, jti.as_deref()).await {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "cannot recheck live sessions' tokens");
                    return;
                }
            };
            let r = match state {
                None => Revocation::User {
                    user,
                    before_ms: i64::MAX,
                },
                Some(s) if s.revoked => Revocation::Token {
                    user,
                    jti: jti.unwrap_or_default(),
                },
                Some(s) if issued_ms < s.valid_after_ms => Revocation::User {
                    user,
                    before_ms: s.valid_after_ms,
                },
                Some(_) => continue,
            };
            self.apply(&r);
        }
    }

    /// Apply every instance's revocations until `cancel`.
    pub async fn run(self: Arc<Self>, mut sub: Subscription, cancel: CancellationToken) {
        loop {
            let recv = tokio::select! {
                _ = cancel.cancelled() => return,
                r = sub.recv() => r,
            };
            match recv {
                BusRecv::Event(ev) => match &*ev {
                    BusEvent::Revoked(r) => self.apply(r),
                    BusEvent::Resync => self.resync().await,
                    _ => {}
                },
                BusRecv::Lagged => self.resync().await,
                BusRecv::Closed => {
                    let mut backoff = Duration::from_millis(50);
                    sub = loop {
                        match self.bus.subscribe_revocations().await {
                            Ok(s) => break s,
                            Err(e) => debug!(error = %e, "revocations: resubscribe failed"),
                        }
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    };
                    self.resync().await;
                }
            }
        }
    }
}
