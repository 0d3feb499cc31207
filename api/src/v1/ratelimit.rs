//! Per-account and per-client-IP request limits (token buckets). A request
//! over the limit gets 429 with `Retry-After` (RFC 6585 §4).

use super::error::ApiError;
use axum::http::StatusCode;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Requests per second and burst, per key. `rate == 0` disables the limit.
#[derive(Clone, Copy, Debug)]
pub struct Limit {
    pub rate: f64,
    pub burst: f64,
}

/// Buckets beyond this are pruned (full buckets first): a flood of
/// distinct source addresses cannot grow memory without bound.
const MAX_KEYS: usize = 65_536;

struct Bucket {
    tokens: f64,
    at: Instant,
}

struct Buckets<K> {
    limit: Limit,
    map: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    fn new(limit: Limit) -> Self {
        Buckets {
            limit,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key` at `now`; `Err(wait)` when empty.
    fn take(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let Limit { rate, burst } = self.limit;
        if rate <= 0.0 {
            return Ok(());
        }
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            map.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
            if map.len() >= MAX_KEYS {
                return Err(Duration::from_secs(1));
            }
        }
        let b = map.entry(key.clone()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }
}

pub struct RateLimits {
    per_account: Buckets<String>,
    per_ip: Buckets<IpAddr>,
}

impl RateLimits {
    pub fn new(per_account: Limit, per_ip: Limit) -> Self {
        RateLimits {
            per_account: Buckets::new(per_account),
            per_ip: Buckets::new(per_ip),
        }
    }

    pub fn account(&self, account: &str) -> Result<(), Duration> {
        self.per_account.take(&account.to_string(), Instant::now())
    }

    pub fn ip(&self, ip: IpAddr) -> Result<(), Duration> {
        self.per_ip.take(&ip, Instant::now())
    }
}

/// The 429 answer, with whole seconds to wait (at least 1).
pub fn too_many(wait: Duration, what: &str) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many requests for this {what}; retry later"),
    );
    e.retry_after_secs = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_refills_at_the_rate() {
        let b = Buckets::new(Limit {
            rate: 10.0,
            burst: 3.0,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(b.take(&"a", t0).is_ok());
        }
        let wait = b.take(&"a", t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100) && wait > Duration::ZERO);
        // Another key has its own bucket.
        assert!(b.take(&"b", t0).is_ok());
        // 100 ms later one token is back, not two.
        let t1 = t0 + Duration::from_millis(100);
        assert!(b.take(&"a", t1).is_ok());
        assert!(b.take(&"a", t1).is_err());
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let b = Buckets::new(Limit {
            rate: 0.0,
            burst: 0.0,
        });
        let t0 = Instant::now();
        assert!((0..1000).all(|_| b.take(&1u8, t0).is_ok()));
    }
}
