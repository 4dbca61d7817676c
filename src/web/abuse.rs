//! Abuse limits on the REST API: rates per key (logins per address, per
//! (username, address) and per account, registrations per address, REST
//! edits and member and metadata changes per user, new shares per user and
//! per address) and the threads password hashes run on.
//!
//! Rates are GCRA limits (`governor`) kept by this instance, with keys
//! bounded in number ([`MAX_KEYS`] per limit) and in size (callers pass
//! validated usernames, user ids and addresses). Logins and registrations
//! are taken from the backend's [`SharedRates`] when the deployment is
//! clustered, so N instances do not allow N times as much; when Redis does
//! not answer, this instance's own limit stands in.
//!
//! Owns: [`Abuse`], [`Limit`]. Must not import: sqlx, redis (shared rates
//! come through the bus trait).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::error::ApiError;
use crate::bus::SharedRates;
use crate::config::Config;

/// Keys one limit holds at most. Past it, keys whose allowance is full
/// again are dropped; if every key is still in use, new keys are refused.
pub const MAX_KEYS: usize = 100_000;

/// How long a shared limit may take to answer before this instance's own
/// stands in.
const SHARED_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a request waits for its password hash before a 503.
const HASH_WAIT: Duration = Duration::from_secs(10);

/// What a limit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Login attempts from one address.
    LoginAddress,
    /// Login attempts at one username from one address.
    LoginUser,
    /// Accounts created from one address.
    Register,
    /// REST edits of one user.
    RestEdit,
    /// WebSocket tickets minted for one user.
    WsTicket,
    /// Login attempts at one account, from every address (clients with
    /// the account's device cookie exempt).
    LoginAccount,
    /// Shares with someone not yet a member, per user and per address.
    NewShare,
}

impl Limit {
    fn name(self) -> &'static str {
        match self {
            Limit::LoginAddress => "login_ip",
            Limit::LoginUser => "login_user",
            Limit::Register => "register",
            Limit::RestEdit => "rest_edit",
            Limit::WsTicket => "ws_ticket",
            Limit::LoginAccount => "login_account",
            Limit::NewShare => "new_share",
        }
    }

    /// Whether every instance shares this limit (REST edits, like socket
    /// edits, are limited where they arrive).
    fn shared(self) -> bool {
        !matches!(self, Limit::RestEdit | Limit::WsTicket)
    }
}

/// One limit: its quota and this instance's keyed state.
struct Local {
    per: Duration,
    burst: u32,
    limiter: DefaultKeyedRateLimiter<String>,
}

impl Local {
    fn new(per: Duration, burst: u32) -> Self {
        let per = per.max(Duration::from_micros(1));
        let burst = burst.max(1);
        let quota = Quota::with_period(per)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        Self {
            per,
            burst,
            limiter: RateLimiter::keyed(quota),
        }
    }

    fn take(&self, key: &str) -> bool {
        if self.limiter.len() >= MAX_KEYS {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
            if self.limiter.len() >= MAX_KEYS {
                metrics::counter!("tandem_limiter_full_total").increment(1);
                return false;
            }
        }
        self.limiter.check_key(&key.to_owned()).is_ok()
    }
}

/// Every abuse limit of the REST API, and the password-hash threads.
#[derive(Clone)]
pub struct Abuse {
    login_address: Arc<Local>,
    login_user: Arc<Local>,
    register: Arc<Local>,
    rest_edit: Arc<Local>,
    ws_ticket: Arc<Local>,
    login_account: Arc<Local>,
    new_share: Arc<Local>,
    shared: Option<Arc<dyn SharedRates>>,
    hashers: Hashers,
}

impl std::fmt::Debug for Abuse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Abuse")
            .field("shared", &self.shared.is_some())
            .finish_non_exhaustive()
    }
}

/// A job for the password-hash threads.
type Job = Box<dyn FnOnce() + Send>;

/// The threads password hashes run on: a fixed few, fed by a bounded
/// queue. Argon2id takes ~19 MiB per hash; on a fresh blocking thread each
/// time, the allocator would keep that much per thread it ever ran on
/// (96 concurrent registrations held 686 MiB that way), so the hashes run on
/// threads that live as long as the server.
#[derive(Clone)]
struct Hashers {
    jobs: tokio::sync::mpsc::Sender<Job>,
}

impl Hashers {
    fn spawn(threads: usize, queue: usize) -> Self {
        let (jobs, rx) = tokio::sync::mpsc::channel::<Job>(queue.max(1));
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("tandem-hash-{i}"))
                .spawn(move || loop {
                    let job = rx.lock().unwrap_or_else(|e| e.into_inner()).blocking_recv();
                    match job {
                        Some(job) => job(),
                        None => return,
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password-hash thread");
            }
        }
        Self { jobs }
    }
}

impl Abuse {
    pub fn new(config: &Config, shared: Option<Arc<dyn SharedRates>>) -> Self {
        let per_min = |n: u32| Duration::from_secs(60) / n.max(1);
        let login = config.login_attempts_per_min;
        let hashers = match config.password_hash_concurrency {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let rest_per = Duration::from_secs(1) / config.op_rate_per_sec.max(1);
        Self {
            login_address: Arc::new(Local::new(per_min(login), login)),
            login_user: Arc::new(Local::new(per_min(login), login)),
            register: Arc::new(Local::new(
                Duration::from_secs(3600) / config.registrations_per_hour.max(1),
                config.registrations_per_hour.clamp(1, 5),
            )),
            rest_edit: Arc::new(Local::new(rest_per, config.op_rate_burst)),
            // A reconnecting page asks for one per attempt (backing off).
            ws_ticket: Arc::new(Local::new(Duration::from_millis(500), 20)),
            login_account: Arc::new(Local::new(
                Duration::from_secs(3600) / config.login_account_attempts_per_hour.max(1),
                config.login_account_burst,
            )),
            new_share: Arc::new(Local::new(
                Duration::from_secs(3600) / config.new_shares_per_hour.max(1),
                config.new_shares_per_hour,
            )),
            shared,
            hashers: Hashers::spawn(hashers, config.password_hash_queue),
        }
    }

    fn local(&self, limit: Limit) -> &Local {
        match limit {
            Limit::LoginAddress => &self.login_address,
            Limit::LoginUser => &self.login_user,
            Limit::Register => &self.register,
            Limit::RestEdit => &self.rest_edit,
            Limit::WsTicket => &self.ws_ticket,
            Limit::LoginAccount => &self.login_account,
            Limit::NewShare => &self.new_share,
        }
    }

    /// Take one unit of `key`'s allowance under `limit`; `key` must be
    /// validated (a username, a user id, an address).
    pub async fn allow(&self, limit: Limit, key: &str) -> bool {
        let local = self.local(limit);
        let allowed = match (&self.shared, limit.shared()) {
            (Some(shared), true) => {
                let key = format!("{}:{key}", limit.name());
                match tokio::time::timeout(
                    SHARED_TIMEOUT,
                    shared.take(&key, local.per, local.burst),
                )
                .await
                {
                    Ok(Ok(taken)) => taken,
                    _ => {
                        metrics::counter!("tandem_shared_limit_fallbacks_total").increment(1);
                        local.take(key.as_str())
                    }
                }
            }
            _ => local.take(key),
        };
        if !allowed {
            metrics::counter!("tandem_rate_limited_total", "limit" => limit.name()).increment(1);
        }
        allowed
    }

    /// [`Self::allow`] as the API's refusal: 429 with the time one unit
    /// takes to come back.
    pub async fn check(&self, limit: Limit, key: &str) -> Result<(), ApiError> {
        if self.allow(limit, key).await {
            Ok(())
        } else {
            let secs = self.local(limit).per.as_secs().max(1);
            Err(ApiError::TooManyRequests(secs))
        }
    }

    /// Run `hash` (a password hash or check) on the hash threads: at most
    /// one per CPU at once (PASSWORD_HASH_CONCURRENCY), at most
    /// PASSWORD_HASH_QUEUE waiting; 503 beyond, or after waiting too long.
    pub async fn hash<T: Send + 'static>(
        &self,
        hash: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // Nobody waits for it any more: skip the work.
            if !tx.is_closed() {
                let _ = tx.send(hash());
            }
        });
        if self.hashers.jobs.try_send(job).is_err() {
            metrics::counter!("tandem_rate_limited_total", "limit" => "password_hash").increment(1);
            return Err(ApiError::Unavailable);
        }
        match tokio::time::timeout(HASH_WAIT, rx).await {
            Ok(Ok(v)) => Ok(v),
            _ => Err(ApiError::Unavailable),
        }
    }
}

/// The key an address is limited under: an IPv4 address, or an IPv6
/// address's /64 (one host usually holds a whole /64).
pub fn address_key(ip: &str) -> String {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(IpAddr::V6(v6)) => v6
            .to_ipv4_mapped()
            .map_or_else(String::new, |v4| v4.to_string()),
        Ok(ip) => ip.to_string(),
        // `client_ip` names an address or "unknown"; keep keys short anyway.
        Err(_) => ip.chars().take(45).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_keyed_by_host_or_v6_slash_64() {
        assert_eq!(address_key("10.0.0.1"), "10.0.0.1");
        assert_eq!(address_key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(
            address_key("2001:db8:1:2:ffff::9"),
            address_key("2001:db8:1:2::1")
        );
        assert_eq!(address_key("::ffff:10.0.0.7"), "10.0.0.7");
        assert_eq!(address_key(&"x".repeat(100)).len(), 45);
    }

    #[test]
    fn a_full_limit_drops_recovered_keys_before_refusing_new_ones() {
        let l = Local::new(Duration::from_millis(1), 1);
        for i in 0..MAX_KEYS {
            assert!(l.take(&i.to_string()));
        }
        // Every key has its allowance back after 1 ms: the map is swept.
        std::thread::sleep(Duration::from_millis(5));
        assert!(l.take("new"));
        assert!(l.limiter.len() < MAX_KEYS);
        // A limit whose keys are all still in use refuses new keys.
        let busy = Local::new(Duration::from_secs(3600), 1);
        for i in 0..MAX_KEYS {
            assert!(busy.take(&i.to_string()));
        }
        assert!(!busy.take("one more"));
        assert!(!busy.take("0"));
    }
}
