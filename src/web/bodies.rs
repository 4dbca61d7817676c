//! Request bodies, read in full before any handler sees them:
//! - under a deadline: `BODY_READ_TIMEOUT_MS` after the headers, extended by
//!   one second per `BODY_MIN_BYTES_PER_SEC` bytes received (the rule of
//!   Apache's `mod_reqtimeout`), and never more than `BODY_READ_TIMEOUT_MS`
//!   after the last bytes: a stalled body or one that trickles below the
//!   minimum rate is answered 408, its bytes released and its connection
//!   closed;
//! - within a budget of bytes held by every request at once
//!   (`BODY_BUDGET_BYTES`), and a share of it per client address (a
//!   quarter, or the largest body if more): bytes are counted as they
//!   arrive, so a declared length costs nothing until it is sent; a chunk
//!   that finds no room within [`BUDGET_WAIT`] gets the request a 503 with
//!   `Retry-After`;
//! - at most `MAX_BODY_BYTES` (or an import's 4 bytes per `MAX_DOC_CHARS`,
//!   if more; JSON bodies are held to `MAX_BODY_BYTES` by their extractor):
//!   a larger declared length is refused before a byte is read, a longer
//!   body as soon as it passes (413).
//!
//! The budget stays held until the handler has answered, so the bytes a
//! handler parses are counted too.
//!
//! Owns: [`BodyGuard`], [`guard`] (the middleware). Must not import: sqlx,
//! redis.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::error::ApiError;
use super::ConnLimits;
use crate::config::Config;

/// How long a chunk waits for room in the budget before a 503.
pub const BUDGET_WAIT: Duration = Duration::from_secs(1);

/// How often a chunk over its address's share looks again.
const SHARE_POLL: Duration = Duration::from_millis(10);

/// The limits every request body is read under; one per server.
#[derive(Clone, Debug)]
pub struct BodyGuard {
    budget: Arc<Semaphore>,
    budget_bytes: usize,
    /// Bytes held per client address (entries only while held: at most one
    /// per body being read).
    shares: Arc<Mutex<HashMap<String, usize>>>,
    share_bytes: usize,
    max: usize,
    timeout: Duration,
    min_rate: u64,
    /// Who the client is (forwarding headers of trusted proxies).
    limits: Option<ConnLimits>,
}

/// Why a body was not read.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    /// Past its deadline (408).
    Timeout,
    /// No room in the budget (503).
    Budget,
    /// No room in the client address's share of the budget (503).
    Share,
    /// Over the largest body (413).
    TooLarge,
    /// The client broke off or sent a malformed body (400).
    Broken,
}

impl Refused {
    fn reason(&self) -> &'static str {
        match self {
            Refused::Timeout => "timeout",
            Refused::Budget => "budget",
            Refused::Share => "address",
            Refused::TooLarge => "too_large",
            Refused::Broken => "broken",
        }
    }

    fn into_response(self) -> Response {
        metrics::counter!("tandem_request_bodies_refused_total", "reason" => self.reason())
            .increment(1);
        let mut response = match self {
            Refused::Timeout => ApiError::RequestTimeout.into_response(),
            Refused::Budget | Refused::Share => ApiError::Unavailable.into_response(),
            Refused::TooLarge => ApiError::PayloadTooLarge.into_response(),
            Refused::Broken => {
                ApiError::BadRequest("the request body was cut short".into()).into_response()
            }
        };
        let headers = response.headers_mut();
        // The rest of the body is not read: the connection cannot carry
        // another request.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        if matches!(self, Refused::Budget | Refused::Share) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Budget taken by one request; given back (and the gauge updated) on drop.
struct Held {
    permit: Option<OwnedSemaphorePermit>,
    /// The client address's key, and the bytes of its share held here.
    address: String,
    shared: usize,
    guard: BodyGuard,
}

impl Held {
    fn new(guard: &BodyGuard, address: String) -> Self {
        Self {
            permit: None,
            address,
            shared: 0,
            guard: guard.clone(),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.permit.take());
        if self.shared > 0 {
            self.guard.unshare(&self.address, self.shared);
        }
        self.guard.report();
    }
}

impl BodyGuard {
    pub fn new(config: &Config, limits: ConnLimits) -> Self {
        // An import's body is the file: up to 4 bytes a character.
        let import = config.max_doc_chars.saturating_mul(4).saturating_add(3);
        let max = config.max_body_bytes.max(import);
        let budget_bytes = config
            .body_budget_bytes
            .max(max)
            .min(Semaphore::MAX_PERMITS);
        Self {
            budget: Arc::new(Semaphore::new(budget_bytes)),
            budget_bytes,
            shares: Arc::default(),
            share_bytes: (budget_bytes / 4).max(max),
            max,
            timeout: Duration::from_millis(config.body_read_timeout_ms.max(100)),
            min_rate: config.body_min_bytes_per_sec.max(1),
            limits: Some(limits),
        }
    }

    fn report(&self) {
        let held = self.budget_bytes - self.budget.available_permits();
        metrics::gauge!("tandem_request_body_bytes").set(held as f64);
    }

    /// The time by which more of a body started at `start` must come,
    /// `received` bytes of it having come, the last at `last`: the average
    /// rate must stay above the minimum, and no silence may last longer
    /// than the timeout.
    fn deadline(&self, start: Instant, last: Instant, received: usize) -> Instant {
        let earned = Duration::from_secs_f64(received as f64 / self.min_rate as f64);
        (start + self.timeout + earned).min(last + self.timeout)
    }

    /// Count `n` more bytes against `address`'s share, if they fit.
    fn share(&self, address: &str, n: usize) -> bool {
        let mut shares = self.shares.lock().unwrap_or_else(|e| e.into_inner());
        let held = shares.get(address).copied().unwrap_or(0);
        if held + n > self.share_bytes {
            return false;
        }
        shares.insert(address.to_owned(), held + n);
        true
    }

    fn unshare(&self, address: &str, n: usize) {
        let mut shares = self.shares.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = shares.get_mut(address) {
            *held = held.saturating_sub(n);
            if *held == 0 {
                shares.remove(address);
            }
        }
    }

    /// Room for `n` more bytes, in the address's share and in the budget,
    /// merged into `held`; waiting at most [`BUDGET_WAIT`] (and not past
    /// `deadline`).
    async fn take(&self, held: &mut Held, n: usize, deadline: Instant) -> Result<(), Refused> {
        let permits = u32::try_from(n).map_err(|_| Refused::TooLarge)?;
        let until = deadline.min(Instant::now() + BUDGET_WAIT);
        while !self.share(&held.address, n) {
            if Instant::now() + SHARE_POLL > until {
                return Err(Refused::Share);
            }
            tokio::time::sleep(SHARE_POLL).await;
        }
        held.shared += n;
        let permit =
            tokio::time::timeout_at(until, self.budget.clone().acquire_many_owned(permits))
                .await
                .map_err(|_| Refused::Budget)?
                .map_err(|_| Refused::Budget)?;
        match &mut held.permit {
            Some(p) => p.merge(permit),
            none => *none = Some(permit),
        }
        self.report();
        Ok(())
    }

    /// Read `body` under the deadline, the budget and the share, each
    /// chunk counted as it comes.
    async fn read(&self, mut body: Body, held: &mut Held) -> Result<Bytes, Refused> {
        let start = Instant::now();
        let mut last = start;
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut received = 0usize;
        loop {
            let deadline = self.deadline(start, last, received);
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => return Err(Refused::Timeout),
                Ok(None) => break,
                Ok(Some(Err(_))) => return Err(Refused::Broken),
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            received += data.len();
            last = Instant::now();
            if received > self.max {
                return Err(Refused::TooLarge);
            }
            self.take(held, data.len(), deadline).await?;
            chunks.push(data);
        }
        // Joined once; for that moment a body takes twice its bytes (the
        // handler's parse would copy it anyway).
        Ok(match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.pop().unwrap_or_default(),
            _ => {
                let mut all = Vec::with_capacity(received);
                for c in chunks {
                    all.extend_from_slice(&c);
                }
                Bytes::from(all)
            }
        })
    }
}

/// The middleware: requests without a body pass untouched (GETs, WebSocket
/// upgrades); others reach the handler with their body read.
pub async fn guard(State(g): State<BodyGuard>, req: Request, next: Next) -> Response {
    use http_body::Body as _;
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > g.max as u64) {
        return Refused::TooLarge.into_response();
    }
    let address = match &g.limits {
        Some(limits) => {
            let peer = req
                .extensions()
                .get::<ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0);
            super::abuse::address_key(&super::client_ip(limits, peer, req.headers()))
        }
        None => String::new(),
    };
    let (parts, body) = req.into_parts();
    let mut held = Held::new(&g, address);
    match g.read(body, &mut held).await {
        Ok(bytes) => {
            let response = next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
            drop(held);
            response
        }
        Err(refused) => {
            drop(held);
            refused.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(budget: usize, share: usize) -> BodyGuard {
        BodyGuard {
            budget: Arc::new(Semaphore::new(budget)),
            budget_bytes: budget,
            shares: Arc::default(),
            share_bytes: share,
            max: budget,
            timeout: Duration::from_millis(200),
            min_rate: 1000,
            limits: None,
        }
    }

    #[test]
    fn the_deadline_grows_one_second_per_min_rate_bytes_but_not_past_a_silence() {
        let g = guard(10, 10);
        let t = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(g.deadline(t, t, 0), t + ms(200));
        assert_eq!(g.deadline(t, t + ms(100), 500), t + ms(300));
        assert_eq!(g.deadline(t, t + ms(600), 500), t + ms(700));
        assert_eq!(g.deadline(t, t + ms(5000), 500), t + ms(700));
    }

    #[tokio::test]
    async fn budget_and_shares_refuse_after_a_wait_and_free_on_drop() {
        let g = guard(100, 70);
        let far = Instant::now() + Duration::from_secs(60);
        // One address: its share (70) ends it before the budget does.
        let mut a = Held::new(&g, "a".into());
        g.take(&mut a, 60, far).await.unwrap();
        let mut a2 = Held::new(&g, "a".into());
        assert_eq!(g.take(&mut a2, 20, far).await, Err(Refused::Share));
        // Another address has its own share, within the budget.
        let mut b = Held::new(&g, "b".into());
        g.take(&mut b, 30, far).await.unwrap();
        let mut c = Held::new(&g, "c".into());
        assert_eq!(g.take(&mut c, 20, far).await, Err(Refused::Budget));
        drop((a, a2));
        g.take(&mut c, 20, far).await.unwrap();
        assert_eq!(g.budget.available_permits(), 50);
        drop((b, c));
        assert_eq!(g.budget.available_permits(), 100);
        assert!(g.shares.lock().unwrap().is_empty());
    }
}
