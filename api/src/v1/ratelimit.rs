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

/// Keys remembered per generation. When the current generation is full it
/// becomes the previous one and the older is forgotten: a flood of
/// distinct addresses keeps memory bounded (two generations), and a new
/// client always gets a bucket (a forgotten one was at worst partly spent).
const GENERATION: usize = 32_768;

struct Bucket {
    tokens: f64,
    at: Instant,
}

struct Generations<K> {
    current: HashMap<K, Bucket>,
    previous: HashMap<K, Bucket>,
}

struct Buckets<K> {
    limit: Limit,
    capacity: usize,
    map: Mutex<Generations<K>>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    fn new(limit: Limit) -> Self {
        Self::with_capacity(limit, GENERATION)
    }

    fn with_capacity(limit: Limit, capacity: usize) -> Self {
        Buckets {
            limit,
            capacity: capacity.max(1),
            map: Mutex::new(Generations {
                current: HashMap::new(),
                previous: HashMap::new(),
            }),
        }
    }

    /// Keys remembered now (both generations).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        let g = self.map.lock().unwrap_or_else(|p| p.into_inner());
        g.current.len() + g.previous.len()
    }

    /// Takes one token for `key` at `now`; `Err(wait)` when empty.
    fn take(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let Limit { rate, burst } = self.limit;
        if rate <= 0.0 {
            return Ok(());
        }
        let mut g = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let g = &mut *g;
        if !g.current.contains_key(key) {
            if g.current.len() >= self.capacity {
                g.previous = std::mem::take(&mut g.current);
            }
            let b = g.previous.remove(key).unwrap_or(Bucket {
                tokens: burst,
                at: now,
            });
            g.current.insert(key.clone(), b);
        }
        let Some(b) = g.current.get_mut(key) else {
            return Ok(());
        };
        b.tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = b.at.max(now);
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
    fn a_full_table_never_locks_a_new_client_out() {
        let b = Buckets::with_capacity(
            Limit {
                rate: 1.0,
                burst: 2.0,
            },
            100,
        );
        let t0 = Instant::now();
        // A flood of distinct addresses, each spending its bucket.
        for i in 0..10_000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            let _ = b.take(&ip, t0);
            let _ = b.take(&ip, t0);
            assert!(b.tracked() <= 200);
        }
        // Someone new still gets a burst; a recent flooder is still empty.
        let new = IpAddr::from([203, 0, 113, 1]);
        assert!(b.take(&new, t0).is_ok() && b.take(&new, t0).is_ok());
        assert!(b.take(&new, t0).is_err());
        assert!(b.take(&IpAddr::from(9_999u32.to_be_bytes()), t0).is_err());
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
