//! Per-connection rate limiting as a pure token bucket: time is an argument.
//!
//! Owns: [`TokenBucket`]. Must not import: tokio, axum, redis, sqlx.

use std::time::Instant;

#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// `rate` tokens per second, holding at most `burst`; starts full.
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// `per_minute` tokens a minute, holding at most `burst`; starts full.
    pub fn per_minute(per_minute: u32, burst: u32, now: Instant) -> Self {
        let mut b = Self::new(0, burst, now);
        b.rate = f64::from(per_minute) / 60.0;
        b
    }

    /// Take one token if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 3, t0);
        assert!(b.allow(t0) && b.allow(t0) && b.allow(t0));
        assert!(!b.allow(t0));
        assert!(b.allow(t0 + Duration::from_millis(100)));
        assert!(!b.allow(t0 + Duration::from_millis(100)));
        // never more than the burst, however long the pause
        let later = t0 + Duration::from_secs(100);
        assert_eq!((0..10).filter(|_| b.allow(later)).count(), 3);
    }
}
