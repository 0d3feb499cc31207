//! `Idempotency-Key` on POSTs that create calls or messages: a client that
//! retries after a timeout gets the first answer back, and no second call
//! is placed. Keys live 24 h, per account, on the node that took them.

use super::error::ApiError;
use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(24 * 3600);
/// Keys remembered at most; beyond, the oldest are forgotten first.
const MAX_KEYS: usize = 100_000;

type Answer = (StatusCode, Json<serde_json::Value>);

enum Entry {
    InFlight {
        fingerprint: String,
        at: Instant,
    },
    Done {
        fingerprint: String,
        status: StatusCode,
        body: serde_json::Value,
        at: Instant,
    },
}

impl Entry {
    fn at(&self) -> Instant {
        match self {
            Entry::InFlight { at, .. } | Entry::Done { at, .. } => *at,
        }
    }
}

#[derive(Default)]
pub struct Idempotency {
    map: Mutex<HashMap<(String, String), Entry>>,
}

/// The request's key: 1–255 visible ASCII characters.
pub fn key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(k.to_string()))
        }
        _ => Err(ApiError::field(
            "Idempotency-Key",
            "1–255 visible ASCII characters",
        )),
    }
}

impl Idempotency {
    /// Starts a request under `key`: `Some(answer)` replays a finished
    /// one; a key in flight or reused for another body is refused.
    pub fn begin(
        &self,
        account: &str,
        key: &str,
        fingerprint: &str,
    ) -> Result<Option<Answer>, ApiError> {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_KEYS {
            map.retain(|_, e| now.duration_since(e.at()) < TTL);
            if map.len() >= MAX_KEYS {
                // Forget the oldest tenth of the finished keys at once, so
                // the scan is not repeated on every request; keys in flight
                // are kept.
                let mut done: Vec<(Instant, (String, String))> = map
                    .iter()
                    .filter(|(_, e)| matches!(e, Entry::Done { .. }))
                    .map(|(k, e)| (e.at(), k.clone()))
                    .collect();
                done.sort_unstable_by_key(|(at, _)| *at);
                for (_, k) in done.into_iter().take(MAX_KEYS / 10) {
                    map.remove(&k);
                }
            }
        }
        let k = (account.to_string(), key.to_string());
        match map.get(&k) {
            Some(e) if now.duration_since(e.at()) < TTL => match e {
                Entry::InFlight { .. } => Err(ApiError::conflict(
                    "Idempotency-Key",
                    "a request with this Idempotency-Key is still in progress",
                )),
                Entry::Done {
                    fingerprint: f,
                    status,
                    body,
                    ..
                } => {
                    if f != fingerprint {
                        return Err(ApiError::field(
                            "Idempotency-Key",
                            "this Idempotency-Key was used with a different body",
                        ));
                    }
                    Ok(Some((*status, Json(body.clone()))))
                }
            },
            _ => {
                map.insert(
                    k,
                    Entry::InFlight {
                        fingerprint: fingerprint.to_string(),
                        at: now,
                    },
                );
                Ok(None)
            }
        }
    }

    /// Ends a request: a success is remembered for replay; a failure is
    /// forgotten, so the client may retry with the same key.
    pub fn finish(&self, account: &str, key: &str, answer: Option<&Answer>) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let k = (account.to_string(), key.to_string());
        if let (Some((status, Json(body))), Some(Entry::InFlight { fingerprint, .. })) =
            (answer, map.remove(&k))
        {
            map.insert(
                k,
                Entry::Done {
                    fingerprint,
                    status: *status,
                    body: body.clone(),
                    at: Instant::now(),
                },
            );
        }
    }
}

/// Ends a request that began under a key: [`Guard::finish`] records its
/// answer; dropping the guard unfinished forgets the key.
pub struct Guard<'a> {
    store: &'a Idempotency,
    account: String,
    key: String,
    done: bool,
}

impl<'a> Guard<'a> {
    pub fn new(store: &'a Idempotency, account: &str, key: &str) -> Self {
        Guard {
            store,
            account: account.to_string(),
            key: key.to_string(),
            done: false,
        }
    }

    pub fn finish(mut self, answer: Option<&Answer>) {
        self.done = true;
        self.store.finish(&self.account, &self.key, answer);
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.store.finish(&self.account, &self.key, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_refuses_in_flight_and_other_bodies_and_forgets_failures() {
        let i = Idempotency::default();
        assert!(i.begin("a", "k1", "body").unwrap().is_none());
        assert_eq!(
            i.begin("a", "k1", "body").unwrap_err().status,
            StatusCode::CONFLICT
        );
        // Another account's key is its own.
        assert!(i.begin("b", "k1", "body").unwrap().is_none());
        let answer = (StatusCode::CREATED, Json(serde_json::json!({"id": "CA1"})));
        i.finish("a", "k1", Some(&answer));
        let (st, Json(body)) = i.begin("a", "k1", "body").unwrap().unwrap();
        assert_eq!(
            (st, body["id"].as_str()),
            (StatusCode::CREATED, Some("CA1"))
        );
        assert_eq!(
            i.begin("a", "k1", "other")
                .unwrap_err()
                .detail
                .field
                .as_deref(),
            Some("Idempotency-Key")
        );
        // A failed request is not remembered.
        assert!(i.begin("a", "k2", "x").unwrap().is_none());
        i.finish("a", "k2", None);
        assert!(i.begin("a", "k2", "x").unwrap().is_none());
        // Nor one dropped mid-way.
        drop(Guard::new(&i, "a", "k2"));
        assert!(i.begin("a", "k2", "x").unwrap().is_none());
    }
}
