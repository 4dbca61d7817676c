//! Abuse limits as pure data: a token bucket for rates (time is an
//! argument), a counter of open connections per key (user, IP), and the
//! address ranges whose forwarding headers are believed.
//!
//! Owns: [`TokenBucket`], [`ConnLimiter`], [`Cidr`].
//! Must not import: tokio, axum, hyper, redis, sqlx, utoipa, metrics
//! (enforced: tandem-core has no such dependency).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
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

/// Open connections per key, each at most `max`. A slot is held by the
/// [`ConnSlot`] `acquire` returns and given back when it drops.
#[derive(Clone, Debug)]
pub struct ConnLimiter {
    max: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

#[derive(Debug)]
pub struct ConnSlot {
    key: String,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl ConnLimiter {
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            open: Arc::default(),
        }
    }

    /// A slot for `key`, or `None` when `key` already holds `max`.
    pub fn acquire(&self, key: &str) -> Option<ConnSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(key.to_owned()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ConnSlot {
            key: key.to_owned(),
            open: self.open.clone(),
        })
    }

    /// Connections open for `key`.
    pub fn open(&self, key: &str) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(key).copied().unwrap_or(0)
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// An address range (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let net: IpAddr = addr.parse().map_err(|_| format!("not an address: {s}"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("bad prefix length: {s}"))?,
        };
        Ok(Cidr { net, bits })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (a, b, width) = match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                (u128::from(u32::from(n)), u128::from(u32::from(i)), 32)
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
            _ => return false,
        };
        if self.bits == 0 {
            return true;
        }
        let shift = width - u32::from(self.bits);
        (a >> shift) == (b >> shift)
    }
}

#[cfg(test)]
mod conn_tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_key_and_given_back() {
        let l = ConnLimiter::new(2);
        let a = l.acquire("ip:1").unwrap();
        let _b = l.acquire("ip:1").unwrap();
        assert!(l.acquire("ip:1").is_none());
        assert!(l.acquire("ip:2").is_some());
        drop(a);
        assert_eq!(l.open("ip:1"), 1);
        assert!(l.acquire("ip:1").is_some());
    }

    #[test]
    fn cidr_matching() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
    }
}
