//! Request bodies, read in full before any handler sees them:
//! - under a deadline: `BODY_READ_TIMEOUT_MS` after the headers, extended by
//!   one second per `BODY_MIN_BYTES_PER_SEC` bytes received (the rule of
//!   Apache's `mod_reqtimeout`), and never more than `BODY_READ_TIMEOUT_MS`
//!   after the last bytes: a stalled body or one that trickles below the
//!   minimum rate is answered 408, its bytes released and its connection
//!   closed;
//! - within a budget of bytes held by every request at once
//!   (`BODY_BUDGET_BYTES`): a body's declared length is taken whole before
//!   a byte of it is read (one without a length, chunk by chunk as it
//!   comes); a body that finds no room within [`BUDGET_WAIT`] is answered
//!   503 with `Retry-After`, nothing of it read;
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

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::error::ApiError;
use crate::config::Config;

/// How long a body waits for room in the budget before a 503.
pub const BUDGET_WAIT: Duration = Duration::from_secs(1);

/// The limits every request body is read under; one per server.
#[derive(Clone, Debug)]
pub struct BodyGuard {
    budget: Arc<Semaphore>,
    budget_bytes: usize,
    max: usize,
    timeout: Duration,
    min_rate: u64,
}

/// Why a body was not read.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    /// Past its deadline (408).
    Timeout,
    /// No room in the budget (503).
    Budget,
    /// Over MAX_BODY_BYTES (413).
    TooLarge,
    /// The client broke off or sent a malformed body (400).
    Broken,
}

impl Refused {
    fn reason(&self) -> &'static str {
        match self {
            Refused::Timeout => "timeout",
            Refused::Budget => "budget",
            Refused::TooLarge => "too_large",
            Refused::Broken => "broken",
        }
    }

    fn into_response(self) -> Response {
        metrics::counter!("tandem_request_bodies_refused_total", "reason" => self.reason())
            .increment(1);
        let mut response = match self {
            Refused::Timeout => ApiError::RequestTimeout.into_response(),
            Refused::Budget => ApiError::Unavailable.into_response(),
            Refused::TooLarge => ApiError::PayloadTooLarge.into_response(),
            Refused::Broken => {
                ApiError::BadRequest("the request body was cut short".into()).into_response()
            }
        };
        let headers = response.headers_mut();
        // The rest of the body is not read: the connection cannot carry
        // another request.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        if matches!(self, Refused::Budget) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Budget taken by one request; given back (and the gauge updated) on drop.
struct Held {
    permit: Option<OwnedSemaphorePermit>,
    guard: BodyGuard,
}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.guard.report();
    }
}

impl BodyGuard {
    pub fn new(config: &Config) -> Self {
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
            max,
            timeout: Duration::from_millis(config.body_read_timeout_ms.max(100)),
            min_rate: config.body_min_bytes_per_sec.max(1),
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

    /// Room for `n` more bytes, merged into `held`.
    async fn take(&self, held: &mut Held, n: usize, deadline: Instant) -> Result<(), Refused> {
        let n = u32::try_from(n).map_err(|_| Refused::TooLarge)?;
        let wait = BUDGET_WAIT.min(deadline.saturating_duration_since(Instant::now()));
        let permit = tokio::time::timeout(wait, self.budget.clone().acquire_many_owned(n))
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

    /// Read `body` under the deadline and the budget: its declared length
    /// taken from the budget before a byte is read, or, without one, each
    /// chunk as it comes.
    async fn read(
        &self,
        mut body: Body,
        declared: Option<usize>,
        held: &mut Held,
    ) -> Result<Bytes, Refused> {
        let start = Instant::now();
        if let Some(n) = declared {
            self.take(held, n, start + self.timeout).await?;
        }
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
            if declared.is_none() {
                self.take(held, data.len(), deadline).await?;
            }
            chunks.push(data);
        }
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
    let declared = match declared.map(usize::try_from) {
        Some(Ok(n)) if n <= g.max => Some(n),
        Some(_) => return Refused::TooLarge.into_response(),
        None => None,
    };
    let (parts, body) = req.into_parts();
    let mut held = Held {
        permit: None,
        guard: g.clone(),
    };
    match g.read(body, declared, &mut held).await {
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

    fn guard(budget: usize, max: usize) -> BodyGuard {
        BodyGuard {
            budget: Arc::new(Semaphore::new(budget)),
            budget_bytes: budget,
            max,
            timeout: Duration::from_millis(200),
            min_rate: 1000,
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
    async fn a_full_budget_refuses_after_a_wait_and_frees_on_drop() {
        let g = guard(100, 100);
        let far = Instant::now() + Duration::from_secs(60);
        let mut a = Held {
            permit: None,
            guard: g.clone(),
        };
        g.take(&mut a, 60, far).await.unwrap();
        g.take(&mut a, 30, far).await.unwrap();
        let mut b = Held {
            permit: None,
            guard: g.clone(),
        };
        assert_eq!(g.take(&mut b, 20, far).await, Err(Refused::Budget));
        drop(a);
        g.take(&mut b, 20, far).await.unwrap();
        assert_eq!(g.budget.available_permits(), 80);
    }
}
